"""Part: the 3-node Swarm, agent mode beside rolling mode (the multi-node bed of tests.bed).

Each mode gets one namespace: the controller as a service on the manager (the image built from
this checkout), a global nginx and a global HAProxy proxy on every node, each on its own port
slot (node i answers on its own 127.0.0.1 port), and a global backend. In agent mode the
agents run on every node and the proxies are in signal mode; in rolling mode there are no
agents and the controller mounts a new Docker config into the proxies on every change.

- ``latency``: N trials, each a new routed service (1 replica) then its removal; a change is
  routable when *every* proxy on *every* node (6 ports) answers accordingly, polled on fresh
  connections by ``bench.latency.poll``. ``create`` runs from max(the create call returned,
  the task running by Swarm's clock) to the last port answering from the task; ``remove`` from
  the call returning to the last port answering 404.
- ``cpu``: for each removal, the CPU it cost the machine by part (``bench.cgroups``: each
  service's containers, the nodes' engines, what is outside the nodes), and for comparison what
  this bench's polling alone costs a second.
- ``load``: wrk through all 6 ports at once (keep-alive, no retries) during route changes of
  another service (each waited for on every port) and, separately, a rolling update of the
  global backend (one task per node, stop-first, 1 s apart): requests and failures.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import cgroups, progress
from bench.lab import swarm_time
from bench.latency import percentile
from bench.latency import poll as poll_port
from tests.bed.cluster import ClusterConfig, ensure_cluster
from tests.bed.clusterharness import ClusterTest, nodes_lock
from tests.bed.probes import wait_until
from tests.swarm.agentbed import (
    ALL,
    KINDS,
    AgentEdge,
    Loads,
    controller_image,
    relabel,
    versioned_update_config,
)

MODES = ("agents", "rolling")
TIMEOUT = {"agents": 30.0, "rolling": 180.0}
STEADY = "steady.example.com"
FULL = {"trials": 20, "changes": {"agents": 20, "rolling": 5}}
QUICK = {"trials": 5, "changes": {"agents": 5, "rolling": 2}}

Judge = Callable[[int, str], bool]


def proxy_nodes() -> tuple[int, ...] | None:
    """``INTERLOCK_BENCH_PROXY_NODES=1`` (comma-separated node indexes) puts the proxies on those
    nodes only: what one node's agent and proxies take for a change, with no other node
    applying it on the same cores (on a real Swarm each node has its own). Default: every node."""
    raw = os.environ.get("INTERLOCK_BENCH_PROXY_NODES", "").strip()
    return tuple(int(i) for i in raw.split(",")) if raw else None


def everywhere(e: AgentEdge, host: str, judge: Judge, timeout: float) -> float:
    """Poll every proxy on every node at once until each answers as ``judge`` wants; the time
    (epoch) of the request that made the last one pass."""
    ports = [port for _, _, port in e.ports(proxy_nodes())]
    seen: dict[int, float] = {}
    deadline = time.monotonic() + timeout

    def poll(port: int) -> None:
        def passed(sent: float, status: int, body: str) -> float | None:
            return sent if judge(status, body) else None

        with contextlib.suppress(TimeoutError):  # a port missing is reported below, for all
            seen[port] = poll_port(port, host, passed, deadline - time.monotonic())

    threads = [threading.Thread(target=poll, args=(p,), daemon=True) for p in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    missing = sorted(set(ports) - set(seen))
    if missing:
        raise TimeoutError(f"{host}: ports {missing} not converged within {timeout:.0f}s")
    return max(seen.values())


def settle(e: AgentEdge, mode: str) -> None:
    """Never start a change while a proxy task is being replaced (rolling mode)."""
    if mode == "rolling":
        for proxy in e.proxies.values():
            e.swarm.wait_updated(proxy, timeout=180)
    time.sleep(0.3)


def trial(e: AgentEdge, mode: str, index: int) -> dict[str, Any]:
    """One service's creation and removal, each measured until every node's proxies agree."""
    host, got = f"lat{index}.example.com", {}
    service = e.app(f"lat{index}", host, replicas=1)  # returns once its task runs
    returned = time.time()
    try:
        (task,) = e.swarm.tasks(service)
        running = swarm_time(task["Status"]["Timestamp"])
        name = f"task={service.name}."
        answered = everywhere(e, host, lambda s, b: s == 200 and name in b, TIMEOUT[mode])
        got["create"] = answered - max(returned, running)
        settle(e, mode)
        before = cgroups.sample(e.swarm.cluster)
        busy = cgroups.busy_seconds()
        service.remove()
        returned = time.time()
        got["remove"] = everywhere(e, host, lambda s, b: s == 404, TIMEOUT[mode]) - returned
        got["remove_busy_cpu"] = cgroups.busy_seconds() - busy
        after = cgroups.sample(e.swarm.cluster)
        got["remove_cpu"] = cgroups.spent(before, after, cgroups.roles(e.swarm.cluster, e.prefix))
        settle(e, mode)
    except Exception as error:
        got["error"] = f"{type(error).__name__}: {error}"
        with contextlib.suppress(Exception):
            service.remove()
        settle(e, mode)
    return got


def _median_parts(trials: list[dict[str, float]]) -> dict[str, float]:
    """Each part's median over the trials (a part missing from a trial counts 0 there)."""
    names = {name for one in trials for name in one}
    return {n: statistics.median(one.get(n, 0.0) for one in trials) for n in sorted(names)}


def polling_cpu(e: AgentEdge, seconds: float = 2.0) -> dict[str, float]:
    """What this bench's polling alone costs, by part, in CPU seconds per second: every port
    polled as in a trial, for a host that is routed and does not change."""
    before = cgroups.sample(e.swarm.cluster)
    started = time.monotonic()
    with contextlib.suppress(TimeoutError):  # the judge never passes: it polls for ``seconds``
        everywhere(e, STEADY, lambda status, body: False, seconds)
    took = time.monotonic() - started
    parts = cgroups.spent(
        before, cgroups.sample(e.swarm.cluster), cgroups.roles(e.swarm.cluster, e.prefix)
    )
    return {part: round(value / took, 3) for part, value in parts.items()}


def latency(e: AgentEdge, mode: str, trials: int) -> dict[str, Any]:
    results = []
    for index in range(trials):
        results.append(trial(e, mode, index))
        progress(f"nodes, {mode}: trial {index + 1}/{trials}: {results[-1]}")
    out: dict[str, Any] = {"trials": trials}
    for op in ("create", "remove"):
        values = [r[op] for r in results if op in r]
        out[op] = {
            "n": len(values),
            "failed": trials - len(values),
            "p50_s": percentile(values, 0.5) if values else None,
            "p95_s": percentile(values, 0.95) if values else None,
            "max_s": max(values) if values else None,
        }
    both = [r[op] for r in results for op in ("create", "remove") if op in r]
    out["all"] = {
        "n": len(both),
        "p50_s": percentile(both, 0.5) if both else None,
        "p95_s": percentile(both, 0.95) if both else None,
        "max_s": max(both) if both else None,
    }
    busy = [r["remove_busy_cpu"] for r in results if "remove_busy_cpu" in r]
    out["remove_busy_cpu_s"] = statistics.median(busy) if busy else None
    out["remove_cpu_s"] = _median_parts([r["remove_cpu"] for r in results if r.get("remove_cpu")])
    out["polling_cpu_s"] = polling_cpu(e)
    out["cores"] = os.cpu_count()
    out["errors"] = [r["error"] for r in results if "error" in r]
    return out


def _figures(loads: Loads) -> dict[str, Any]:
    results = [load.result for load in loads.loads]
    return {
        "ports": len(results),
        "requests": sum(r.requests for r in results),
        "failed": sum(r.failed for r in results),
        "connect_errors": sum(r.connect_errors for r in results),
        "read_errors": sum(r.read_errors for r in results),
        "timeouts": sum(r.timeouts for r in results),
        "non_2xx": sum(r.non_2xx for r in results),
        "per_port": {
            f"{kind}@node{node}": {"requests": r.requests, "failed": r.failed}
            for (kind, node, _), r in zip(loads.ports, results, strict=True)
        },
    }


def route_changes(e: AgentEdge, mode: str, changes: int) -> dict[str, Any]:
    other = e.app("moved", "m0.example.com", replicas=1)
    everywhere(e, "m0.example.com", lambda s, b: s == 200, TIMEOUT[mode])
    settle(e, mode)
    took, done = [], 0
    with Loads(e, STEADY, nodes=proxy_nodes() or ALL, seconds=115) as loads:
        began = time.monotonic()
        for change in range(1, changes + 1):
            if time.monotonic() - began > 100:
                break  # wrk runs at most 115 s: the rest would be measured without load
            start = time.time()
            relabel(e, other, f"m{change}.example.com")
            host = f"m{change}.example.com"
            took.append(everywhere(e, host, lambda s, b: s == 200, TIMEOUT[mode]) - start)
            done += 1
            settle(e, mode)
        loads.stop()
    other.remove()
    return {"changes": done, "change_s_max": round(max(took), 2), **_figures(loads)}


def rolling_update(e: AgentEdge, mode: str) -> dict[str, Any]:
    app = e.app("rolled", "rolled.example.com", update_config=versioned_update_config())
    everywhere(e, "rolled.example.com", lambda s, b: "version=1" in b, TIMEOUT[mode])
    settle(e, mode)

    def mutate(spec: dict) -> None:
        env = spec["TaskTemplate"]["ContainerSpec"]["Env"]
        spec["TaskTemplate"]["ContainerSpec"]["Env"] = [
            "VERSION=2" if v.startswith("VERSION=") else v for v in env
        ]

    with Loads(e, "rolled.example.com", nodes=proxy_nodes() or ALL, seconds=115) as loads:
        time.sleep(2)
        began = time.monotonic()
        e.swarm.update_service(app, mutate)
        e.swarm.wait_updated(app, timeout=TIMEOUT[mode])
        everywhere(e, "rolled.example.com", lambda s, b: "version=2" in b, TIMEOUT[mode])
        settle(e, mode)
        took = time.monotonic() - began
        loads.stop()
    app.remove()
    return {"update_done_after_s": round(took, 1), **_figures(loads)}


def deploy(swarm: ClusterTest, image: str, mode: str) -> AgentEdge:
    e = AgentEdge(swarm, image, env={"INTERLOCK_MODE": "signal" if mode == "agents" else mode})
    for kind in KINDS:
        e.deploy_proxy(kind, proxy_nodes(), mode="signal" if mode == "agents" else "rolling")
    e.deploy_controller()
    if mode == "agents":
        e.deploy_agents()
    e.app("steady", STEADY)
    wait_until(
        lambda: e.answers(STEADY, "task=", nodes=proxy_nodes()),
        TIMEOUT[mode],
        0.2,
        f"{STEADY} everywhere",
    )
    settle(e, mode)
    return e


def modes() -> list[str]:
    """The modes to measure: ``INTERLOCK_BENCH_NODE_MODES=agents`` (comma-separated) runs one
    (rolling mode's trials take about 30 minutes on 3 nodes)."""
    wanted = os.environ.get("INTERLOCK_BENCH_NODE_MODES", ",".join(MODES)).split(",")
    unknown = set(wanted) - set(MODES)
    if unknown:
        raise ValueError(f"INTERLOCK_BENCH_NODE_MODES: unknown {sorted(unknown)}, not in {MODES}")
    return [m for m in MODES if m in wanted]


def steps(e: AgentEdge, mode: str, sizes: dict[str, Any]) -> dict[str, Any]:
    """Each measurement of one mode; one that fails is reported as failed, the others kept."""
    jobs: dict[str, Callable[[], dict[str, Any]]] = {
        "latency": lambda: latency(e, mode, sizes["trials"]),
        "route_changes": lambda: route_changes(e, mode, sizes["changes"][mode]),
        "rolling_update": lambda: rolling_update(e, mode),
    }
    found: dict[str, Any] = {}
    for name, job in jobs.items():
        try:
            found[name] = job()
        except Exception as error:  # a failed step must not lose the figures of the others
            found[name] = {"error": f"{type(error).__name__}: {error}"}
            progress(f"nodes, {mode}: {name} failed: {found[name]['error']}")
    return found


def run(quick: bool, logs: Path) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    progress("nodes: the 3-node bed (python -m tests.bed up --nodes 3) and the controller image")
    cluster = ensure_cluster(ClusterConfig.from_env())
    image = controller_image(cluster)
    out: dict[str, Any] = {"nodes": len(cluster.nodes), "image": image}
    out["proxy_nodes"] = list(proxy_nodes() or cluster.config.indexes)
    for mode in modes():
        with nodes_lock(cluster):
            swarm = ClusterTest(cluster)
            progress(f"nodes, {mode}: namespace {swarm.id}")
            e = None
            try:
                e = deploy(swarm, image, mode)
                out[mode] = steps(e, mode, sizes)
            finally:
                if e is not None:
                    (logs / f"nodes-{mode}-controller.log").write_text(e.logs(e.controller, 5000))
                    (logs / f"nodes-{mode}-agents.log").write_text(e.logs(e.agents, 5000))
                swarm.cleanup()
                if e is not None:
                    e.remove_volumes()
    cluster.close()
    return out
