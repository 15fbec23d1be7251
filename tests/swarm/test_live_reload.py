"""Signal mode on the real Swarm: in-place reloads under steady load lose no request.

The controller runs as a real `interlock run` process (default 1 s interval, Swarm events), the
load is wrk through the proxy's port on 127.0.0.1, and every test asserts both that requests
flowed (a proxy that is down fails the test) and that none of them failed.
"""

from __future__ import annotations

import json
import time

import docker.errors
import pytest
from docker.types import EndpointSpec

from controller.gateway import Gateway
from controller.inplace import CheckFailed, SignalPusher
from controller.plan import PushConfig
from tests.bed.probes import http_get, wait_until
from tests.swarm.controlled import routed, run_cli
from tests.swarm.load import Load, report

KINDS = ["nginx", "haproxy"]
HOST = "app.example.com"
MIN_REQUESTS = 1000  # far below what any working run sends; a dead proxy sends ~0


def start(lab, tmp_path, **env):
    return lab.run(str(tmp_path / "controller.log"), **env)


def relabel(swarm, service, label: str, value: str) -> None:
    def mutate(spec):
        spec["Labels"][label] = value

    swarm.update_service(service, mutate)


def assert_clean(name: str, result) -> None:
    report(name, result)
    assert result.requests >= MIN_REQUESTS, result.summary()
    assert result.failed == 0, result.summary() + "\n" + result.output


@pytest.mark.parametrize("kind", KINDS)
def test_twenty_route_changes_under_load_lose_nothing(kind, swarm, bed, tmp_path):
    lab = routed(swarm, bed.docker_host)
    lab.proxy_service(kind, mode="signal")
    lab.app("steady", replicas=2, hostname=HOST, port="8080")
    other = lab.app("other", hostname="r0.example.com", port="8080")
    with start(lab, tmp_path):
        swarm.wait_http(lab.port, HOST, contains="-steady.", timeout=30)
        swarm.wait_http(lab.port, "r0.example.com", contains="-other.1.", timeout=30)
        with Load(lab.port, HOST, seconds=30) as load:
            began = time.monotonic()
            for change in range(1, 21):
                relabel(swarm, other, lab.label("hostname"), f"r{change}.example.com")
                swarm.wait_http(
                    lab.port, f"r{change}.example.com", contains="-other.1.", timeout=10
                )
                swarm.wait_http(lab.port, f"r{change - 1}.example.com", status=404, timeout=5)
                time.sleep(max(0.0, began + change - time.monotonic()))  # >= 1 s per change
            changes_took = time.monotonic() - began
            result = load.wait()
    assert changes_took < 30, "the load ended before the last change"
    assert_clean(f"{kind}: 20 route changes by signal", result)


@pytest.mark.parametrize("kind", KINDS)
def test_rolling_update_of_the_backend_under_load_loses_nothing(kind, swarm, bed, tmp_path):
    lab = routed(swarm, bed.docker_host)
    lab.proxy_service(kind, mode="signal")
    app = lab.versioned_app("app", HOST)
    with start(lab, tmp_path):
        swarm.wait_http(lab.port, HOST, contains="version=1", timeout=30)
        with Load(lab.port, HOST, seconds=30) as load:
            time.sleep(2)
            lab.set_version(app, 2)
            swarm.wait_updated(app, timeout=60)
            wait_until(
                lambda: all("version=2" in http_get(lab.port, HOST)[1] for _ in range(6)),
                15,
                message="only version 2 answers",
            )
            result = load.wait()
    assert_clean(f"{kind}: rolling update of 3 replicas", result)


@pytest.mark.parametrize("kind", KINDS)
def test_scale_down_under_load_loses_nothing(kind, swarm, bed, tmp_path):
    lab = routed(swarm, bed.docker_host)
    lab.proxy_service(kind, mode="signal")
    app = lab.app("app", replicas=3, hostname=HOST, port="8080")
    with start(lab, tmp_path):
        wait_until(lambda: len(lab.tasks_seen(HOST, 12)) == 3, 30, message="3 replicas serve")
        with Load(lab.port, HOST, seconds=20) as load:
            time.sleep(3)
            lab.scale(app, 1)
            wait_until(lambda: len(lab.tasks_seen(HOST, 6)) == 1, 15, message="1 replica serves")
            result = load.wait()
    assert_clean(f"{kind}: scale 3 -> 1", result)


def pids(swarm, container: str) -> set[str]:
    """Host PIDs of a container's proxy processes (as `docker top` lists them), not the shell
    kept in it for the in-place step (``controller/shell.py``): a new one is no reload."""
    top = swarm.client.api.top(container, ps_args="-o pid,comm")
    return {row[0] for row in top["Processes"] if row[-1] != "sh"}


def task_ports(swarm, service) -> list[int]:
    """Host ports of the running tasks of a service published in host mode with dynamic ports."""
    ports = []
    for task in swarm.tasks(service):
        ports += [p["PublishedPort"] for p in task["Status"].get("PortStatus", {}).get("Ports", [])]
    return sorted(ports)


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_proxy_task_serves_the_current_routes_within_a_pass(kind, swarm, bed, tmp_path):
    lab = routed(swarm, bed.docker_host)
    image = swarm.images.nginx if kind == "nginx" else swarm.images.haproxy
    ports = [{"Protocol": "tcp", "TargetPort": 80, "PublishMode": "host"}]  # a port per task
    proxy = swarm.service(
        f"{kind}-proxy",
        image,
        networks=[lab.network.name],
        labels={lab.label("ext.name"): kind, lab.label("ext.mode"): "signal"},
        endpoint_spec=EndpointSpec(ports=ports),
    )
    swarm.wait_running(proxy)
    lab.app("app", hostname=HOST, port="8080")
    with start(lab, tmp_path):
        (first,) = task_ports(swarm, proxy)
        swarm.wait_http(first, HOST, contains="-app.1.", timeout=30)
        lab.scale(proxy, 2)
        second = next(p for p in task_ports(swarm, proxy) if p != first)
        swarm.wait_http(second, HOST, contains="-app.1.", timeout=10)


@pytest.mark.parametrize("kind", KINDS)
def test_a_plain_docker_run_proxy_is_kept_in_sync(kind, swarm, bed, tmp_path):
    lab = routed(swarm, bed.docker_host)
    port = lab.proxy_container(kind)
    app = lab.app("app", hostname=HOST, port="8080")
    with start(lab, tmp_path):
        swarm.wait_http(port, HOST, contains="-app.1.", timeout=30)
        relabel(swarm, app, lab.label("hostname"), "moved.example.com")
        swarm.wait_http(port, "moved.example.com", contains="-app.1.", timeout=10)
        assert http_get(port, HOST)[0] == 404
    status = json.loads(run_cli(bed.docker_host, lab.prefix, "status", "--json").stdout)
    (row,) = status["proxies"]
    assert (row["mode"], row["tasks_in_sync"]) == ("signal", "1/1"), row
    assert row["deployed"] == row["desired"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_config_refused_in_the_container_is_never_signalled(kind, swarm, bed, tmp_path):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service(kind, mode="signal")
    lab.app("app", hostname=HOST, port="8080")
    with start(lab, tmp_path):
        swarm.wait_http(lab.port, HOST, contains="-app.1.", timeout=30)
    (task,) = swarm.tasks(proxy)
    container = task["Status"]["ContainerStatus"]["ContainerID"]
    before = pids(swarm, container)
    pusher = SignalPusher(Gateway(swarm.client.api))
    path = "/etc/nginx/nginx.conf" if kind == "nginx" else "/usr/local/etc/haproxy/haproxy.cfg"
    broken = PushConfig(proxy.name, kind, container, path, "this is { not a config\n", "f" * 64)
    with pytest.raises(CheckFailed) as refused:
        pusher.push(broken)
    print(f"{kind} refused: {refused.value}")
    assert str(refused.value).startswith(f"{kind} refused the config:")
    assert len(str(refused.value)) > len(f"{kind} refused the config: ")  # the proxy's own words
    # A reload starts new worker processes; a worker of an earlier reload may still be draining
    # and exit meanwhile, which is not a reload.
    assert pids(swarm, container) <= before
    assert http_get(lab.port, HOST)[0] == 200


@pytest.mark.parametrize("kind", KINDS)
def test_a_stopping_task_leaves_the_pool_before_its_container_stops(kind, swarm, bed, tmp_path):
    """The claim itself, not its effect: during a scale-down, each stopped task's address is gone
    from the proxy's live configuration while the task's container still runs (Swarm waits 2 s
    before signalling it). Routing to tasks until they are gone fails this."""
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service(kind, mode="signal")
    app = lab.app("app", replicas=3, hostname=HOST, port="8080")
    api = swarm.client.api
    path = "/etc/nginx/nginx.conf" if kind == "nginx" else "/usr/local/etc/haproxy/haproxy.cfg"
    with start(lab, tmp_path):
        wait_until(lambda: len(lab.tasks_seen(HOST, 12)) == 3, 30, message="3 replicas serve")
        (proxy_task,) = swarm.tasks(proxy)
        proxy_container = proxy_task["Status"]["ContainerStatus"]["ContainerID"]
        watched = {
            task["Status"]["ContainerStatus"]["ContainerID"]: f"{address}:8080"
            for task in swarm.tasks(app)
            for attachment in task["NetworksAttachments"]
            if attachment["Network"]["Spec"]["Name"] == lab.network.name
            for address in [attachment["Addresses"][0].split("/")[0]]
        }
        gone_at: dict[str, float] = {}
        dead_at: dict[str, float] = {}

        def mutate(spec):
            spec["Mode"] = {"Replicated": {"Replicas": 1}}

        swarm.update_service(app, mutate)
        deadline = time.monotonic() + 20
        while len(dead_at) < 2 and time.monotonic() < deadline:
            config = Gateway(api).read_file(proxy_container, path) or ""
            now = time.monotonic()
            for container, target in watched.items():
                if not _in_pool(config, target):
                    gone_at.setdefault(container, now)
                if not _running(api, container):
                    dead_at.setdefault(container, now)
            time.sleep(0.05)
    print(
        f"{kind}: left the pool before stopping by "
        + ", ".join(f"{dead_at[c] - gone_at.get(c, dead_at[c]):.2f} s" for c in dead_at)
    )
    assert len(dead_at) == 2, f"two of three tasks should have stopped: {dead_at}"
    for container in dead_at:
        assert container in gone_at, f"{watched[container]} was never taken out of the pool"
        assert gone_at[container] < dead_at[container], (
            f"{watched[container]} was still in the pool when its container stopped"
        )


def _in_pool(config: str, target: str) -> bool:
    """Whether a line of the config sends requests to ``target``: HAProxy's server slots keep a
    leaving task's address in its slot, ``disabled`` (no request goes there)."""
    lines = [line.strip() for line in config.splitlines() if target in line]
    return any(not line.endswith(" disabled") for line in lines)


def _running(api, container: str) -> bool:
    try:
        return bool(api.inspect_container(container)["State"]["Running"])
    except docker.errors.NotFound:
        return False
