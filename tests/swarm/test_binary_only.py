"""Proxies whose image holds the proxy binary and nothing else (no shell, no coreutils), as a
distroless or ``scratch`` image does, converge in signal mode: the in-place step uses only the
Engine API and the proxy's binary (``controller/reload.py``).

One scenario runs nginx and HAProxy side by side under one real `interlock run`: a route change
becomes routable through 127.0.0.1; a config their binaries refuse (TLS to the tasks, verified
against system CAs the images do not hold) is never signalled, the proxy's own words are in the
controller's log, and the proxies keep serving; with the controller gone, a restarted proxy
container comes up serving the last config, whole, as its digest says. The agent-mode scenario
on the 3-node bed is in ``test_agents``.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time

import pytest

from controller.gateway import Gateway
from controller.kinds import KINDS
from controller.reload import DIGEST_SUFFIX, STAGED_SUFFIX, CheckFailed, InPlace
from tests.bed.probes import wait_until
from tests.swarm.controlled import routed

HOST = "app.example.com"
MOVED = "moved.example.com"
CA_FILE = {"nginx": "ca-certificates.crt", "haproxy": "@system-ca"}  # what the refused config names
WORDS = {  # what each binary says of a CA bundle that is not in its image
    "nginx": "SSL_CTX_load_verify_locations",
    "haproxy": "unable to load @system-ca",
}


def binonly_image(images, kind: str) -> str:
    return images.nginx_binonly if kind == "nginx" else images.haproxy_binonly


# Files the engine itself puts into every container (empty, mode 0755).
ENGINE_FILES = {".dockerenv", "dev/console", "etc/hostname", "etc/hosts", "etc/resolv.conf"}


def executables(client, image: str) -> tuple[set[str], set[str]]:
    """(every path, the regular files with an execute bit) of a container made from ``image``."""
    container = client.api.create_container(image)["Id"]
    try:
        data = b"".join(client.api.export(container))
    finally:
        client.api.remove_container(container, force=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
    paths = {m.name.removeprefix("./") for m in members} - ENGINE_FILES
    runnable = {m.name.removeprefix("./") for m in members if m.isreg() and m.mode & 0o111}
    return paths, runnable - ENGINE_FILES


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_the_image_holds_only_the_proxy_binary_and_its_libraries(kind, docker_client, bed):
    paths, runnable = executables(docker_client, binonly_image(bed.images, kind))
    print(f"{kind}: {len(paths)} paths, executables: {sorted(runnable)}")
    for tool in ("bin/sh", "usr/bin/sh", "bin/busybox", "bin/mv", "usr/bin/mv", "usr/bin/cat"):
        assert tool not in paths, f"{tool} is in the {kind} image"
    assert f"usr/sbin/{kind}" in runnable
    others = {p for p in runnable if p != f"usr/sbin/{kind}" and ".so" not in p.rpartition("/")[2]}
    assert not others, f"executables besides {kind} and its libraries: {others}"


def pids(client, container: str) -> set[str]:
    """Host PIDs of a container's processes (`docker top`: no tool inside the container)."""
    top = client.api.top(container, ps_args="-o pid")
    return {row[0] for row in top["Processes"]}


def settled_pids(client, container: str) -> set[str]:
    """The container's PIDs once they stay the same for half a second (a reload is over)."""
    last: set[str] = set()

    def same() -> set[str] | None:
        nonlocal last
        now, last = last, pids(client, container)
        return last if now == last else None

    return wait_until(same, 10, 0.5, "no process starting or ending")


def container_of(swarm, kind: str) -> str:
    (found,) = swarm.client.containers.list(filters={"name": swarm.name(f"{kind}-edge")})
    return found.id


def bad_service(lab) -> None:
    """A service routed with TLS to its tasks, verified against the system CAs: the binaries
    load the CA bundle while checking, and these images hold none."""
    lab.app("bad", hostname="bad.example.com", port="8080", ssl_backend="true",
            ssl_backend_tls_verify="true")  # fmt: skip


def test_signal_mode_converges_binary_only_nginx_and_haproxy(swarm, bed, tmp_path):
    lab = routed(swarm, bed.docker_host)
    ports = {k: lab.proxy_container(k, binonly_image(bed.images, k)) for k in KINDS}
    ids = {k: container_of(swarm, k) for k in KINDS}
    gateway = Gateway(swarm.client.api)
    for kind, container in ids.items():  # what the old in-place step needed is not there
        code, output = gateway.run_in(container, ["sh", "-c", "true"])
        assert code in (126, 127), (kind, code, output)
    app = lab.app("app", hostname=HOST, port="8080")
    with lab.run(str(tmp_path / "controller.log")):
        for port in ports.values():
            swarm.wait_http(port, HOST, contains="-app.1.", timeout=30)
        began = time.monotonic()
        moved = {lab.label("hostname"): MOVED}
        swarm.update_service(app, lambda spec: spec["Labels"].update(moved))
        for port in ports.values():
            swarm.wait_http(port, MOVED, contains="-app.1.", timeout=10)
            swarm.wait_http(port, HOST, status=404, timeout=5)
        print(f"route change served by both binary-only proxies in {time.monotonic() - began:.2f}s")
    # The refused service is made while no controller runs, so the first pass of the next one
    # pushes the refused config and its next passes push nothing: any reload would show.
    before = {k: pids(swarm.client, c) for k, c in ids.items()}
    live = {k: gateway.read_file(c, KINDS[k].config_path) for k, c in ids.items()}
    bad_service(lab)
    with lab.run(str(tmp_path / "controller-2.log")) as controller:
        wait_until(
            lambda: controller.logs().count("service_problem") >= 2,
            30,
            0.2,
            "both proxies' refusals in the controller's log, the service named",
        )
        time.sleep(2)  # passes after the refusal leave the service out: nothing to push
        logs = controller.logs()
    for kind, container in ids.items():
        assert f"{kind} refused the config:" in logs
        assert WORDS[kind] in logs, f"{kind}'s own words are not in the log"
        assert pids(swarm.client, container) <= before[kind], f"{kind} was signalled"
        assert gateway.read_file(container, KINDS[kind].config_path) == live[kind]
        swarm.wait_http(ports[kind], MOVED, contains="-app.1.", timeout=1)
        swarm.wait_http(ports[kind], "bad.example.com", status=404, timeout=1)
    restart_serves_the_last_config(swarm, gateway, ids, ports)


def restart_serves_the_last_config(swarm, gateway, ids, ports) -> None:
    """The controller is gone: a restarted container reads its live file, which is whole, is
    the last config checked and signalled (the refused one only ever reached the staged name),
    and is what its digest file says."""
    for kind, container in ids.items():
        path = KINDS[kind].config_path
        live = gateway.read_file(container, path) or ""
        assert hashlib.sha256(live.encode()).hexdigest() == InPlace(gateway).served(container, path)
        staged = gateway.read_file(container, path + STAGED_SUFFIX) or ""
        assert CA_FILE[kind] in staged, "the refused config is the staged one, never live"
        started = time.monotonic()
        swarm.client.api.restart(container, timeout=5)
        swarm.wait_http(ports[kind], MOVED, contains="-app.1.", timeout=15)
        print(f"{kind}: restarted, serving the last config after {time.monotonic() - started:.2f}s")


def test_a_refused_push_leaves_the_live_file_and_digest_as_they_were(swarm, bed):
    """The in-place step on its own, both kinds: apply, then a config the binary refuses: the
    proxy's words come back, nothing is signalled, and restaging (which replaces the staged
    name the live file is linked to) leaves the live file and its digest untouched."""
    gateway = Gateway(swarm.client.api)
    for kind in KINDS:
        container = swarm.container(f"{kind}-solo", binonly_image(bed.images, kind)).id
        path = KINDS[kind].config_path
        text = gateway.read_file(container, path) or ""
        digest = hashlib.sha256(text.encode()).hexdigest()
        started = time.monotonic()
        InPlace(gateway).apply(container, kind, path, text, digest)
        print(f"{kind}: applied in {time.monotonic() - started:.3f}s")
        before = settled_pids(swarm.client, container)  # the reload just signalled is done
        with pytest.raises(CheckFailed, match=f"^{kind} refused the config: .+"):
            InPlace(gateway).apply(container, kind, path, "this is { not a config\n", "f" * 64)
        assert gateway.read_file(container, path) == text
        assert gateway.read_file(container, path + DIGEST_SUFFIX) == digest
        assert gateway.read_file(container, path + STAGED_SUFFIX) == "this is { not a config\n"
        assert pids(swarm.client, container) <= before
