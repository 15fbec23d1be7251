"""Benchmarks of the controller: ``python -m bench [--quick] [--only PARTS] [--out DIR]``.

Parts: ``latency`` (convergence on the real Swarm), ``load`` (failed requests under load, beside
two baselines), ``scale`` (one pass over synthetic Swarms of 100 to 10,000 services, and Docker API
calls per pass on the real Swarm), ``naive`` (our pass against one that reloads on every event),
``nodes`` (the 3-node Swarm: agent mode beside rolling mode, change to routable on every node and
failed requests under load).
"""

from __future__ import annotations

import sys
import time

_STARTED = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr, with the seconds since the benchmark started."""
    print(f"[bench {time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)
