"""Automatic HTTPS, the pure decisions, on plain data (rendered answers checked by the real
``nginx -t`` / ``haproxy -c``), and the client's JWS and CSR."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from controller import acme, acmeclient, checkcert
from controller import plan as planning
from controller.desired import desired_state
from controller.render import RenderOptions, render
from controller.result import PassResult
from controller.snapshot import SecretRef, snapshot_from_api
from tests import builders as b
from tests.unit.test_render import real_check

P = "interlock"
HOST = "shop.example.com"
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
TOKEN = "A" * 43
KEYAUTH = f"{TOKEN}.{'B' * 43}"


def secret(name: str, **labels: str) -> dict:
    return {"ID": f"id-{name}", "Spec": {"Name": name, "Labels": labels}}


def pair(host: str, version: str, expires: float) -> list[dict]:
    cert, key = acme.secret_names(P, host, version)
    return [
        secret(cert, **acme.labels_for(P, "cert", host, version, expires=str(int(expires)))),
        secret(key, **acme.labels_for(P, "key", host, version)),
    ]


def record(kind: str, data: dict) -> dict:
    name = acme.record_name(P, kind, data["host"], data["version"])
    labels = acme.labels_for(P, kind, data["host"], data["version"])
    encoded = base64.b64encode(json.dumps(data).encode()).decode()
    return {"ID": f"id-{name}", "Spec": {"Name": name, "Labels": labels, "Data": encoded}}


def order_data(host: str = HOST, token: str = TOKEN, keyauth: str = KEYAUTH, attempt=1) -> dict:
    cert, key = acme.secret_names(P, host, "20270115000000")
    return {
        "host": host, "version": "20270115000000", "url": "https://ca/order/1",
        "challenge_url": "https://ca/chal/1", "token": token, "keyauth": keyauth,
        "csr": "AAAA", "key_secret": key, "cert_secret": cert, "attempt": attempt,
    }  # fmt: skip


def world(secrets=(), configs=(), **app_labels: str):
    labels = {f"{P}.hostname": HOST, f"{P}.port": "8080", f"{P}.acme": "true", **app_labels}
    services = [
        b.service("p1", "ngx", {f"{P}.ext.name": "nginx"}),
        b.service("p2", "hap", {f"{P}.ext.name": "haproxy"}),
        b.service("a1", "shop", labels),
        b.service("a2", "plain", {f"{P}.hostname": "plain.example.com", f"{P}.port": "8080"}),
    ]
    tasks = [b.task("t1", "a1", "10.0.0.2"), b.task("t2", "a2", "10.0.0.3")]
    snapshot = snapshot_from_api(
        services, tasks, [b.network("net1")], list(configs), [], list(secrets)
    )
    desired = desired_state(snapshot, P)
    state = acme.state(snapshot, desired, P)
    return snapshot, acme.with_acme(desired, state, P, NOW, 60), state


def proxies(desired) -> dict:
    return {d.proxy.name: d for d in desired.proxies}


def test_a_labelled_host_is_wanted_and_served_on_plain_http_until_its_certificate_exists():
    _, desired, state = world()
    assert state.wanted == {HOST: "shop"}
    assert all(not d.tls and not d.certificates for d in desired.proxies)


def test_the_newest_unexpired_pair_is_mounted_and_served_like_a_users_secrets():
    old = pair(HOST, "20261101000000", NOW + 100)
    new = pair(HOST, "20261201000000", NOW + 5_000_000)
    _, desired, state = world(secrets=old + new + [secret("unrelated")])
    assert state.issued[HOST].version == "20261201000000"
    for one in desired.proxies:
        (tls,) = one.tls
        assert tls.host == HOST and not tls.only
        mounts = dict(planning.secret_mounts(one))
        assert set(mounts.values()) == set(acme.secret_names(P, HOST, "20261201000000"))


def test_an_expired_certificate_is_not_served():
    _, desired, _ = world(secrets=pair(HOST, "20261101000000", NOW - 1))
    assert all(not d.tls for d in desired.proxies)


def test_a_users_certificate_wins_over_acme():
    user = [secret("my-crt"), secret("my-key")]
    _, desired, state = world(
        secrets=user + pair(HOST, "20261201000000", NOW + 5_000_000),
        **{f"{P}.ssl_cert": "my-crt", f"{P}.ssl_cert_key": "my-key"},
    )
    assert state.wanted == {}
    for one in desired.proxies:
        assert [c.cert_secret for c in one.certificates] == ["my-crt"]


@pytest.mark.parametrize("kind", ["ngx", "hap"])
def test_a_pending_challenge_is_answered_by_the_real_proxy_config(kind, tmp_path):
    issued = pair(HOST, "20261201000000", NOW + 5_000_000)  # renewal: with TLS served too
    _, desired, _ = world(secrets=issued, configs=[record("order", order_data())])
    one = proxies(desired)[kind]
    assert [c.token for c in one.challenges] == [TOKEN]
    (cert,) = one.certificates
    (tmp_path / cert.file).write_text(checkcert.CERT)
    (tmp_path / f"{cert.file}.key").write_text(checkcert.KEY)
    options = RenderOptions(secrets_dir=str(tmp_path))
    rendered = render(one, options)
    path = f"/.well-known/acme-challenge/{TOKEN}"
    answer = {
        "ngx": f"location = {path} {{\n            default_type text/plain;\n"
        f"            return 200 {KEYAUTH};",
        "hap": f"http-request return status 200 content-type text/plain string {KEYAUTH} "
        f"if {{ var(txn.host) -m str {HOST} }} {{ path -m str {path} }}",
    }[kind]
    assert answer in rendered.text
    checked = real_check(one.proxy.spec.kind, rendered.text, tmp_path, rendered.files)
    assert checked.returncode == 0, checked.stderr
    assert TOKEN not in render(proxies(world(secrets=issued)[1])[kind], options).text


@pytest.mark.parametrize(
    "token,keyauth",
    [("A" * 40 + ";x", KEYAUTH), (TOKEN, KEYAUTH + '"; return 302 http://evil'), (TOKEN, "B" * 50)],
)
def test_a_record_whose_answer_is_not_base64url_is_ignored(token, keyauth):
    _, desired, state = world(configs=[record("order", order_data(token=token, keyauth=keyauth))])
    assert state.orders == {} and all(not d.challenges for d in desired.proxies)


def test_a_record_squatting_another_name_is_ignored():
    raw = record("order", order_data())
    raw["Spec"]["Name"] = f"{P}-acme-order-elsewhere"
    assert world(configs=[raw])[2].orders == {}


def result_of(snapshot, desired, actions=(), refused=None) -> PassResult:
    return PassResult("p", snapshot, desired, {}, list(actions), [], [], refused or {})


def test_steps_order_what_is_missing_and_back_off_after_a_failure():
    snapshot, desired, state = world()
    assert acme.steps(state, result_of(snapshot, desired), NOW, 30, 60) == [acme.Start(HOST, 1)]
    failed = {"host": HOST, "version": "20270115000000", "attempt": 2, "failed_at": NOW - 100,
              "error": "urn:ietf:params:acme:error:unauthorized: 404"}  # fmt: skip
    snapshot, desired, state = world(configs=[record("failed", failed)])
    result = result_of(snapshot, desired)
    assert acme.steps(state, result, NOW, 30, 60) == []  # 2nd failure: 300 s
    assert acme.steps(state, result, NOW + 201, 30, 60) == [acme.Start(HOST, 3)]
    (problem,) = [p for p in desired.problems if p.label == f"{P}.acme"]
    assert problem.service == "shop" and not problem.rejected
    assert "attempt 2 failed: urn:ietf:params:acme:error:unauthorized" in problem.reason


def test_backoff_grows_fivefold_to_a_day():
    assert [acme.backoff(n, 60) for n in (1, 2, 3, 4, 5, 6, 9)] == [
        60, 300, 1500, 7500, 37500, 86400, 86400
    ]  # fmt: skip


def test_a_certificate_is_due_in_its_window_and_never_before_half_its_lifetime():
    issued = acme.Issued(HOST, acme.version_of(NOW), "c", "k", NOW + 90 * 86400)
    assert not acme.due(issued, NOW + 59 * 86400, 30)
    assert acme.due(issued, NOW + 60 * 86400, 30)
    hour = acme.Issued(HOST, acme.version_of(NOW), "c", "k", NOW + 3600)  # an hour-long one
    assert not acme.due(hour, NOW + 60, 30) and acme.due(hour, NOW + 1800, 30)


def test_an_order_is_told_to_validate_only_once_every_proxy_serves_its_answer():
    snapshot, desired, state = world(configs=[record("order", order_data())])
    (order,) = state.orders.values()
    push = planning.PushConfig("ngx", "nginx", "c1", "/etc/nginx/nginx.conf", "text", "sha")
    busy = acme.steps(state, result_of(snapshot, desired, [push]), NOW, 30, 60)
    assert busy == [acme.Advance(order, False)]
    calm = acme.steps(state, result_of(snapshot, desired), NOW, 30, 60)
    assert calm == [acme.Advance(order, True)]
    refused = acme.steps(state, result_of(snapshot, desired, refused={"hap": "x"}), NOW, 30, 60)
    assert refused == [acme.Advance(order, False)]


def test_old_versions_go_once_no_proxy_mounts_them_and_the_order_keeps_its_key():
    old = pair(HOST, "20261101000000", NOW + 100)
    new = pair(HOST, "20261201000000", NOW + 5_000_000)
    stray = [secret("interlock-acme-x.key", **acme.labels_for(P, "key", HOST, "2026"))]
    snapshot, _, state = world(secrets=old + new + stray)
    dropped = {s.name for s in acme.garbage(state, snapshot)}
    assert dropped == {old[0]["Spec"]["Name"], old[1]["Spec"]["Name"], "interlock-acme-x.key"}
    mounted = replace(
        snapshot.services[0],
        secret_refs=(acme_ref := SecretRef("x", old[0]["Spec"]["Name"], "tls-x.pem"),),
    )
    snapshot = replace(snapshot, services=(mounted, *snapshot.services[1:]))
    assert acme_ref.secret_name not in {s.name for s in acme.garbage(state, snapshot)}


def test_the_jws_signature_verifies_with_the_account_key_and_the_csr_names_the_host():
    key = ec.generate_private_key(ec.SECP256R1())
    jws = json.loads(acmeclient.sign(key, {"alg": "ES256", "url": "u"}, {"a": 1}))
    raw = base64.urlsafe_b64decode(jws["signature"] + "==")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    signed = f"{jws['protected']}.{jws['payload']}".encode()
    key.public_key().verify(der, signed, ec.ECDSA(hashes.SHA256()))
    csr = x509.load_der_x509_csr(acmeclient.csr_der(acmeclient.new_key("ec256"), HOST))
    names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [HOST] and csr.is_signature_valid
    assert len(acmeclient.thumbprint(key)) == 43


def test_metrics_and_status_show_each_hosts_expiry_and_failures():
    from prometheus_client.parser import text_string_to_metric_families

    from controller import report
    from controller.metrics import Telemetry

    failed = {
        "host": "other.example.com",
        "version": "20270115000000000",
        "attempt": 2,
        "failed_at": NOW - 10,
        "error": "urn:ietf:params:acme:error:unauthorized",
    }
    secrets = pair(HOST, "20261201000000000", NOW + 5_000_000)
    snapshot, desired, state = world(
        secrets=secrets,
        configs=[record("failed", failed)],
        **{f"{P}.alias_domain": "other.example.com"},
    )
    telemetry = Telemetry(P, 60)
    result = result_of(snapshot, desired)
    result.acme = state
    telemetry.record(result)
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(telemetry.exposition().decode())
        for s in family.samples
        if s.name.startswith("interlock_acme")
    }
    expiry = "interlock_acme_certificate_expiry_timestamp_seconds"
    assert found[(expiry, (("host", HOST),))] == int(NOW + 5_000_000)
    assert found[("interlock_acme_failed_attempts", (("host", "other.example.com"),))] == 2
    assert found[("interlock_acme_failed_attempts", (("host", HOST),))] == 0
    assert found[("interlock_acme_orders_in_flight", ())] == 0
    rows = {r["host"]: r for r in acme.certificate_rows(state, NOW, 30, 60)}
    assert rows[HOST]["state"] == "valid" and rows[HOST]["secret"].endswith(".crt")
    assert rows["other.example.com"]["state"].startswith("backing off until ")
    text = report.status_report([], [], [], False, list(rows.values()))
    assert "backing off until" in text and "urn:ietf:params:acme:error:unauthorized" in text
