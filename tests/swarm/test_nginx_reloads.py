"""nginx keeps reloading (stock nginx has no endpoint API), so it must reload at most once per
pass, and the workers a reload retires must not linger: after
``INTERLOCK_NGINX_WORKER_SHUTDOWN_TIMEOUT`` an old worker closes what it still holds and exits.

One scenario under a real `interlock run` (signal mode): a WebSocket held open through nginx,
then 20 route changes within 10 s. nginx's processes are counted from the host (`docker top`,
polled), nothing inside the container: each reload starts a new generation of workers, so new
worker PIDs count the reloads nginx really did; the controller's log says which pass pushed.
"""

from __future__ import annotations

import math
import re
import socket
import threading
import time
from collections import Counter

from tests.swarm.controlled import routed
from tests.swarm.test_routing_features import ws_echo, ws_open

HOST = "ws.example.com"
SHUTDOWN = 3.0  # seconds: short, so the test sees old workers go
CHANGES, WITHIN = 20, 10.0
POLL = 0.05


class Workers(threading.Thread):
    """Every nginx worker PID of a container seen while running, with first and last sight."""

    def __init__(self, api, container: str) -> None:
        super().__init__(daemon=True)
        self.api, self.container = api, container
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.current: set[str] = set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            rows = self.api.top(self.container, ps_args="-o pid,args")["Processes"]
            now = time.monotonic()
            self.current = {pid for pid, args in rows if "worker process" in args}
            for pid in self.current:
                self.first.setdefault(pid, now)
                self.last[pid] = now
            self.done.wait(POLL)

    def serving(self) -> set[str]:
        """Workers of the current generation (not shutting down)."""
        rows = self.api.top(self.container, ps_args="-o pid,args")["Processes"]
        return {pid for pid, args in rows if args.endswith("worker process")}


def closed_at(sock: socket.socket, into: list[float]) -> None:
    """Block until the peer closes ``sock``; note when."""
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass
    into.append(time.monotonic())


def pushes_per_pass(log: str, container: str) -> Counter:
    """How many in-place pushes to ``container`` each pass made (from the controller's log)."""
    pattern = rf"action_done +\[pass (\w+)\] action=PushConfig .*container={container[:12]}"
    return Counter(re.findall(pattern, log))


def test_a_burst_reloads_at_most_once_a_pass_and_old_workers_go_after_the_timeout(
    swarm, bed, tmp_path
):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service("nginx", mode="signal")
    lab.app("ws", hostname=HOST, port="8080")
    other = lab.app("other", hostname="r0.example.com", port="8080")
    env = {"INTERLOCK_NGINX_WORKER_SHUTDOWN_TIMEOUT": str(SHUTDOWN), "INTERLOCK_LOG_LEVEL": "DEBUG"}
    with lab.run(str(tmp_path / "controller.log"), **env) as controller:
        swarm.wait_http(lab.port, "r0.example.com", contains="-other.1.", timeout=30)
        (container,) = [c.id for c in swarm.task_containers(proxy)]
        workers = Workers(swarm.client.api, container)
        workers.start()
        time.sleep(1)
        generation = len(workers.serving())
        before = set(workers.first)
        sock = ws_open(lab.port, HOST)
        assert "-ws.1." in ws_echo(sock, "hello")
        sock.settimeout(WITHIN + SHUTDOWN + 10)
        closed: list[float] = []
        threading.Thread(target=closed_at, args=(sock, closed), daemon=True).start()
        began = time.monotonic()
        for change in range(1, CHANGES + 1):
            swarm.update_service(other, relabel(lab.label("hostname"), f"r{change}.example.com"))
            time.sleep(max(0.0, began + change * WITHIN / CHANGES - time.monotonic()))
        swarm.wait_http(lab.port, f"r{CHANGES}.example.com", contains="-other.1.", timeout=10)
        time.sleep(SHUTDOWN + 1)  # the last retired generation goes
        workers.done.set()
        workers.join(5)
        log = controller.logs()
    sock.close()
    new = set(workers.first) - before
    reloads = math.ceil(len(new) / generation)
    per_pass = pushes_per_pass(log, container)
    passes = log.count("pass_done")
    first_reload = min(workers.first[pid] for pid in new)
    cut = closed[0] - first_reload if closed else math.inf
    print(
        f"{CHANGES} changes in {WITHIN:.0f} s: {passes} passes, {len(per_pass)} of them reloaded "
        f"nginx; nginx started {len(new)} workers ({generation} a reload: {reloads} reloads); "
        f"the WebSocket's old worker closed it {cut:.2f}s after the first reload (timeout "
        f"{SHUTDOWN:.0f}s); workers left at the end: {len(workers.current)}"
    )
    assert max(per_pass.values()) == 1, f"a pass reloaded nginx more than once: {per_pass}"
    assert reloads <= len(per_pass), "nginx reloaded more often than passes pushed to it"
    assert SHUTDOWN - 0.5 <= cut <= SHUTDOWN + 3, "the old worker did not close it on time"
    assert all(workers.last[pid] < first_reload + SHUTDOWN + 2 for pid in before)
    assert len(workers.current) == generation, "old workers are still there"


def relabel(label: str, value: str):
    def mutate(spec: dict) -> None:
        spec["Labels"][label] = value

    return mutate
