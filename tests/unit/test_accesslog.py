"""Access logs and request ids as rendered: every format passes the real `nginx -t` and
`haproxy -c`, both proxies log the same fields, a label turns one service's log off, and the
setting and the label refuse values they do not know. What the proxies then write is tested on
the Swarm (tests/swarm/test_accesslog.py)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from controller.desired import desired_state
from controller.labels import parse_app
from controller.render import RenderOptions, render
from controller.settings import SettingsError, load_settings
from controller.snapshot import snapshot_from_api
from tests import builders as b
from tests.unit.test_render import real_check

P = "interlock"
FIELDS = [
    "time",
    "client",
    "host",
    "method",
    "path",
    "status",
    "bytes",
    "request_time",
    "upstream",
    "upstream_time",
    "route",
    "request_id",
    "tls_version",
]
OPTIONS = RenderOptions(http_port=8080)


def scenario(quiet: str | None = "false") -> dict:
    """Both proxies; a routed service, one with a path, and one whose log the label turns off."""
    quiet_labels = {f"{P}.hostname": "quiet.example.com", f"{P}.port": "80"}
    if quiet is not None:
        quiet_labels[f"{P}.access_log"] = quiet
    services = [
        b.service("p1", "ngx", {f"{P}.ext.name": "nginx"}),
        b.service("p2", "hap", {f"{P}.ext.name": "haproxy"}),
        b.service("a1", "web", {f"{P}.hostname": "web.example.com", f"{P}.port": "8080"}),
        b.service(
            "a2",
            "api",
            {f"{P}.hostname": "api.example.com", f"{P}.port": "80", f"{P}.context_root": "/v1"},
        ),
        b.service("a3", "quiet", quiet_labels),
    ]
    tasks = [b.task("t1", "a1", "10.0.0.2"), b.task("t3", "a3", "10.0.0.4")]
    desired = desired_state(snapshot_from_api(services, tasks, [b.network("net1")], []), P)
    return {d.proxy.name: d for d in desired.proxies}


def text_of(proxy: str, access_log: str = "json", **labels) -> str:
    return render(scenario(**labels)[proxy], replace(OPTIONS, access_log=access_log)).text


@pytest.mark.parametrize("access_log", ["json", "text", "off"])
@pytest.mark.parametrize("proxy", ["ngx", "hap"])
def test_every_format_passes_the_real_binary(proxy, access_log, tmp_path):
    desired = scenario()[proxy]
    text = render(desired, replace(OPTIONS, access_log=access_log)).text
    result = real_check(desired.proxy.spec.kind, text, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warn" not in result.stderr.lower(), result.stderr


def _nginx_fields(text: str) -> list[str]:
    """The field names of nginx's JSON log_format (its quoted pieces joined)."""
    start = text.index("log_format interlock_json escape=json")
    statement = text[start : text.index(";\n", start)]
    body = "".join(re.findall(r"'([^']*)'", statement))
    return re.findall(r'"([a-z_]+)":', body)


def _haproxy_fields(text: str) -> list[str]:
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith("log-format '")]
    return re.findall(r'"([a-z_]+)":', line)


def test_both_proxies_log_the_same_fields_in_the_same_order():
    assert _nginx_fields(text_of("ngx")) == FIELDS
    assert _haproxy_fields(text_of("hap")) == FIELDS


def test_json_logs_go_to_stdout_and_the_route_is_the_service():
    nginx, haproxy = text_of("ngx"), text_of("hap")
    assert "access_log /dev/stdout interlock_json;" in nginx
    assert nginx.count("set $interlock_route web;") == 1
    assert nginx.count("set $interlock_route api;") == 2  # /v1 and /v1/...
    assert "log stdout len 8192 format raw local0" in haproxy
    assert "log global" in haproxy
    assert "http-request set-var(txn.route) str(web)" in haproxy
    # Client text is cut and escaped before it reaches a line.
    assert "escape=json" in nginx and "$request_uri $interlock_path_cut" in nginx
    for fetch in ("var(txn.path),bytes(0,1024),json(utf8s)", "var(txn.host),bytes(0,200)"):
        assert fetch in haproxy


def test_request_ids_are_passed_or_made_whatever_the_log_setting():
    for access_log in ("json", "text", "off"):
        nginx, haproxy = text_of("ngx", access_log), text_of("hap", access_log)
        assert "proxy_set_header X-Request-ID $interlock_request_id;" in nginx
        assert '"~^[A-Za-z0-9._:@/+=-]{1,128}$" $http_x_request_id;' in nginx
        assert "default $request_id;" in nginx
        assert "http-request set-header X-Request-ID %[var(txn.request_id)]" in haproxy
        assert "uuid,regsub(-,,g) unless" in haproxy


def test_off_renders_no_log_at_all():
    nginx, haproxy = text_of("ngx", "off"), text_of("hap", "off")
    assert "access_log off;" in nginx and "/dev/stdout" not in nginx
    assert "log_format" not in nginx
    assert "log stdout" not in haproxy and "log global" not in haproxy
    assert "log-format" not in haproxy


def test_text_is_the_classic_line_with_route_and_request_id():
    nginx, haproxy = text_of("ngx", "text"), text_of("hap", "text")
    assert "access_log /dev/stdout interlock_text;" in nginx and "escape=json" not in nginx
    assert '"$request" $status' in nginx and "route=$interlock_route_logged" in nginx
    assert "%{+Q}r route=%[var(txn.route)] request_id=%[var(txn.request_id)]" in haproxy


def _block(text: str, start: str, end: str) -> str:
    begin = text.index(start)
    return text[begin : text.index(end, begin + len(start))]


def test_the_label_turns_one_services_log_off():
    nginx, haproxy = text_of("ngx"), text_of("hap")
    quiet = _block(nginx, "server_name quiet.example.com;", "}")
    web = _block(nginx, "server_name web.example.com;", "}")
    assert "access_log off;" in quiet and "access_log" not in web
    quiet_backend = _block(haproxy, "\nbackend quiet_a3\n", "\n\n")
    web_backend = _block(haproxy, "\nbackend web_a1\n", "\n\n")
    assert "http-request set-log-level silent" in quiet_backend
    assert "set-log-level" not in web_backend
    # true, or no label, logs as usual
    for value in ("true", None):
        assert "set-log-level" not in text_of("hap", quiet=value)
        assert text_of("ngx", quiet=value).count("access_log off;") == 1  # the status server


@pytest.mark.parametrize("value", ["off", "none", "false;", "false\nx", "2"])
def test_a_bad_label_value_rejects_the_service_naming_the_label(value):
    labels = {f"{P}.hostname": "web.example.com", f"{P}.access_log": value}
    spec, problems = parse_app("web", labels, P)
    assert spec is None
    assert [p.label for p in problems] == [f"{P}.access_log"], problems
    assert "web" in str(problems[0])


@pytest.mark.parametrize("value", ["false", "no", "0", "true", "yes", "1"])
def test_the_label_reads_as_a_boolean(value):
    labels = {f"{P}.hostname": "web.example.com", f"{P}.access_log": value}
    spec, problems = parse_app("web", labels, P)
    assert problems == [] and spec.access_log is (value in ("true", "yes", "1"))


@pytest.mark.parametrize("value", ["json", "text", "off"])
def test_the_setting_takes_three_words(value, monkeypatch):
    monkeypatch.setenv("INTERLOCK_ACCESS_LOG", value)
    assert load_settings().access_log == value


@pytest.mark.parametrize("value", ["JSON ", "on", "combined", ""])
def test_a_bad_setting_names_the_variable(value, monkeypatch):
    monkeypatch.setenv("INTERLOCK_ACCESS_LOG", value)
    with pytest.raises(SettingsError, match="INTERLOCK_ACCESS_LOG"):
        load_settings()


def test_json_is_the_default(monkeypatch):
    monkeypatch.delenv("INTERLOCK_ACCESS_LOG", raising=False)
    assert load_settings().access_log == "json"
    assert RenderOptions().access_log == "json"
