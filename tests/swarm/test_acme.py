"""Automatic HTTPS against a real ACME CA (pebble on 127.0.0.1), through real nginx and HAProxy.

pebble validates every HTTP-01 challenge for real on 127.0.0.1:``pebble.http_port``, where each
scenario publishes its proxy: the proxy answers from its own configuration, the controller (the
real ``interlock run`` process) tells the CA only once it does. A second proxy, of another
cluster, serves the host meant to fail: pebble asks the first proxy, which does not route it.
"""

from __future__ import annotations

import re
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from controller.acmeclient import key_pem
from tests.bed.probes import LOOPBACK, free_port, http_get, wait_until
from tests.swarm.controlled import ControllerProcess, routed, run_cli
from tests.swarm.load import Load, report
from tests.swarm.pebble import start_pebble
from tests.swarm.test_tls import https_get

KINDS = ["nginx", "haproxy"]


def acme_env(pebble, folder: Path, **extra: str) -> dict[str, str]:
    """The controller's settings for pebble, with a fresh account key in a file (a Docker
    secret mounted in production)."""
    key = folder / "account.pem"
    key.write_text(key_pem(ec.generate_private_key(ec.SECP256R1())))
    root = folder / "pebble-root.pem"
    root.write_text(pebble.root())
    return {
        "INTERLOCK_ACME_DIRECTORY": pebble.directory,
        "INTERLOCK_ACME_CA_BUNDLE": pebble.ca_bundle,
        "INTERLOCK_ACME_ACCOUNT_KEY_FILE": str(key),
        "INTERLOCK_ACME_EMAIL": "ops@example.com",
        "INTERLOCK_ACME_RETRY_SECONDS": "2",
        "INTERLOCK_MODE": "signal",
        "INTERLOCK_POLL_INTERVAL": "0.5",
        "INTERLOCK_ACME_RENEW_DAYS": "0.001",  # pebble's hour-long certificates: 86 s
        **extra,
    }


def acme_lab(swarm, bed, kind: str, ca, name: str) -> tuple:
    """A signal-mode proxy answering challenges on the CA's HTTP port and one service asking
    for a certificate: (lab, its host)."""
    lab = routed(swarm, bed.docker_host)
    lab.proxy_service(kind, mode="signal", tls=True, port=ca.http_port)
    host = f"{name}-{swarm.id}.example.com"
    lab.app("web", hostname=host, port="8080", acme="true")
    return lab, host


def served_certificate(port: int, host: str, root: str) -> x509.Certificate | None:
    """The certificate the proxy serves for ``host``, when it verifies against pebble's root."""
    context = ssl.create_default_context(cafile=root)
    try:
        with (
            socket.create_connection((LOOPBACK, port), timeout=3) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return x509.load_der_x509_certificate(der) if der else None


def started_orders(log: str, host: str) -> int:
    return len(re.findall(rf"acme_order_started\b.*host={re.escape(host)}\b", log))


def side_proxy(lab, kind: str) -> int:
    """A plain proxy container of cluster ``side`` on another port: it routes the host meant
    to fail, which the proxy pebble asks (on its http port) does not."""
    image = lab.swarm.images.nginx if kind == "nginx" else lab.swarm.images.haproxy
    port = free_port()
    lab.swarm.container(
        f"{kind}-side",
        image,
        labels={lab.label("ext.name"): kind, lab.label("ext.service_cluster"): "side"},
        network=lab.network.name,
        ports={"80/tcp": ("127.0.0.1", port)},
    )
    return port


@pytest.mark.parametrize("kind", KINDS)
def test_a_labelled_host_gets_a_certificate_from_the_ca_and_a_refused_host_is_backed_off(
    kind, swarm, bed, pebble, tmp_path
):
    env = acme_env(pebble, tmp_path)
    lab = routed(swarm, bed.docker_host)
    lab.proxy_service(kind, mode="signal", tls=True, port=pebble.http_port)
    side = side_proxy(lab, kind)
    good, bad = f"web-{swarm.id}.example.com", f"lost-{swarm.id}.example.com"
    lab.app("web", hostname=good, port="8080", acme="true")
    lab.app("lost", hostname=bad, port="8080", acme="true", ext__service_cluster="side")
    orders_before = pebble.orders()
    root = str(tmp_path / "pebble-root.pem")
    with ControllerProcess(bed.docker_host, swarm.id, str(tmp_path / "ctl.log"), **env) as ctl:
        started = time.monotonic()
        wait_until(lambda: http_get(lab.port, good)[0] == 200, 60, message="HTTP first")
        cert = wait_until(
            lambda: served_certificate(lab.tls_port, good, root), 120, 0.5, "pebble's cert"
        )
        seconds = time.monotonic() - started
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == [good]
        status, body = https_get(lab.tls_port, good, root, "/x")
        assert status == 200 and "-web.1." in body, body
        # The refused host: reported with the CA's words, retried with back-off, still on HTTP.
        wait_until(lambda: started_orders(ctl.logs(), bad) >= 2, 60, message="a second try")
        assert http_get(side, bad)[0] == 200
        time.sleep(4)
        log = ctl.logs()
    attempts = started_orders(log, bad)
    print(
        f"{kind}: certificate served after {seconds:.1f}s; {good}: "
        f"{started_orders(log, good)} order; {bad}: {attempts} attempts; "
        f"pebble orders {pebble.orders() - orders_before}"
    )
    assert started_orders(log, good) == 1
    assert 2 <= attempts <= 3, attempts  # 2 s, then 10 s back-off
    assert "acme_order_failed" in log and "urn:ietf:params:acme:error" in log
    status = run_cli(bed.docker_host, swarm.id, "status", **env).stdout
    rows = {
        w[0]: line for line in status.splitlines() if (w := line.split()) and w[0] in (good, bad)
    }
    assert " valid " in rows[good] and " backing off until " in rows[bad], status
    shown = run_cli(bed.docker_host, swarm.id, "validate", **env)
    assert f"no certificate for {bad} yet: attempt" in shown.stdout, shown.stdout
    assert f"no certificate for {good}" not in shown.stdout
    print(shown.stdout[-600:])


@pytest.mark.parametrize("kind", ["nginx"])
def test_a_controller_killed_in_the_middle_of_an_order_orders_once(
    kind, swarm, bed, pebble, tmp_path
):
    env = acme_env(pebble, tmp_path)
    lab, host = acme_lab(swarm, bed, kind, pebble, "kill")
    root = str(tmp_path / "pebble-root.pem")
    orders_before = pebble.orders()
    first = ControllerProcess(bed.docker_host, swarm.id, str(tmp_path / "first.log"), **env)
    with first:
        wait_until(lambda: "acme_order_started" in first.logs(), 60, 0.05, "an order")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
    assert served_certificate(lab.tls_port, host, root) is None  # killed before issuance
    with ControllerProcess(bed.docker_host, swarm.id, str(tmp_path / "second.log"), **env) as ctl:
        wait_until(lambda: served_certificate(lab.tls_port, host, root), 120, 0.5, "the cert")
        second = ctl.logs()
    orders = pebble.orders() - orders_before
    print(f"orders at pebble: {orders}; restarted: {second.count('acme_order_started')}")
    assert orders == 1
    assert "acme_order_started" not in second and "acme_certificate_issued" in second


@pytest.mark.parametrize("kind", KINDS)
def test_a_certificate_is_renewed_before_it_expires_and_the_old_one_removed(
    kind, swarm, bed, tmp_path
):
    """Its own pebble, with 40-second certificates: renewed at half their lifetime. In signal
    mode both the first certificate and the renewal are in-place reloads (files beside the
    config): the proxy's containers are the same throughout and no request fails."""
    ca = start_pebble(tmp_path / "pebble", validity=40)
    try:
        env = acme_env(ca, tmp_path)
        lab, host = acme_lab(swarm, bed, kind, ca, "renew")
        root = str(tmp_path / "pebble-root.pem")
        with ControllerProcess(bed.docker_host, swarm.id, str(tmp_path / "ctl.log"), **env) as ctl:
            wait_until(lambda: http_get(lab.port, host)[0] == 200, 60, message="HTTP first")
            containers = proxy_containers(swarm, lab.proxy)
            first = wait_until(lambda: served_certificate(lab.tls_port, host, root), 90, 0.5, "1st")
            first_in_place = proxy_containers(swarm, lab.proxy) == containers
            issued = time.monotonic()
            before = acme_secrets(swarm)
            https_failures, https_ok = 0, 0
            with Load(lab.port, host, seconds=35) as load:
                second = None
                while time.monotonic() - issued < 33 and second is None:
                    served = served_certificate(lab.tls_port, host, root)
                    https_ok += served is not None
                    https_failures += served is None
                    if served is not None and served.serial_number != first.serial_number:
                        second, renewed_after = served, time.monotonic() - issued
                    time.sleep(0.25)
            result = load.result or load.wait()
            assert second is not None, "no renewed certificate served"
            after = proxy_containers(swarm, lab.proxy)
            keys = key_files(swarm, after)
            # The first version goes once no proxy mounts it any more.
            wait_until(lambda: not before & acme_secrets(swarm), 30, 0.5, "old version removed")
            log = ctl.logs()
        report(f"acme renewal under load, {kind}", result)
        print(
            f"{kind}: renewed {renewed_after:.1f}s after the first certificate; HTTP load "
            f"{result.requests} requests, {result.failed} failed; HTTPS probes {https_ok} ok, "
            f"{https_failures} failed; proxy containers {sorted(c[:12] for c in containers)} "
            f"-> {sorted(c[:12] for c in after)}"
        )
        assert second.not_valid_before_utc > first.not_valid_before_utc
        assert log.count("acme_certificate_issued") >= 2
        assert first_in_place, "the first certificate restarted the proxy's tasks"
        assert after == containers, "the renewal restarted the proxy's tasks"
        assert result.failed == 0 and https_failures == 0, result.summary()
        assert "PRIVATE KEY" not in log
        user = "0" if kind == "nginx" else "99"
        assert keys and all(k.split()[:2] == ["400", user] for k in keys), keys
    finally:
        ca.stop()


def proxy_containers(swarm, service) -> set[str]:
    """Ids of the running containers of the proxy service's tasks (a restart changes them)."""
    found = swarm.client.containers.list(
        filters={"label": f"com.docker.swarm.service.id={service.id}"}
    )
    return {c.id for c in found}


def key_files(swarm, containers: set[str]) -> list[str]:
    """ "mode uid path" of each ACME key written beside a proxy's config."""
    found = []
    for cid in containers:
        script = "stat -c '%a %u %n' /etc/nginx/*.acme-*.key /usr/local/etc/haproxy/*.acme-*.key"
        _, output = swarm.client.containers.get(cid).exec_run(["sh", "-c", script + " 2>/dev/null"])
        found += output.decode().split("\n")
    return [line for line in found if line.strip()]


def acme_secrets(swarm) -> set[str]:
    return {s.name for s in swarm.client.secrets.list(filters={"label": f"{swarm.id}.ext.acme"})}
