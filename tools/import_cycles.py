"""Import cycles among bcirig's modules: lists each one with the import lines that close it; exit 1 if any.

    .venv/bin/python tools/import_cycles.py          (part of ``make lint``)

Every import statement counts, wherever it stands: at module level, inside a function, or under
``if TYPE_CHECKING``. An import moved into a function is the usual way a cycle is hidden rather than
removed: the two modules still need each other, and the function fails if it runs while the other module
is being imported. A type-only cycle is a coupling too; a small Protocol in ``bcirig.interfaces`` breaks
it. Only explicit imports count: ``from bcirig.nodes.base import Node`` makes Python run
``bcirig/nodes/__init__.py`` first, but a package that re-exports its submodules is not a cycle with them.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import grimp


def strongly_connected(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """The strongly connected groups of two or more modules (Tarjan's algorithm, iteratively)."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & modules) for m in sorted(modules)}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:  # node is done: its caller takes its low link
                caller = work[-1][0]
                low[caller] = min(low[caller], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


def shortest_cycle(graph: grimp.ImportGraph, group: list[str]) -> list[str]:
    """A shortest cycle through the group's first module, as [a, b, ..., a] (breadth first, in the group)."""
    start, members = group[0], set(group)
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for target in sorted(graph.find_modules_directly_imported_by(node) & members):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if target not in parent and target != start:
                    parent[target] = node
                    nxt.append(target)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group always has one


def describe(graph: grimp.ImportGraph, cycle: list[str]) -> list[str]:
    """One line per import of the cycle: importer:line  the statement."""
    lines = []
    for importer, imported in itertools.pairwise(cycle):
        for d in graph.get_import_details(importer=importer, imported=imported):
            lines.append(f"    {importer}:{d['line_number']}  {d['line_contents'].strip()}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the cycles; 0 when there is none."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("package", nargs="?", default="bcirig")
    args = p.parse_args(argv)
    graph = grimp.build_graph(args.package, include_external_packages=False)
    modules = set(graph.modules)
    groups = strongly_connected(graph, modules)
    if not groups:
        print(f"no import cycle among the {len(modules)} modules of {args.package}")
        return 0
    print(f"{len(groups)} import cycle(s) among the modules of {args.package}:")
    for group in groups:
        cycle = shortest_cycle(graph, group)
        more = f"   (all of {', '.join(group)} reach each other)" if len(group) > len(cycle) - 1 else ""
        print(f"  {' -> '.join(cycle)}{more}")
        print("\n".join(describe(graph, cycle)))
    return 1


if __name__ == "__main__":
    sys.exit(main())
