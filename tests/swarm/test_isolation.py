"""A bad service breaks only itself, on the real Swarm, through real nginx AND real HAProxy.

One scenario for both proxies (rolling mode, the mode in which a bad certificate used to take a
proxy down): a good service is served while services with the four known kinds of bad input
arrive; each is reported by name with its label and reason, the long host name routes, the
good service keeps answering, and a service created afterwards becomes routable within a pass.
A self-declared proxy outside the operator's trusted set gets no config and no secret.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from controller.result import PassResult
from tests.bed.probes import http_get, wait_until
from tests.swarm.controlled import routed
from tests.swarm.test_tls import https_get, self_signed

GOOD = "good.example.com"
SECURE = "secure.example.com"  # the certificate of tests.swarm.test_tls.self_signed is for it
LONG = "a" * 60 + ".example.com"  # 72 characters: a valid name nginx's default hash refused
LATE = "late.example.com"


def converge(lab, proxies, timeout: float = 120.0) -> PassResult:
    """Passes until one has nothing to do, each proxy's rollout finished in between."""

    def settled() -> PassResult | None:
        result = lab.controller.reconciler.run_pass()
        for proxy in proxies:
            lab.swarm.wait_updated(proxy, timeout=timeout)
        # A push a signal-mode proxy refuses in its container is an error of that pass; the
        # next pass finds the services responsible and leaves them out.
        return result if not result.actions and not result.errors else None

    return wait_until(settled, timeout, 0.2, "a pass with nothing to do")


def problems_of(result: PassResult, service: str) -> list[str]:
    return [f"{p.label}: {p.reason}" for p in result.problems if p.service.endswith(service)]


def test_bad_services_break_only_themselves_on_both_proxies(swarm, bed, tmp_path):
    trusted = f"{swarm.id}.ext.trusted"
    lab = routed(swarm, bed.docker_host, proxy_trust_label=f"{trusted}=yes")
    proxies = {}
    for kind in ("nginx", "haproxy"):
        proxy = lab.proxy_service(kind, tls=True, ext__trusted="yes")
        proxies[kind] = (proxy, lab.port, lab.tls_port)
    cert, key, cafile = self_signed(tmp_path)
    lab.swarm.secret("good-crt", cert)
    lab.swarm.secret("good-key", key)
    lab.swarm.secret("junk-crt", "this is not a certificate\n")
    lab.swarm.secret("junk-key", "nor is this a key\n")
    crt, key_name = lab.swarm.name("good-crt"), lab.swarm.name("good-key")
    lab.app("good", hostname=GOOD, port="8080")
    lab.app("secure", hostname=SECURE, port="8080", ssl_cert=crt, ssl_cert_key=key_name)
    converge(lab, [p for p, _, _ in proxies.values()])

    lab.app("long", hostname=LONG, port="8080")
    digits = "\u0661\u0662\u0663\u0664"  # Arabic-Indic 1234
    lab.app("digits", hostname="digits.example.com", port="8080", health_check_interval=digits)
    lab.app("newline", hostname="x.example.com\n.evil.com", port="8080")
    junk = {"ssl_cert": lab.swarm.name("junk-crt"), "ssl_cert_key": lab.swarm.name("junk-key")}
    lab.app("junktls", hostname="junk.example.com", port="8080", **junk)
    rogue = lab.swarm.service(
        "rogue",
        lab.swarm.images.nginx,
        labels={lab.label("ext.name"): "nginx"},
        networks=[lab.network.name],
    )
    result = converge(lab, [p for p, _, _ in proxies.values()])

    reported = {
        name: problems_of(result, name) for name in ("digits", "newline", "junktls", "rogue")
    }
    print("reported:", reported)
    assert any("health_check_interval" in p for p in reported["digits"]), reported
    assert any(p.startswith(f"{lab.prefix}.hostname") for p in reported["newline"]), reported
    assert reported["junktls"], reported
    assert any("not a trusted proxy" in p for p in reported["rogue"]), reported
    assert problems_of(result, "long") == [], problems_of(result, "long")
    rogue.reload()
    container = rogue.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert not container.get("Configs") and not container.get("Secrets"), container

    lab.app("late", hostname=LATE, port="8080")
    result = lab.controller.reconciler.run_pass()  # one pass makes it routable
    assert not result.errors, result.errors
    for kind, (proxy, port, tls_port) in proxies.items():
        lab.swarm.wait_updated(proxy)
        seen = {}
        for host in (GOOD, LONG, LATE, "junk.example.com", "digits.example.com"):
            seen[host] = wait_until(lambda h=host, p=port: _answer(p, h), 30, 0.3, f"{kind} {host}")
        seen[SECURE] = https_get(tls_port, SECURE, cafile)[0]
        print(f"{kind}: {seen}")
        assert seen[GOOD] == seen[LONG] == seen[LATE] == seen[SECURE] == 200, (kind, seen)
        assert seen["junk.example.com"] == seen["digits.example.com"] == 404, (kind, seen)


def _answer(port: int, host: str) -> int | None:
    """The status for ``host``, once the proxy answers at all (a rollout may be under way)."""
    try:
        return http_get(port, host)[0]
    except OSError:
        return None


def wildcard_certificate(tmp_path) -> tuple[str, str, str]:
    """A self-signed certificate for *.example.com, its key, and its path (the CA)."""
    cert, key = tmp_path / "wild.pem", tmp_path / "wild.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=*.example.com", "-addext", "subjectAltName=DNS:*.example.com",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert.read_text(), key.read_text(), str(cert)


def test_forty_certificate_pairs_on_one_haproxy(swarm, bed, tmp_path):
    """HAProxy refuses a line of over 64 words: 40 pairs once made one `bind` line too long."""
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service("haproxy", tls=True)
    cert, key, cafile = wildcard_certificate(tmp_path)
    for index in range(PAIRS):
        labels = {"hostname": f"h{index}.example.com", "port": "8080"}
        labels["ssl_cert"] = lab.swarm.secret(f"crt{index}", cert).name
        labels["ssl_cert_key"] = lab.swarm.secret(f"key{index}", key).name
        lab.app(f"h{index}", replicas=1 if index in (0, PAIRS - 1) else 0, **labels)
    result = converge(lab, [proxy], timeout=240)
    assert not [p for p in result.problems if p.rejected], result.problems
    (desired,) = result.desired.proxies
    print(f"haproxy: {len(desired.certificates)} certificate pairs deployed")
    assert len(desired.certificates) == PAIRS
    for index in (0, PAIRS - 1):
        host = f"h{index}.example.com"
        status = wait_until(lambda h=host: _https(lab.tls_port, h, cafile), 60, 0.5, host)
        print(f"haproxy: https://{host} -> {status}")
        assert status == 200


PAIRS = 40


def _https(port: int, host: str, cafile: str) -> int | None:
    try:
        return https_get(port, host, cafile)[0]
    except OSError:
        return None


def poisoned_templates(folder) -> None:
    """The built-in templates, plus a line each proxy refuses in the routes of poison* hosts."""
    templates = Path(__file__).parents[2] / "templates"
    for name, anchor, host, bad in (
        ("nginx.conf.j2", "server_name {{ host", "host", "bogus_directive on;"),
        ("haproxy.cfg.j2", "acl h{{ loop.index }}", "route.host", "bogus_keyword on"),
    ):
        lines = (templates / name).read_text().split("\n")
        at = max(i for i, line in enumerate(lines) if anchor in line)  # the route's own block
        lines.insert(at + 1, f"{{%- if 'poison' in {host} %}}\n    {bad}{{%- endif %}}")
        (folder / name).write_text("\n".join(lines))


def test_a_service_the_proxy_refuses_is_left_out_and_the_rest_deployed(swarm, bed, tmp_path):
    """The binary's refusal is attributed to the service that caused it, on both proxies."""
    poisoned_templates(tmp_path)
    lab = routed(swarm, bed.docker_host, template_dir=str(tmp_path))
    proxies = {}
    for kind, mode in (("nginx", "rolling"), ("haproxy", "signal")):
        proxies[kind] = (lab.proxy_service(kind, mode=mode), lab.port)
    lab.app("first", hostname="first.example.com", port="8080")
    lab.app("poison", hostname="poison.example.com", port="8080")
    lab.app("last", hostname="last.example.com", port="8080")
    result = converge(lab, [p for p, _ in proxies.values()])
    poison = [p for p in result.problems if p.service.endswith("poison")]
    words = {p.proxy.split("-")[-2]: p.reason for p in poison}
    print("poison reported:", words)
    assert 'unknown directive "bogus_directive"' in words["nginx"], words
    assert "bogus_keyword" in words["haproxy"], words
    assert not result.refused, result.refused
    for kind, (_proxy, port) in proxies.items():
        hosts = ("first.example.com", "last.example.com", "poison.example.com")
        seen = {h: wait_until(lambda h=h, p=port: _answer(p, h), 30, 0.3, h) for h in hosts}
        print(f"{kind}: {seen}")
        assert seen == {"first.example.com": 200, "last.example.com": 200,
                        "poison.example.com": 404}, (kind, seen)  # fmt: skip
