"""HAProxy's runtime API on the real Swarm: task address changes without a reload.

One signal-mode HAProxy proxy with its runtime folder on a bind mount the controller (a real
`interlock run` process on this machine) shares. Under wrk load: a rolling update of 3 replicas
and a scale 3 -> 1 -> 3 with no reload (the proxy's processes are the same before and after:
master-worker starts a new worker on every reload) and no failed request, each change routable
within a pass; then 3 -> 0 -> 2 (503 while none runs), still no reload. A host change still
reloads and loses nothing; a runtime socket that is gone falls back to a reload.
"""

from __future__ import annotations

import time

from docker.types import EndpointSpec, Mount

from tests.bed.probes import free_port, http_get, wait_until
from tests.swarm.controlled import routed
from tests.swarm.load import Load, report
from tests.swarm.test_live_reload import MIN_REQUESTS, relabel

HOST = "app.example.com"
RUNTIME = "/var/lib/haproxy"  # kinds.KINDS["haproxy"].runtime_dir


def proxy_with_runtime(lab, folder: str):
    """A signal-mode HAProxy proxy service whose runtime folder is ``folder`` on this machine."""
    lab.port = free_port()
    ports = [{"Protocol": "tcp", "PublishedPort": lab.port, "TargetPort": 80,
              "PublishMode": "host"}]  # fmt: skip
    lab.proxy = lab.swarm.service(
        "haproxy-proxy",
        lab.swarm.images.haproxy,
        labels={lab.label("ext.name"): "haproxy", lab.label("ext.mode"): "signal"},
        networks=[lab.network.name],
        endpoint_spec=EndpointSpec(ports=ports),
        mounts=[Mount(RUNTIME, folder, type="bind")],
    )
    (task,) = lab.swarm.wait_running(lab.proxy)
    return task["Status"]["ContainerStatus"]["ContainerID"]


def serving_pids(api, container: str) -> set[str]:
    """PIDs of HAProxy's master and workers in a container (master-worker: a reload starts a
    new worker, so the set changes exactly when it reloads; the in-place step's own processes,
    ``sh`` and ``haproxy -c``, are left out)."""
    rows = api.top(container, ps_args="-o pid,args")["Processes"]
    return {row[0] for row in rows if " -W " in f" {row[1]} "}


def pids(swarm, container: str) -> set[str]:
    return serving_pids(swarm.client.api, container)


def seen_exactly(lab, count: int) -> None:
    """Every running task answers and no other (within a few passes of the change)."""
    wait_until(lambda: len(lab.tasks_seen(HOST, 4 * count)) == count, 10,
               message=f"{count} tasks answer")  # fmt: skip


def test_rolling_update_and_scaling_go_through_the_runtime_api_without_a_reload(
    swarm, bed, tmp_path
):
    folder = tmp_path / "runtime"
    folder.mkdir()
    lab = routed(swarm, bed.docker_host)
    proxy = proxy_with_runtime(lab, str(folder))
    app = lab.versioned_app("app", HOST)
    other = lab.app("other", hostname="r0.example.com", port="8080")
    log = str(tmp_path / "controller.log")
    with lab.run(log, INTERLOCK_RUNTIME_DIR=str(folder)) as controller:
        swarm.wait_http(lab.port, HOST, contains="version=1", timeout=30)
        wait_until(lambda: any(folder.glob("interlock-*.sock")), 10, message="runtime socket")
        before = pids(swarm, proxy)
        with Load(lab.port, HOST, seconds=40) as load:
            time.sleep(1)
            lab.set_version(app, 2)
            swarm.wait_updated(app, timeout=60)
            wait_until(lambda: all("version=2" in lab.get(HOST)[1] for _ in range(9)), 10,
                       message="only version 2 answers")  # fmt: skip
            for replicas in (1, 3):
                lab.scale(app, replicas)
                seen_exactly(lab, replicas)
            result = load.wait()
        report("haproxy: rolling update + scale 3 -> 1 -> 3 by runtime API", result)
        assert result.requests >= MIN_REQUESTS and result.failed == 0, result.summary()
        lab.scale(app, 0)
        wait_until(lambda: lab.get(HOST)[0] == 503, 10, message="503 with no task")
        lab.scale(app, 2)
        seen_exactly(lab, 2)
        assert pids(swarm, proxy) == before, "the proxy was reloaded"
        assert controller.logs().count("runtime_update ") >= 8, controller.logs()[-3000:]

        with Load(lab.port, HOST, seconds=8) as load:  # a host change: a reload, nothing lost
            relabel(swarm, other, lab.label("hostname"), "r1.example.com")
            swarm.wait_http(lab.port, "r1.example.com", contains="-other.1.", timeout=10)
            result = load.wait()
        assert pids(swarm, proxy) != before, "a host change must reload"
        assert result.requests >= 100 and result.failed == 0, result.summary()

        reloaded = pids(swarm, proxy)
        (sock,) = folder.glob("interlock-*.sock")
        sock.rename(folder / "aside")  # the runtime API is away: the next change must reload
        lab.scale(app, 3)
        seen_exactly(lab, 3)
        assert pids(swarm, proxy) != reloaded, "no runtime socket: a reload"
        assert "runtime_update_failed" in controller.logs()
        (folder / "aside").rename(sock)  # back: the next change goes through it again
        again = pids(swarm, proxy)
        lab.scale(app, 1)
        seen_exactly(lab, 1)
        assert pids(swarm, proxy) == again
        assert http_get(lab.port, "r1.example.com")[0] == 200


def test_tasks_that_listen_late_get_no_request_before_they_listen(swarm, bed, tmp_path):
    """Swarm calls a task running when its container starts, not when its app listens (unless
    the image declares a HEALTHCHECK). A scale 1 -> 3 of tasks that listen 2 s after they start,
    under load through nginx and HAProxy (its runtime API) at once: every request is answered
    (nginx: ``max_fails``; HAProxy: ``observe layer4`` marks a refusing server down at once and
    the request goes to another), and all three tasks serve once they listen."""
    folder = tmp_path / "runtime"
    folder.mkdir()
    lab = routed(swarm, bed.docker_host)
    proxy_with_runtime(lab, str(folder))
    ports = {"haproxy": lab.port}
    lab.proxy_service("nginx", mode="signal")
    ports["nginx"] = lab.port
    app = lab.app("late", env=("LISTEN_DELAY=2",), hostname=HOST, port="8080")
    with lab.run(str(tmp_path / "controller.log"), INTERLOCK_RUNTIME_DIR=str(folder)):
        for port in ports.values():
            swarm.wait_http(port, HOST, contains="-late.1.", timeout=30)
        loads = {kind: Load(port, HOST, seconds=12) for kind, port in ports.items()}
        with loads["haproxy"], loads["nginx"]:
            time.sleep(1)
            lab.scale(app, 3)
            for port in ports.values():
                lab.port = port
                seen_exactly(lab, 3)
            results = {kind: load.wait() for kind, load in loads.items()}
    for kind, result in results.items():
        report(f"{kind}: scale 1 -> 3 of tasks that listen 2 s after they start", result)
    for kind, result in results.items():
        assert result.requests >= MIN_REQUESTS and result.failed == 0, (kind, result.summary())
