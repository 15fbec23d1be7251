"""`interlock top` in a real terminal (tmux, on a server socket of this test's own) while load
runs through real nginx and real HAProxy on the Swarm: the routed service's row shows a request
rate, no errors and a p95, the route without a task shows 100 % 5xx, both proxies show traffic,
and the figures move from one refresh to the next. Load is bounded in requests and time and goes
to 127.0.0.1 only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.bed.probes import http_get, wait_until
from tests.swarm.controlled import routed
from tests.swarm.test_accesslog import converge, proxies

REPO = Path(__file__).resolve().parents[2]
HOST, EMPTY = "top.example.com", "gone.example.com"
LOAD_SECONDS = 15.0
LOAD_REQUESTS = 4000  # at most, over every load thread


class Load:
    """Requests through every proxy from a few threads, until told or out of budget."""

    def __init__(self, ports: list[int]) -> None:
        self.ports, self.stop = ports, threading.Event()
        self.sent, self.statuses = 0, {}
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._loop, args=(port, host), daemon=True)
            for port in ports
            for host in (HOST, HOST, EMPTY)
        ]

    def _loop(self, port: int, host: str) -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        while not self.stop.is_set() and time.monotonic() < deadline:
            with self.lock:
                if self.sent >= LOAD_REQUESTS:
                    return
                self.sent += 1
            try:
                status = http_get(port, host, "/load", timeout=5)[0]
            except OSError:
                status = 0
            with self.lock:
                self.statuses[(host, status)] = self.statuses.get((host, status), 0) + 1
            if host == EMPTY:
                time.sleep(0.05)  # errors are a share, not the bulk

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


class Terminal:
    """A tmux server of this test's own running one command in a 180x50 window."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.tmux = [shutil.which("tmux") or "/usr/bin/tmux", "-L", name]
        self.command, self.env = command, env

    def __enter__(self) -> Terminal:
        subprocess.run(
            [*self.tmux, "-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", "180",
             "-y", "50", "-c", str(REPO), " ".join(self.command)],
            env=self.env, check=True, timeout=30,
        )  # fmt: skip
        return self

    def screen(self) -> str:
        return subprocess.run(
            [*self.tmux, "capture-pane", "-p", "-t", "top"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            print(f"--- terminal ---\n{self.screen()}")
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, timeout=30)


def row(screen: str, first: str) -> list[str] | None:
    """The columns of the table row that starts with ``first``."""
    for line in screen.splitlines():
        if line.split()[:1] == [first]:
            return line.split()
    return None


def test_top_shows_live_route_figures_in_a_terminal_under_load(swarm, bed):
    lab = routed(swarm, bed.docker_host)
    edges = proxies(lab)
    app = lab.app("web", replicas=2, hostname=HOST, port="8080")
    empty = lab.app("gone", replicas=0, hostname=EMPTY, port="8080")
    converge(lab, edges)
    for edge in edges:
        swarm.wait_http(edge.port, HOST, contains=f"task={app.name}.", timeout=60)
    env = {
        **os.environ,
        "DOCKER_HOST": bed.docker_host,
        "INTERLOCK_LABEL_PREFIX": swarm.id,
        "PYTHONPATH": str(REPO),
        "TERM": "xterm",
    }
    command = [sys.executable, "-m", "controller.cli", "top", "--interval", "1", "--window", "8"]
    with Terminal(f"interlock-{swarm.id}", command, env) as terminal:
        wait_until(lambda: "PROXY" in terminal.screen(), 30, 0.5, "top's first view")
        with Load([edge.port for edge in edges]) as load:

            def live() -> tuple[str, list[str]] | None:
                screen = terminal.screen()
                web, gone = row(screen, app.name), row(screen, empty.name)
                engines = [row(screen, edge.service.name) for edge in edges]
                ready = (
                    web
                    and gone
                    and float(web[1]) >= 5  # requests per second
                    and web[5].isdigit()  # p95
                    and float(web[3]) == 0.0  # no 5xx
                    and float(gone[3]) == 100.0
                    and all(e and float(e[2]) > 0 for e in engines)
                )
                return (screen, web) if ready else None

            first, web_then = wait_until(live, 30, 0.5, "live figures for both routes")
            time.sleep(2.5)  # two refreshes later the figures have moved
            second, web_now = wait_until(live, 10, 0.5, "live figures, later")
        sent, statuses = load.sent, dict(load.statuses)
    print(f"load: {sent} requests, {statuses}")
    print(first)
    print(second)
    assert web_now[7] != web_then[7] or web_now[1] != web_then[1], (web_then, web_now)
    assert set(web_now[8].split(",")) == {edge.service.name for edge in edges}
    assert statuses.get((HOST, 200), 0) > 100 and statuses.get((EMPTY, 503), 0) > 10
    assert first.splitlines()[0].startswith("interlock top")
