"""Command line of the bed: ``python -m tests.bed up|down|status|env|clean``.

``up --nodes 3`` also brings up the multi-node bed (:mod:`tests.bed.cluster`); ``env --node 2``
points the docker CLI at one of its nodes; ``down`` removes the nodes too.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time

from .bed import Bed, bed_down, bed_status, ensure_bed
from .cluster import (
    Cluster,
    ClusterConfig,
    answers,
    cluster_down,
    cluster_status,
    ensure_cluster,
    node_count,
)
from .clusterharness import clean_cluster_leftovers
from .config import BedConfig
from .harness import clean_leftovers


def _up(args: argparse.Namespace) -> int:
    """Start or reuse the bed and say how long it took."""
    started = time.monotonic()
    bed = ensure_bed()
    print(f"bed up at {bed.docker_host} in {time.monotonic() - started:.1f}s", file=sys.stderr)
    if args.nodes:
        started = time.monotonic()
        cluster = ensure_cluster(ClusterConfig.from_env(args.nodes))
        took = time.monotonic() - started
        roles = ", ".join(f"{n.hostname} {n.docker_host}" for n in cluster.nodes)
        print(f"{args.nodes}-node Swarm up in {took:.1f}s: {roles}", file=sys.stderr)
    return 0


def _down(args: argparse.Namespace) -> int:
    """Remove the nodes, then (unless ``--nodes-only``) stop the engine and remove its state."""
    cluster_down(ClusterConfig.from_env())
    print("nodes down", file=sys.stderr)
    if not args.nodes_only:
        bed_down(keep_images=args.keep_images)
        print("bed down", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    """Print the status as JSON; exit 0 only when the bed is fully up, and the nodes too when
    there are any (or ``--nodes N`` asks for them)."""
    status = bed_status()
    running = node_count(BedConfig.from_env())
    cluster = cluster_status(ClusterConfig.from_env(args.nodes or running or None))
    status["cluster"] = cluster
    print(json.dumps(status, indent=2))
    wanted = bool(args.nodes or running)
    return 0 if status["up"] and (cluster["up"] or not wanted) else 1


def _env(args: argparse.Namespace) -> int:
    """Print ``export`` lines for ``eval "$(python -m tests.bed env [--node N])"``."""
    if args.node:
        cfg = ClusterConfig.from_env(max(args.node, ClusterConfig.from_env().nodes))
        env = Cluster(cfg, cfg.bed.images).env(args.node)
    else:
        env = Bed(BedConfig.from_env()).env()
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _clean(args: argparse.Namespace) -> int:
    """Remove objects of test runs that died before their teardown."""
    bed = Bed(BedConfig.from_env())
    client = bed.client()
    try:
        ids = clean_leftovers(client, bed.images, older_than=args.older_than)
    finally:
        client.close()
    print(f"cleaned {len(ids)} leftover test(s): {' '.join(ids)}", file=sys.stderr)
    cfg = ClusterConfig.from_env()
    if answers(cfg.docker_host(1)):
        cluster = Cluster(cfg, bed.images)
        try:
            ids = clean_cluster_leftovers(cluster, older_than=args.older_than)
        finally:
            cluster.close()
        print(f"cleaned {len(ids)} leftover test(s) on the nodes: {' '.join(ids)}", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per action."""
    top = argparse.ArgumentParser(prog="python -m tests.bed", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start or reuse the bed (engine, swarm, images)")
    up.add_argument("--nodes", type=int, default=0, help="also a Swarm of N node containers")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="remove the nodes, stop the engine, remove its state")
    down.add_argument("--keep-images", action="store_true", help="keep the image store")
    down.add_argument("--nodes-only", action="store_true", help="remove only the nodes")
    down.set_defaults(func=_down)
    status = sub.add_parser("status", help="print the state as JSON (bed and nodes)")
    status.add_argument("--nodes", type=int, default=0, help="expect N nodes up")
    status.set_defaults(func=_status)
    env = sub.add_parser("env", help="print export lines (DOCKER_HOST, image names)")
    env.add_argument("--node", type=int, default=0, help="DOCKER_HOST of node N (1 = manager)")
    env.set_defaults(func=_env)
    clean = sub.add_parser("clean", help="remove leftovers of crashed tests")
    clean.add_argument("--older-than", type=float, default=3600.0, help="seconds (default 3600)")
    clean.set_defaults(func=_clean)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point; logs progress to stderr."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
