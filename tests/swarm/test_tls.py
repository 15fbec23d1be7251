"""TLS termination from Docker secrets, through real nginx and HAProxy, with real HTTPS (SNI)."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import time
from dataclasses import replace

import pytest

from controller import certcheck
from controller import plan as planning
from controller.certcheck import CertificateChecker, CertPair
from controller.desired import desired_state
from controller.gateway import Gateway
from controller.reconcile import Reconciler, render_options
from controller.render import render
from controller.timestamps import nanoseconds
from tests.bed.probes import LOOPBACK, http_get, wait_until
from tests.swarm.controlled import routed

HOST = "secure.example.com"


def self_signed(tmp_path) -> tuple[str, str, str]:
    """A certificate for HOST and its key (PEM texts), and the certificate's path (the CA)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={HOST}",
            "-addext",
            f"subjectAltName=DNS:{HOST}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert.read_text(), key.read_text(), str(cert)


def https_get(port: int, host: str, cafile: str, path: str = "/") -> tuple[int, str]:
    """GET over TLS to 127.0.0.1:port with SNI and Host ``host``, verifying against ``cafile``."""
    context = ssl.create_default_context(cafile=cafile)
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=5)
    conn._create_connection = lambda _address, *args, **kwargs: socket.create_connection(
        (LOOPBACK, port), *args, **kwargs
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def tls_app(lab, swarm, tmp_path):
    cert, key, cafile = self_signed(tmp_path)
    crt_secret, key_secret = swarm.secret("crt", cert), swarm.secret("key", key)
    lab.app(
        "secure",
        hostname=HOST,
        port="8080",
        ssl_cert=crt_secret.name,
        ssl_cert_key=key_secret.name,
        ssl_only="true",
    )
    lab.app("plain", hostname="plain.example.com", port="8080")
    return cafile


def assert_tls_served(lab, cafile) -> bool:
    """HTTPS for the host, its plain HTTP redirected there, other hosts on plain HTTP (True)."""
    status, body = https_get(lab.tls_port, HOST, cafile, "/x")
    assert status == 200 and "-secure.1." in body and "path=/x " in body, body
    redirect = http.client.HTTPConnection(LOOPBACK, lab.port, timeout=5)
    redirect.request("GET", "/x?y=1", headers={"Host": HOST})
    response = redirect.getresponse()
    assert (response.status, response.getheader("Location")) == (301, f"https://{HOST}/x?y=1")
    redirect.close()
    assert http_get(lab.port, "plain.example.com")[0] == 200  # other hosts stay on plain HTTP
    return True


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_tls_from_docker_secrets_in_rolling_mode(kind, swarm, bed, tmp_path):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service(kind, tls=True)
    cafile = tls_app(lab, swarm, tmp_path)
    result = lab.converge()
    assert result.converged
    assert_tls_served(lab, cafile)
    proxy.reload()
    mounted = {
        s["SecretName"] for s in proxy.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    }
    assert mounted == {f"{swarm.prefix}crt", f"{swarm.prefix}key"}


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_tls_in_signal_mode_mounts_the_secrets_once_then_reloads_in_place(
    kind, swarm, bed, tmp_path
):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service(kind, mode="signal", tls=True)
    cafile = tls_app(lab, swarm, tmp_path)
    with lab.run(str(tmp_path / "controller.log")):
        # Only the new config serves HTTPS, but for a moment after nginx reloads, its old workers
        # still take connections on port 80 (measured: about 1 ms, two requests, on an idle
        # machine): seeing HTTPS is no proof that the redirect is up, so both are waited for.
        wait_until(lambda: assert_tls_served(lab, cafile), 60, message="HTTPS and the redirect")
        swarm.wait_updated(proxy)  # Swarm writes the update's end on the service (its version)
        proxy.reload()
        version = proxy.version
        lab.app("more", hostname="more.example.com", port="8080")  # a route change: in place
        swarm.wait_http(lab.port, "more.example.com", contains="-more.1.", timeout=15)
        proxy.reload()
        assert proxy.version == version  # no service update (no restart) for a route change
        assert https_get(lab.tls_port, HOST, cafile)[0] == 200


# -- a certificate the proxy cannot load never takes it down (issue 11, item 3) -----------------

JUNK = "this is not a certificate\n"


def bad_pairs(swarm, tmp_path) -> dict[str, tuple]:
    """Secrets of a good pair, of a key that is not the certificate's, and of plain text."""
    cert, key, _ = self_signed(tmp_path)
    _, other_key, _ = self_signed(tmp_path)  # another key (the files are read before rewritten)
    made = {
        name: swarm.secret(name, text)
        for name, text in (("crt", cert), ("key", key), ("okey", other_key), ("junk", JUNK))
    }
    return {
        "good": (made["crt"], made["key"]),
        "mismatched": (made["crt"], made["okey"]),
        "garbage": (made["junk"], made["junk"]),
    }


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_the_certificate_check_loads_the_real_secrets_with_the_proxys_binary(
    kind, swarm, bed, tmp_path
):
    image = swarm.images.nginx if kind == "nginx" else swarm.images.haproxy
    checker = CertificateChecker(Gateway(swarm.client.api), swarm.id, timeout=60)
    pairs = {
        case: CertPair(kind, image, crt.id, crt.name, key.id, key.name)
        for case, (crt, key) in bad_pairs(swarm, tmp_path).items()
    }
    started = time.monotonic()
    verdicts = checker.check(pairs.values())
    seconds = time.monotonic() - started
    said = {case: verdicts[pair] for case, pair in pairs.items()}
    calls = checker.api.calls
    print(f"{kind}: {len(pairs)} pairs checked in {seconds:.2f}s ({calls} calls): {said}")
    assert said["good"].ok, said
    words = {
        "nginx": {"garbage": "cannot load certificate", "mismatched": "key values mismatch"},
        "haproxy": {
            "garbage": "unable to load certificate",
            "mismatched": "inconsistencies between private key and certificate",
        },
    }[kind]
    for case, expected in words.items():
        assert not said[case].ok and expected in said[case].output, (case, said[case])
    assert all(checker.knows(pair) for pair in pairs.values())  # the proxy's own verdicts
    calls = checker.api.calls
    assert checker.check(pairs.values()) == verdicts and checker.api.calls == calls  # remembered
    left = swarm.client.api.services(filters={"label": f"{swarm.id}.ext.check=true"})
    assert left == [], [s["Spec"]["Name"] for s in left]


def test_a_check_that_cannot_run_refuses_and_is_not_remembered(swarm, bed):
    secret = swarm.secret("crt", JUNK)
    missing = CertPair("nginx", "interlock-bed/no-such-image:0", secret.id, secret.name,
                       secret.id, secret.name)  # fmt: skip
    checker = CertificateChecker(Gateway(swarm.client.api), swarm.id, timeout=20)
    started = time.monotonic()
    (verdict,) = checker.check([missing]).values()
    print(f"unrunnable check: {verdict} after {time.monotonic() - started:.1f}s")
    assert not verdict.ok
    assert verdict.output.startswith(certcheck.UNRUN) and "No such image" in verdict.output
    assert not checker.knows(missing)
    assert swarm.client.api.services(filters={"label": f"{swarm.id}.ext.check=true"}) == []


def screened(lab) -> Reconciler:
    """The controller's own pass, whose certificate checker the composition root wired in."""
    reconciler = lab.controller.reconciler
    assert reconciler.cert_checker is not None
    return reconciler


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_a_pair_the_proxy_cannot_load_is_rejected_and_every_other_route_served(
    kind, swarm, bed, tmp_path
):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service(kind, tls=True)
    reconciler = screened(lab)
    cafile = tls_app(lab, swarm, tmp_path)
    junk = swarm.secret("junk", JUNK)
    lab.app("junktls", hostname="junk.example.com", port="8080", ssl_cert=junk.name,
            ssl_cert_key=junk.name)  # fmt: skip
    started = time.monotonic()
    result = lab.converge()
    print(f"{kind}: converged in {time.monotonic() - started:.1f}s; "
          f"{reconciler.cert_checker.api.calls} calls in all")  # fmt: skip
    reported = [p for p in result.problems if p.service.endswith("junktls")]
    print(f"{kind}: reported {[str(p) for p in reported]}")
    (problem,) = reported
    assert problem.label == f"{lab.prefix}.ssl_cert" and problem.proxy == proxy.name
    assert "cannot load the certificate" in problem.reason and junk.name in problem.reason
    assert ("cannot load certificate" if kind == "nginx" else "unable to load") in problem.reason
    assert_tls_served(lab, cafile)
    assert http_get(lab.port, "junk.example.com")[0] == 404
    proxy.reload()
    assert proxy.attrs.get("UpdateStatus", {}).get("State", "completed") == "completed"
    lab.app("later", hostname="later.example.com", port="8080")
    result = reconciler.run_pass()  # one pass makes a new service routable
    assert not result.errors, result.errors
    swarm.wait_updated(proxy)
    swarm.wait_http(lab.port, "later.example.com", contains="-later.1.", timeout=30)
    assert https_get(lab.tls_port, HOST, cafile)[0] == 200
    print(f"{kind}: plain, secure (HTTPS) and later answer 200; junk.example.com 404")


# -- an update that fails is rolled back, and not made again ------------------------------------


def deploy_unchecked(lab) -> planning.Deployable:
    """Plan and carry out the current desired state with no check at all: the way a config
    whose proxy exits at start (here: a certificate no check saw) reaches Swarm."""
    reconciler = lab.controller.reconciler
    snapshot = reconciler.observer.snapshot()
    desired = desired_state(snapshot, lab.prefix)
    (one,) = desired.proxies
    rendered = render(one, render_options(lab.settings))
    target = planning.Deployable(one.proxy, rendered, planning.secret_mounts(one))
    actions = planning.plan(snapshot, lab.prefix, {one.proxy.name: target}, {}, 3)
    outcomes = reconciler.executor.run(actions, snapshot)
    assert actions and all(o.ok for o in outcomes), outcomes
    return target


def watch_until_rolled_back(lab, proxy, host: str, timeout: float = 90.0) -> dict:
    """Poll ``host`` through the proxy every 0.1 s until Swarm has rolled the update back;
    returns the answers counted, the longest stretch without a 200, and the update statuses
    seen under a version another status was seen under (the observer reuses a service's parse
    while its version stays, so there must be none)."""
    deadline = time.monotonic() + timeout
    counts, gap, longest, state = {"ok": 0, "failed": 0}, None, 0.0, ""
    status_at: dict[int, dict] = {}
    same_version: list = []
    while time.monotonic() < deadline:
        try:
            ok = http_get(lab.port, host, timeout=1.0)[0] == 200
        except OSError:
            ok = False
        now = time.monotonic()
        counts["ok" if ok else "failed"] += 1
        if ok:
            gap = None
        else:
            gap = gap or now
            longest = max(longest, now - gap)
        proxy.reload()
        state = proxy.attrs.get("UpdateStatus", {}).get("State", "")
        status, version = proxy.attrs.get("UpdateStatus", {}), proxy.attrs["Version"]["Index"]
        if status_at.setdefault(version, status) != status:
            same_version.append((version, status_at[version], status))
        if state in ("rollback_completed", "rollback_paused", "paused"):
            break
        time.sleep(0.1)
    seen = {"versions": len(status_at), "same_version_other_status": same_version}
    return {**counts, "longest_outage_s": round(longest, 2), "state": state, **seen}


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_a_failed_rolling_update_rolls_back_to_the_serving_task_and_is_not_retried(
    kind, swarm, bed, tmp_path
):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service(kind, tls=True)
    lab.app("plain", hostname="plain.example.com", port="8080")
    lab.converge()
    before = planning.mounted_config(lab.controller.reconciler.observer.snapshot(),
                                     _proxy_of(lab))  # fmt: skip
    junk = swarm.secret("junk", JUNK)
    lab.app("junktls", hostname="junk.example.com", port="8080", ssl_cert=junk.name,
            ssl_cert_key=junk.name)  # fmt: skip
    target = deploy_unchecked(lab)
    attempted = planning.config_name(lab.prefix, target.proxy, target.rendered)
    seen = watch_until_rolled_back(lab, proxy, "plain.example.com")
    print(f"{kind}: update to {attempted} -> {seen}")
    assert seen["state"] == "rollback_completed", seen
    assert seen["same_version_other_status"] == [], seen  # what snapshot.Parses relies on
    tasks = swarm.wait_running(proxy)
    swarm.wait_http(lab.port, "plain.example.com", contains="-plain.1.", timeout=30)
    snapshot = lab.controller.reconciler.observer.snapshot()
    assert planning.mounted_config(snapshot, _proxy_of(lab)) == before  # the old config again
    mounted = {c["ConfigName"] for c in tasks[0]["Spec"]["ContainerSpec"]["Configs"]}
    assert before in mounted and attempted not in mounted

    again = planning.plan(snapshot, lab.prefix, {target.proxy.name: target}, {}, 3)
    assert [a for a in again if not isinstance(a, planning.RemoveConfig)] == []  # not retried
    # The back-off reads the Engine's own times (the rollback's end, before the listing); a task
    # the proxy itself failed is held however late the pass.
    service = snapshot.service(target.proxy.service_id)
    assert nanoseconds(service.update.completed_at) <= snapshot.taken_at * 1e9
    later = replace(snapshot, taken_at=snapshot.taken_at + 86_400)
    again = planning.plan(later, lab.prefix, {target.proxy.name: target}, {}, 3)
    assert [a for a in again if not isinstance(a, planning.RemoveConfig)] == []
    (problem,) = planning.rolling_problems(snapshot, lab.prefix, target)
    print(f"{kind}: reported {problem}")
    assert attempted in problem.reason and "rolled it back" in problem.reason
    assert "exit code 1" in problem.reason
    assert ("cannot load certificate" if kind == "nginx" else "unable to load") in problem.reason

    swarm.client.api.remove_service(swarm.name("junktls"))  # what it would mount changes:
    lab.app("more", hostname="more.example.com", port="8080")
    lab.converge()  # a new attempt, which succeeds
    swarm.wait_http(lab.port, "more.example.com", contains="-more.1.", timeout=30)
    assert http_get(lab.port, "plain.example.com")[0] == 200
    proxy.reload()
    assert proxy.attrs["UpdateStatus"]["State"] == "completed"
    print(f"{kind}: a changed config deploys after the rollback; plain and more answer 200")


def _proxy_of(lab):
    snapshot = lab.controller.reconciler.observer.snapshot()
    (one,) = desired_state(snapshot, lab.prefix).proxies
    return one.proxy
