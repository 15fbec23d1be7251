"""Label grammar: everything a label may say, and everything it must not."""

from dataclasses import replace

import pytest

from controller import labels as lbl
from controller import vocabulary as vocab
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
        colour="blue",
    )
    spec, problems = parse_app("web", labels, P)
    assert spec is not None
    assert {p.label: p.rejected for p in problems} == {
        f"{P}.backend_option.1": False,
        f"{P}.colour": False,
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


# Hostile values: every grammar is ASCII, matches the whole value, and never raises.

ARABIC_1234 = "\u0661\u0662\u0663\u0664"  # Arabic-Indic digits: str.isdigit() and int() take them
FULLWIDTH_80 = "\uff18\uff10"
KELVIN = "\u212a"  # "K".lower() == "k": lower-casing before checking would let it in


@pytest.mark.parametrize(
    ("label", "value", "expected"),
    [
        ("hostname", "a.example.com\n", ("a.example.com",)),
        ("hostname", " A.Example.COM\r\n", ("a.example.com",)),
        ("port", "8080\n", 8080),
        ("health_check_interval", "1500\n", 1500),
        ("context_root", "/app\n", "/app"),
        ("network", "front\n", "front"),
    ],
)
def test_blanks_around_a_value_are_trimmed_and_never_reach_the_spec(label, value, expected):
    spec, problems = parse_app("web", app(**{"hostname": "a.example.com", label: value}), P)
    assert problems == []
    field = {"hostname": "hosts", "health_check_interval": "health_interval_ms"}
    got = getattr(spec, {"context_root": "context_root"}.get(label, field.get(label, label)))
    assert got == expected


@pytest.mark.parametrize(
    ("label", "value"),
    [
        ("hostname", "a\n.example.com"),  # "$" matched before this newline: then render refused
        ("hostname", "a.example.com\n\nb"),
        ("hostname", f"{KELVIN}.example.com"),
        ("hostname", "\uff41.example.com"),  # fullwidth a
        ("hostname", "a\x00.example.com"),
        ("hostname", "a.example.com."),
        ("hostname", "a" * 100_000),
        ("hostname", ".".join(["a" * 63] * 4)),  # 255 characters
        ("alias_domain", "b\n.example.com"),
        ("port", FULLWIDTH_80),
        ("port", "\u0668\u0660"),
        ("port", "8\n0"),
        ("port", "\u00b2"),
        ("port", "9" * 5000),  # int() raises past 4,300 digits
        ("health_check_interval", ARABIC_1234),
        ("health_check_interval", "\u00b2\u00b3\u00b9\u00b9"),  # superscripts: int() raises
        ("health_check_interval", "\uff11\uff15\uff10\uff10"),
        ("health_check_interval", "9" * 5000),
        ("health_check_interval", "15\n00"),
        ("health_check_interval", "1_500"),  # int() takes underscores
        ("health_check_interval", "+1500"),
        ("context_root", "/a\n/b"),
        ("context_root", "/\uff41pp"),
        ("context_root", "/a\x00"),
        ("health_check", "/h\n;"),
        ("network", "fr\nont"),
        ("network", "\uff46ront"),
        ("network", "n" * 129),
        ("ssl_cert", "crt\x00"),
        ("context_root_rewrite", "\uff54rue"),
        ("balance_algorithm", "leastconn\x00"),
        ("ext__service_cluster", "blue\nred"),
    ],
)
def test_hostile_values_reject_the_service_with_a_problem(label, value):
    labels = app(**{"hostname": "a.example.com", "port": "80", label: value})
    spec, problems = parse_app("web", labels, P)
    assert spec is None
    (problem,) = [p for p in problems if p.rejected]
    assert problem.label == f"{P}.{label.replace('__', '.')}"
    assert len(str(problem)) < 400 and "\n" not in str(problem) and "\x00" not in str(problem)


@pytest.mark.parametrize(
    "labels",
    [
        app(ext__name="nginx\x00"),
        app(ext__name="\uff4eginx"),
        app(ext__name="nginx", ext__mode="signal\nx"),
        app(ext__name="nginx", ext__config_path="/etc/nginx/nginx.conf\n/x"),
        app(ext__name="nginx", ext__config_path="/etc/./nginx.conf"),
        app(ext__name="nginx", ext__config_path="/\uff45tc/nginx.conf"),
        app(ext__name="nginx", ext__config_path="/a" * 600),
    ],
)
def test_hostile_proxy_labels_reject_the_proxy(labels):
    spec, problems = parse_proxy("lb", labels, P)
    assert spec is None and problems


def test_only_alias_keys_of_our_prefix_and_exactly_so_add_hosts():
    labels = app(hostname="a.example.com")
    labels["ninechars.alias_domain.1"] = "other-tool.example.com"  # as long as "interlock"
    labels[f"{P}.alias_domain.1\n"] = "b.example.com"
    spec, problems = parse_app("web", labels, P)
    assert spec.hosts == ("a.example.com",)
    (problem,) = problems
    assert (problem.label, problem.rejected) == (f"{P}.alias_domain.1\n", False)
    assert str(problem).endswith("interlock.alias_domain.1\\n: unknown label")


def test_control_characters_in_a_label_key_are_escaped_where_people_read_them():
    labels = app(hostname="a.example.com")
    labels[f"{P}.colour\x1b[31m\rforged line\x00"] = "x"
    _, (problem,) = parse_app("web", labels, P)
    shown = str(problem)
    assert "\x1b" not in shown and "\r" not in shown and "\x00" not in shown
    assert "colour\\x1b[31m\\rforged line\\x00: unknown label" in shown


def test_a_bug_in_a_grammar_rejects_the_service_and_never_raises(monkeypatch):
    def broken(value):
        raise RuntimeError("grammar bug")

    monkeypatch.setitem(vocab.APP, "port", replace(vocab.APP["port"], grammar=broken))
    spec, problems = parse_app("web", app(hostname="a.example.com", port="80"), P)
    assert spec is None and [p.label for p in problems] == [f"{P}.port"]
    assert "RuntimeError" in problems[0].reason


@pytest.mark.parametrize("parse", [parse_app, parse_proxy])
def test_parsing_is_total_even_on_labels_that_are_not_a_mapping(parse):
    spec, (problem,) = parse("web", None, P)  # type: ignore[arg-type]
    assert spec is None and problem.label == f"{P}.*" and problem.rejected


def test_interlock_2_labels_are_read_by_the_labels_of_ours_they_mean():
    """The reader skips the labels a service does not carry: in Interlock 2's family it must
    know ``ssl_key`` as our ``ssl_cert_key`` and ``service_cluster`` as our cluster."""
    lb = {
        f"{vocab.LB}.hosts": "web.example.com",
        f"{vocab.LB}.port": "8080",
        f"{vocab.LB}.ssl_cert": "cert",
        f"{vocab.LB}.ssl_key": "key",
        f"{vocab.LB}.service_cluster": "blue",
    }
    spec, problems = parse_app("web", lb, P)
    assert problems == []
    assert (spec.tls.cert_secret, spec.tls.key_secret, spec.cluster) == ("cert", "key", "blue")


@pytest.mark.parametrize(
    ("name", "value", "limits"),
    [
        ("connect_timeout", "2s", lbl.Limits(connect_timeout_ms=2000)),
        ("read_timeout", "3s", lbl.Limits(read_timeout_ms=3000)),
        ("max_body_size", "1k", lbl.Limits(max_body_bytes=1024)),
        ("ip_allow", "10.0.0.0/8", lbl.Limits(ip_allow=("10.0.0.0/8",))),
        ("basic_auth_secret", "users", lbl.Limits(basic_auth_secret="users")),
        (
            "response_header.X-Frame-Options",
            "DENY",
            lbl.Limits(response_headers=(("X-Frame-Options", "DENY"),)),
        ),
    ],
)
def test_any_one_limit_label_alone_sets_its_limit(name, value, limits):
    """Services without a limit label share one ``Limits()``, found without reading each
    limit: a label of any one of them must still be read."""
    labels = {**app(hostname="web.example.com"), f"{P}.{name}": value}
    spec, problems = parse_app("web", labels, P)
    assert problems == []
    assert spec.limits == limits
