"""Rendering: deterministic text, the real binaries accept it, and nothing unsafe gets in."""

import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest

from controller.desired import Backend, desired_state
from controller.render import RenderError, RenderOptions, render
from controller.runtime import ask
from controller.snapshot import snapshot_from_api
from tests import builders as b
from tests.bed.probes import free_port

P = "interlock"


def scenario():
    services = [
        b.service("p1", "ngx", {f"{P}.ext.name": "nginx"}),
        b.service("p2", "hap", {f"{P}.ext.name": "haproxy"}),
        b.service(
            "a1",
            "web",
            {
                f"{P}.hostname": "web",
                f"{P}.domain": "example.com",
                f"{P}.port": "8080",
                f"{P}.alias_domain.1": "www.example.com",
                f"{P}.share_host": "true",  # api and deep serve paths under it
            },
        ),
        b.service(
            "a2",
            "api",
            {
                f"{P}.hostname": "web.example.com",
                f"{P}.port": "9000",
                f"{P}.context_root": "/api.v1",
                f"{P}.context_root_rewrite": "true",
                f"{P}.balance_algorithm": "leastconn",
            },
        ),
        b.service(
            "a3",
            "deep",
            {
                f"{P}.hostname": "web.example.com",
                f"{P}.port": "9000",
                f"{P}.context_root": "/api.v1/deep",
                f"{P}.health_check": "/healthz",
                f"{P}.health_check_interval": "1500",
            },
        ),
        b.service(
            "a4",
            "idle",
            {
                f"{P}.hostname": "idle.example.com",
                f"{P}.port": "80",
            },
        ),
        b.service(
            "a5",
            "evil",
            {
                f"{P}.hostname": "x.example.com",
                f"{P}.port": "80",
                f"{P}.context_root": "/a;return 200 pwned;#",
            },
        ),
    ]
    tasks = [
        b.task("t1", "a1", "10.0.0.2"),
        b.task("t2", "a1", "10.0.0.3"),
        b.task("t3", "a2", "10.0.0.4"),
        b.task("t4", "a3", "10.0.0.5"),
    ]
    desired = desired_state(snapshot_from_api(services, tasks, [b.network("net1")], []), P)
    return {d.proxy.name: d for d in desired.proxies}


OPTIONS = RenderOptions(http_port=8080)


def real_check(
    kind: str, text: str, tmp_path, files: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run the real binary's check on ``text``, with its extra files (``Rendered.files``).

    The extra files live at absolute paths beside the proxy's config; here each is written into
    ``tmp_path`` and the config's mention of its path is pointed there (the names are unique).
    """
    for original, content in (files or {}).items():
        local = tmp_path / Path(original).name
        local.write_text(content)
        assert text.count(original) == 1, original
        text = text.replace(original, str(local))
    path = tmp_path / f"{kind}.conf"
    path.write_text(text)
    binary = shutil.which(kind) or f"/usr/sbin/{kind}"
    command = (
        [binary, "-t", "-c", str(path)] if kind == "nginx" else [binary, "-c", "-f", str(path)]
    )
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("proxy", ["ngx", "hap"])
def test_the_real_binary_accepts_the_rendered_config(proxy, tmp_path):
    desired = scenario()[proxy]
    result = real_check(desired.proxy.spec.kind, render(desired, OPTIONS).text, tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("proxy", ["ngx", "hap"])
def test_the_real_binary_rejects_a_broken_config(proxy, tmp_path):
    """Guards the check above: a config the binary refuses is seen as refused."""
    desired = scenario()[proxy]
    broken = render(desired, OPTIONS).text.replace("server", "sever", 1)
    assert real_check(desired.proxy.spec.kind, broken, tmp_path).returncode != 0


def test_haproxy_loads_no_ca_bundle_it_does_not_use(tmp_path):
    """HAProxy's internal HTTP client reads the system's CA bundle as every process starts
    (50 ms of CPU with OpenSSL 3, at every check and reload) unless told not to; nothing in our
    configs uses that client. The rendered global section, run by the real binary, shows no CA
    file loaded (``show ssl ca-file``; HAProxy's default lists ``@system-ca``)."""
    text = render(scenario()["hap"], OPTIONS).text
    sock = tmp_path / "admin.sock"
    global_section = text[: text.index("\ndefaults")].replace(
        "/tmp/interlock-haproxy.sock", str(sock)
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"{global_section}\ndefaults\n    mode http\n    timeout connect 1s\n"
        f"    timeout client 1s\n    timeout server 1s\nfrontend f\n"
        f"    bind 127.0.0.1:{free_port()}\n"
    )
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    process = subprocess.Popen([binary, "-db", "-f", str(config)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        info = ask(str(sock), "show info", 5.0)
        loaded = ask(str(sock), "show ssl ca-file", 5.0)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "Name: HAProxy" in info, info  # the process that answers runs this config
    assert loaded.strip() == "", loaded  # default: "@system-ca - 144 certificate(s)"


def test_same_input_same_digest_and_any_change_changes_it():
    first, second = render(scenario()["ngx"], OPTIONS), render(scenario()["ngx"], OPTIONS)
    assert first == second
    moved = replace(OPTIONS, http_port=8081)
    assert render(scenario()["ngx"], moved).digest != first.digest


def test_nginx_routes_paths_rewrites_and_empty_backends():
    text = render(scenario()["ngx"], OPTIONS).text
    assert "server_name web.example.com;" in text and "server_name www.example.com;" in text
    route = "\n            set $interlock_route {};\n            "  # the service, for the log
    assert "location /api.v1/ {" + route.format("api") + "proxy_pass http://api_a2/;" in text
    assert "location /api.v1/deep/ {" + route.format("deep") + "proxy_pass http://deep_a3;" in text
    assert "server_name idle.example.com;\n        location / {" + route.format("idle") in text
    assert route.format("idle") + "return 503;" in text
    assert "least_conn;" in text
    assert "pwned" not in text


def test_haproxy_matches_longer_paths_first_and_strips_prefixes():
    text = render(scenario()["hap"], OPTIONS).text
    deep, api, root = (text.index(f"use_backend {n}_") for n in ("deep", "api", "web"))
    assert deep < api < root
    assert "http-request replace-path ^/api[.]v1/?(.*) /\\1" in text
    assert "http-check send meth GET uri /healthz" in text
    assert "server t1 10.0.0.5:9000 check" in text and "inter 1500ms" in text
    assert "backend idle_a4\n    balance roundrobin\n" in text  # no servers: HAProxy answers 503


@pytest.mark.parametrize(
    "bad", ["a.example.com;}", "a.example.com\n    return 200", "a b", "{", "'", '"', "$host", "#"]
)
def test_the_renderer_refuses_unsafe_values_even_past_validation(bad):
    desired = scenario()["ngx"]
    route = replace(desired.routes[0], host=bad)
    with pytest.raises(RenderError):
        render(replace(desired, routes=(route, *desired.routes[1:])), OPTIONS)
    backend = replace(desired.backends[0], targets=(f"10.0.0.1:80; {bad}",))
    with pytest.raises(RenderError):
        render(replace(desired, backends=(backend,)), OPTIONS)


def test_backends_without_targets_render_for_both_proxies(tmp_path):
    for name, desired in scenario().items():
        empty = replace(
            desired,
            backends=tuple(Backend(x.name, x.service, x.port, ()) for x in desired.backends),
        )
        result = real_check(desired.proxy.spec.kind, render(empty, OPTIONS).text, tmp_path)
        assert result.returncode == 0, (name, result.stderr)


def tls_scenario(secrets=("web-crt", "web-key")):
    labels = {
        f"{P}.hostname": "secure.example.com",
        f"{P}.port": "8080",
        f"{P}.ssl_cert": "web-crt",
        f"{P}.ssl_cert_key": "web-key",
        f"{P}.ssl_only": "true",
    }
    services = [
        b.service("p1", "ngx", {f"{P}.ext.name": "nginx"}),
        b.service("p2", "hap", {f"{P}.ext.name": "haproxy"}),
        b.service("a1", "secure", labels),
        b.service("a2", "plain", {f"{P}.hostname": "plain.example.com", f"{P}.port": "8080"}),
    ]
    tasks = [b.task("t1", "a1", "10.0.0.2"), b.task("t2", "a2", "10.0.0.3")]
    raw_secrets = [{"ID": f"s-{n}", "Spec": {"Name": n}} for n in secrets]
    snapshot = snapshot_from_api(services, tasks, [b.network("net1")], [], [], raw_secrets)
    return desired_state(snapshot, P)


@pytest.mark.parametrize("proxy", ["ngx", "hap"])
def test_tls_configs_pass_the_real_binary_with_the_certificate_files(proxy, tmp_path):
    from controller import checkcert

    desired = {d.proxy.name: d for d in tls_scenario().proxies}[proxy]
    (cert,) = desired.certificates
    (tmp_path / cert.file).write_text(checkcert.CERT)
    (tmp_path / f"{cert.file}.key").write_text(checkcert.KEY)
    rendered = render(desired, replace(OPTIONS, secrets_dir=str(tmp_path)))
    named = rendered.text + "".join(rendered.files.values())
    assert f"{tmp_path}/{cert.file}" in named
    result = real_check(desired.proxy.spec.kind, rendered.text, tmp_path, rendered.files)
    assert result.returncode == 0, result.stderr


def test_tls_redirects_only_its_own_host_and_nginx_refuses_unknown_sni():
    desired = {d.proxy.name: d for d in tls_scenario().proxies}
    nginx, haproxy = render(desired["ngx"], OPTIONS).text, render(desired["hap"], OPTIONS).text
    assert "server_name secure.example.com;\n        return 301 https://$host$request_uri;" in nginx
    assert "ssl_reject_handshake on;" in nginx
    plain_block = nginx.split("server_name plain.example.com;")[1].split("    server {")[0]
    assert "return 301" not in plain_block and "ssl" not in plain_block
    assert (
        "redirect scheme https code 301 if { var(txn.host) -m str secure.example.com }" in haproxy
    )
    assert "plain.example.com } !{ ssl_fc }" not in haproxy


def test_tls_with_a_missing_secret_rejects_the_service_instead_of_serving_plain_http():
    desired = tls_scenario(secrets=("web-crt",))
    routes = {r.host for d in desired.proxies for r in d.routes}
    assert routes == {"plain.example.com"}
    assert {(p.service, p.label) for p in desired.problems} == {("secure", f"{P}.ssl_cert_key")}


def routed(hosts: list[str], kind: str = "nginx", per_service: int = 500, tls: bool = False):
    """One proxy of ``kind`` routing ``hosts``, ``per_service`` of them a service (as aliases)."""
    services = [b.service("p1", "edge", {f"{P}.ext.name": kind})]
    for start in range(0, len(hosts), per_service):
        n = start // per_service
        mine = hosts[start : start + per_service]
        labels = {f"{P}.hostname": mine[0], f"{P}.port": "80"}
        labels |= {f"{P}.alias_domain.{i}": h for i, h in enumerate(mine[1:])}
        if tls:
            labels |= {f"{P}.ssl_cert": f"crt{n}", f"{P}.ssl_cert_key": f"key{n}"}
        services.append(b.service(f"a{n:04d}", f"app{n}", labels))
    tasks = [b.task(f"t{s['ID']}", s["ID"], "10.0.0.2") for s in services[1:]]
    secrets = [
        {"ID": f"s-{kind}{n}", "Spec": {"Name": f"{kind}{n}"}}
        for n in range(len(services))
        for kind in ("crt", "key")
    ]
    snapshot = snapshot_from_api(services, tasks, [b.network("net1")], [], [], secrets)
    desired = desired_state(snapshot, P)
    assert not [p for p in desired.problems if p.rejected], desired.problems[:3]
    (proxy,) = desired.proxies
    return proxy


def nginx_accepts(hosts: list[str], tmp_path, per_service: int = 500) -> str:
    """nginx -t passes on the config routing ``hosts``, without a hash warning; its sizes."""
    rendered = render(routed(hosts, per_service=per_service), OPTIONS)
    result = real_check("nginx", rendered.text, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "server_names_hash" not in result.stderr, result.stderr[-2000:]
    return next(line for line in rendered.text.splitlines() if "bucket_size" in line)


@pytest.mark.parametrize("length", [47, 73, 120, 253])
def test_a_long_valid_host_name_passes_nginx(length, tmp_path):
    """The default bucket (a 64-byte cache line) holds at most 46 characters; 73 was seen."""
    long = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 63])[:length].rstrip(".")
    long = long[:-1] + "x" if long.endswith("-") else long
    assert len(long) >= length - 1
    nginx_accepts([long, "short.example.com"], tmp_path)


def test_two_thousand_hosts_pass_nginx(tmp_path):
    hosts = [f"host-{i}.{'long-' * (i % 9)}example.com" for i in range(2000)]
    nginx_accepts(hosts, tmp_path)


def test_hosts_with_one_and_the_same_hash_pass_nginx(tmp_path):
    """'an' and 'c0' hash alike (31*97+110 == 31*99+48): 256 names of such blocks all share one
    bucket at any table size; the bucket is made big enough for all of them."""
    from itertools import product

    hosts = ["".join(blocks) + ".example.com" for blocks in product(("an", "c0"), repeat=8)]
    line = nginx_accepts(hosts, tmp_path, per_service=100)
    assert "bucket_size 16384;" in line, line


def test_the_hash_sizes_are_the_default_for_a_few_short_names():
    from controller.render import nginx_name_hash

    assert nginx_name_hash(["a.example.com", "b.example.com"]).max_size == 512
    small, long = nginx_name_hash(["a.example.com"]), nginx_name_hash(["x" * 63 + ".com"])
    assert small.bucket_size < long.bucket_size <= 1024


def openssl_pair(directory: Path, file: str, host: str) -> None:
    """A real self-signed certificate for ``host`` (file) and its key (file.key)."""
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
            "-keyout", str(directory / f"{file}.key"), "-out", str(directory / file),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["haproxy", "nginx"])
def test_forty_certificate_pairs_on_one_proxy(kind, tmp_path):
    """One bind line holds ~30 certificates (64 words); the crt-list file holds any number."""
    hosts = [f"site{i}.example.com" for i in range(40)]
    desired = routed(hosts, kind=kind, per_service=1, tls=True)
    assert len(desired.certificates) == 40
    by_host = {tls.host: tls.file for tls in desired.tls}
    for host, file in by_host.items():
        openssl_pair(tmp_path, file, host)
    rendered = render(desired, replace(OPTIONS, secrets_dir=str(tmp_path)))
    result = real_check(kind, rendered.text, tmp_path, rendered.files)
    assert result.returncode == 0, result.stderr[-2000:]
    if kind == "haproxy":
        (path,) = rendered.files
        assert path.startswith("/usr/local/etc/haproxy/haproxy.cfg.") and path.endswith(".crt-list")
        listed = rendered.files[path].splitlines()[1:]
        assert listed == [f"{tmp_path}/{file}" for file in sorted(by_host.values())]
        assert max(len(line.split()) for line in rendered.text.splitlines()) < 20


def test_the_crt_list_is_named_by_its_content_and_the_digest_covers_it():
    """A changed list gets a new name in the config, so the config's digest changes too."""
    desired = {d.proxy.name: d for d in tls_scenario().proxies}
    first = render(desired["hap"], OPTIONS)
    moved = render(desired["hap"], replace(OPTIONS, secrets_dir="/run/other"))
    ((path, text),) = first.files.items()
    assert f"crt-list {path}\n" in first.text and "/run/secrets/tls-" in text
    assert set(moved.files) != set(first.files) and moved.digest != first.digest
    assert render(desired["ngx"], OPTIONS).files == {}


@pytest.mark.parametrize("bad", ["a.example.com\n", "\na.example.com", "a\x00b", "\uff41.example"])
def test_the_safe_token_filter_matches_the_whole_value(bad):
    desired = scenario()["ngx"]
    route = replace(desired.routes[0], host=bad)
    with pytest.raises(RenderError):
        render(replace(desired, routes=(route, *desired.routes[1:])), OPTIONS)
