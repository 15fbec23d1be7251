"""`interlock top` on plain data: reading the proxies' access-log lines, the window's rates,
shares and percentiles, the screen, and the follower and refresh loop over a stand-in log stream.
The real thing (real proxies, real logs, a real terminal under load) is tests/swarm/test_top.py.
"""

from __future__ import annotations

import argparse
import io
import json
import threading

import pytest

from controller import top
from controller.desired import Proxy
from controller.labels import ProxySpec

# Lines as the proxies wrote them in tests/swarm/test_accesslog.py.
NGINX = (
    b'{"time":"2026-11-26T08:23:56+00:00","client":"10.218.1.1","host":"logs.example.com",'
    b'"method":"GET","path":"/with-id?q=1","status":200,"bytes":283,"request_time":7,'
    b'"upstream":"10.219.75.8:8080","upstream_time":6,"route":"t412c6a1e-web",'
    b'"request_id":"client-07d28aaf3dff","tls_version":"-"}'
)
HAPROXY = (
    b'{"time":"2026-11-26T08:23:56+00:00","client":"10.218.1.1","host":"-","method":"-",'
    b'"path":"-","status":400,"bytes":0,"request_time":0,"upstream":"-:-","upstream_time":-1,'
    b'"route":"-","request_id":"-","tls_version":"-"}'
)


def test_both_proxies_lines_are_read():
    hit = top.parse_line(NGINX, "edge", 5.0)
    assert hit == top.Hit(5.0, "edge", "t412c6a1e-web", 200, 7, 6)
    hit = top.parse_line(HAPROXY + b"\n", "hap", 1.0)
    assert (hit.route, hit.status, hit.upstream_ms) == (top.NO_ROUTE, 400, -1)


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"[NOTICE]   (1) : New worker (8) forked",
        b'10.0.0.1 - - [26/Nov/2026:08:24:06 +0000] "GET / HTTP/1.1" 200 267 "-" "-"',
        b'{"route": "web"}',  # not an access-log line of ours
        b'{"route": "web", "status": "x", "request_time": 1}',
        b"[1, 2]",
        b"{not json",
        b"\xff\xfe{",
        b'{"route":"w","status":200,"request_time":1,"pad":"' + b"x" * 20_000 + b'"}',
    ],
)
def test_other_lines_are_left_out(line):
    assert top.parse_line(line, "p", 0.0) is None


def test_percentiles_are_nearest_rank():
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert top.percentile(values, 0.95) == 95
    assert top.percentile(values, 0.50) == 50
    assert top.percentile([7], 0.95) == 7
    assert top.percentile([], 0.95) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hit(at: float, route: str = "web", status: int = 200, ms: int = 10, proxy: str = "p"):
    return top.Hit(at, proxy, route, status, ms, ms - 1 if status < 500 else -1)


def test_the_window_gives_rates_shares_and_percentiles():
    clock = Clock()
    window = top.Window(10.0, clock, started=clock.now - 60)
    for second in range(20):  # 20 s of traffic, 10 requests a second, the last 10 s count
        for n in range(10):
            status = 503 if n == 0 else 404 if n == 1 else 200
            window.add(hit(clock.now - 19.5 + second, status=status, ms=n + 1))
    (row,) = window.routes()
    assert row.requests == 100 and row.rate == pytest.approx(10.0)
    assert row.share_5xx == pytest.approx(0.1) and row.share_4xx == pytest.approx(0.1)
    assert (row.p50_ms, row.p95_ms) == (5, 10)
    assert row.upstream_p95_ms == 9  # 503s had no answer from a task
    clock.now += 11
    assert window.routes() == []  # all of it left the window


def test_rates_just_after_the_start_are_over_the_time_seen():
    clock = Clock()
    window = top.Window(30.0, clock)
    clock.now += 2
    for _ in range(10):
        window.add(hit(clock.now - 1))
    assert window.routes()[0].rate == pytest.approx(5.0)


def test_routes_are_busiest_first_and_per_proxy_figures_add_up():
    clock = Clock()
    window = top.Window(10.0, clock, started=clock.now - 60)
    for _ in range(3):
        window.add(hit(clock.now, "quiet", proxy="a"))
    for n in range(7):
        window.add(hit(clock.now, "busy", status=500, proxy="b" if n % 2 else "a"))
    assert [r.route for r in window.routes()] == ["busy", "quiet"]
    assert window.routes()[0].proxies == ("a", "b")
    per = window.per_proxy()
    assert (len(per["a"]), len(per["b"])) == (7, 3)


def test_lines_are_whole_whatever_the_chunks():
    chunks = [b'{"a":', b'1}\n{"b"', b":2}\n", b"tail"]
    assert list(top.lines_of(chunks)) == [b'{"a":1}', b'{"b":2}', b"tail"]
    assert list(top.lines_of([b"x" * (top.MAX_LINE + 1), b"\nok\n"])) == [b"ok"]


def row(route: str, **overrides) -> top.RouteRow:
    values = dict(
        route=route,
        requests=12,
        rate=1.25,
        share_4xx=0.0,
        share_5xx=0.5,
        p50_ms=3,
        p95_ms=40,
        upstream_p95_ms=None,
        proxies=("edge",),
    )
    return top.RouteRow(**{**values, **overrides})


def test_the_screen_shows_every_figure_and_escapes_names():
    proxies = [top.ProxyRow("edge\x1b[2J", "nginx", 12, 1.25, 0.5, 30, "following")]
    lines = top.screen([row("web"), row("evil\x1b[31m\n")], proxies, 30, 2, 0.0)
    text = "\n".join(lines)
    assert "\x1b" not in text and "\\x1b[31m\\n" in text
    header = next(line for line in lines if line.startswith("ROUTE"))
    assert header.split() == ["ROUTE", "REQ/S", "4XX%", "5XX%", "P50", "P95", "UP", "P95",
                              "REQUESTS", "PROXIES"]  # fmt: skip
    web = next(line for line in lines if line.startswith("web"))
    assert web.split() == ["web", "1.2", "0.0", "50.0", "3", "40", "-", "12", "edge"]
    assert top.screen([], [], 30, 2, 0.0)[3] == "(no requests in the window)"


class Api:
    """Stands in for docker.APIClient's log calls: one stream of lines per proxy."""

    def __init__(self, chunks: list[bytes], fail: bool = False) -> None:
        self.chunks, self.fail, self.calls = chunks, fail, []
        self.done = threading.Event()

    def service_logs(self, service_id, **kwargs):
        self.calls.append(("service", service_id, kwargs))
        if self.fail:
            raise ConnectionError("engine gone")
        yield from self.chunks
        self.done.set()

    def logs(self, container_id, **kwargs):
        self.calls.append(("container", container_id, kwargs))
        yield from self.chunks
        self.done.set()


def proxy(name: str, service_id: str = "s1", container_id: str = "") -> Proxy:
    spec = ProxySpec("nginx", "", "/etc/nginx/nginx.conf", None)
    return Proxy(name, spec, "rolling", "nginx", (), service_id, container_id)


def test_a_follower_feeds_the_window_and_says_what_it_does():
    window = top.Window(30.0)
    api = Api([NGINX + b"\n" + b"noise\n", HAPROXY[:50], HAPROXY[50:] + b"\n"])
    follower = top.Follower(api, proxy("edge"), window, pause=60).start()
    assert api.done.wait(5)
    follower.stop.set()
    assert follower.lines == 2
    assert {r.route for r in window.routes()} == {"t412c6a1e-web", top.NO_ROUTE}
    ((kind, target, kwargs),) = api.calls
    assert (kind, target, kwargs["follow"], kwargs["stderr"]) == ("service", "s1", True, False)

    container = top.Follower(Api([NGINX + b"\n"]), proxy("box", "", "c1"), window, pause=60)
    container.start().api.done.wait(5)
    container.stop.set()
    assert container.api.calls[0][:2] == ("container", "c1")


def test_a_failing_stream_is_shown_and_tried_again():
    follower = top.Follower(Api([], fail=True), proxy("edge"), top.Window(), pause=0.05).start()
    for _ in range(100):
        if len(follower.api.calls) >= 2:
            break
        threading.Event().wait(0.05)
    follower.stop.set()
    assert len(follower.api.calls) >= 2
    assert "engine gone" in follower.state
    (shown,) = top.proxy_rows([follower], follower.window)
    assert "engine gone" in shown.state and shown.lines == 0


def test_run_draws_the_view_each_interval_from_what_the_logs_say():
    lines = b"".join(NGINX + b"\n" for _ in range(4))
    api = Api([lines])
    out = io.StringIO()
    assert top.run(api, lambda: [proxy("edge")], 0.2, 30.0, iterations=3, out=out) == 0
    views = out.getvalue()
    assert views.count("interlock top") == 3 and "\x1b[2J" not in views  # not a terminal
    last = views.split("interlock top")[-1]
    assert "t412c6a1e-web" in last and "edge" in last
    assert json.loads(NGINX)["route"] in last


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "soon", "3601"])
def test_intervals_out_of_range_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        top.seconds(text)
