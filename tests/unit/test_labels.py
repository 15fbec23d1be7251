"""Label grammar: everything a label may say, and everything it must not."""

import pytest

from controller import labels as lbl
from controller.labels import parse_app, parse_proxy

P = "interlock"


def app(**values: str) -> dict[str, str]:
    return {f"{P}.{key.replace('__', '.')}": value for key, value in values.items()}


def test_hostname_and_domain_make_one_host():
    spec, problems = parse_app("web", app(hostname="web", domain="Example.COM", port="8080"), P)
    assert problems == []
    assert spec.hosts == ("web.example.com",)
    assert spec.port == 8080


@pytest.mark.parametrize("labels", [app(hostname="web.example.com"), app(domain="example.com")])
def test_either_alone_is_the_host(labels):
    spec, _ = parse_app("web", labels, P)
    assert spec.hosts == (labels[next(iter(labels))],)


def test_alias_domains_plain_and_numbered_add_hosts_in_order():
    labels = app(hostname="a.example.com", alias_domain="b.example.com")
    labels.update({f"{P}.alias_domain.2": "d.example.com", f"{P}.alias_domain.1": "c.example.com"})
    spec, problems = parse_app("web", labels, P)
    assert problems == []
    assert spec.hosts == ("a.example.com", "b.example.com", "c.example.com", "d.example.com")


@pytest.mark.parametrize(
    "value",
    [
        "a.example;}server{",
        "a.example.com\nlisten 81",
        "a b",
        "-a.example.com",
        "a..b",
        "*.example",
        "a.example.com:80",
        "x" * 64 + ".com",
        "ünicode.example",
        "",
    ],
)
def test_bad_hosts_reject_the_service(value):
    spec, problems = parse_app("web", app(hostname=value), P)
    assert spec is None
    assert any(p.label == f"{P}.hostname" and p.rejected for p in problems)
    assert "web" in str(problems[0])


@pytest.mark.parametrize("value", ["80;", "0", "65536", "-1", "8o", "80 81", " "])
def test_bad_ports_reject_the_service(value):
    spec, problems = parse_app("web", app(hostname="a.example.com", port=value), P)
    assert spec is None
    assert [p.label for p in problems] == [f"{P}.port"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/app", "/app"),
        ("/app/", "/app"),
        ("/api/v1.2", "/api/v1.2"),
        ("/", ""),
        ("/a~b_c-d", "/a~b_c-d"),
    ],
)
def test_context_roots_are_normalised(value, expected):
    spec, problems = parse_app("web", app(hostname="a.example.com", context_root=value), P)
    assert problems == []
    assert spec.context_root == expected


@pytest.mark.parametrize(
    "value",
    [
        "app",
        "/app;",
        "/a b",
        "/app{",
        "/../etc",
        "/a/./b",
        "//app",
        "/app?x=1",
        "/a$b",
        "/a\nb",
        "/a%20b",
        "/" + "a" * 300,
    ],
)
def test_bad_context_roots_reject_the_service(value):
    spec, problems = parse_app("web", app(hostname="a.example.com", context_root=value), P)
    assert spec is None
    assert problems[0].label == f"{P}.context_root"


def test_rewrite_must_be_a_boolean():
    spec, _ = parse_app("web", app(hostname="a.example.com", context_root_rewrite="TRUE"), P)
    assert spec.rewrite is True
    spec, problems = parse_app("web", app(hostname="a.example.com", context_root_rewrite="y"), P)
    assert spec is None and problems[0].label == f"{P}.context_root_rewrite"


def test_raw_backend_options_and_unknown_labels_are_ignored_and_reported():
    labels = app(
        hostname="a.example.com",
        backend_option__1="http-request deny",
        ssl_backend="true",
        colour="blue",
    )
    spec, problems = parse_app("web", labels, P)
    assert spec is not None
    assert {p.label: p.rejected for p in problems} == {
        f"{P}.backend_option.1": False,
        f"{P}.colour": False,
        f"{P}.ssl_backend": False,
    }


def test_other_prefixes_are_none_of_our_business():
    labels = {"traefik.http.routers.x": "y", "interlock2.hostname": "z", f"{P}.hostname": "a.b"}
    spec, problems = parse_app("web", labels, P)
    assert problems == [] and spec.hosts == ("a.b",)


def test_routed_and_proxy_detection_follow_the_prefix():
    assert lbl.is_routed({"edge.hostname": "a"}, "edge")
    assert not lbl.is_routed({"interlock.hostname": "a"}, "edge")
    assert lbl.is_proxy({"edge.ext.name": "nginx"}, "edge")


def test_proxy_labels():
    spec, problems = parse_proxy("lb", app(ext__name="HAProxy", ext__service_cluster="blue"), P)
    assert problems == []
    assert (spec.kind, spec.cluster, spec.mode) == ("haproxy", "blue", None)
    assert spec.config_path == "/usr/local/etc/haproxy/haproxy.cfg"
    spec, _ = parse_proxy(
        "lb", app(ext__name="nginx", ext__mode="signal", ext__config_path="/etc/nginx/x.conf"), P
    )
    assert (spec.mode, spec.config_path) == ("signal", "/etc/nginx/x.conf")


@pytest.mark.parametrize(
    "labels",
    [
        app(ext__name="apache"),
        app(ext__name="nginx", ext__mode="restart"),
        app(ext__name="nginx", ext__config_path="/etc/../x"),
        app(ext__name="nginx", ext__config_path="x"),
    ],
)
def test_bad_proxy_labels_reject_the_proxy(labels):
    spec, problems = parse_proxy("lb", labels, P)
    assert spec is None and problems and "lb" in str(problems[0])


def test_tls_needs_both_secrets_and_names_them():
    spec, problems = parse_app(
        "web",
        app(hostname="a.example.com", ssl_cert="web-crt", ssl_cert_key="web-key", ssl_only="true"),
        P,
    )
    assert problems == []
    assert (spec.tls.cert_secret, spec.tls.key_secret, spec.tls.only) == (
        "web-crt",
        "web-key",
        True,
    )
    for half in (app(hostname="a.b", ssl_cert="c"), app(hostname="a.b", ssl_only="true")):
        spec, problems = parse_app("web", half, P)
        assert spec is None and any(p.label == f"{P}.ssl_cert_key" for p in problems)
    spec, problems = parse_app("web", app(hostname="a.b", ssl_cert="x;", ssl_cert_key="k"), P)
    assert spec is None and problems[0].label == f"{P}.ssl_cert"


def test_health_checks_and_websocket_endpoints_are_validated():
    spec, problems = parse_app(
        "web",
        app(
            hostname="a.b",
            health_check="/healthz",
            health_check_interval="500",
            websocket_endpoint="/ws",
        ),
        P,
    )
    assert problems == [] and (spec.health_check, spec.health_interval_ms) == ("/healthz", 500)
    for bad in (
        app(hostname="a.b", health_check="/x;y"),
        app(hostname="a.b", websocket_endpoint="ws"),
        app(hostname="a.b", health_check="/h", health_check_interval="10"),
    ):
        spec, problems = parse_app("web", bad, P)
        assert spec is None and problems, bad
