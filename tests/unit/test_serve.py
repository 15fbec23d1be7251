"""The real `interlock run` process against a fake engine on 127.0.0.1 that fails every call but
`/version`: the endpoint comes up, /healthz says 503 with the reason, failed passes are counted
and logged as JSON with their pass id, and SIGTERM stops it cleanly."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest


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
            if b'interlock_reconcile_passes_total{outcome="failed"}' in metrics:
                break
            time.sleep(0.2)
        assert b'interlock_reconcile_passes_total{outcome="failed"}' in metrics, (
            log_path.read_text()
        )
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
