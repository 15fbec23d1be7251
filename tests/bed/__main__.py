"""Command line of the bed: ``python -m tests.bed up|down|status|env|clean``."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time

from .bed import Bed, bed_down, bed_status, ensure_bed
from .config import BedConfig
from .harness import clean_leftovers


def _up(args: argparse.Namespace) -> int:
    """Start or reuse the bed and say how long it took."""
    started = time.monotonic()
    bed = ensure_bed()
    print(f"bed up at {bed.docker_host} in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


def _down(args: argparse.Namespace) -> int:
    """Stop the engine and remove its state."""
    bed_down(keep_images=args.keep_images)
    print("bed down", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    """Print the status as JSON; exit 0 only when the bed is fully up."""
    status = bed_status()
    print(json.dumps(status, indent=2))
    return 0 if status["up"] else 1


def _env(args: argparse.Namespace) -> int:
    """Print ``export`` lines for ``eval "$(python -m tests.bed env)"``."""
    for key, value in Bed(BedConfig.from_env()).env().items():
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
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per action."""
    top = argparse.ArgumentParser(prog="python -m tests.bed", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start or reuse the bed (engine, swarm, images)").set_defaults(
        func=_up
    )
    down = sub.add_parser("down", help="stop the engine and remove its state")
    down.add_argument("--keep-images", action="store_true", help="keep the image store")
    down.set_defaults(func=_down)
    sub.add_parser("status", help="print the state as JSON").set_defaults(func=_status)
    sub.add_parser("env", help="print export lines (DOCKER_HOST, image names)").set_defaults(
        func=_env
    )
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
