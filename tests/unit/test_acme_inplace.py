"""ACME certificates delivered in place to signal-mode proxies (files beside the config), on
plain data: the sealed key, which proxies get files and which mounts, what the real binaries
accept, and that no key reaches a repr, a check container or the config's text."""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller import acme, acmekeys, checkcert
from controller import plan as planning
from controller.acmeclient import key_pem
from controller.agent import local_proxies, refusal
from controller.board import Board
from controller.check import check_files
from controller.desired import desired_state
from controller.gateway import tar_files
from controller.plan import PushConfig
from controller.render import RenderOptions, render
from controller.snapshot import snapshot_from_api
from controller.vocabulary import Vocabulary
from tests import builders as b
from tests.unit.test_acme import HOST, NOW, P, pair, record
from tests.unit.test_render import real_check

VERSION = "20261201000000"
CERT_NAME, KEY_NAME = acme.secret_names(P, HOST, VERSION)


def self_signed(host: str = HOST) -> tuple[str, str]:
    """A certificate for ``host`` and its key, other than the check's stand-in pair."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2026, 1, 1))
        .not_valid_after(datetime.datetime(2028, 1, 1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem(key)


CHAIN, KEY = self_signed()


def account() -> bytes:
    return key_pem(ec.generate_private_key(ec.SECP256R1())).encode()


def pair_record(sealing: bytes) -> dict:
    box = acmekeys.seal(sealing, KEY, KEY_NAME)
    data = {"host": HOST, "version": VERSION, "cert_secret": CERT_NAME, "key_secret": KEY_NAME}
    return record("pair", {**data, "chain": CHAIN, "key_box": box})


def world(mode: str, sealing: bytes):
    """An nginx and an HAProxy proxy in ``mode``, one ACME host with an issued pair and its
    pair record; the desired state as the pass builds it, with the pairs opened."""
    proxy_labels = {f"{P}.ext.mode": mode}
    app = {f"{P}.hostname": HOST, f"{P}.port": "8080", f"{P}.acme": "true"}
    services = [
        b.service("p1", "ngx", {f"{P}.ext.name": "nginx", **proxy_labels}),
        b.service("p2", "hap", {f"{P}.ext.name": "haproxy", **proxy_labels}),
        b.service("a1", "shop", app),
    ]
    snapshot = snapshot_from_api(
        services,
        [b.task("t1", "a1", "10.0.0.2")],
        [b.network("net1")],
        [pair_record(sealing)],
        [],
        pair(HOST, VERSION, NOW + 5_000_000),
    )
    desired = desired_state(snapshot, P, mode)
    state = acme.state(snapshot, desired, P)
    opened = acmekeys.open_pairs(state.pairs, sealing)
    return snapshot, acme.with_acme(desired, state, P, NOW, 60, opened), state


def test_a_sealed_key_opens_only_with_its_account_key_and_under_its_own_name():
    sealing = acmekeys.sealing_key(account())
    box = acmekeys.seal(sealing, KEY, KEY_NAME)
    assert "PRIVATE" not in box
    assert acmekeys.unseal(sealing, box, KEY_NAME) == KEY
    assert acmekeys.unseal(sealing, box, "interlock-acme-other.key") is None
    assert acmekeys.unseal(acmekeys.sealing_key(account()), box, KEY_NAME) is None
    assert acmekeys.open_pairs({"x": object()}, None) == {}  # no account key: nothing opened


@pytest.mark.parametrize("name", ["ngx", "hap"])
def test_a_signal_mode_proxy_gets_the_certificate_beside_its_config_not_as_a_mount(name, tmp_path):
    _, desired, state = world("signal", acmekeys.sealing_key(account()))
    assert set(state.pairs) == {CERT_NAME}
    one = next(d for d in desired.proxies if d.proxy.name == name)
    (cert,) = one.certificates
    assert cert.inline and cert.file.startswith(f"{one.proxy.spec.config_path}.acme-")
    assert planning.secret_mounts(one) == ()  # a new certificate restarts nothing
    rendered = render(one, RenderOptions())
    assert rendered.files[cert.file] == CHAIN
    assert rendered.files[f"{cert.file}.key"] == KEY
    assert "PRIVATE KEY" not in rendered.text + repr(one) + repr(rendered) + repr(cert)
    checked = real_check_beside(one.proxy.spec.kind, rendered.text, rendered.files, tmp_path)
    assert checked.returncode == 0, checked.stderr
    # A check container gets the stand-in key at that path, never the real one.
    staged = check_files(one, rendered, "/run/secrets")
    assert staged[f"{cert.file}.key".lstrip("/")] == checkcert.KEY
    assert KEY not in staged.values()


def test_a_rolling_mode_proxy_mounts_the_secrets_as_before():
    _, desired, _ = world("rolling", acmekeys.sealing_key(account()))
    for one in desired.proxies:
        (cert,) = one.certificates
        assert not cert.inline
        assert {s for _, s in planning.secret_mounts(one)} == {CERT_NAME, KEY_NAME}
        assert not any(".acme-" in path for path in render(one, RenderOptions()).files)


def test_without_the_account_key_a_signal_mode_proxy_mounts_the_secrets():
    snapshot, _, state = world("signal", acmekeys.sealing_key(account()))
    assert acmekeys.open_pairs(state.pairs, acmekeys.sealing_key(account())) == {}
    plain = acme.with_acme(desired_state(snapshot, P, "signal"), state, P, NOW, 60, {})
    assert all(not c.inline for d in plain.proxies for c in d.certificates)


def test_a_pair_record_goes_with_its_version():
    _, _, state = world("signal", acmekeys.sealing_key(account()))
    newer = pair(HOST, "20261215000000", NOW + 6_000_000)
    secrets = _secrets(pair(HOST, VERSION, NOW + 5_000_000) + newer)
    renewed = acme.AcmeState(
        wanted={HOST: "shop"},
        issued=acme.issued_certificates(secrets, P),
        secrets=secrets,
        pairs=state.pairs,
        pair_records=state.pair_records,
    )
    names = {d.name for d in acme.garbage(renewed, EMPTY)}
    assert {CERT_NAME, acme.record_name(P, "pair", HOST, VERSION)} <= names
    kept = replace(
        renewed, issued=acme.issued_certificates(_secrets(pair(HOST, VERSION, NOW + 9)), P)
    )
    assert acme.record_name(P, "pair", HOST, VERSION) not in {
        d.name for d in acme.garbage(kept, EMPTY)
    }


EMPTY = snapshot_from_api([], [], [], [], [], [])


def _secrets(raw: list[dict]) -> tuple:
    return snapshot_from_api([], [], [], [], [], raw).secrets


def test_keys_are_written_readable_by_the_proxy_user_alone():
    data = tar_files({"a.key": "k"}, 0o400, owner=(99, 99))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.getmember("a.key")
    assert (member.mode, member.uid, member.gid) == (0o400, 99, 99)


def real_check_beside(kind: str, text: str, files, tmp_path) -> subprocess.CompletedProcess:
    """``real_check`` with the files beside the config copied into ``tmp_path`` under their own
    names (a key's path is its certificate's plus ".key", so it follows the certificate's)."""
    moved = {p: str(tmp_path / Path(p).name) for p in files if not p.endswith(".key")}

    def local(content: str) -> str:
        for path, copy in moved.items():
            content = content.replace(path, copy)
        return content

    for path, content in files.items():
        (tmp_path / Path(path).name).write_text(local(content))
    return real_check(kind, local(text), tmp_path)


def test_agents_on_every_node_get_the_certificate_files_and_accept_them():
    """Agent mode: the push of each node's proxy container carries the chain and key through
    the board (as the agent API sends them, JSON), and each node's agent accepts them as files
    beside the config; the board's status (``/v1/status``) shows none of it."""
    _, desired, _ = world("signal", acmekeys.sealing_key(account()))
    one = next(d for d in desired.proxies if d.proxy.name == "ngx")
    rendered = render(one, RenderOptions())
    board = Board(P)
    containers = {}
    for node in ("n1", "n2", "n3"):
        raw = b.container(f"c-{node}", f"ngx.{node}", {**LABELS, SERVICE: "p1", NODE: node})
        board.report({"node": node, "containers": [raw], "served": {}, "errors": {}})
        containers[node] = raw
        board.push(
            PushConfig(
                "ngx",
                "nginx",
                f"c-{node}",
                one.proxy.spec.config_path,
                rendered.text,
                rendered.digest,
                dict(rendered.files),
            )
        )
    words = Vocabulary(P)
    for node, raw in containers.items():
        (want,) = board.pending(node)
        config = json.loads(json.dumps(want.as_json()))
        assert config["files"] == dict(rendered.files) and KEY in config["files"].values()
        assert refusal(config, local_proxies([{**raw, "State": "running"}], words)) == ""
    assert "PRIVATE KEY" not in json.dumps(board.status()) + repr(board.wants)


LABELS = {f"{P}.ext.name": "nginx"}
SERVICE, NODE = "com.docker.swarm.service.id", "com.docker.swarm.node.id"
