"""The certificate check's pure parts: its configs (through the real nginx and HAProxy binaries),
which pairs a proxy needs, and what a refused pair takes out of a proxy (and nothing more)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

import pytest

from controller import certcheck
from controller.certcheck import CONFIGS, CertPair, Verdict
from controller.desired import certificate, desired_state
from controller.kinds import KINDS
from controller.snapshot import snapshot_from_api
from tests import builders as b

P = "interlock"


def pair_files(tmp_path, name: str) -> tuple[str, str]:
    """A fresh self-signed certificate and key (PEM texts)."""
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}.example.com", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert.read_text(), key.read_text()


def run_check(kind: str, tmp_path, *pairs: tuple[str, str]) -> subprocess.CompletedProcess:
    """The check's own command and config, with /run/secrets pointed at a folder of ours, and
    the pairs mounted as a check task mounts them (the last repeated to fill the group)."""
    folder = tmp_path / f"{kind}-secrets"
    folder.mkdir(exist_ok=True)
    for index in range(certcheck.GROUP):
        cert, key = pairs[min(index, len(pairs) - 1)]
        (folder / certcheck.cert_file(index)).write_text(cert)
        (folder / f"{certcheck.cert_file(index)}.key").write_text(key)
    config = tmp_path / f"{kind}.conf"
    config.write_text(CONFIGS[kind].replace("/run/secrets", str(folder)))
    binary = shutil.which(kind) or f"/usr/sbin/{kind}"
    command = [binary, *KINDS[kind].check_argv(certcheck.CONFIG_PATH)[1:]]
    command[command.index(certcheck.CONFIG_PATH)] = str(config)
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_the_check_config_loads_a_good_pair_and_refuses_bad_ones(kind, tmp_path):
    cert, key = pair_files(tmp_path, "a")
    _, other_key = pair_files(tmp_path, "b")
    assert run_check(kind, tmp_path, (cert, key)).returncode == 0
    for bad_cert, bad_key, said in [
        ("garbage\n", "garbage\n", "certificate"),
        (cert, other_key, "mismatch" if kind == "nginx" else "inconsistencies"),
        (key, cert, "certificate"),
    ]:
        result = run_check(kind, tmp_path, (bad_cert, bad_key))
        assert result.returncode != 0 and said in result.stdout + result.stderr, result
        group = [(cert, key)] * 7 + [(bad_cert, bad_key)] + [(cert, key)] * 3
        assert run_check(kind, tmp_path, *group).returncode != 0  # one bad pair fails a group
    assert run_check(kind, tmp_path, *[(cert, key)] * certcheck.GROUP).returncode == 0


def test_pairs_are_grouped_by_what_runs_them_at_most_a_group_a_task():
    def pair(n: int, image: str = "hap:1") -> CertPair:
        return CertPair("haproxy", image, f"c{n}", f"c{n}", f"k{n}", f"k{n}")

    pairs = [pair(n) for n in range(certcheck.GROUP + 3)] + [pair(99, "hap:2")]
    groups = certcheck._groups(pairs)
    assert [len(g) for g in groups] == [certcheck.GROUP, 3, 1]
    assert groups[2] == (pair(99, "hap:2"),) and sum(groups, ()) == tuple(pairs)


LABELS = {
    f"{P}.hostname": "secure.example.com",
    f"{P}.port": "80",
    f"{P}.ssl_cert": "crt",
    f"{P}.ssl_cert_key": "key",
    f"{P}.ssl_only": "true",
    f"{P}.share_host": "true",
}
SECRETS = [{"ID": f"id-{n}", "Spec": {"Name": n}} for n in ("crt", "key", "crt2", "key2")]


def scenario(user: str = "", constraints=(), mounted: bool = False):
    proxy = b.service("p1", "edge", {f"{P}.ext.name": "haproxy"}, image="hap:1")
    template = proxy["Spec"]["TaskTemplate"]
    if mounted:
        cert = certificate("crt", "key")
        template["ContainerSpec"]["Secrets"] = [
            {"File": {"Name": f}, "SecretID": f"id-{n}", "SecretName": n}
            for f, n in ((cert.file, "crt"), (f"{cert.file}.key", "key"))
        ]
    if user:
        template["ContainerSpec"]["User"] = user
    if constraints:
        template["Placement"] = {"Constraints": list(constraints)}
    sub = {f"{P}.hostname": "secure.example.com", f"{P}.context_root": "/api", f"{P}.port": "80"}
    other = dict(LABELS, **{f"{P}.hostname": "two.example.com"})
    other |= {f"{P}.ssl_cert": "crt2", f"{P}.ssl_cert_key": "key2"}
    services = [
        proxy,
        b.service("a1", "secure", LABELS, created="2026-01-01T00:00:01Z"),
        b.service("a2", "api", sub, created="2026-01-01T00:00:02Z"),
        b.service("a3", "plain", {f"{P}.hostname": "plain.example.com", f"{P}.port": "80"}),
        b.service("a4", "two", other),
    ]
    tasks = [b.task(f"t{i}", f"a{i}", f"10.0.0.{i}") for i in range(1, 5)]
    snapshot = snapshot_from_api(services, tasks, [b.network("net1")], [], [], SECRETS)
    (desired,) = desired_state(snapshot, P).proxies
    return snapshot, desired


def test_each_certificate_becomes_the_pair_its_proxy_would_load():
    snapshot, desired = scenario(user="99:99", constraints=("node.role==manager",))
    pairs = certcheck.cert_pairs(snapshot, desired)
    assert set(pairs) == {c.file for c in desired.certificates}
    first = pairs[next(c.file for c in desired.certificates if c.cert_secret == "crt")]
    assert first == CertPair(
        "haproxy", "hap:1", "id-crt", "crt", "id-key", "key", "99:99", ("node.role==manager",)
    )
    assert first.owner == ("99", "99")


def test_a_refused_pair_takes_out_its_owner_and_its_host_and_nothing_else():
    _, desired = scenario()
    bad = next(c.file for c in desired.certificates if c.cert_secret == "crt")
    refused = {bad: Verdict(False, "unable to load certificate from file")}
    kept, problems = certcheck.without_certificates(desired, refused, P)
    assert {r.host for r in kept.routes} == {"plain.example.com", "two.example.com"}
    assert {b.service for b in kept.backends} == {"plain", "two"}
    assert [c.cert_secret for c in kept.certificates] == ["crt2"]
    assert {t.host for t in kept.tls} == {"two.example.com"}
    by_service = {p.service: p for p in problems}
    assert set(by_service) == {"secure", "api"}
    assert by_service["secure"].label == f"{P}.ssl_cert" and by_service["secure"].proxy == "edge"
    assert "haproxy cannot load the certificate crt and key key" in by_service["secure"].reason
    assert "unable to load certificate from file" in by_service["secure"].reason
    assert "set by service secure" in by_service["api"].reason
    assert certcheck.without_certificates(desired, {}, P) == (desired, [])


@dataclass
class Answers:
    """Stands in for the checker in ``screen``'s bookkeeping (the Docker side is in Swarm
    tests): a verdict per secret name, and which verdicts were the proxy's own."""

    said: dict[str, Verdict]
    own: set[str] = field(default_factory=set)
    verdicts: dict = field(default_factory=dict)  # what the checker remembers

    def check(self, pairs):
        return {p: self.said[p.cert_secret_name] for p in pairs}

    def knows(self, pair):
        return pair.cert_secret_name in self.own


def test_screen_keeps_a_served_pair_when_its_check_could_not_run():
    could_not = Verdict(False, f"{certcheck.UNRUN}: it did not finish in 30s")
    answers = Answers({"crt": could_not, "crt2": Verdict(True, "")})
    snapshot, _ = scenario()
    screened = certcheck.screen(answers, snapshot, desired_state(snapshot, P), P)
    assert "secure.example.com" not in {r.host for r in screened.proxies[0].routes}  # new
    assert any("did not finish" in p.reason for p in screened.problems)

    served, _ = scenario(mounted=True)
    screened = certcheck.screen(answers, served, desired_state(served, P), P)
    assert "secure.example.com" in {r.host for r in screened.proxies[0].routes}  # kept
    answers.own.add("crt")  # the proxy's own refusal: out, even where it is served
    screened = certcheck.screen(answers, served, desired_state(served, P), P)
    assert "secure.example.com" not in {r.host for r in screened.proxies[0].routes}


def test_screen_without_start_uses_only_known_verdicts():
    snapshot, _ = scenario()

    class Known(Answers):
        def check(self, pairs):
            raise AssertionError("nothing may be started")

    screened = certcheck.screen(Known({}), snapshot, desired_state(snapshot, P), P, start=False)
    assert "secure.example.com" in {r.host for r in screened.proxies[0].routes}
