"""Nodes: one process each, wiring one stage to the bus (see bcirig.nodes.base for the life cycle)."""

from __future__ import annotations

from bcirig.nodes.base import NODE_KINDS, Node, NodeSpec, node_class, node_main

__all__ = ["NODE_KINDS", "Node", "NodeSpec", "node_class", "node_main"]
