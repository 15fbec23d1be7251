"""Part 1: convergence latency on the real Swarm, through the proxy, per kind and mode.

For each proxy kind (nginx, HAProxy) and mode (signal, rolling), one namespace with a proxy
service published on 127.0.0.1 and the real controller (``interlock run``, default settings).
Each trial does four changes to a new routed service, and for each one polls the proxy on
127.0.0.1 (a fresh connection per request, ``POLL_INTERVAL`` apart) until it answers accordingly:

- ``create`` (1 replica): from max(create call returned, task running) until the task answers;
- ``scale_up`` 1 -> 3: from max(call returned, the later new task running) until both answer;
- ``scale_down`` 3 -> 1: from the call returning until the first of ``STREAK`` answers in a row
  from one task (round robin over 2 or 3 tasks never gives that many in a row);
- ``remove``: from the call returning until the host answers 404.

"Task running" is Swarm's own timestamp of the task's state change. A change that is not seen
within the timeout counts as a failure (reported), not as a figure.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import progress
from bench.lab import bed, namespace, swarm_time
from tests.bed.harness import SwarmTest
from tests.bed.probes import http_get, wait_until
from tests.swarm.controlled import Routed, routed

KINDS = ("nginx", "haproxy")
MODES = ("signal", "rolling")
OPS = ("create", "scale_up", "scale_down", "remove")
POLL_INTERVAL = 0.02
STREAK = 6
TIMEOUT = {"signal": 30.0, "rolling": 120.0}

Judge = Callable[[float, int, str], float | None]


def poll(port: int, host: str, judge: Judge, timeout: float) -> float:
    """Request until ``judge(sent_at, status, body)`` returns a time; status 0 = no answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sent = time.time()
        try:
            status, body = http_get(port, host, timeout=2.0)
        except (OSError, http.client.HTTPException):
            status, body = 0, ""
        found = judge(sent, status, body)
        if found is not None:
            return found
        time.sleep(POLL_INTERVAL)
    raise TimeoutError(f"{host} on 127.0.0.1:{port}: not converged within {timeout:.0f}s")


def task_of(body: str) -> str:
    """``task=<service>.<slot>.<task id> ...`` -> ``<service>.<slot>.<task id>``."""
    return body.split()[0].removeprefix("task=") if body.startswith("task=") else ""


def running_since(swarm: SwarmTest, service, task_names: set[str]) -> float:
    """Swarm's timestamp of the latest of these tasks reaching ``running``."""
    ids = {name.rsplit(".", 1)[-1] for name in task_names}
    stamps = [
        swarm_time(t["Status"]["Timestamp"])
        for t in swarm.client.api.tasks(filters={"service": service.id})
        if t["ID"] in ids and t["Status"]["State"] == "running"
    ]
    if len(stamps) != len(ids):
        raise LookupError(f"not all of {sorted(ids)} are running")
    return max(stamps)


def replicas(count: int) -> Callable[[dict], None]:
    def mutate(spec: dict) -> None:
        spec["Mode"] = {"Replicated": {"Replicas": count}}

    return mutate


class Trial:
    """One service's four changes; each method returns the latency in seconds."""

    def __init__(self, lab: Routed, index: int, timeout: float) -> None:
        self.lab, self.swarm, self.timeout = lab, lab.swarm, timeout
        self.host = f"lat{index}.example.com"
        self.suffix = f"lat{index}"
        self.service = None

    def _poll(self, judge: Judge) -> float:
        return poll(self.lab.port, self.host, judge, self.timeout)

    def create(self) -> float:
        labels = {self.lab.label("hostname"): self.host, self.lab.label("port"): "8080"}
        self.service = self.swarm.service(
            self.suffix,
            self.swarm.images.backend,
            networks=[self.lab.network.name],
            labels=labels,
            env=["TASK_NAME={{.Task.Name}}"],
            mode={"Replicated": {"Replicas": 1}},
        )
        returned = time.time()
        seen: set[str] = set()

        def judge(sent: float, status: int, body: str) -> float | None:
            if status == 200 and f"task={self.service.name}.1." in body:
                seen.add(task_of(body))
                return sent
            return None

        answered = self._poll(judge)
        return answered - max(returned, running_since(self.swarm, self.service, seen))

    def scale_up(self) -> float:
        self.swarm.update_service(self.service, replicas(3))
        returned = time.time()
        first_seen: dict[str, float] = {}

        def judge(sent: float, status: int, body: str) -> float | None:
            task = task_of(body)
            if status == 200 and task and ".1." not in task:
                first_seen.setdefault(task, sent)
            return max(first_seen.values()) if len(first_seen) == 2 else None

        answered = self._poll(judge)
        return answered - max(returned, running_since(self.swarm, self.service, set(first_seen)))

    def scale_down(self) -> float:
        self.swarm.update_service(self.service, replicas(1))
        returned = time.time()
        streak: list[tuple[float, str]] = []

        def judge(sent: float, status: int, body: str) -> float | None:
            task = task_of(body) if status == 200 else ""
            if not task or (streak and streak[-1][1] != task):
                streak.clear()
            if task:
                streak.append((sent, task))
            return streak[0][0] if len(streak) >= STREAK else None

        return self._poll(judge) - returned

    def remove(self) -> float:
        self.service.remove()
        returned = time.time()
        return self._poll(lambda sent, status, body: sent if status == 404 else None) - returned


def run_trial(lab: Routed, index: int, mode: str) -> dict[str, Any]:
    trial = Trial(lab, index, TIMEOUT[mode])
    got: dict[str, Any] = {}
    for op in OPS:
        if got.get("errors") and op != "remove":
            got[op] = None  # a change after a failed one would measure nothing meaningful
            continue
        try:
            got[op] = getattr(trial, op)()
        except Exception as error:
            got[op] = None
            got.setdefault("errors", []).append(f"{op}: {type(error).__name__}: {error}")
            if trial.service is None:
                break
        # Never start a change while the proxy task is still being replaced (rolling mode);
        # Swarm's 5 s update monitor may go on, as it would for any user's next change.
        lab.swarm.wait_running(lab.proxy, timeout=120)
        time.sleep(0.3)
    if got.get("remove") is None and trial.service is not None:
        with contextlib.suppress(Exception):  # already gone
            trial.service.remove()
    return got


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (p95 of 20 values is the 19th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for op in OPS:
        values = [t[op] for t in trials if t.get(op) is not None]
        out[op] = {
            "n": len(values),
            "failed": len(trials) - len(values),
            "p50_s": percentile(values, 0.5) if values else None,
            "p95_s": percentile(values, 0.95) if values else None,
            "max_s": max(values) if values else None,
        }
    return out


def cell(kind: str, mode: str, trials: int, logs: Path) -> dict[str, Any]:
    with namespace(f"latency: {kind}, {mode} mode") as swarm:
        lab = routed(swarm, bed().docker_host)
        lab.proxy_service(kind, mode=mode)
        began = time.monotonic()
        with lab.run(str(logs / f"latency-{kind}-{mode}.log")):
            wait_until(
                lambda: http_get(lab.port, "nothing.example.com")[0] == 404,
                120,
                message="the proxy serves the controller's config",
            )
            swarm.wait_updated(lab.proxy, timeout=120)
            results = []
            for index in range(trials):
                results.append(run_trial(lab, index, mode))
                shown = " ".join(
                    f"{op}={results[-1][op]:.2f}s" if results[-1].get(op) is not None else f"{op}=-"
                    for op in OPS
                )
                progress(f"latency: {kind} {mode} trial {index + 1}/{trials}: {shown}")
    return {
        "kind": kind,
        "mode": mode,
        "trials": trials,
        "seconds": round(time.monotonic() - began, 1),
        "summary": summary(results),
        "raw": results,
    }


def run(quick: bool, logs: Path, trials: int | None = None) -> dict[str, Any]:
    trials = trials or (3 if quick else 20)
    cells = [cell(kind, mode, trials, logs) for mode in MODES for kind in KINDS]
    return {"poll_interval_s": POLL_INTERVAL, "streak": STREAK, "cells": cells}
