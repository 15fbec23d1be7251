"""The metrics endpoint as a server.

The real `interlock run` process against a fake engine on 127.0.0.1 that fails every call but
`/version`: the endpoint comes up, /healthz says 503 with the reason, failed passes are counted
and logged as JSON with their pass id, and SIGTERM stops it cleanly.

The bounded server with real sockets on 127.0.0.1: idle and half-sent connections cost no
thread and do not stop /healthz, a slow client is cut after the timeout, the oldest waiting
connection goes beyond the cap, IPv6 binds, and a bad address names its variable.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from controller.app import build_telemetry, serve_metrics
from controller.metrics import Telemetry, serve_http
from controller.settings import Settings, SettingsError, load_settings
from controller.smallserver import BoundedHandler, SmallServer


class _BrokenEngine(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, status: int, data: dict) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.endswith("/version"):
            self._answer(200, {"ApiVersion": "1.41", "Version": "20.10.24"})
        else:
            self._answer(500, {"message": "fake engine: broken on purpose"})

    def log_message(self, *args) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def engine():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BrokenEngine)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"tcp://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _failed_passes(metrics: bytes) -> float:
    found = re.search(rb'interlock_reconcile_passes_total\{outcome="failed"\} ([0-9.e+]+)', metrics)
    return float(found.group(1)) if found else 0.0


def test_healthz_is_503_while_passes_fail_and_sigterm_stops(engine, tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "DOCKER_HOST": engine,
        "INTERLOCK_METRICS_PORT": str(port),
        "INTERLOCK_METRICS_ADDRESS": "127.0.0.1",
        "INTERLOCK_LOG_FORMAT": "json",
        "INTERLOCK_POLL_INTERVAL": "0.2",
    }
    log_path = tmp_path / "controller.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "run"], env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 30
        metrics = b""
        while time.monotonic() < deadline:
            try:
                _, metrics = _get(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                time.sleep(0.2)
                continue
            if _failed_passes(metrics):  # the series exists from the start, at 0
                break
            time.sleep(0.2)
        assert _failed_passes(metrics), log_path.read_text()
        assert b'interlock_reconcile_errors_total{kind="pass"}' in metrics
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        verdict = json.loads(body)
        assert status == 503 and verdict["ok"] is False
        assert "no pass has completed yet" in verdict["reason"]
        assert "broken on purpose" in verdict["reason"]
    finally:
        process.terminate()
        code = process.wait(timeout=20)
    assert code == 0
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    failed = [line for line in lines if line["event"] == "pass_failed"]
    assert failed and all(len(line["pass_id"]) == 12 for line in failed)
    assert any(line["event"] == "metrics_listening" for line in lines)
    assert lines[-1]["event"] == "loop_stopped"


# -- the bounded server: real sockets on 127.0.0.1 -------------------------------------------


def _telemetry() -> Telemetry:
    return build_telemetry(Settings(label_prefix="interlock", metrics_port=0), None)


def _server_threads() -> int:
    """All threads of this process (a server's per-connection threads may have any name)."""
    return threading.active_count()


def _timed_get(port: int, path: str) -> tuple[int, float]:
    began = time.monotonic()
    status, _ = _get(f"http://127.0.0.1:{port}{path}")
    return status, time.monotonic() - began


def _connect(port: int, send: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if send:
        sock.sendall(send)
    return sock


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closed (or reset) ``sock`` within ``within`` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def small():
    """serve_http on a free loopback port, 1 s request timeout; closes whatever the test left."""
    made: list = []

    def start(**kwargs):
        server = serve_http(_telemetry(), "127.0.0.1", 0, kwargs.pop("timeout", 1.0))
        made.append(server)
        return server

    yield start
    for server in made:
        server.shutdown()
        server.server_close()


def test_idle_and_half_sent_connections_do_not_stop_healthz(small):
    before = _server_threads()
    server = small(timeout=10.0)  # none may time out while a busy machine opens 250 sockets
    port = server.server_address[1]
    started = _server_threads() - before
    held = [_connect(port) for _ in range(200)]
    held += [_connect(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(50)]
    try:
        answers = [_timed_get(port, "/healthz") for _ in range(5)]
        answers.append(_timed_get(port, "/metrics"))
        during = _server_threads() - before
        alive = sum(not _closed_by_server(sock, 0.001) for sock in held)
    finally:
        for sock in held:
            sock.close()
    slowest = max(seconds for _, seconds in answers)
    print(
        f"250 held ({alive} still open): slowest answer {slowest * 1000:.1f} ms, "
        f"server threads {started} at start, {during} during"
    )
    assert [status for status, _ in answers] == [503] * 5 + [200]  # no pass yet: 503 is right
    assert slowest < 1.0
    assert alive == 250  # held open, each costing no thread
    assert during == started == 5  # the reader and four workers


def test_a_half_sent_request_is_cut_after_the_timeout(small):
    server = small(timeout=0.5)
    port = server.server_address[1]
    began = time.monotonic()
    slow = _connect(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    idle = _connect(port)
    try:
        assert _closed_by_server(slow, 3) and _closed_by_server(idle, 3)
        waited = time.monotonic() - began
    finally:
        slow.close()
        idle.close()
    print(f"half-sent and idle connections closed after {waited:.2f} s (timeout 0.5 s)")
    assert 0.4 < waited < 2.0
    assert server.closed["timeout"] == 2


def test_a_huge_head_is_closed_and_the_server_goes_on(small):
    server = small()
    port = server.server_address[1]
    sock = _connect(port, b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 40_000)
    try:
        assert _closed_by_server(sock, 3)
    finally:
        sock.close()
    assert server.closed["too_large"] == 1
    assert _timed_get(port, "/healthz")[0] == 503


def test_beyond_the_cap_the_oldest_waiting_connection_is_closed():
    class Hello(BoundedHandler):
        def do_GET(self):
            self.send_response(204)
            self.end_headers()

    before = _server_threads()
    server = SmallServer(
        "127.0.0.1", 0, Hello, timeout=30, workers=2, max_pending=16, name="interlock-metrics-cap"
    ).start()
    port = server.server_address[1]
    flood = [_connect(port) for _ in range(100)]
    try:
        assert _get(f"http://127.0.0.1:{port}/")[0] == 204
        closed = [_closed_by_server(sock, 0.2 if i < 84 else 0.001) for i, sock in enumerate(flood)]
        threads = _server_threads() - before
    finally:
        for sock in flood:
            sock.close()
        server.shutdown()
        server.server_close()
    print(f"100 idle past a cap of 16: {sum(closed)} closed, {server.closed}, {threads} threads")
    assert all(closed[:84])  # the oldest went first...
    assert not any(closed[85:])  # ...the newest still wait (one more made room for the GET)
    assert server.closed["evicted"] >= 84
    assert threads == 3


class _Sizes(BoundedHandler):
    """``/big`` is 8 MiB, more than the kernel buffers for a client that does not read."""

    def do_GET(self):
        body = b"x" * (8 << 20) if self.path == "/big" else b""
        self.send_response(200 if body else 204)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_clients_that_never_read_their_answer_hold_no_worker():
    server = SmallServer("127.0.0.1", 0, _Sizes, timeout=1.0, workers=2).start()
    port = server.server_address[1]
    readers = []
    try:
        for _ in range(6):  # three times the workers
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /big HTTP/1.0\r\n\r\n")
            readers.append(sock)
            time.sleep(0.05)
        status, seconds = _timed_get(port, "/")  # while the big answers stall
        time.sleep(1.5)  # past the write timeout
        cut = all(_closed_by_server_after_reading(sock, 3) for sock in readers)
    finally:
        for sock in readers:
            sock.close()
        server.shutdown()
        server.server_close()
    print(f"6 stalled readers of 8 MiB: GET / {status} in {seconds * 1000:.1f} ms; {server.closed}")
    assert status == 204 and seconds < 0.5
    assert server.closed["timeout"] == 6 and cut  # cut after the 1 s write timeout


def _closed_by_server_after_reading(sock: socket.socket, within: float) -> bool:
    """Drain what the server managed to send; True when it had closed the connection."""
    sock.settimeout(within)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_ipv6_any_takes_ipv4_clients_and_ipv6_loopback_binds():
    server = serve_http(_telemetry(), "::", 0, 1.0)
    try:
        assert server.listener.family == socket.AF_INET6
        assert _timed_get(server.server_address[1], "/healthz")[0] == 503  # to 127.0.0.1
    finally:
        server.shutdown()
        server.server_close()
    server = serve_http(_telemetry(), "::1", 0, 1.0)  # bound only: no traffic to it here
    try:
        assert server.server_address[0] == "::1"
    finally:
        server.shutdown()
        server.server_close()


def test_an_address_this_host_lacks_names_the_variable():
    # 192.0.2.1 is TEST-NET-1, never an address of this host: binding fails, nothing is sent.
    settings = Settings(
        label_prefix="interlock", metrics_port=_free_port(), metrics_address="192.0.2.1"
    )
    with pytest.raises(RuntimeError) as caught:
        serve_metrics(build_telemetry(settings, None), settings)
    assert "INTERLOCK_METRICS_ADDRESS" in str(caught.value)
    assert "192.0.2.1" in str(caught.value)


@pytest.mark.parametrize(
    "given, kept",
    [("127.0.0.1", "127.0.0.1"), ("::", "::"), ("[::1]", "::1"), (" 0.0.0.0 ", "0.0.0.0")],
)
def test_metrics_address_takes_ipv4_and_ipv6(given, kept):
    assert Settings(metrics_address=given).metrics_address == kept


@pytest.mark.parametrize(
    "bad", ["localhost", "127.0.0.1:9100", "::1/128", "1.2.3", "\u0661\u0662\u0667.0.0.1"]
)
def test_a_bad_metrics_address_is_refused_naming_the_variable(bad, monkeypatch):
    monkeypatch.setenv("INTERLOCK_METRICS_ADDRESS", bad)
    with pytest.raises(SettingsError, match=r"INTERLOCK_METRICS_ADDRESS: .*IP address"):
        load_settings()
