"""Part: HAProxy reloads per scenario, and the proxy's memory, with and without the runtime API.

One signal-mode HAProxy proxy service (its runtime folder bind-mounted where the controller, a
real ``interlock run`` process, sees it) and two controllers in turn, in the same run:

- ``runtime``: ours, task address changes through HAProxy's runtime API;
- ``reload``: the same controller with ``INTERLOCK_RUNTIME_DIR=""``: a reload on every change
  (the baseline).

Scenarios, in order: a rolling update of a 3-replica backend (stop-first, one task at a time,
1 s apart) while WebSocket connections to another backend stay open (a reload leaves an old
worker holding them until they close or ``hard-stop-after``: the proxy's memory is the RSS of
all its HAProxy processes, sampled every 0.25 s, peak and process count); a scale
3 -> 1 -> 3 -> 0 -> 2; host changes of another service.
Reloads and runtime updates are the controller's own log events (``proxy_reload``,
``runtime_update``), and the proxy's processes are counted as a check.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import progress
from bench.lab import bed, namespace
from tests.bed.probes import LOOPBACK, wait_until
from tests.swarm.controlled import ControllerProcess, Routed, routed
from tests.swarm.test_runtime_api import proxy_with_runtime

ROOT = Path(__file__).resolve().parent.parent
ROLLING, STEADY, OTHER = "rolled.example.com", "steady.example.com", "other"
VARIANTS = {"runtime": None, "reload": ""}  # INTERLOCK_RUNTIME_DIR: None = the shared folder
FULL = {"connections": 200, "changes": 10, "scale": (1, 3, 0, 2)}
QUICK = {"connections": 50, "changes": 5, "scale": (1, 3, 0, 2)}


def websockets(port: int, host: str, count: int) -> list[socket.socket]:
    """``count`` WebSocket connections through the proxy, upgraded and left open."""
    opened = []
    for _ in range(count):
        conn = socket.create_connection((LOOPBACK, port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        conn.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        if b" 101 " not in conn.recv(4096):
            raise RuntimeError("a WebSocket upgrade through the proxy was not answered 101")
        opened.append(conn)
    return opened


def serving(api: Any, container: str) -> tuple[int, int]:
    """(KiB, processes) of HAProxy's master and workers, old ones included; the in-place
    step's short-lived ``sh`` and ``haproxy -c`` are left out."""
    rows = api.top(container, ps_args="-o pid,rss,args")["Processes"]
    found = [row for row in rows if " -W " in f" {row[2]} "]
    return sum(int(row[1]) for row in found), len(found)


@contextlib.contextmanager
def peak_memory(api: Any, container: str) -> Iterator[dict[str, Any]]:
    """The RSS of all the proxy's processes (master, worker, old workers still holding
    connections) before and at its peak while the block runs, sampled every 0.25 s."""
    before = serving(api, container)
    peak = list(before)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.25):
            kib, processes = serving(api, container)
            peak[0], peak[1] = max(peak[0], kib), max(peak[1], processes)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    figures: dict[str, Any] = {}
    try:
        yield figures
    finally:
        stop.set()
        thread.join(timeout=5)
        figures.update(rss_before_mib=round(before[0] / 1024, 1), processes_before=before[1],
                       rss_peak_mib=round(peak[0] / 1024, 1), processes_peak=peak[1])  # fmt: skip


def counted(log: str) -> tuple[int, int]:
    """(reloads, runtime updates) the controller logged."""
    lines = log.splitlines()
    reloads = sum(1 for line in lines if " proxy_reload " in f"{line} ")
    return reloads, sum(1 for line in lines if " runtime_update " in f"{line} ")


def tasks_answer(lab: Routed, count: int) -> None:
    if count:
        wait_until(lambda: len(lab.tasks_seen(ROLLING, 4 * count)) == count, 20, 0.1,
                   f"{count} tasks answer")  # fmt: skip
    else:
        wait_until(lambda: lab.get(ROLLING)[0] == 503, 20, 0.1, "503 with no task")


def scenarios(lab: Routed, process: ControllerProcess, app, other, plan, container) -> dict:
    """The three scenarios; each with the reloads and runtime updates it caused."""
    row: dict[str, Any] = {}
    mark = counted(process.logs())

    def done(name: str, **more: Any) -> None:
        nonlocal mark
        now = counted(process.logs())
        row[name] = {"reloads": now[0] - mark[0], "runtime_updates": now[1] - mark[1], **more}
        mark = now

    held = websockets(lab.port, STEADY, plan["connections"])
    try:
        with peak_memory(lab.swarm.client.api, container) as memory:
            lab.set_version(app, 2)
            lab.swarm.wait_updated(app, timeout=90)
            wait_until(lambda: all("version=2" in lab.get(ROLLING)[1] for _ in range(9)), 20)
            time.sleep(2)
        done("rolling_update", connections_open=len(held), **memory)
    finally:
        for conn in held:
            conn.close()
    for replicas in plan["scale"]:
        lab.scale(app, replicas)
        tasks_answer(lab, replicas)
    done("scale", steps="3 -> " + " -> ".join(map(str, plan["scale"])))
    for change in range(1, plan["changes"] + 1):
        lab.swarm.update_service(other, _host(lab, f"r{change}.example.com"))
        lab.swarm.wait_http(lab.port, f"r{change}.example.com", contains="-other.1.", timeout=30)
    done("route_changes", changes=plan["changes"])
    return row


def _host(lab: Routed, host: str):
    def mutate(spec: dict) -> None:
        spec["Labels"][lab.label("hostname")] = host

    return mutate


def one_variant(variant: str, plan: dict[str, Any], logs: Path) -> dict[str, Any]:
    with namespace(f"reloads: {variant}") as swarm, tempfile.TemporaryDirectory() as folder:
        lab = routed(swarm, bed().docker_host)
        container = proxy_with_runtime(lab, folder)
        app = lab.versioned_app("rolled", ROLLING)
        lab.app("steady", replicas=1, hostname=STEADY, port="8080")
        other = lab.app(OTHER, hostname="r0.example.com", port="8080")
        runtime_dir = VARIANTS[variant]
        with ControllerProcess(
            bed().docker_host, lab.prefix, str(logs / f"reloads-{variant}.log"),
            INTERLOCK_RUNTIME_DIR=folder if runtime_dir is None else runtime_dir,
            PYTHONPATH=str(ROOT),
        ) as process:  # fmt: skip
            swarm.wait_http(lab.port, ROLLING, contains="version=1", timeout=60)
            swarm.wait_http(lab.port, "r0.example.com", contains="-other.1.", timeout=30)
            time.sleep(1)
            row = scenarios(lab, process, app, other, plan, container)
    for name, got in row.items():
        progress(f"reloads: {variant} {name}: {got}")
    return {"variant": variant, **row}


def run(quick: bool, logs: Path) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    return {"plan": plan, "rows": [one_variant(v, plan, logs) for v in VARIANTS]}
