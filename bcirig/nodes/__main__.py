"""``python -m bcirig.nodes SPEC.json``: run one node process (started by the supervisor)."""

import sys

from bcirig.nodes.base import node_main

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bcirig.nodes NODE_SPEC.json (nodes are started by `bcirig run`)")
    sys.exit(node_main(sys.argv[1]))
