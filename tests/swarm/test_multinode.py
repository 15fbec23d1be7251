"""The controller on a 3-node Swarm (manager + 2 workers), through real nginx and real HAProxy.

Each test runs one global nginx proxy and one global HAProxy proxy side by side (rolling mode,
published in host mode on every node they run on), so each slow scenario runs once for both.
Backends are global too, one task per node, each answering with the node it runs on
(``TASK_NAME={{.Task.Name}}@{{.Node.Hostname}}``), so a response says which node served it.
Requests go only to 127.0.0.1: node i's published port of a proxy is its own host port.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from docker.models.services import Service

from tests.bed.clusterharness import ClusterTest, Slot, unleased_test_ids
from tests.bed.probes import http_get, wait_until
from tests.swarm.controlled import ControllerProcess, Routed, routed, run_cli

KINDS = ("nginx", "haproxy")
HOST = "app.example.com"
OTHER = "other.example.com"
APP_PORT = "8080"
STOP_GRACE = 10_000_000_000  # ns: what the README asks of routed services


@dataclass
class Edge:
    """A test's controller, overlay network and global proxies (one per kind)."""

    swarm: ClusterTest
    lab: Routed
    proxies: dict[str, Service] = field(default_factory=dict)
    slots: dict[str, Slot] = field(default_factory=dict)
    placed: dict[str, tuple[int, ...]] = field(default_factory=dict)  # kind -> proxy's nodes

    def proxy(self, kind: str, nodes: tuple[int, ...] | None = None) -> Service:
        """A global proxy of the bed's image for ``kind`` on ``nodes`` (default all), on its own
        port slot; rolling mode, no update config of its own (the controller sets one)."""
        image = self.swarm.images.nginx if kind == "nginx" else self.swarm.images.haproxy
        self.slots[kind] = self.swarm.slot()
        self.placed[kind] = nodes or tuple(self.swarm.cluster.config.indexes)
        self.proxies[kind] = self.swarm.global_service(
            f"{kind}-proxy",
            image,
            nodes=nodes,
            slot=self.slots[kind],
            labels={self.lab.label("ext.name"): kind, self.lab.label("ext.mode"): "rolling"},
            networks=[self.lab.network.name],
        )
        return self.proxies[kind]

    def app(self, suffix: str, host: str, nodes: tuple[int, ...] | None = None) -> Service:
        """A global backend routed to ``host``, one task per node, naming its node."""
        return self.swarm.global_service(
            suffix,
            self.swarm.images.backend,
            nodes=nodes,
            networks=[self.lab.network.name],
            labels={self.lab.label("hostname"): host, self.lab.label("port"): APP_PORT},
            env=["TASK_NAME={{.Task.Name}}@{{.Node.Hostname}}"],
            stop_grace_period=STOP_GRACE,
        )

    def converge(self, timeout: float = 240.0):
        """Controller passes (in this process, on the manager's engine) until one has nothing to
        do, waiting after each for every proxy's rolling update to finish on every node."""

        def settled():
            result = self.lab.controller.reconciler.run_pass()
            assert not result.errors, result.errors
            for proxy in self.proxies.values():
                self.swarm.wait_updated(proxy, timeout=timeout)
            return result if not result.actions else None

        return wait_until(settled, timeout, 0.2, "a pass with nothing to do")

    def ports(self) -> list[tuple[str, int, int]]:
        """(kind, node index, host port) of every proxy on every node it runs on."""
        return [
            (kind, i, self.slots[kind].host_ports[i])
            for kind, nodes in self.placed.items()
            for i in nodes
        ]


def edge(swarm: ClusterTest, **settings) -> Edge:
    return Edge(swarm, routed(swarm, swarm.cluster.manager.docker_host, **settings))


def served_by(port: int, host: str, requests: int = 30) -> Counter:
    """Which nodes' tasks answered ``requests`` fresh requests for ``host`` through 127.0.0.1:port
    (every answer must be a 200 from a backend task)."""
    seen: Counter = Counter()
    for _ in range(requests):
        status, body = http_get(port, host)
        assert status == 200 and body.startswith("task="), (port, host, status, body)
        seen[body.split()[0].rpartition("@")[2]] += 1
    return seen


def test_each_node_routes_by_host_to_tasks_on_every_node(cluster_swarm):
    """Through each node's own published port, both proxies reach the backend's tasks on the two
    other nodes too (cross-node overlay traffic), and route by Host as on one node."""
    started = time.monotonic()
    e = edge(cluster_swarm)
    for kind in KINDS:
        e.proxy(kind)
    e.app("app", HOST)
    e.app("other", OTHER, nodes=(3,))
    e.converge()
    for proxy in e.proxies.values():
        proxy.reload()
        assert proxy.attrs["Spec"]["UpdateConfig"]["Order"] == "stop-first"  # host-mode ports

    every = {n.hostname for n in cluster_swarm.cluster.nodes}
    for kind, i, port in e.ports():
        seen = served_by(port, HOST)
        print(f"{kind} via node{i} (127.0.0.1:{port}): {HOST} served by {dict(seen)}")
        assert set(seen) == every, (kind, i, seen)
        assert set(served_by(port, OTHER, requests=5)) == {"node3"}, (kind, i)
        assert http_get(port, "unknown.example.com")[0] == 404, (kind, i)
    print(f"converged and checked in {time.monotonic() - started:.1f}s")


def test_draining_a_node_takes_its_tasks_out_of_every_proxy(cluster_swarm_exclusive):
    """Drain node 3, which runs a backend task but no proxy: its task leaves the configuration of
    every proxy task (nginx and HAProxy on nodes 1 and 2), and the host keeps answering through
    both other nodes' tasks."""
    swarm = cluster_swarm_exclusive
    e = edge(swarm)
    for kind in KINDS:
        e.proxy(kind, nodes=(1, 2))
    app = e.app("app", HOST)
    e.converge()
    drained = swarm.tasks_by_node(app)["node3"][0]
    address = drained["NetworksAttachments"]
    (drained_ip,) = [
        a["Addresses"][0].split("/")[0]
        for a in address
        if a["Network"]["Spec"]["Name"] == e.lab.network.name
    ]
    for kind, i, port in e.ports():
        assert "node3" in served_by(port, HOST), (kind, i)

    groups: dict[str, list[int]] = {}
    for kind, _, port in e.ports():
        groups.setdefault(kind, []).append(port)
    probe = Prober(groups, HOST)
    with probe:
        swarm.set_availability(3, "drain")
        swarm.expected[app.id] = 2
        swarm.wait_running(app, timeout=60)
        result = e.converge()
    print(f"while draining and rolling the proxies: {probe.summary()}")
    # The host kept answering: in every round, each proxy answered a 200 through node 1 or node 2.
    # (Single tries do fail: in rolling mode each proxy task restarts, one node at a time, and
    # until it has, it still sends requests to the drained task, which stops after 2 s.)
    assert probe.rounds and not probe.unanswered, probe.summary()

    for proxy in e.proxies.values():
        text = result.rendered[proxy.name].text
        assert drained_ip not in text, (proxy.name, drained_ip)
        assert len(swarm.tasks(proxy)) == 2
    # What each proxy task on nodes 1 and 2 reads from its own file system: the drained task is
    # gone from every pool (traffic alone could not tell: both proxies retry a dead address).
    paths = {p.name: mounted_path(p) for p in e.proxies.values()}
    checked = 0
    for i in (1, 2):
        for container in swarm.containers_on(i, all_states=False):
            service = container.labels.get("com.docker.swarm.service.name", "")
            if service in paths:
                served = container.exec_run(["cat", paths[service]]).output.decode()
                assert "8080" in served and drained_ip not in served, (container.name, i)
                checked += 1
    assert checked == 4, checked  # nginx and HAProxy, on nodes 1 and 2

    wait_until(lambda: not swarm.containers_on(3, all_states=False), 60, 0.5, "node3 empty")
    for kind, i, port in e.ports():
        seen = served_by(port, HOST)
        print(f"{kind} via node{i} after the drain: {dict(seen)}")
        assert set(seen) == {"node1", "node2"}, (kind, i, seen)


def mounted_path(proxy: Service) -> str:
    """Where the proxy service mounts the controller's config (its only config)."""
    proxy.reload()
    (ref,) = proxy.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"]
    return str(ref["File"]["Name"])


def test_the_controller_on_the_manager_converges_proxies_on_every_node(cluster_swarm, tmp_path):
    """`interlock run` on the host against node 1's engine converges the proxies on all three
    nodes (rolling mode), follows a new route everywhere, and `interlock status` shows each proxy
    in sync on all its tasks; `interlock once` then has nothing to do."""
    swarm = cluster_swarm
    manager_host = swarm.cluster.manager.docker_host
    e = edge(swarm)
    for kind in KINDS:
        e.proxy(kind)
    e.app("app", HOST)
    every = {n.hostname for n in swarm.cluster.nodes}

    def status_rows() -> dict[str, dict]:
        done = run_cli(manager_host, e.lab.prefix, "status", "--json")
        assert done.returncode == 0, done.stderr
        try:
            return {row["proxy"]: row for row in json.loads(done.stdout)["proxies"]}
        except json.JSONDecodeError as err:  # retrying would only hide it until the timeout
            shown = done.stdout[:300]
            raise NotJSON(f"`interlock status --json` printed no JSON: {shown!r}") from err

    def in_sync() -> dict[str, dict] | None:
        rows = status_rows()
        good = all(
            r["mode"] == "rolling" and r["tasks_in_sync"] == "3/3" and r["deployed"] == r["desired"]
            for r in rows.values()
        )
        return rows if good and len(rows) == len(KINDS) else None

    def everywhere(host: str) -> bool:
        return all(set(served_by(port, host)) == every for _, _, port in e.ports())

    status_rows()  # the format, before any waiting
    with ControllerProcess(manager_host, e.lab.prefix, str(tmp_path / "controller.log")):
        started = time.monotonic()
        wait_until(lambda: everywhere(HOST), 240, 1.0, f"{HOST} served on every node")
        first = wait_until(in_sync, 120, 1.0, "every proxy in sync on 3/3 tasks")
        print(f"first convergence on 3 nodes: {time.monotonic() - started:.1f}s; {first}")

        started = time.monotonic()
        e.app("other", OTHER)
        wait_until(lambda: everywhere(OTHER), 240, 1.0, f"{OTHER} served on every node")
        second = wait_until(in_sync, 120, 1.0, "every proxy in sync again")
        print(f"new route served on 3 nodes: {time.monotonic() - started:.1f}s")
        for name, row in second.items():
            assert row["desired"] != first[name]["desired"], name
        assert everywhere(HOST)

    once = run_cli(manager_host, e.lab.prefix, "once")
    assert once.returncode == 0 and "0 action(s)" in once.stdout, once.stdout + once.stderr
    table = run_cli(manager_host, e.lab.prefix, "status")
    print(table.stdout)
    for proxy in e.proxies.values():
        assert proxy.name in table.stdout


class NotJSON(AssertionError):
    """`interlock status --json` printed something else than JSON."""


# Above the proxies' 5 s connect timeout to backends: a proxy that still names a task whose
# container is gone waits that long (its overlay address no longer answers at all, not even with
# a refusal) before it tries the next backend; that is a slow answer, not a lost one.
TRY_TIMEOUT = 8.0


class Prober:
    """Rounds of fresh requests in a background thread while a block runs (bounded: at most 10
    rounds a second, ends with the block or after 300 s). In each round, for each group of ports
    (one proxy kind, one port per node), the ports are tried in turn, as a client or a load
    balancer in front of several edge nodes would, until one answers 200; a round in which none
    does is ``unanswered``. Every failed try is counted by port and error."""

    def __init__(self, groups: dict[str, list[int]], host: str) -> None:
        self.groups, self.host = groups, host
        self.rounds, self.ok, self.slowest = 0, 0, 0.0
        self.unanswered: Counter = Counter()
        self.failed: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _try(self, port: int) -> bool:
        started = time.monotonic()
        try:
            status, _ = http_get(port, self.host, timeout=TRY_TIMEOUT)
        except OSError as err:
            self.failed[f"{port}:{type(err).__name__}"] += 1
            return False
        self.slowest = max(self.slowest, time.monotonic() - started)
        if status != 200:
            self.failed[f"{port}:{status}"] += 1
        return status == 200

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while not self._stop.is_set() and time.monotonic() < deadline:
            for name, ports in self.groups.items():
                start = self.rounds % len(ports)  # spread the first tries over the nodes
                if any(self._try(port) for port in ports[start:] + ports[:start]):
                    self.ok += 1
                else:
                    self.unanswered[name] += 1
            self.rounds += 1
            time.sleep(0.1)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def summary(self) -> str:
        return (
            f"{self.rounds} rounds, {self.ok} answered, unanswered {dict(self.unanswered)}; "
            f"{sum(self.failed.values())} failed tries {dict(self.failed)}; "
            f"slowest answer {self.slowest:.1f}s"
        )


def test_a_slot_nobody_leases_makes_its_test_a_leftover_however_new(cluster_swarm):
    """The bed's clean-up finds a dead test process's services by the slot lease it no longer
    holds, not only by age: the nodes re-create a leftover's task containers when they restart,
    and a leftover looked new again (it kept a slot and its CPU until removed by hand)."""
    slot = cluster_swarm.slot()
    cluster_swarm.global_service("leased", cluster_swarm.images.backend, nodes=(1,), slot=slot)
    assert cluster_swarm.id not in unleased_test_ids(cluster_swarm.cluster)
    cluster_swarm.release_slots()  # as when its process dies: the lease goes, not the rest
    assert cluster_swarm.id in unleased_test_ids(cluster_swarm.cluster)
