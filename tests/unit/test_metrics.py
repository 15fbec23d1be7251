"""Metrics from pass results (plain data), /healthz's verdict, and the HTTP endpoint on loopback."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.app import build_telemetry, serve_metrics
from controller.desired import desired_state
from controller.metrics import Telemetry, health, label_kind, serve_http
from controller.plan import CreateConfig, PushConfig, RemoveConfig, UpdateProxyService
from controller.render import RenderOptions
from controller.result import Outcome, PassResult
from controller.settings import Settings
from controller.snapshot import snapshot_from_api
from controller.verify import render_all
from tests import builders as b

P = "interlock"


def snapshot():
    services = [
        b.service("p1", "ngx", {f"{P}.ext.name": "nginx"}),
        b.service("p2", "hap", {f"{P}.ext.name": "haproxy", f"{P}.ext.mode": "signal"}),
        b.service(
            "a1",
            "web",
            {f"{P}.hostname": "web.example.com", f"{P}.port": "80", f"{P}.share_host": "true"},
        ),
        b.service(
            "a2",
            "api",
            {
                f"{P}.hostname": "web.example.com",
                f"{P}.context_root": "/api",
                f"{P}.port": "80",
                f"{P}.alias_domain.7": "api.example.com",
            },
        ),
        b.service("a3", "idle", {f"{P}.hostname": "idle.example.com", f"{P}.port": "80"}),
        b.service("bad1", "badport", {f"{P}.hostname": "x.example.com", f"{P}.port": "80;"}),
        b.service("bad2", "badhost", {f"{P}.hostname": "a;b", f"{P}.port": "80"}),
        b.service(
            "bad3", "badalias", {f"{P}.hostname": "y.example.com", f"{P}.alias_domain.3": "!"}
        ),
        b.service(
            "odd",
            "odd",
            {f"{P}.hostname": "odd.example.com", f"{P}.port": "80", f"{P}.secret_x": "1"},
        ),
    ]
    tasks = [
        b.task("t1", "a1", "10.0.0.2"),
        b.task("t2", "a1", "10.0.0.3"),
        b.task("t3", "a2", "10.0.0.4"),
        b.task("t4", "odd", "10.0.0.9"),
    ]
    return snapshot_from_api(services, tasks, [b.network("net1")], [])


def pass_result(outcomes=(), refused=None, seconds=0.2, pass_id="abc123"):
    snap = snapshot()
    desired = desired_state(snap, P)
    rendered, _ = render_all(desired, RenderOptions())
    return PassResult(
        pass_id,
        snap,
        desired,
        rendered,
        [o.action for o in outcomes],
        list(outcomes),
        list(desired.problems),
        dict(refused or {}),
        seconds=seconds,
        api_calls=5,
    )


def values(telemetry: Telemetry) -> dict[tuple[str, tuple], float]:
    """Every sample of the exposition text, parsed back: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(telemetry.exposition().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def telemetry(**settings) -> Telemetry:
    return build_telemetry(Settings(label_prefix=P, **settings), None, clock=lambda: 1000.0)


def test_per_proxy_routes_backends_config_and_rejected_services():
    t = telemetry()
    result = pass_result()
    t.record(result, None)
    v = values(t)
    # ngx and hap both route web (/), web (/api), api.example.com, idle, odd.
    for proxy in ("ngx", "hap"):
        assert v[("interlock_proxy_routes", (("proxy", proxy),))] == 5
        assert v[("interlock_proxy_backends", (("proxy", proxy),))] == 4
        assert v[("interlock_proxy_backend_servers", (("proxy", proxy),))] == 4
        assert v[("interlock_proxy_backends_without_servers", (("proxy", proxy),))] == 1
        assert v[("interlock_backend_servers", (("proxy", proxy), ("service", "web")))] == 2
        text = result.rendered[proxy].text
        assert v[("interlock_proxy_config_bytes", (("proxy", proxy),))] == len(text.encode())
    kind = {"ngx": ("nginx", "rolling"), "hap": ("haproxy", "signal")}
    for proxy, (k, mode) in kind.items():
        labels = (("digest", result.rendered[proxy].short), ("kind", k), ("mode", mode))
        assert v[("interlock_proxy_config_info", (*labels, ("proxy", proxy)))] == 1
    rejected = {k[1][0][1]: n for k, n in v.items() if k[0] == "interlock_rejected_services"}
    assert rejected == {"port": 1, "hostname": 1, "alias_domain": 1}
    ignored = {k[1][0][1]: n for k, n in v.items() if k[0] == "interlock_ignored_labels"}
    assert ignored == {"other": 1}  # an unknown label's name is not a label value
    assert v[("interlock_routed_services", ())] == 4
    assert v[("interlock_services", ())] == 9


def test_reloads_failures_and_pass_counters():
    t = telemetry()
    ok_push = Outcome(PushConfig("hap", "haproxy", "c1", "/cfg", "text", "d1"))
    bad_push = Outcome(PushConfig("hap", "haproxy", "c2", "/cfg", "text", "d1"), "refused")
    update = Outcome(UpdateProxyService("ngx", "p1", 10, "cfg-1", "/etc/nginx/nginx.conf", {}))
    create = Outcome(CreateConfig("ngx", "cfg-1", "text", {}))
    remove = Outcome(RemoveConfig("p1", "c9", "cfg-0"), "gone wrong")
    t.record(pass_result([create, update, ok_push, bad_push, remove]), None)
    t.record(pass_result(seconds=0.02), None)
    t.record(None, RuntimeError("engine down"))
    v = values(t)
    assert v[("interlock_proxy_reloads_total", (("mode", "signal"), ("proxy", "hap")))] == 1
    assert v[("interlock_proxy_reload_failures_total", (("mode", "signal"), ("proxy", "hap")))] == 1
    assert v[("interlock_proxy_reloads_total", (("mode", "rolling"), ("proxy", "ngx")))] == 1
    assert v[("interlock_actions_total", (("action", "RemoveConfig"), ("result", "failed")))] == 1
    assert v[("interlock_actions_total", (("action", "CreateConfig"), ("result", "ok")))] == 1
    assert v[("interlock_reconcile_passes_total", (("outcome", "errors"),))] == 1
    assert v[("interlock_reconcile_passes_total", (("outcome", "converged"),))] == 1
    assert v[("interlock_reconcile_passes_total", (("outcome", "failed"),))] == 1
    assert v[("interlock_reconcile_errors_total", (("kind", "action"),))] == 2
    assert v[("interlock_reconcile_errors_total", (("kind", "pass"),))] == 1
    assert v[("interlock_reconcile_pass_duration_seconds_count", ())] == 2
    assert v[("interlock_reconcile_pass_duration_seconds_bucket", (("le", "0.025"),))] == 1
    assert v[("interlock_reconcile_last_success_timestamp_seconds", ())] == 1000.0
    assert v[("interlock_docker_api_calls_total", ())] == 10
    # The failed pass does not erase what the last good one said about the proxies.
    assert v[("interlock_proxy_routes", (("proxy", "ngx"),))] == 5


def test_refused_configs_count_and_show():
    t = telemetry()
    t.record(pass_result(refused={"hap": "haproxy refused the config: bad"}), None)
    v = values(t)
    assert v[("interlock_proxy_config_refused", (("proxy", "hap"),))] == 1
    assert v[("interlock_proxy_config_refused", (("proxy", "ngx"),))] == 0
    assert v[("interlock_reconcile_errors_total", (("kind", "refused"),))] == 1


def test_no_metric_carries_config_text_or_free_text_reasons():
    t = telemetry()
    result = pass_result()
    t.record(result, None)
    text = t.exposition().decode()
    assert "proxy_pass" not in text and "upstream" not in text and "server_name" not in text
    for problem in result.problems:
        assert problem.reason not in text


def test_record_never_raises():
    t = telemetry()
    t.record("not a pass result", None)  # type: ignore[arg-type]
    t.record(None, None)


def test_label_kind_is_bounded():
    assert label_kind("interlock.alias_domain.42", P) == "alias_domain"
    assert label_kind("interlock.backend_option.1", P) == "backend_option"
    assert label_kind("interlock.ext.mode", P) == "ext.mode"
    assert label_kind("interlock.whatever-a-user-types", P) == "other"


def test_health_verdicts():
    assert not health(100.0, None, "", 13).ok
    assert (
        "no pass has completed yet: ConnectionError"
        in health(100, None, "ConnectionError", 13).reason
    )
    assert health(100.0, 95.0, "", 13).ok
    late = health(100.0, 80.0, "ConnectionError: refused", 13)
    assert not late.ok and "20.0s ago (max 13s): ConnectionError" in late.reason
    assert json.loads(late.body()) == {
        "ok": False,
        "reason": late.reason,
        "last_success_age_seconds": 20.0,
    }


def test_health_max_age_defaults_to_three_intervals_and_ten_seconds():
    assert Settings(poll_interval=2).health_max_age_seconds == 16
    assert Settings(poll_interval=2, health_max_age=5).health_max_age_seconds == 5


def test_http_endpoint_serves_metrics_and_health_on_loopback():
    now = [1000.0]
    t = build_telemetry(Settings(label_prefix=P, poll_interval=1), None, clock=lambda: now[0])
    server = serve_http(t, "127.0.0.1", 0)
    port = server.server_address[1]
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=5)
            raise AssertionError("healthz said 200 before any pass")
        except urllib.error.HTTPError as error:
            assert error.code == 503
            assert json.loads(error.read())["ok"] is False
        t.record(pass_result(), None)
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as answer:
            assert answer.status == 200 and json.loads(answer.read())["ok"] is True
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as answer:
            body = answer.read().decode()
            assert answer.headers["Content-Type"].startswith("text/plain")
        assert 'interlock_proxy_routes{proxy="ngx"} 5.0' in body
        assert "process_cpu_seconds_total" in body
        now[0] += 14  # 3 x 1 s + 10 s is the limit
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=5)
            raise AssertionError("healthz said 200 for a stale pass")
        except urllib.error.HTTPError as error:
            assert error.code == 503
    finally:
        server.shutdown()
        server.server_close()


def test_port_zero_starts_nothing_and_a_busy_port_names_the_setting():
    quiet = build_telemetry(Settings(label_prefix=P, metrics_port=0), api=object())
    assert serve_metrics(quiet, Settings(label_prefix=P, metrics_port=0)) is None
    assert quiet.server is None
    names = {thread.name for thread in threading.enumerate()}
    assert not names & {"interlock-beacon", "interlock-scraper", "interlock-metrics"}

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        settings = Settings(label_prefix=P, metrics_port=port, metrics_address="127.0.0.1")
        with pytest.raises(RuntimeError, match="INTERLOCK_METRICS_PORT"):
            serve_metrics(build_telemetry(settings, None), settings)
