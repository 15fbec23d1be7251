"""The routing features of issue 16 on plain data: grammars, Interlock 2's labels, the desired
state (shared routes, default backend, redirects, refusals by proxy kind) and the rendered
configs, which the real `nginx -t` and `haproxy -c` accept."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller import checkcert
from controller import vocabulary as vocab
from controller.desired import desired_state, without
from controller.grammar import Redirect
from controller.labels import parse_app
from controller.render import RenderError, RenderOptions, render
from controller.snapshot import snapshot_from_api
from tests import builders as b
from tests.unit.test_render import real_check

P = "interlock"
LB = "com.docker.lb"
OPTIONS = RenderOptions(http_port=8080, https_port=8443)


def ours(**values: str) -> dict[str, str]:
    return {f"{P}.{key.replace('__', '.')}": value for key, value in values.items()}


def lb(**values: str) -> dict[str, str]:
    return {f"{LB}.{key}": value for key, value in values.items()}


# ---- grammars: every new label, valid and hostile ---------------------------------------------

VALID = {
    "weight": [("0", 0), ("20", 20), ("100", 100), (" 7\n", 7)],
    "sticky_session_cookie": [("session", "session"), ("JSESSIONID", "JSESSIONID"), ("a_1", "a_1")],
    "connect_timeout": [("5", 5000), ("500ms", 500), ("2m", 120_000), ("1h", 3_600_000)],
    "read_timeout": [("60s", 60_000), ("24h", 86_400_000)],
    "max_body_size": [("1", 1), ("1k", 1024), ("10M", 10 << 20), ("2g", 2 << 30)],
    "ip_allow": [
        ("10.1.2.3/8", ("10.0.0.0/8",)),
        ("192.168.1.1, 2001:db8::1/32", ("192.168.1.1/32", "2001:db8::/32")),
        ("::1 127.0.0.1", ("::1/128", "127.0.0.1/32")),
    ],
    "response_header.X-Frame-Options": [("DENY", "DENY"), ("max-age=5; preload", None)],
    "basic_auth_secret": [("users.htpasswd", "users.htpasswd")],
    "ssl_backend": [("true", True)],
    "ssl_backend_tls_verify": [("false", False)],
    "default_backend": [("yes", True)],
}
HOSTILE = [
    "\n",
    "1\n2",
    "x;y",
    "{",
    "}",
    '"',
    "'",
    "\\",
    "$host",
    "%[src]",
    "#",
    "\u0661\u0662",
    "\u00b2",
    "\uff11",
    "\u212a",
    "a\x00b",
    "a\u2028b",
    "é",
    "",
    "x" * 5000,
]
NEW_LABELS = [*VALID, "redirects"]


@pytest.mark.parametrize(("label", "value", "expected"), [
    (label, value, expected) for label, cases in VALID.items() for value, expected in cases
])  # fmt: skip
def test_new_labels_read_their_valid_values(label, value, expected):
    spec, problems = parse_app("web", ours(hostname="a.example.com") | {f"{P}.{label}": value}, P)
    assert spec is not None and not [p for p in problems if p.rejected], problems


@pytest.mark.parametrize("label", NEW_LABELS)
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_reject_the_service_naming_it_and_the_label(label, value):
    if label in ("ssl_backend", "ssl_backend_tls_verify", "default_backend") and not value.strip():
        return  # a blank boolean reads as false, as every boolean label does
    if label.startswith("response_header.") and value == "x;y":
        return  # a header value may hold ';' (quoted in both proxies)
    labels = ours(hostname="a.example.com") | {f"{P}.{label}": value}
    spec, problems = parse_app("web", labels, P)
    assert spec is None, (label, value, spec)
    (problem,) = [p for p in problems if p.rejected]
    assert problem.label == f"{P}.{label}" and problem.service == "web"
    shown = str(problem)
    assert shown.isprintable() and len(shown) < 400, shown


@pytest.mark.parametrize(
    "value",
    [
        "0", "101", "-1", "20.5", "1e2", "+5",
        "x", "20%",
    ],
)  # fmt: skip
def test_weights_are_whole_numbers_from_0_to_100(value):
    spec, problems = parse_app("web", ours(hostname="a.example.com", weight=value), P)
    assert (spec is None) == (value != "0"), problems


@pytest.mark.parametrize(
    "name", ["Set-Cookie", "content-length", "Transfer-Encoding", "Connection", "Host", "X_Y",
             "-X", "X Y", "X:Y", "X;Y", "X{", "\u212a"]
)  # fmt: skip
def test_response_header_names_are_tokens_the_proxies_do_not_manage(name):
    spec, problems = parse_app("web", ours(hostname="a.example.com") |
                               {f"{P}.response_header.{name}": "x"}, P)  # fmt: skip
    assert spec is None and problems[-1].label == f"{P}.response_header.{name}", problems


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("old.example.com,https://new.example.com",
         (Redirect("old.example.com", "https", "new.example.com", 301),)),
        ("http://old.local,http://new.local", (Redirect("old.local", "http", "new.local", 301),)),
        ("a.example.com,b.example.com:8443/shop/,308; c.example.com , https://d.example.com ,302",
         (Redirect("a.example.com", "", "b.example.com:8443/shop", 308),
          Redirect("c.example.com", "https", "d.example.com", 302))),
    ],
)  # fmt: skip
def test_redirects_read_source_target_and_code(value, expected):
    spec, problems = parse_app("web", ours(hostname="x.example.com", redirects=value), P)
    assert problems == [] and spec.redirects == expected
    assert set(spec.hosts) == {"x.example.com", *(r.source for r in expected)}


BAD_REDIRECTS = [
    "old.example.com",
    "a,b,c,d",
    "a.example.com,a.example.com",
    "a.example.com,a.example.com/x",
    "a.example.com,b.example.com,300",
    "a.example.com,b.example.com,\u0663\u0660\u0661",
    "a.example.com:80,b.example.com",
    "a.example.com/x,b.example.com",
    "a.example.com,ftp://b.example.com",
    "a.example.com,https://b.example.com/a/../b",
    "a.example.com,https://b.example.com/?q=1",
    "a.example.com,https://b.example.com#x",
    "a.example.com,b.example.com;",
    "a.example.com,b.example.com;a.example.com,c.example.com",
    "a.example.com,b.example.com\n;return 200",
    "a.example.com,$host",
    "a.example.com,b.example.com:99999",
]


@pytest.mark.parametrize("value", BAD_REDIRECTS)
def test_bad_redirects_reject_the_service(value):
    spec, problems = parse_app("web", ours(hostname="x.example.com", redirects=value), P)
    assert spec is None and problems[-1].label == f"{P}.redirects", problems


@pytest.mark.parametrize(
    "value", ["10.0.0.0/33", "10.0.0.256", "010.1.1.1", "fe80::1%eth0", "10.0.0.0/8;", "any",
              "10.0.0.1/8/8", ",", "::ffff:10.0.0.1:80"]
)  # fmt: skip
def test_bad_allow_lists_reject_the_service(value):
    spec, problems = parse_app("web", ours(hostname="x.example.com", ip_allow=value), P)
    assert spec is None and problems[-1].label == f"{P}.ip_allow", problems


# ---- Interlock 2's family ---------------------------------------------------------------------


def test_interlock_2_labels_fill_the_same_spec():
    labels = lb(
        hosts="App.example.com, www.example.com",
        port="8080",
        network="front",
        context_root="/app",
        context_root_rewrite="true",
        ssl_cert="crt",
        ssl_key="key",
        ssl_only="true",
        ssl_backend="true",
        ssl_backend_tls_verify="required",
        sticky_session_cookie="session",
        redirects="http://old.example.com,https://app.example.com",
        websocket_endpoints="/ws,/socket",
        service_cluster="edge",
        ip_hash="true",
        backend_mode="task",
    )
    spec, problems = parse_app("shop", labels, P)
    assert problems == []
    assert spec.family == LB
    assert spec.hosts == ("app.example.com", "www.example.com", "old.example.com")
    assert (spec.port, spec.network, spec.context_root, spec.rewrite) == (
        8080,
        "front",
        "/app",
        True,
    )
    assert (spec.tls.cert_secret, spec.tls.key_secret, spec.tls.only) == ("crt", "key", True)
    assert (spec.ssl_backend, spec.ssl_backend_verify, spec.sticky_cookie) == (
        True,
        True,
        "session",
    )
    assert (spec.cluster, spec.balance) == ("edge", "source")


def test_interlock_2_problems_name_its_own_labels():
    spec, problems = parse_app("shop", lb(hosts="a.example.com,b;c", port="80;"), P)
    assert spec is None
    assert {p.label for p in problems} == {f"{LB}.hosts", f"{LB}.port"}
    spec, problems = parse_app("shop", lb(hosts="a.example.com", ssl_cert="crt"), P)
    assert spec is None and [p.label for p in problems] == [f"{LB}.ssl_key"]
    assert "com.docker.lb.ssl_key" in problems[0].reason


def test_vip_mode_and_unknown_interlock_2_labels_are_reported_not_rejected():
    spec, problems = parse_app("shop", lb(hosts="a.example.com", backend_mode="vip",
                                          template="x"), P)  # fmt: skip
    assert spec is not None
    assert {(p.label, p.rejected) for p in problems} == {
        (f"{LB}.backend_mode", False),
        (f"{LB}.template", False),
    }
    assert "vip is not supported" in str(problems[0]) + str(problems[1])


def test_a_service_with_both_families_is_read_from_ours_and_told_so():
    labels = ours(hostname="ours.example.com", port="80") | lb(hosts="theirs.example.com")
    spec, problems = parse_app("both", labels, P)
    assert spec.hosts == ("ours.example.com",) and spec.family == vocab.NATIVE
    ((label, rejected, reason),) = [(p.label, p.rejected, p.reason) for p in problems]
    assert (label, rejected) == (f"{LB}.*", False) and "com.docker.lb.hosts" in reason
    # Interlock 2's hosts with one of our labels that names no host: read from theirs.
    spec, problems = parse_app("both", lb(hosts="theirs.example.com") | ours(port="80"), P)
    assert spec.hosts == ("theirs.example.com",) and spec.port is None
    assert [(p.label, p.rejected) for p in problems] == [(f"{P}.*", False)]


def test_the_families_setting_turns_one_off():
    services = [
        b.service("p1", "proxy", {f"{P}.ext.name": "nginx"}),
        b.service("a1", "theirs", lb(hosts="theirs.example.com", port="80")),
        b.service("a2", "ours", ours(hostname="ours.example.com", port="80")),
    ]
    snapshot = snapshot_from_api(services, [], [b.network("net1")], [], [])
    hosts = {
        families: {r.host for r in desired_state(snapshot, P, families=families).proxies[0].routes}
        for families in [(vocab.NATIVE, LB), (vocab.NATIVE,), (LB,)]
    }
    assert hosts[(vocab.NATIVE, LB)] == {"theirs.example.com", "ours.example.com"}
    assert hosts[(vocab.NATIVE,)] == {"ours.example.com"}
    assert hosts[(LB,)] == {"theirs.example.com"}


def test_passthrough_cannot_be_combined_with_what_reads_http():
    labels = ours(hostname="a.example.com", ssl_passthrough="true", context_root="/x",
                  ip_allow="10.0.0.0/8")  # fmt: skip
    spec, problems = parse_app("web", labels, P)
    assert spec is None
    assert {p.label for p in problems} == {f"{P}.ssl_passthrough"}
    assert len(problems) == 2 and "context_root" in problems[0].reason


# ---- desired state ----------------------------------------------------------------------------


def swarm(*apps: tuple[str, dict[str, str], int], proxies=("nginx", "haproxy"), secrets=()):
    """Proxies of these kinds and apps (name, labels, tasks), created a second apart."""
    services = [b.service(f"p{i}", kind, {f"{P}.ext.name": kind}) for i, kind in enumerate(proxies)]
    tasks = []
    for n, (name, labels, count) in enumerate(apps):
        created = f"2026-01-01T00:00:{n:02d}.000000000Z"
        services.append(b.service(f"a{n}", name, labels, created=created))
        tasks += [b.task(f"t{n}-{i}", f"a{n}", f"10.0.{n}.{i + 2}") for i in range(count)]
    raw = [{"ID": f"s-{name}", "Spec": {"Name": name}} for name in secrets]
    return desired_state(snapshot_from_api(services, tasks, [b.network("net1")], [], [], raw), P)


def proxy(desired, kind: str):
    return next(d for d in desired.proxies if d.proxy.spec.kind == kind)


def served(one, host: str, path: str = ""):
    (route,) = [r for r in one.routes if (r.host, r.path) == (host, path)]
    return next(x for x in one.backends if x.name == route.backend)


def test_weighted_services_share_a_route_by_weight_per_task():
    desired = swarm(
        ("stable", ours(hostname="shop.example.com", port="80", weight="80"), 2),
        ("canary", ours(hostname="shop.example.com", port="80", weight="20"), 1),
    )
    assert desired.problems == ()
    backend = served(proxy(desired, "nginx"), "shop.example.com")
    assert backend.members == (("stable", 2), ("canary", 1))
    assert backend.targets == ("10.0.0.2:80", "10.0.0.3:80", "10.0.1.2:80")
    assert backend.weights == (100, 100, 50)  # 40 + 40 per stable task, 20 for the canary one


def test_a_zero_weight_takes_no_traffic_and_equal_shares_render_no_weights():
    desired = swarm(
        ("stable", ours(hostname="shop.example.com", port="80", weight="100"), 1),
        ("off", ours(hostname="shop.example.com", port="80", weight="0"), 1),
        ("same", ours(hostname="shop.example.com", port="80", weight="100"), 1),
    )
    backend = served(proxy(desired, "haproxy"), "shop.example.com")
    assert backend.targets == ("10.0.0.2:80", "10.0.2.2:80") and backend.weights == ()
    assert backend.members == (("stable", 1), ("same", 1), ("off", 0))


def test_interlock_2_canaries_share_by_task_count_and_others_keep_the_conflict_rule():
    desired = swarm(
        ("v1", lb(hosts="app.example.com", port="80"), 3),
        ("v2", lb(hosts="app.example.com", port="80"), 1),
        ("weighted", ours(hostname="app.example.com", port="80", weight="50"), 1),
        ("plain", ours(hostname="app.example.com", port="80"), 1),
    )
    backend = served(proxy(desired, "nginx"), "app.example.com")
    assert backend.members == (("v1", 3), ("v2", 1)) and backend.weights == ()
    lost = {p.service for p in desired.problems if p.rejected}
    assert lost == {"weighted", "plain"}
    assert any("both set interlock.weight" in p.reason for p in desired.problems)


def test_without_a_canary_the_stable_keeps_the_route_and_without_the_first_it_goes():
    desired = swarm(
        ("stable", ours(hostname="shop.example.com", port="80", weight="80"), 1),
        ("canary", ours(hostname="shop.example.com", port="80", weight="20"), 1),
    )
    one = proxy(desired, "nginx")
    kept = served(without(one, ["canary"]), "shop.example.com")
    assert (kept.targets, kept.weights, kept.members) == (
        ("10.0.0.2:80",),
        (100,),
        (("stable", 1),),
    )
    assert without(one, ["stable"]).routes == ()


def test_the_oldest_default_backend_answers_unrouted_hosts():
    desired = swarm(
        ("first", ours(default_backend="true", port="80"), 1),
        ("second", ours(default_backend="true", port="80", hostname="b.example.com"), 1),
    )
    one = proxy(desired, "haproxy")
    assert one.default_backend.startswith("first_")
    assert {r.host for r in one.routes} == {"b.example.com"}  # the second keeps its own host
    (problem,) = [p for p in desired.problems if p.proxy == one.proxy.name]
    assert (problem.service, problem.label) == ("second", f"{P}.default_backend")
    assert without(one, ["first"]).default_backend == ""


def test_redirects_are_the_host_owners_only():
    desired = swarm(
        ("owner", ours(hostname="old.example.com", port="80"), 1),
        ("mover", ours(hostname="new.example.com", port="80",
                       redirects="old.example.com,new.example.com;older.example.com,new.example.com"),
         1),
    )  # fmt: skip
    one = proxy(desired, "nginx")
    assert [(r.host, r.target) for r in one.redirects] == [("older.example.com", "new.example.com")]
    assert any(p.service == "mover" and "old.example.com" in p.reason for p in desired.problems)


def test_a_feature_a_kind_lacks_keeps_the_service_off_that_proxy_only():
    desired = swarm(
        ("private", ours(hostname="private.example.com", port="80", basic_auth_secret="users"), 1),
        ("tcp", ours(hostname="tcp.example.com", port="443", ssl_passthrough="true"), 1),
        secrets=("users",),
    )
    nginx, haproxy = proxy(desired, "nginx"), proxy(desired, "haproxy")
    assert {r.host for r in nginx.routes} == {"private.example.com"}
    assert {(r.host, r.passthrough) for r in haproxy.routes} == {("tcp.example.com", True)}
    refused = {(p.service, p.label, p.proxy) for p in desired.problems}
    assert refused == {
        ("private", f"{P}.basic_auth_secret", haproxy.proxy.name),
        ("tcp", f"{P}.ssl_passthrough", nginx.proxy.name),
    }
    assert nginx.secret_files[0].secret == "users"
    assert nginx.secret_files[0].file.startswith("tls-auth-")  # a controller-owned mount
    assert served(nginx, "private.example.com").auth_file == nginx.secret_files[0].file


def test_a_missing_htpasswd_secret_rejects_the_service():
    desired = swarm(
        ("private", ours(hostname="private.example.com", port="80", basic_auth_secret="nope"), 1),
        proxies=("nginx",),
    )
    assert desired.proxies[0].routes == ()
    assert [p.reason for p in desired.problems] == ["Docker secret nope does not exist"]


def test_a_passed_through_host_is_its_owners_alone():
    desired = swarm(
        ("tcp", ours(hostname="tcp.example.com", port="443", ssl_passthrough="true",
                     share_host="true"), 1),
        ("web", ours(hostname="tcp.example.com", port="80", context_root="/x"), 1),
        proxies=("haproxy",),
    )  # fmt: skip
    assert [(r.host, r.path) for r in desired.proxies[0].routes] == [("tcp.example.com", "")]
    assert [(p.service, p.label) for p in desired.problems] == [("web", f"{P}.ssl_passthrough")]


# ---- rendering: every feature, both proxies, the real binaries --------------------------------


def feature_swarm():
    return swarm(
        ("stable", ours(hostname="shop.example.com", port="80", weight="80",
                        sticky_session_cookie="session", connect_timeout="1500ms",
                        read_timeout="30s", max_body_size="1m",
                        ip_allow="10.0.0.0/8, 2001:db8::/32") | {
            f"{P}.response_header.X-Frame-Options": "DENY",
            f"{P}.response_header.Strict-Transport-Security": "max-age=31536000; includeSubDomains",
        }, 2),
        ("canary", ours(hostname="shop.example.com", port="80", weight="20"), 1),
        ("mover", ours(hostname="new.example.com", port="80", redirects="old.example.com,"
                       "https://new.example.com/shop,308;older.example.com,new.example.com"), 1),
        ("fallback", ours(default_backend="true", port="80"), 1),
        ("upstream", ours(hostname="up.example.com", port="443", ssl_backend="true",
                          ssl_backend_tls_verify="true"), 1),
        ("loose", ours(hostname="loose.example.com", port="443", ssl_backend="true"), 1),
        ("tcp", ours(hostname="tcp.example.com", port="443", ssl_passthrough="true"), 1),
        ("private", ours(hostname="private.example.com", port="80", basic_auth_secret="users"), 1),
        ("v1", lb(hosts="lb.example.com", port="80", sticky_session_cookie="s"), 1),
        ("v2", lb(hosts="lb.example.com", port="80"), 2),
        ("tls", ours(hostname="secure.example.com", port="80", ssl_cert="crt",
                     ssl_cert_key="key", ssl_only="true"), 1),
        ("idle", ours(hostname="idle.example.com", port="80", sticky_session_cookie="x"), 0),
        secrets=("users", "crt", "key"),
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
@pytest.mark.parametrize("tls", [True, False])
def test_every_feature_passes_the_real_binary(kind, tls, tmp_path):
    desired = feature_swarm()
    one = proxy(desired, kind)
    if not tls:
        one = without(one, ["tls"])
    for cert in one.certificates:
        (tmp_path / cert.file).write_text(checkcert.CERT)
        (tmp_path / f"{cert.file}.key").write_text(checkcert.KEY)
    rendered = render(one, replace(OPTIONS, secrets_dir=str(tmp_path)))
    result = real_check(kind, rendered.text, tmp_path, rendered.files)
    assert result.returncode == 0 and "warn" not in result.stderr.lower(), result.stderr
    assert {p.service for p in desired.problems if p.rejected} == {"tcp", "private"}


def test_nginx_renders_each_feature():
    text = render(proxy(feature_swarm(), "nginx"), OPTIONS).text
    shop = text.split("server_name shop.example.com;")[1].split("    }\n")[0]
    for line in [
        "allow 10.0.0.0/8;", "allow 2001:db8::/32;", "deny all;", "client_max_body_size 1048576;",
        "proxy_connect_timeout 1500ms;", "proxy_read_timeout 30000ms;",
        "proxy_hide_header X-Frame-Options;", 'add_header X-Frame-Options "DENY" always;',
        'add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;',
        "add_header Set-Cookie $interlock_sticky_set_",
    ]:  # fmt: skip
        assert line in shop, line
    assert "weight=100 max_fails" in text and "weight=50 max_fails" in text
    assert "hash $interlock_sticky_" in text and "map $cookie_session $interlock_sticky_" in text
    assert "return 308 https://new.example.com/shop$request_uri;" in text
    assert "return 301 $scheme://new.example.com$request_uri;" in text
    default = text.split("listen 8080 default_server;")[1].split("    }\n")[0]
    assert "proxy_pass http://fallback_a3;" in default
    assert "proxy_pass https://upstream_a4;" in text and "proxy_ssl_verify on;" in text
    assert "proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;" in text
    assert "auth_basic_user_file /run/secrets/tls-auth-" in text
    assert "tcp.example.com" not in text  # passthrough: refused on nginx
    idle = text.split("server_name idle.example.com;")[1].split("    }\n")[0]
    assert "return 503;" in idle and "Set-Cookie" not in idle  # no tasks: no upstream, no map


def test_haproxy_renders_each_feature():
    text = render(proxy(feature_swarm(), "haproxy"), OPTIONS).text
    for line in [
        "http-request deny deny_status 403 unless { src 10.0.0.0/8 2001:db8::/32 }",
        "http-request deny deny_status 413 if { req.hdr_val(content-length) gt 1048576 }",
        "balance hash var(txn.sticky)", "http-request set-var(txn.sticky) req.cook(session)",
        'http-response set-header X-Frame-Options "DENY"', "timeout connect 1500ms",
        "timeout server 30000ms", "server t1 10.0.0.2:80 weight 100",
        "server t3 10.0.1.2:80 weight 50",
        "http-request redirect prefix https://new.example.com/shop code 308 if "
        "{ var(txn.host) -m str old.example.com }",
        "http-request redirect prefix %[ssl_fc,iif(https,http)]://new.example.com code 301 if",
        "default_backend fallback_a3",
        "ssl verify required ca-file @system-ca sni var(txn.host)", "ssl verify none",
        "use_backend tcp_a6 if { req_ssl_sni -m str tcp.example.com }",
        "bind unix@/tmp/interlock-https.sock accept-proxy ssl crt-list",
    ]:  # fmt: skip
        assert line in text, line
    assert "auth" not in text.split("backend ")[-1]  # basic auth: refused on HAProxy
    tcp = text.split("backend tcp_a6\n")[1].split("\n\n")[0]
    assert tcp.startswith("    mode tcp\n") and "http-request" not in tcp


@pytest.mark.parametrize("bad", ['a"b', "a\\b", "$x", "%[src]", "a\nb", "{", "#"])
def test_the_renderer_refuses_unsafe_header_values_past_validation(bad):
    one = proxy(feature_swarm(), "nginx")
    backends = []
    for backend in one.backends:
        if backend.limits.response_headers:
            limits = replace(backend.limits, response_headers=(("X-A", bad),))
            backend = replace(backend, limits=limits)
        backends.append(backend)
    with pytest.raises(RenderError):
        render(replace(one, backends=tuple(backends)), OPTIONS)


def test_the_feature_configs_have_only_template_lines():
    from tests.unit.test_fuzz import foreign_lines

    for one in feature_swarm().proxies:
        text = render(one, OPTIONS).text
        assert foreign_lines(one.proxy.spec.kind, text) == [], one.proxy.spec.kind
