"""Nodes: one process each, wiring one stage to the bus (see bcirig.nodes.base for the life cycle)."""

from __future__ import annotations

import importlib

from bcirig.nodes.base import Node, NodeSpec, node_main

# kind -> (module, class); imported on use so a node process loads only what it runs.
NODE_KINDS = {
    "pipeline": ("bcirig.nodes.pipeline", "PipelineNode"),
    "task": ("bcirig.nodes.task", "TaskNode"),
    "valve": ("bcirig.nodes.valve", "ValveNode"),
    "recorder": ("bcirig.nodes.recorder", "RecorderNode"),
    "display": ("bcirig.nodes.display", "DisplayNode"),
    "console": ("bcirig.nodes.console", "ConsoleNode"),
}


def node_class(kind: str) -> type[Node]:
    """The Node subclass for ``kind``: a known kind, or ``"package.module:Class"`` (a test's faulty node)."""
    if ":" in kind:
        module, name = kind.split(":", 1)
    elif kind in NODE_KINDS:
        module, name = NODE_KINDS[kind]
    else:
        raise ValueError(f"unknown node kind {kind!r}; known: {', '.join(NODE_KINDS)}")
    cls: type[Node] = getattr(importlib.import_module(module), name)
    return cls


__all__ = ["NODE_KINDS", "Node", "NodeSpec", "node_class", "node_main"]
