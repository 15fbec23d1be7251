"""``python -m bench [--quick] [--only latency,load,scale,naive,nodes,reloads] [--out DIR]``.

Runs the parts in order on the test bed (brought up if needed: run as root, like the tests) and
writes ``results.json`` and ``results.md`` into the output folder after every part, so an
interrupted run keeps what it measured. Controller logs of each scenario go to ``<out>/logs``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import latency, load, naive, nodes, progress, reloads, report, scale

PARTS = {
    "latency": lambda quick, logs: latency.run(quick, logs),
    "load": lambda quick, logs: load.run(quick, logs),
    "scale": lambda quick, logs: scale.run(quick),
    "naive": lambda quick, logs: naive.run(quick),
    "nodes": lambda quick, logs: nodes.run(quick, logs),
    "reloads": lambda quick, logs: reloads.run(quick, logs),
}
ON_SWARM = {"latency", "load", "scale", "nodes", "reloads"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few trials, short loads (minutes)")
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts (default: {','.join(PARTS)})",
    )
    parser.add_argument("--out", default="bench/results", help="folder for results.json/.md")
    return parser


def _other_services() -> int:
    from bench.lab import client

    return len(client().services.list())


def write(results: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "results.md").write_text(report.markdown(results) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"unknown part(s): {', '.join(unknown)} (have: {', '.join(PARTS)})", file=sys.stderr)
        return 2
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "finished": None,
        "quick": args.quick,
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": report.machine(),
        "parts": {},
    }
    progress(f"machine: {results['machine']}")
    if ON_SWARM & set(parts):
        from bench.lab import engine_version

        results["engine"] = engine_version()
        results["other_services_start"] = _other_services()
    failed = False
    for part in parts:
        progress(f"part {part}: start")
        began = time.monotonic()
        try:
            results["parts"][part] = PARTS[part](args.quick, out / "logs")
        except Exception as error:  # one broken part must not cost the others' figures
            traceback.print_exc()
            results["parts"][part] = {"error": f"{type(error).__name__}: {error}"}
            failed = True
        results["parts"][part]["part_seconds"] = round(time.monotonic() - began, 1)
        progress(f"part {part}: done in {time.monotonic() - began:.0f}s")
        results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        results["load_average_end"] = os.getloadavg()
        if ON_SWARM & set(parts):
            results["other_services_end"] = _other_services()
        write(results, out)
    progress(f"results: {out / 'results.md'}, {out / 'results.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
