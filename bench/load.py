"""Part 2: failed requests under load, ours beside two baselines, in the same run.

The scenarios of the live-reload tests (tests/swarm/test_live_reload.py), each under wrk load
(tests/swarm/load.py: keep-alive connections to the proxy's port on 127.0.0.1, no retries):

- ``rolling update``: a 3-replica backend is updated (stop-first, one task at a time, 1 s apart);
- ``route changes``: another service's hostname changes N times (N = 20), each change waited for
  through the proxy (new host answers, old host 404) and at least 1 s apart.

Each runs against three controllers, every one a real process on the same kind of proxy (a plain
``docker run`` container of the bed's image, published on 127.0.0.1; signal mode):

- ``ours``: ``interlock run``;
- ``restart``: restart the proxy container on every change (``bench.variants restart``);
- ``until-gone``: route to tasks until their state leaves running (``bench.variants until-gone``).
"""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from typing import Any

from bench import progress
from bench.lab import bed, namespace
from tests.bed.probes import http_get, wait_until
from tests.swarm.controlled import ControllerProcess, Routed, routed
from tests.swarm.load import Load, LoadResult

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("nginx", "haproxy")
CONTROLLERS = {
    "ours": ("-m", "controller.cli", "run"),
    "restart": ("-m", "bench.variants", "restart"),
    "until-gone": ("-m", "bench.variants", "until-gone"),
}
ROLLING_HOST = "rolled.example.com"
STEADY_HOST = "steady.example.com"
FULL = {"changes": 20, "rolling_seconds": 30, "changes_seconds": 50}
QUICK = {"changes": 5, "rolling_seconds": 25, "changes_seconds": 20}


class Prober:
    """Beside wrk: one request on a fresh connection every ``INTERVAL``; failures and the longest
    run of them (a figure that, unlike wrk's error counts, does not grow with wrk's retry rate)."""

    INTERVAL = 0.1

    def __init__(self, port: int, host: str) -> None:
        self.port, self.host = port, host
        self.sent = self.failed = self.longest = self._run = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._probe, daemon=True)

    def _probe(self) -> None:
        while not self.stop.wait(self.INTERVAL):
            self.sent += 1
            try:
                ok = http_get(self.port, self.host, timeout=2.0)[0] == 200
            except (OSError, http.client.HTTPException):
                ok = False
            self._run = 0 if ok else self._run + 1
            self.failed += not ok
            self.longest = max(self.longest, self._run)

    def __enter__(self) -> Prober:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def figures(self) -> dict[str, Any]:
        return {
            "probes": self.sent,
            "probes_failed": self.failed,
            "longest_outage_s": round(self.longest * self.INTERVAL, 1),
        }


def relabel(lab: Routed, service, label: str, value: str) -> None:
    def mutate(spec: dict) -> None:
        spec["Labels"][lab.label(label)] = value

    lab.swarm.update_service(service, mutate)


def figures(result: LoadResult, seconds: float) -> dict[str, Any]:
    return {
        "requests": result.requests,
        "failed": result.failed,
        "connect_errors": result.connect_errors,
        "read_errors": result.read_errors,
        "write_errors": result.write_errors,
        "timeouts": result.timeouts,
        "non_2xx": result.non_2xx,
        "load_seconds": seconds,
    }


def rolling_update(lab: Routed, app, port: int, seconds: int) -> dict[str, Any]:
    """Update the 3-replica backend under load; done when only version 2 answers."""
    began = time.monotonic()
    with Load(port, ROLLING_HOST, seconds=seconds) as load, Prober(port, ROLLING_HOST) as probe:
        time.sleep(2)
        lab.set_version(app, 2)
        lab.swarm.wait_updated(app, timeout=90)
        wait_until(
            lambda: all("version=2" in http_get(port, ROLLING_HOST)[1] for _ in range(6)),
            20,
            message="only version 2 answers",
        )
        done = time.monotonic() - began
        result = load.wait()
    return {**figures(result, seconds), **probe.figures(), "change_done_after_s": round(done, 2)}


def route_changes(lab: Routed, other, port: int, changes: int, seconds: int) -> dict[str, Any]:
    """Move another service's hostname ``changes`` times under load, each change seen."""
    swarm = lab.swarm
    with Load(port, STEADY_HOST, seconds=seconds) as load, Prober(port, STEADY_HOST) as probe:
        began = time.monotonic()
        for change in range(1, changes + 1):
            relabel(lab, other, "hostname", f"r{change}.example.com")
            swarm.wait_http(port, f"r{change}.example.com", contains="-other.1.", timeout=30)
            swarm.wait_http(port, f"r{change - 1}.example.com", status=404, timeout=30)
            time.sleep(max(0.0, began + change - time.monotonic()))  # >= 1 s per change
        took = time.monotonic() - began
        result = load.wait()
    return {
        **figures(result, seconds),
        **probe.figures(),
        "changes": changes,
        "changes_took_s": round(took, 2),
        "changes_within_load": took < seconds,
    }


def reloads_in(log: str) -> int:
    """Config pushes the controller logged (each one reload, or one restart)."""
    return sum(1 for line in log.splitlines() if "action_done" in line and "PushConfig" in line)


def one_setup(kind: str, controller: str, plan: dict[str, int], logs: Path) -> dict[str, Any]:
    """One namespace: a proxy container, the apps, one controller; both scenarios."""
    row: dict[str, Any] = {"kind": kind, "controller": controller}
    with namespace(f"load: {kind}, {controller}") as swarm:
        lab = routed(swarm, bed().docker_host)
        port = lab.proxy_container(kind)
        app = lab.versioned_app("rolled", ROLLING_HOST)
        lab.app("steady", replicas=2, hostname=STEADY_HOST, port="8080")
        other = lab.app("other", hostname="r0.example.com", port="8080")
        log_path = logs / f"load-{kind}-{controller}.log"
        with ControllerProcess(
            bed().docker_host, lab.prefix, str(log_path), CONTROLLERS[controller],
            PYTHONPATH=str(ROOT),
        ) as process:  # fmt: skip
            swarm.wait_http(port, ROLLING_HOST, contains="version=1", timeout=60)
            swarm.wait_http(port, "r0.example.com", contains="-other.1.", timeout=30)
            before = reloads_in(process.logs())
            try:
                row["rolling_update"] = rolling_update(lab, app, port, plan["rolling_seconds"])
            except Exception as error:  # a baseline may not converge: say so, go on
                row["rolling_update"] = {"error": f"{type(error).__name__}: {error}"}
            middle = reloads_in(process.logs())
            row.setdefault("rolling_update", {})["reloads"] = middle - before
            try:
                row["route_changes"] = route_changes(
                    lab, other, port, plan["changes"], plan["changes_seconds"]
                )
            except Exception as error:
                row["route_changes"] = {"error": f"{type(error).__name__}: {error}"}
            row["route_changes"]["reloads"] = reloads_in(process.logs()) - middle
    for scenario in ("rolling_update", "route_changes"):
        got = row[scenario]
        progress(
            f"load: {kind} {controller} {scenario}: requests={got.get('requests')} "
            f"failed={got.get('failed')} connect={got.get('connect_errors')} "
            f"probes failed={got.get('probes_failed')} reloads={got.get('reloads')} "
            f"{got.get('error', '')}".rstrip()
        )
    return row


def ratios(rows: list[dict[str, Any]]) -> None:
    """Beside each baseline row: its failed requests over ours (same kind, same scenario)."""
    ours = {row["kind"]: row for row in rows if row["controller"] == "ours"}
    for row in rows:
        mine = ours.get(row["kind"])
        if not mine or row is mine:
            continue
        for scenario in ("rolling_update", "route_changes"):
            base, our = row[scenario].get("failed"), mine[scenario].get("failed")
            if base is not None and our is not None:
                row[scenario]["failed_vs_ours"] = f"{base}/{our}" if our == 0 else base / our


def run(quick: bool, logs: Path) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    rows = [one_setup(kind, controller, plan, logs) for kind in KINDS for controller in CONTROLLERS]
    ratios(rows)
    return {"plan": plan, "rows": rows}
