"""The proxies' status pages: parsing, choosing reachable tasks, and scraping on loopback."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import pytest

from controller import identity
from controller.desired import desired_state
from controller.identity import parse_allow, status_allow
from controller.metrics import ScrapeCollector
from controller.render import RenderOptions, render
from controller.scrape import (
    Scraper,
    Target,
    fetch,
    own_container,
    scrape_target,
    scrape_targets,
)
from controller.settings import Settings, SettingsError, load_settings
from controller.snapshot import snapshot_from_api
from controller.statuspage import ScrapeError, parse_haproxy_csv, parse_stub_status
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
        status = {"/stub_status": 200, "/forbidden": 403}.get(self.path, 404)
        self.send_response(status)
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


def test_a_refused_scrape_says_forbidden_and_names_the_setting(status_server):
    with pytest.raises(ScrapeError) as caught:
        fetch("127.0.0.1", status_server, "/forbidden", 2)
    assert caught.value.reason == "forbidden"
    assert "INTERLOCK_STATUS_ALLOW" in str(caught.value)


# -- who may read the status pages ------------------------------------------------------------


def _with_addresses(raw: dict, addresses: dict[str, str]) -> dict:
    for network, address in addresses.items():
        raw["NetworkSettings"]["Networks"][network]["IPAddress"] = address
    return raw


def identity_snapshot(reverse: bool = False):
    """The controller on net1 and net2, an app container on net1, and a proxy task."""
    me = _with_addresses(
        b.container(ME, "controller", {}, networks=["net1", "net2"]),
        {"net1": "10.0.1.9", "net2": "10.0.0.20"},
    )
    app = _with_addresses(b.container("a" * 64, "app", {}, networks=["net1"]), {"net1": "10.0.1.5"})
    services = [b.service("p1", "ngx", {f"{P}.ext.name": "nginx"}, networks=["net1", "net2"])]
    tasks = [b.task("p1task000001x", "p1", "10.0.1.2", network="net1")]
    containers = [app, me][:: -1 if reverse else 1]
    return snapshot_from_api(
        services, tasks, [b.network("net1"), b.network("net2")], [], containers
    )


def test_status_allow_is_the_controllers_own_addresses_and_the_setting_sorted():
    settings = Settings(status_allow="192.168.0.0/16, 10.0.0.20, fd00::1, 10.0.0.3")
    allowed = status_allow(identity_snapshot(), settings, ({ME}, "x"))
    # By address, not by text ("10.0.0.3" < "10.0.0.20"), duplicates once, IPv4 first.
    assert allowed == ("10.0.0.3", "10.0.0.20", "10.0.1.9", "192.168.0.0/16", "fd00::1")
    assert "10.0.1.5" not in allowed  # the app container on the same network
    by_hostname = status_allow(identity_snapshot(reverse=True), settings, (set(), ME[:12]))
    assert by_hostname == allowed  # found by hostname, listed in another order: same answer


def test_status_allow_renders_the_same_config_every_pass():
    """The allowed list is part of the config: two passes of one Swarm render one digest."""
    settings = Settings(label_prefix=P, status_allow="10.9.0.0/16")
    digests = set()
    for reverse in (False, True, False):
        snap = identity_snapshot(reverse)
        options = RenderOptions(status_allow=status_allow(snap, settings, ({ME}, "x")))
        digests.add(render(desired_state(snap, P).proxies[0], options).digest)
    assert len(digests) == 1


def test_a_controller_outside_any_container_allows_only_the_setting():
    snap = identity_snapshot()
    assert status_allow(snap, Settings(), (set(), "my-laptop")) == ()
    assert status_allow(snap, Settings(status_allow="10.0.0.0/8"), (set(), "x")) == ("10.0.0.0/8",)


def test_the_controller_finds_its_id_in_mountinfo_or_cgroup(monkeypatch):
    files = {
        "/proc/self/mountinfo": f"1 2 0:1 /var/lib/docker/containers/{ME}/hostname /etc/hostname"
        " rw - ext4 /dev/sda1 rw\n"
        # On a Docker host every container's shm is mounted in the host's own table: not ours.
        f"3 2 0:9 / /var/lib/docker/containers/{'d' * 64}/mounts/shm rw - tmpfs shm rw\n",
        "/proc/self/cgroup": f"0::/system.slice/docker-{'b' * 64}.scope\n",
    }
    monkeypatch.setattr(identity, "_read", lambda path: files.get(path, ""))
    ids, _ = identity.own_container_hints()
    assert ids == {ME, "b" * 64}
    files["/proc/self/cgroup"] = f"12:pids:/docker/{'c' * 64}\n"
    assert identity.own_container_hints()[0] == {ME, "c" * 64}


@pytest.mark.parametrize(
    "bad", ["10.0.0.5/8", "example.com", "10.0.0.1 10.0.0.2", "10.0.0.1/33", "\u0661\u0660.0.0.1"]
)
def test_a_bad_status_allow_is_refused_naming_the_variable(bad, monkeypatch):
    monkeypatch.setenv("INTERLOCK_STATUS_ALLOW", f"10.0.0.1,{bad}")
    with pytest.raises(SettingsError, match=r"INTERLOCK_STATUS_ALLOW: .*not an address or CIDR"):
        load_settings()


def test_status_allow_is_bounded_and_normalised():
    many = ",".join(f"10.0.{i}.1" for i in range(identity.MAX_ALLOW + 1))
    with pytest.raises(ValueError, match="at most"):
        parse_allow(many)
    assert parse_allow(" 10.0.0.1 ,, 10.0.0.0/8,10.0.0.1/32,::ffff:0:0/96 ") == (
        "10.0.0.0/8",
        "10.0.0.1",
        "::ffff:0:0/96",
    )
