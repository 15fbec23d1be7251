"""The proxies' status pages: parsing, choosing reachable tasks, and scraping on loopback."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import pytest

from controller.desired import desired_state
from controller.metrics import ScrapeCollector
from controller.scrape import (
    ScrapeError,
    Scraper,
    Target,
    own_container,
    parse_haproxy_csv,
    parse_stub_status,
    scrape_target,
    scrape_targets,
)
from controller.snapshot import snapshot_from_api
from tests import builders as b

P = "interlock"
DATA = Path(__file__).parent / "data"
STUB = """Active connections: 291 
server accepts handled requests
 16630948 16630947 31070465 
Reading: 6 Writing: 179 Waiting: 106 
"""  # noqa: W291 - nginx writes the trailing spaces
ME = "f" * 64


def figures(samples):
    return {(s.name, s.labels): s.value for s in samples}


def test_nginx_stub_status():
    found = figures(parse_stub_status(STUB))
    assert found == {
        ("connections_active", ()): 291,
        ("connections_accepted_total", ()): 16630948,
        ("connections_handled_total", ()): 16630947,
        ("http_requests_total", ()): 31070465,
        ("connections", (("state", "reading"),)): 6,
        ("connections", (("state", "writing"),)): 179,
        ("connections", (("state", "waiting"),)): 106,
    }


def test_haproxy_csv_of_a_real_haproxy_2_6():
    """Captured from Debian's HAProxy 2.6 after one request that got the 404 of no route."""
    found = figures(parse_haproxy_csv((DATA / "haproxy-2.6-stats.csv").read_text()))
    assert found[("http_requests_total", ())] == 1
    assert found[("connections_accepted_total", ())] == 1
    assert found[("http_responses_total", (("code", "4xx"),))] == 1
    assert found[("received_bytes_total", ())] == 68
    assert found[("sent_bytes_total", ())] == 86
    assert found[("backend_servers_up", (("backend", "web_a1"),))] == 1
    assert found[("backend_sessions_total", (("backend", "interlock_not_found"),))] == 1
    # The status listener's own frontend is not the proxy's traffic.
    assert not any(name == "backend_sessions_total" and "interlock_status" in str(labels)
                   for name, labels in found)  # fmt: skip


@pytest.mark.parametrize(
    "parse, text",
    [
        (parse_stub_status, "<html>Welcome to nginx!</html>"),
        (parse_haproxy_csv, "Active connections: 1"),
        (parse_haproxy_csv, "# pxname,svname,scur\nother,FRONTEND,1\n"),
    ],
)
def test_other_pages_are_parse_errors(parse, text):
    with pytest.raises(ScrapeError) as caught:
        parse(text)
    assert caught.value.reason == "parse"


def swarm_snapshot(controller_networks=("net1",)):
    services = [
        b.service("p1", "ngx", {f"{P}.ext.name": "nginx"}, networks=["net1", "net2"]),
        b.service("p2", "hap", {f"{P}.ext.name": "haproxy"}, networks=["net2"]),
    ]
    tasks = [
        b.task("p1task000001x", "p1", "127.0.0.1", network="net1"),
        b.task("p2task000001x", "p2", "127.0.0.3", network="net2"),
        b.task("p1task000002x", "p1", "127.0.0.2", network="net1", desired="shutdown"),
    ]
    containers = [b.container(ME, "controller", {}, networks=list(controller_networks))]
    networks = [b.network("net1"), b.network("net2")]
    return snapshot_from_api(services, tasks, networks, [], containers)


def proxies(snapshot):
    return [d.proxy for d in desired_state(snapshot, P).proxies]


def test_targets_are_tasks_on_a_network_the_controller_shares():
    snap = swarm_snapshot()
    me = own_container(snap.containers, {ME}, "whatever")
    assert me is not None
    targets, unreachable = scrape_targets(snap, proxies(snap), me.network_ids, 8404)
    assert targets == [Target("ngx", "nginx", "p1task000001", "127.0.0.1", 8404)]
    assert unreachable == {"hap": 1}  # the stopping task of ngx is not counted at all


def test_the_controller_finds_itself_by_mount_or_by_hostname_or_not_at_all():
    snap = swarm_snapshot()
    assert own_container(snap.containers, set(), ME[:12]).id == ME
    assert own_container(snap.containers, set(), "my-laptop") is None
    assert own_container(snap.containers, {"0" * 64}, "0" * 12) is None


class _Status(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = STUB.encode() if self.path == "/stub_status" else b"nope"
        self.send_response(200 if self.path == "/stub_status" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def status_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_round_scrapes_reachable_tasks_and_counts_the_rest(status_server):
    snap = swarm_snapshot()
    scraper = Scraper(lambda: (snap, proxies(snap)), status_server, 1, 2, hints=({ME}, "x"))
    scraper.round()
    scraper.round()
    latest, up, errors = scraper.snapshot()
    assert list(latest) == [("ngx", "p1task000001")]
    assert figures(latest[("ngx", "p1task000001")].samples)[("http_requests_total", ())] > 0
    assert up == {("ngx", "nginx", "p1task000001"): True}
    assert errors == {("hap", "no_shared_network"): 2}
    families = {f.name: f for f in ScrapeCollector(scraper).collect()}
    requests = families["interlock_proxy_http_requests"].samples[0]
    assert requests.labels == {"proxy": "ngx", "kind": "nginx", "task": "p1task000001"}
    assert requests.value == 31070465
    assert families["interlock_proxy_scrape_errors"].samples[0].value == 2


def test_errors_are_counted_with_short_reasons_and_never_hang():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    try:
        began = time.monotonic()
        with pytest.raises(ScrapeError) as caught:
            scrape_target(Target("p", "nginx", "t", "127.0.0.1", silent.getsockname()[1]), 0.3)
        assert caught.value.reason == "timeout" and time.monotonic() - began < 2
        with pytest.raises(ScrapeError) as caught:
            scrape_target(Target("p", "haproxy", "t", "127.0.0.1", closed_port), 0.3)
        assert caught.value.reason == "connection"
    finally:
        silent.close()


def test_a_wrong_page_is_an_http_error(status_server):
    with pytest.raises(ScrapeError) as caught:
        scrape_target(Target("p", "haproxy", "t", "127.0.0.1", status_server), 2)
    assert caught.value.reason == "http"
