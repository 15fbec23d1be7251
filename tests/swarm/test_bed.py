"""The bed itself works: a private engine, proxies that answer, overlay routing to task addresses,
config swaps by service update, and in-place proxy reloads (what the controller will rely on)."""

from __future__ import annotations

from pathlib import Path

import pytest
from docker.types import ConfigReference, SecretReference

from tests.bed import Bed
from tests.bed.engine import DEFAULT_SOCKET, socket_fingerprint
from tests.bed.harness import SwarmTest, exec_ok, put_file
from tests.bed.probes import http_get

NGINX_CONF = "/etc/nginx/nginx.conf"
HAPROXY_CFG = "/usr/local/etc/haproxy/haproxy.cfg"


def nginx_conf(body: str) -> str:
    """A whole nginx.conf whose one server on :80 runs ``body`` (nginx directives)."""
    return (
        "events {}\n"
        "http {\n"
        f"  {body}\n"
        "}\n"
    )  # fmt: skip


def nginx_proxy_conf(addresses: list[str]) -> str:
    """nginx.conf routing everything round-robin to the backend task addresses."""
    servers = " ".join(f"server {a}:8080;" for a in addresses)
    return nginx_conf(
        f"upstream backend {{ {servers} }}\n"
        "  server { listen 80; location / {\n"
        "    proxy_pass http://backend; proxy_set_header Host $host; } }"
    )


def haproxy_cfg(tail: str) -> str:
    """A whole haproxy.cfg: common sections plus ``tail`` (frontend/backend sections)."""
    return (
        "global\n  log stdout format raw local0\n"
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
        f"{tail}"
    )


def haproxy_proxy_cfg(addresses: list[str]) -> str:
    """haproxy.cfg routing everything round-robin to the backend task addresses."""
    servers = "".join(f"  server s{i} {a}:8080\n" for i, a in enumerate(addresses))
    return haproxy_cfg(
        "frontend web\n  bind :80\n  default_backend app\n"
        f"backend app\n  balance roundrobin\n{servers}"
    )


def static_answer(kind: str, text: str) -> str:
    """A proxy config of ``kind`` that answers every request with 200 and ``text``."""
    if kind == "nginx":
        return nginx_conf(f'server {{ listen 80; location / {{ return 200 "{text}\\n"; }} }}')
    return haproxy_cfg(
        "frontend web\n  bind :80\n"
        f'  http-request return status 200 content-type text/plain string "{text}\\n"\n'
    )


PROXIES = {  # kind -> (config path in the image, reload signal of the official image)
    "nginx": (NGINX_CONF, "SIGHUP"),
    "haproxy": (HAPROXY_CFG, "SIGUSR2"),
}


def proxy_image(bed: Bed, kind: str) -> str:
    """The bed's local image for a proxy kind."""
    return bed.images.nginx if kind == "nginx" else bed.images.haproxy


def test_bed_engine_is_private(bed: Bed, default_socket_before: object) -> None:
    """The bed is not the default engine and leaves the default socket alone."""
    socket_path = bed.docker_host.removeprefix("unix://")
    assert bed.docker_host.startswith("unix://")
    assert Path(socket_path).resolve() != DEFAULT_SOCKET.resolve()
    client = bed.client()
    try:
        info = client.info()
        assert info["DockerRootDir"] == str(bed.config.data_root)
        assert info["Swarm"]["NodeAddr"] == "127.0.0.1"
        bridge = client.networks.get("bridge").attrs["Options"]
        gwbridge = client.networks.get("docker_gwbridge").attrs["Options"]
    finally:
        client.close()
    assert bridge["com.docker.network.bridge.name"] == bed.config.bridge
    assert gwbridge["com.docker.network.bridge.name"] == bed.config.gwbridge
    assert socket_fingerprint(DEFAULT_SOCKET) == default_socket_before


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_proxy_image_answers_on_published_port(swarm: SwarmTest, bed: Bed, kind: str) -> None:
    """Each proxy image's default config answers HTTP on a host-mode port on 127.0.0.1."""
    _, port = swarm.published_service(f"{kind}-default", proxy_image(bed, kind))
    body = swarm.wait_http(port, "example.test")
    assert body


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_proxy_routes_to_backend_task_addresses(swarm: SwarmTest, bed: Bed, kind: str) -> None:
    """A proxy on an overlay network reaches both replicas of a backend by task address, with a
    config mounted as a Docker config."""
    net = swarm.network("web")
    backend = swarm.service(
        "app",
        bed.images.backend,
        env=["TASK_NAME={{.Task.Name}}"],
        networks=[net.name],
        mode={"Replicated": {"Replicas": 2}},
    )
    tasks = swarm.wait_running(backend)
    names = {f"{backend.name}.{t['Slot']}.{t['ID']}" for t in tasks}
    addresses = swarm.task_addresses(backend, net)
    assert len(addresses) == 2

    path, _ = PROXIES[kind]
    render = nginx_proxy_conf if kind == "nginx" else haproxy_proxy_cfg
    conf = swarm.config(f"{kind}-conf", render(addresses))
    _, port = swarm.published_service(
        kind,
        proxy_image(bed, kind),
        networks=[net.name],
        configs=[ConfigReference(conf.id, conf.name, filename=path)],
    )
    swarm.wait_http(port, "app.example.test", contains="task=")
    seen = set()
    for _ in range(20):
        status, body = http_get(port, "app.example.test", "/some/path")
        assert status == 200
        assert "path=/some/path host=app.example.test" in body
        seen.add(body.split()[0].removeprefix("task="))
    assert seen == names


def test_config_swap_by_service_update(swarm: SwarmTest, bed: Bed) -> None:
    """Swapping the config a service mounts (a new config, then a service update) changes what
    it serves once the update has rolled."""
    target = "/var/www/html/index.html"  # root of the default site of Debian's nginx
    first = swarm.config("page-v1", "version one\n")
    svc, port = swarm.published_service(
        "page",
        bed.images.nginx,
        configs=[ConfigReference(first.id, first.name, filename=target)],
    )
    assert "version one" in swarm.wait_http(port, "page.test")

    second = swarm.config("page-v2", "version two\n")

    def swap(spec: dict) -> None:
        spec["TaskTemplate"]["ContainerSpec"]["Configs"] = [
            {
                "ConfigID": second.id,
                "ConfigName": second.name,
                "File": {"Name": target, "UID": "0", "GID": "0", "Mode": 0o444},
            }
        ]

    swarm.update_service(svc, swap)
    swarm.wait_updated(svc)
    assert "version two" in swarm.wait_http(port, "page.test", contains="version two")


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_proxy_reloads_in_place(swarm: SwarmTest, bed: Bed, kind: str) -> None:
    """A new config pushed into the running proxy (put_archive + mv) and a signal (SIGHUP for
    nginx, SIGUSR2 for haproxy in master-worker mode) take effect without a restart."""
    path, reload_signal = PROXIES[kind]
    svc, port = swarm.published_service(f"{kind}-reload", proxy_image(bed, kind))
    swarm.wait_http(port, "reload.test")
    (container,) = swarm.task_containers(svc)
    exec_ok(container, "sh", "-c", "command -v sh cat mv rm kill")

    for round_ in (1, 2):
        text = f"reloaded {round_}"
        put_file(container, f"{path}.new", static_answer(kind, text))
        exec_ok(container, "mv", f"{path}.new", path)
        container.kill(signal=reload_signal)
        assert text in swarm.wait_http(port, "reload.test", contains=text, timeout=15)

    # reloaded in place: the same container is still the one and only running task
    assert [c.id for c in swarm.task_containers(svc)] == [container.id]


def test_plain_container_on_overlay_reaches_a_task(swarm: SwarmTest, bed: Bed) -> None:
    """A plain (non-Swarm) container joins the test's attachable overlay network and reaches a
    backend task by its address; a secret mounted into the backend is readable there."""
    net = swarm.network("plain")
    token = swarm.secret("token", "s3cret\n")
    backend = swarm.service(
        "app",
        bed.images.backend,
        env=["TASK_NAME={{.Task.Name}}", "VERSION=7"],
        networks=[net.name],
        secrets=[SecretReference(token.id, token.name, filename="token")],
    )
    swarm.wait_running(backend)
    (address,) = swarm.task_addresses(backend, net)
    (task_container,) = swarm.task_containers(backend)
    assert exec_ok(task_container, "cat", "/run/secrets/token") == "s3cret\n"

    fetch = f"import urllib.request as u; print(u.urlopen('http://{address}:8080/x').read())"
    probe = swarm.container("probe", bed.images.python, ["python3", "-c", fetch], network=net.name)
    assert probe.wait(timeout=60)["StatusCode"] == 0, probe.logs().decode()
    assert "version=7 path=/x" in probe.logs().decode()
