"""Agents on a 3-node Swarm: every proxy task on every node reloaded in place, under load.

The controller and its agents run as services on the nodes (the image built from this checkout,
see ``agentbed``), with a global nginx and a global HAProxy proxy in signal mode side by side,
so each scenario runs once for both kinds. Load is wrk through every node's published port of
both proxies at once (6 ports, all on 127.0.0.1), keep-alive, no retries: each lost request
counts. The module holds the nodes alone (a drain moves every test's tasks) and deploys once;
each test makes its own backends.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from controller import acme, acmekeys
from tests.bed.clusterharness import ClusterTest, nodes_lock
from tests.bed.harness import put_file
from tests.bed.probes import http_get, wait_until
from tests.swarm.agentbed import (
    ALL,
    APP_PORT,
    KINDS,
    AgentEdge,
    Loads,
    controller_image,
    relabel,
    versioned_update_config,
)
from tests.swarm.test_runtime_api import serving_pids
from tests.unit.test_acme_inplace import self_signed

HOST = "steady.example.com"


@pytest.fixture(scope="module")
def edge(cluster) -> Iterator[AgentEdge]:
    """Controller, agents and both proxies on the nodes, with one routed backend everywhere.

    Deployed in the order that shows "no agent": proxies and controller first (the controller
    never writes into a container in agent mode), then the agents."""
    image = controller_image(cluster)
    with nodes_lock(cluster, exclusive=True):
        swarm = ClusterTest(cluster)
        e = AgentEdge(swarm, image)
        try:
            for kind in KINDS:
                e.deploy_proxy(kind)
            e.deploy_controller()
            e.app("steady", HOST)
            e.before_agents = wait_until(lambda: _rows_without_agent(e), 30, 0.5, "no agent")
            started = time.monotonic()
            e.deploy_agents()
            took = e.wait_everywhere(HOST, "task=", timeout=60)
            e.first_sync = time.monotonic() - started
            print(f"agents deployed; {HOST} routed on every node {took:.1f}s after")
            yield e
        except BaseException:
            print(f"--- controller ---\n{e.logs(e.controller)[-5000:]}")
            print(f"--- agents ---\n{e.logs(e.agents)[-5000:]}")
            raise
        finally:
            swarm.cleanup()
            e.remove_volumes()


def _rows_without_agent(e: AgentEdge) -> list[dict] | None:
    rows = e.task_rows()
    return rows if len(rows) == 6 and all(r["agent"] == "no agent" for r in rows) else None


NOTABLE = re.compile(r"proxy_reload.*haproxy|WARNING|ERROR|agent_started")


@pytest.fixture
def logs_on_failure(edge, request) -> Iterator[None]:
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        print(f"--- controller ---\n{edge.logs(edge.controller)[-6000:]}")
        agents = edge.logs(edge.agents, tail=2000)
        notable = [line for line in agents.splitlines() if NOTABLE.search(line)]
        print("--- agents: HAProxy reloads, warnings and errors ---\n" + "\n".join(notable[-300:]))
        print(f"--- agents ---\n{agents[-6000:]}")


def nodes_of(e: AgentEdge, port: int, host: str, requests: int = 12) -> set[str]:
    """Which nodes' backend tasks answered ``host`` through ``port``."""
    seen = set()
    for _ in range(requests):
        status, body = http_get(port, host)
        assert status == 200, (port, host, status, body)
        seen.add(body.split()[0].rpartition("@")[2])
    return seen


def proxy_ids(e: AgentEdge) -> dict[tuple[str, str], str]:
    return {(k, n): c for k in KINDS for n, c in e.proxy_containers(k).items()}


# -- convergence and status -------------------------------------------------------------------


def test_status_shows_no_agent_then_every_task_in_sync_with_its_report_age(edge, logs_on_failure):
    """Before any agent ran, every proxy task shows "no agent" (the controller wrote nothing
    into them); with agents, every task on every node serves the desired config, and the
    metrics count it per node."""
    before = edge.before_agents
    print(f"before the agents: {[(r['proxy'], r['node'], r['served']) for r in before]}")
    assert {r["served"] for r in before} == {"no agent"}
    rows = wait_until(
        lambda: (r := edge.task_rows()) and all(x["in_sync"] == "yes" for x in r) and r,
        30,
        0.5,
        "every task in sync",
    )
    for row in rows:
        print(row)
    kinds = Counter(r["proxy"].rpartition("-")[0].rpartition("-")[2] for r in rows)
    assert kinds == {"nginx": 3, "haproxy": 3}, rows
    assert {r["node"] for r in rows} == {"node1", "node2", "node3"}
    assert all(r["served"] == r["desired"] and "old" in r["agent"] for r in rows), rows
    print(
        f"first sync of 6 proxy tasks on 3 nodes after the agents started: {edge.first_sync:.1f}s"
    )
    code = (
        "import urllib.request;print(urllib.request.urlopen("
        "'http://127.0.0.1:9100/metrics').read().decode())"
    )
    text = edge.controller_container().exec_run(["python3", "-c", code]).output.decode()
    for node in ("node1", "node2", "node3"):
        assert f'interlock_agent_containers{{node="{node}",state="in_sync"}} 2.0' in text, node
        assert f'interlock_agent_connected{{node="{node}"}} 1.0' in text, node


# -- changes under load through every node ------------------------------------------------------


def test_twenty_route_changes_under_load_on_every_node_lose_nothing(edge, logs_on_failure):
    other = edge.app("other", "r0.example.com", replicas=1)
    edge.wait_everywhere("r0.example.com", "-other.", timeout=30)
    took = []
    with Loads(edge, HOST) as loads:
        for change in range(1, 21):
            began = time.monotonic()
            relabel(edge, other, f"r{change}.example.com")
            edge.wait_everywhere(f"r{change}.example.com", "-other.", timeout=15)
            took.append(time.monotonic() - began)
            edge.wait_everywhere(f"r{change - 1}.example.com", status=404, timeout=5)
        loads.stop()
    took.sort()
    print(f"change -> served by all 6 proxy tasks: p50 {took[9]:.2f}s, max {took[-1]:.2f}s")
    loads.check("20 route changes")
    other.remove()


def test_rolling_update_of_a_backend_on_every_node_under_load_loses_nothing(edge, logs_on_failure):
    app = edge.app("rolled", "rolled.example.com", update_config=versioned_update_config())
    edge.wait_everywhere("rolled.example.com", "version=1", timeout=30)

    def mutate(spec: dict) -> None:
        env = spec["TaskTemplate"]["ContainerSpec"]["Env"]
        spec["TaskTemplate"]["ContainerSpec"]["Env"] = [
            "VERSION=2" if v.startswith("VERSION=") else v for v in env
        ]

    with Loads(edge, "rolled.example.com") as loads:
        time.sleep(2)
        edge.swarm.update_service(app, mutate)
        edge.swarm.wait_updated(app, timeout=90)
        for _ in range(3):  # several rounds through every port: version 1 is gone everywhere
            edge.wait_everywhere("rolled.example.com", "version=2", timeout=20)
        loads.stop()
    loads.check("rolling update of a backend on 3 nodes")
    app.remove()


def test_scale_down_three_to_one_under_load_loses_nothing(edge, logs_on_failure):
    app = edge.app("scaled", "scaled.example.com", replicas=3)
    for _, _, port in edge.ports():
        wait_until(
            lambda p=port: len(nodes_of(edge, p, "scaled.example.com")) == 3,
            30,
            0.5,
            f"3 tasks serve through {port}",
        )

    def mutate(spec: dict) -> None:
        spec["Mode"] = {"Replicated": {"Replicas": 1}}

    with Loads(edge, "scaled.example.com") as loads:
        time.sleep(2)
        edge.swarm.update_service(app, mutate)
        edge.swarm.wait_running(app, replicas=1, timeout=60)
        for _, _, each in edge.ports():
            wait_until(
                lambda p=each: len(nodes_of(edge, p, "scaled.example.com")) == 1,
                20,
                0.2,
                f"one task serves through {each}",
            )
        time.sleep(3)  # past the stopped tasks' 2 s of grace before SIGTERM, under load
        loads.stop()
    loads.check("scale-down 3 -> 1")
    app.remove()


def haproxy_pids(e: AgentEdge) -> dict[str, set[str]]:
    """Node -> PIDs of its HAProxy proxy's processes (master-worker: a reload starts a new
    worker, so the set changes exactly when the proxy reloads)."""
    found = {}
    for node, container in e.proxy_containers("haproxy").items():
        client = e.swarm.cluster.client(int(node.removeprefix("node")))
        found[node] = serving_pids(client.api, container)
    return found


def newest_worker(e: AgentEdge) -> dict[str, int]:
    """Node -> the highest PID of its HAProxy proxy's master and workers. A reload forks a new
    worker, whose PID is higher than any before it, so this grows exactly when one happens.
    (The set of PIDs is no such sign here: under load a process older than the worker was once
    listed for a moment beside master and worker, on a node that did not reload.)"""
    return {node: max(map(int, pids)) for node, pids in haproxy_pids(e).items()}


def tasks_behind(e: AgentEdge, host: str, count: int) -> None:
    """Every HAProxy port answers from exactly ``count`` tasks, soon after the change."""
    for kind, _, port in e.ports():
        if kind == "haproxy":
            wait_until(lambda p=port: len(_tasks(p, host, 4 * count)) == count, 10, 0.1,
                       f"{count} tasks answer through {port}")  # fmt: skip


def _tasks(port: int, host: str, requests: int) -> set[str]:
    return {http_get(port, host)[1].split()[0] for _ in range(requests)}


def test_haproxy_takes_task_changes_through_its_runtime_api_on_every_node(edge, logs_on_failure):
    """A rolling update and a scale 3 -> 1 -> 3 -> 0 -> 2: no HAProxy process restarts on any
    node (0 reloads), nothing lost under load, each change routed within a pass or two; a host
    change still reloads, losing nothing; a runtime socket gone on one node falls back to a
    reload there only; status counts both per proxy task."""
    host, e = "runtime.example.com", edge
    app = e.app("runtime", host, replicas=3, update_config=versioned_update_config())
    tasks_behind(e, host, 3)
    before = newest_worker(e)

    def scale(replicas: int) -> None:
        def mutate(spec: dict) -> None:
            spec["Mode"] = {"Replicated": {"Replicas": replicas}}

        e.swarm.update_service(app, mutate)

    def version_two(spec: dict) -> None:
        env = spec["TaskTemplate"]["ContainerSpec"]["Env"]
        spec["TaskTemplate"]["ContainerSpec"]["Env"] = [
            "VERSION=2" if v.startswith("VERSION=") else v for v in env
        ]

    with Loads(e, host, kinds=("haproxy",)) as loads:
        time.sleep(1)
        e.swarm.update_service(app, version_two)
        e.swarm.wait_updated(app, timeout=90)
        for _ in range(3):
            e.wait_everywhere(host, "version=2", timeout=20)
        for replicas in (1, 3):
            scale(replicas)
            tasks_behind(e, host, replicas)
        time.sleep(3)  # past the stopped tasks' 2 s before SIGTERM, under load
        loads.stop()
    loads.check("haproxy runtime API: rolling update, scale 3 -> 1 -> 3")
    scale(0)
    e.wait_everywhere(host, status=503, timeout=15, nodes=ALL)
    scale(2)
    tasks_behind(e, host, 2)
    assert newest_worker(e) == before, "an address change reloaded HAProxy"
    rows = [r for r in e.task_rows() if "haproxy" in r["proxy"]]
    print("after the runtime changes:", [(r["node"], r["reloads"], r["runtime"]) for r in rows])
    assert all(r["runtime"] >= 8 for r in rows), rows

    with Loads(e, HOST, kinds=("haproxy",), seconds=30) as loads:  # a host: still a reload
        relabel(e, app, "runtime2.example.com")
        e.wait_everywhere("runtime2.example.com", "version=2", timeout=20)
        loads.stop()
    after_host = newest_worker(e)
    assert all(after_host[n] > before[n] for n in before), "a host change must reload"
    loads.check("haproxy: a host change")

    agent_task = e.swarm.tasks_by_node(e.agents)["node2"][0]["Status"]["ContainerStatus"]
    agent = e.swarm.cluster.client(2).containers.get(agent_task["ContainerID"])

    def move(into: str, out: str) -> None:
        code = f"import glob,os;[os.rename(p,p[:-len('{into}')]+'{out}') for p in glob.glob('/var/run/interlock/*{into}')]"  # noqa: E501
        agent.exec_run(["python3", "-c", code])

    def reloads() -> dict[str, int]:
        return {r["node"]: r["reloads"] for r in e.task_rows() if "haproxy" in r["proxy"]}

    counted_before = reloads()
    move(".sock", ".aside")  # node2's runtime socket is away: its next address change reloads
    scale(3)
    wait_until(lambda: newest_worker(e)["node2"] > after_host["node2"], 15, 0.2, "node2 reloads")
    now = newest_worker(e)
    assert now["node1"] == after_host["node1"] and now["node3"] == after_host["node3"], now
    tasks_behind(e, "runtime2.example.com", 3)

    def counted() -> dict | None:
        # Node 2 reloads for each pass that moved an address (one or two, as the tasks start);
        # the others count none.
        now = reloads()
        grew = {n: now[n] - counted_before[n] for n in now}
        return grew if grew["node2"] >= 1 and grew["node1"] == grew["node3"] == 0 else None

    grew = wait_until(counted, 15, 0.5, "status counts node2's reloads, and none elsewhere")
    print("reloads counted after the forced failure:", grew)
    settled = newest_worker(e)
    move(".aside", ".sock")  # back: the runtime API serves again, no reload anywhere
    scale(1)
    tasks_behind(e, "runtime2.example.com", 1)
    assert newest_worker(e) == settled
    app.remove()


# -- failures ---------------------------------------------------------------------------------


def test_killed_controller_proxies_keep_serving_and_the_next_pass_converges_every_node(
    edge, logs_on_failure
):
    """SIGKILL the controller under load and change a route while it is away: every proxy
    keeps serving (0 failed), the agents retry, and once Swarm has restarted it the change
    reaches every node; no proxy task restarts."""
    moving = edge.app("moving", "before.example.com", replicas=1)
    edge.wait_everywhere("before.example.com", "-moving.", timeout=30)
    proxies = proxy_ids(edge)
    with Loads(edge, HOST) as loads:
        time.sleep(1)
        killed = time.monotonic()
        edge.controller_container().kill()
        relabel(edge, moving, "after.example.com")
        time.sleep(1)
        assert edge.answers("before.example.com", "-moving."), "a proxy lost its config"
        took = edge.wait_everywhere("after.example.com", "-moving.", timeout=60)
        back = time.monotonic() - killed
        loads.stop()
    print(f"controller killed: the change made meanwhile served on every node {back:.1f}s later")
    loads.check("controller killed")
    assert took > 0
    assert proxy_ids(edge) == proxies, "a proxy task was restarted"
    assert "agent_retry" in edge.logs(edge.agents, tail=500), "the agents never retried"
    moving.remove()


def test_killed_agent_loses_nothing_and_its_node_converges_without_restarting_proxies(
    edge, logs_on_failure
):
    """SIGKILL node 2's agent under load and change a route: node 2's proxies keep serving
    (0 failed) what they served; the other nodes get the change at once; when Swarm restarts
    the agent, node 2 converges, and no proxy task anywhere was restarted."""
    moving = edge.app("wander", "one.example.com", replicas=1)
    edge.wait_everywhere("one.example.com", "-wander.", timeout=30)
    proxies = proxy_ids(edge)
    (task,) = edge.swarm.tasks_by_node(edge.agents)["node2"]
    container = edge.swarm.cluster.client(2).containers.get(
        task["Status"]["ContainerStatus"]["ContainerID"]
    )
    with Loads(edge, HOST) as loads:
        time.sleep(1)
        container.kill()
        killed = time.monotonic()
        relabel(edge, moving, "two.example.com")
        edge.wait_everywhere("two.example.com", "-wander.", timeout=15, nodes=(1, 3))
        others = time.monotonic() - killed
        stale = edge.answers("one.example.com", "-wander.", nodes=(2,))
        edge.wait_everywhere("two.example.com", "-wander.", timeout=60, nodes=(2,))
        node2 = time.monotonic() - killed
        loads.stop()
    print(
        f"agent on node2 killed: nodes 1 and 3 served the change after {others:.1f}s; node 2, "
        f"{'still on the old config then, ' if stale else ''}after {node2:.1f}s (agent back)"
    )
    loads.check("agent killed on node2")
    assert proxy_ids(edge) == proxies, "a proxy task was restarted"
    moving.remove()


def test_a_proxy_task_restarted_on_a_worker_gets_the_current_config_within_one_round(
    edge, logs_on_failure
):
    """Kill both proxies' containers on node 3: Swarm starts new tasks with the image's own
    config, and node 3's agent hands each the current one as soon as it starts."""
    client = edge.swarm.cluster.client(3)
    old = {kind: edge.proxy_containers(kind)["node3"] for kind in KINDS}
    for container in old.values():
        client.containers.get(container).kill()

    def new_containers() -> dict[str, str] | None:
        found = {kind: edge.proxy_containers(kind).get("node3") for kind in KINDS}
        return found if all(found[k] and found[k] != old[k] for k in KINDS) else None

    new = wait_until(new_containers, 60, 0.1, "new proxy tasks on node3")
    routed = {}
    for kind, container in new.items():
        started = client.api.inspect_container(container)["State"]["StartedAt"]
        port = edge.slots[kind].host_ports[3]
        began = time.monotonic()
        wait_until(
            lambda p=port: http_get(p, HOST, timeout=2)[1].startswith("task="),
            15,
            0.05,
            f"{kind} on node3 routes {HOST}",
        )
        routed[kind] = time.monotonic() - began
        print(
            f"{kind}: new task on node3 (started {started}) routed {routed[kind]:.2f}s after seen"
        )
    assert all(seconds < 5 for seconds in routed.values()), routed
    edge.wait_everywhere(HOST, "task=", timeout=10)


def _refuse_on_node2(edge: AgentEdge) -> dict[str, str]:
    """Make node 2's proxies refuse the next config, each in its own words. nginx really: the
    user it runs workers as when the config names none (nobody) is gone from the container's
    /etc/passwd, so ``nginx -t`` fails on getpwnam. HAProxy as a 2.4 build would: a stand-in
    for its binary that does not know ``option idle-close-on-response`` (new in 2.6); anything
    but a check runs the real binary."""
    client = edge.swarm.cluster.client(2)
    ids = {kind: edge.proxy_containers(kind)["node2"] for kind in KINDS}
    nginx = client.containers.get(ids["nginx"])
    assert nginx.exec_run(["sh", "-c", "cp /etc/passwd /etc/passwd.keep && "
                           "sed -i '/^nobody:/d' /etc/passwd"]).exit_code == 0  # fmt: skip
    haproxy = client.containers.get(ids["haproxy"])
    stand_in = (
        "#!/bin/sh\n"
        'if [ "$1" = -c ] && n=$(grep -n idle-close-on-response "$3" | head -1 | cut -d: -f1)'
        ' && [ -n "$n" ]; then\n'
        '  echo "[ALERT]    (1) : config : parsing [$3:$n] : unknown option '
        "'idle-close-on-response'.\" >&2\n"
        '  echo "[ALERT]    (1) : config : Error(s) found in configuration file : $3" >&2\n'
        '  exit 1\nfi\nexec /usr/sbin/haproxy.real "$@"\n'
    )
    put_file(haproxy, "/usr/sbin/haproxy.stand-in", stand_in, mode=0o755)
    moved = haproxy.exec_run(
        [
            "sh",
            "-c",
            "mv /usr/sbin/haproxy /usr/sbin/haproxy.real && "
            "mv /usr/sbin/haproxy.stand-in /usr/sbin/haproxy",
        ]
    )
    assert moved.exit_code == 0, moved.output
    return ids


def _restore_node2(edge: AgentEdge, ids: dict[str, str]) -> None:
    client = edge.swarm.cluster.client(2)
    client.containers.get(ids["nginx"]).exec_run(["mv", "/etc/passwd.keep", "/etc/passwd"])
    client.containers.get(ids["haproxy"]).exec_run(
        ["mv", "-f", "/usr/sbin/haproxy.real", "/usr/sbin/haproxy"]
    )


def _pids(edge: AgentEdge, container: str) -> set[str]:
    """The proxy's processes, not the shell the agent keeps in the container."""
    top = edge.swarm.cluster.client(2).api.top(container, ps_args="-o pid,comm")
    return {row[0] for row in top["Processes"] if row[-1] != "sh"}


def test_a_config_one_node_refuses_is_never_signalled_there_and_holds_back_no_other(
    edge, logs_on_failure
):
    """Node 2's proxies refuse the next config: they are not signalled (no new worker) and keep
    serving the old one; status says so per task in the proxy's own words; nodes 1 and 3 serve
    the change. Once node 2's proxies accept again, the next change reaches them too."""
    app = edge.app("picky", "a.example.com", replicas=1)
    edge.wait_everywhere("a.example.com", "-picky.", timeout=30)
    ids = _refuse_on_node2(edge)
    try:
        before = {kind: _pids(edge, c) for kind, c in ids.items()}
        with Loads(edge, HOST) as loads:
            relabel(edge, app, "b.example.com")
            edge.wait_everywhere("b.example.com", "-picky.", timeout=15, nodes=(1, 3))

            def refused() -> list[dict] | None:
                rows = [r for r in edge.task_rows() if r["node"] == "node2"]
                return rows if all(r["in_sync"] == "refused" for r in rows) else None

            rows = wait_until(refused, 20, 0.5, "node 2's tasks refused in status")
            assert edge.answers("a.example.com", "-picky.", nodes=(2,)), "node 2 lost its config"
            assert edge.answers("b.example.com", status=404, nodes=(2,))
            loads.stop()
        loads.check("a config refused on node2")
        for row in rows:
            print(f"status: {row['proxy']} on {row['node']}: {row['error']}")
        words = {r["proxy"].rpartition("-")[0].rpartition("-")[2]: r["error"] for r in rows}
        assert 'getpwnam("nobody") failed' in words["nginx"], words
        assert "unknown option 'idle-close-on-response'" in words["haproxy"], words
        for kind, container in ids.items():
            assert _pids(edge, container) <= before[kind], f"{kind} on node 2 was signalled"
        others = [r for r in edge.task_rows() if r["node"] != "node2"]
        assert all(r["in_sync"] == "yes" for r in others), others
    finally:
        _restore_node2(edge, ids)
    relabel(edge, app, "c.example.com")
    took = edge.wait_everywhere("c.example.com", "-picky.", timeout=20)
    print(f"after node 2's proxies accept again, the next change served everywhere in {took:.1f}s")
    app.remove()


# -- proxies of images that hold only their binary ---------------------------------------------

BINONLY_WORDS = {"nginx": "SSL_CTX_load_verify_locations", "haproxy": "unable to load @system-ca"}


def _binonly_pids(edge: AgentEdge, keys: dict[str, str]) -> dict[tuple[str, int], set[str]]:
    """Host PIDs of every binary-only proxy container, by (key, node index)."""
    found = {}
    for key in keys.values():
        for node, container in edge.proxy_containers(key).items():
            index = int(node.removeprefix("node"))
            top = edge.swarm.cluster.client(index).api.top(container, ps_args="-o pid")
            found[(key, index)] = {row[0] for row in top["Processes"]}
    return found


def test_binary_only_proxies_converge_through_their_agents(edge, logs_on_failure):
    """Global nginx and HAProxy proxies whose images hold only their binary and its libraries
    (no shell), beside the others: the agents route a change on every node; a config their
    binaries refuse (TLS to tasks verified against system CAs the images do not hold) is not
    signalled, the controller logs why in each binary's words and leaves the service out; a
    killed task's successor serves the current config."""
    images = edge.swarm.images
    keys = {"nginx": "nginx-binonly", "haproxy": "haproxy-binonly"}
    bare = {key: images.nginx_binonly if kind == "nginx" else images.haproxy_binonly
            for kind, key in keys.items()}  # fmt: skip
    try:
        for kind, key in keys.items():
            edge.deploy_proxy(kind, image=bare[key], key=key)
        edge.wait_everywhere(HOST, "task=", timeout=30)
        app = edge.app("bare", "bare-a.example.com", replicas=1)
        edge.wait_everywhere("bare-a.example.com", "-bare.", timeout=30)
        relabel(edge, app, "bare-b.example.com")
        took = edge.wait_everywhere("bare-b.example.com", "-bare.", timeout=15)
        print(f"binary-only proxies: a route change served on every node in {took:.2f}s")
        _binonly_refuses(edge, keys)
        client = edge.swarm.cluster.client(3)
        for key in keys.values():
            client.containers.get(edge.proxy_containers(key)["node3"]).kill()
        took = edge.wait_everywhere("bare-b.example.com", "-bare.", timeout=30, nodes=(3,))
        print(f"binary-only proxies killed on node3: their new tasks routed in {took:.2f}s")
        app.remove()
    finally:
        for key in keys.values():
            edge.slots.pop(key, None)
            service = edge.proxies.pop(key, None)
            if service is not None:
                service.remove()


def _binonly_refuses(edge: AgentEdge, keys: dict[str, str]) -> None:
    """A running service gets, in one label update, a route these binaries refuse: the config
    with it is refused on every node and not signalled; the controller's check stage then leaves
    the service out, which is the config served already: no reload at all is expected."""
    bad = edge.app("cafile", "cafile.example.com", replicas=1, labels={})  # not routed yet
    names = {edge.proxies[key].name for key in keys.values()}

    def in_sync(*states: str) -> list[dict] | None:
        found = [r for r in edge.task_rows() if r["proxy"] in names]
        wanted = states or ("yes",)
        return found if len(found) == 6 and all(r["in_sync"] in wanted for r in found) else None

    wait_until(in_sync, 30, 0.5, "the binary-only proxies in sync")
    before = _binonly_pids(edge, keys)
    values = {"hostname": "cafile.example.com", "port": "8080", "ssl_backend": "true",
              "ssl_backend_tls_verify": "true"}  # fmt: skip
    edge.swarm.update_service(
        bad, lambda spec: spec["Labels"].update({edge.label(k): v for k, v in values.items()})
    )

    def said() -> str | None:
        logs = edge.logs(edge.controller, tail=2000)
        return logs if all(words in logs for words in BINONLY_WORDS.values()) else None

    logs = wait_until(said, 30, 0.5, "both binaries' refusals in the controller's log")
    assert "agent_config_refused" in logs
    time.sleep(2)  # the pass that leaves the service out: it wants what is served, no push
    # `interlock status` renders without the check stage: it may show the refusal, words and all
    rows = wait_until(lambda: in_sync("yes", "refused"), 30, 0.5, "no task left in between")
    assert all(r["in_sync"] == "yes" or "refused the config" in r["error"] for r in rows)
    for where, now in _binonly_pids(edge, keys).items():
        assert now <= before[where], f"{where} was signalled"  # old workers may exit meanwhile
    assert edge.answers("bare-b.example.com", "-bare."), "a proxy lost its config"
    bad.remove()


# -- a drain (last: it moves every global task on node 3) ---------------------------------------


def test_draining_a_node_with_backend_tasks_under_load_loses_nothing(edge, logs_on_failure):
    """Drain node 3 under load through nodes 1 and 2 (Swarm stops node 3's own proxy tasks: a
    drained node serves nothing): its backend task leaves every proxy's pool before it stops;
    0 failed. Then node 3 comes back, and its new proxy tasks get the current config."""
    app = edge.app("drained", "drained.example.com")
    for _, _, port in edge.ports((1, 2)):
        wait_until(
            lambda p=port: nodes_of(edge, p, "drained.example.com") == {"node1", "node2", "node3"},
            20,
            0.5,
            f"all three tasks serve through {port}",
        )
    try:
        with Loads(edge, "drained.example.com", nodes=(1, 2)) as loads:
            time.sleep(2)
            edge.swarm.set_availability(3, "drain")
            edge.swarm.expected[app.id] = 2
            edge.swarm.wait_running(app, timeout=60)
            wait_until(
                lambda: not edge.swarm.containers_on(3, all_states=False), 60, 0.5, "node3 empty"
            )
            for _, _, port in edge.ports((1, 2)):
                assert nodes_of(edge, port, "drained.example.com") == {"node1", "node2"}
            loads.stop()
        loads.check("drain of node3")
    finally:
        edge.swarm.set_availability(3, "active")
    for service in (*edge.proxies.values(), edge.agents, app):
        edge.swarm.expected[service.id] = 3
        edge.swarm.wait_running(service, timeout=90)
    took = edge.wait_everywhere("drained.example.com", "task=", timeout=60)
    print(f"node 3 active again: its new proxy tasks routed within {took:.1f}s")


# -- ACME certificates in place -----------------------------------------------------------------


def test_an_acme_certificate_reaches_every_node_in_place_without_a_restart(edge, logs_on_failure):
    """An ACME certificate made as if issued (its secrets and its pair record with the key
    sealed by the controller's account key: no CA is reachable from the nodes) is written by
    each node's agent beside both proxies' configs, the key mode 0400 and the proxy user's,
    and no proxy task restarts: the same in-place step as signal mode, through the board."""
    host, before = "acme.example.com", proxy_ids(edge)
    make_issued(edge, host, "20261126000000")
    labels = {edge.label(k): v for k, v in (("hostname", host), ("port", APP_PORT))}
    edge.app("acmeweb", host, replicas=1, labels={**labels, edge.label("acme"): "true"})
    found = wait_until(lambda: key_files_everywhere(edge), 60, 0.5, "the key on every node")
    print(f"ACME key files on every proxy of every node: {found}")
    edge.wait_everywhere(host, "-acmeweb.", timeout=30)
    assert proxy_ids(edge) == before
    assert {f.split()[1] for k, f in found.items() if k[0] == "nginx"} == {"0"}
    assert {f.split()[1] for k, f in found.items() if k[0] == "haproxy"} == {"99"}
    assert all(f.split()[0] == "400" for f in found.values())


def make_issued(edge: AgentEdge, host: str, version: str) -> None:
    """The certificate and key secrets and the pair record the controller's worker writes."""
    chain, key = self_signed(host)
    cert_name, key_name = acme.secret_names(edge.prefix, host, version)
    expires = str(int(time.time()) + 60 * 86_400)  # not due: the controller orders nothing
    own = len(edge.prefix) + 1
    edge.swarm.secret(
        cert_name[own:], chain, acme.labels_for(edge.prefix, "cert", host, version, expires=expires)
    )
    edge.swarm.secret(key_name[own:], key, acme.labels_for(edge.prefix, "key", host, version))
    box = acmekeys.seal(acmekeys.sealing_key(edge.account_pem), key, key_name)
    pair = {"host": host, "version": version, "cert_secret": cert_name, "key_secret": key_name}
    data = json.dumps({**pair, "chain": chain, "key_box": box})
    name = acme.record_name(edge.prefix, "pair", host, version)
    edge.swarm.config(name[own:], data, acme.labels_for(edge.prefix, "pair", host, version))


def key_files_everywhere(edge: AgentEdge) -> dict[tuple[str, str], str] | None:
    """(kind, node) -> "mode uid" of the ACME key beside that proxy's config, when every proxy
    on every node has one."""
    found = {}
    for kind in KINDS:
        for node, container in edge.proxy_containers(kind).items():
            client = edge.swarm.cluster.client(int(node.removeprefix("node")))
            script = "stat -c '%a %u' /etc/nginx/*.acme-*.key /usr/local/etc/haproxy/*.acme-*.key"
            result = client.containers.get(container).exec_run(
                ["sh", "-c", f"{script} 2>/dev/null"]
            )
            lines = result.output.decode().split()
            if len(lines) != 2:
                return None
            found[(kind, node)] = " ".join(lines)
    return found if len(found) == 6 else None
