"""Peers: what a user who does not use mnistopt would run instead, built from the same torch run.

    from mnistopt.peers import PEERS, build_peers
    for b in build_peers("workspace/runs/torch-edge", ["openvino-nncf-int8"], batch_sizes=[1]):
        b.path, b.info, b.unsupported, b.error

`mnistopt bench --peers` builds them for every torch run it measures (cached in RUN/peers/) and
benches them beside mnistopt's own files, each record marked with a `peer` entry. The list is
`registry.PEERS`; what a peer record holds is in `mnistopt/targets/items.py` (`peer_item`).
Importing this package imports no tool: each builder imports its own when it runs.
"""

from .build import Built, build_peers
from .registry import PEERS, Peer, choose, get_peer, missing

__all__ = ["PEERS", "Built", "Peer", "build_peers", "choose", "get_peer", "missing"]
