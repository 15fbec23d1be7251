"""The proxies' status listener in the built-in templates: there by default, accepted by the real
binaries, on its own port, gone when INTERLOCK_PROXY_STATUS_PORT is 0, and answering only
127.0.0.1 and the allowed sources.

The access rules are checked by running the real nginx and HAProxy on the rendered config, on
free loopback ports: a client bound to 127.0.0.2 (another loopback source, so the traffic is
still to 127.0.0.1) stands for an app container on the proxy network.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from controller.render import render
from tests.unit.test_render import OPTIONS, real_check, scenario

LISTENERS = {
    "ngx": "        listen 8404;\n        allow 127.0.0.1;\n        deny all;\n"
    "        location = /stub_status {\n            stub_status;",
    "hap": "frontend interlock_status\n    bind :8404\n    no log\n",
}
PATHS = {"ngx": "/stub_status", "hap": "/stats;csv;norefresh"}
ALLOWED = ("10.0.1.7", "10.0.2.0/24", "fd00::7")


@pytest.mark.parametrize("proxy", ["ngx", "hap"])
def test_the_status_listener_is_rendered_and_accepted(proxy, tmp_path):
    desired = scenario()[proxy]
    text = render(desired, OPTIONS).text
    assert LISTENERS[proxy] in text
    result = real_check(desired.proxy.spec.kind, text, tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("proxy", ["ngx", "hap"])
def test_allowed_sources_are_rendered_in_order_and_accepted(proxy, tmp_path):
    desired = scenario()[proxy]
    text = render(desired, replace(OPTIONS, status_allow=ALLOWED)).text
    if proxy == "ngx":
        rules = [line.strip() for line in text.splitlines() if line.strip().startswith("allow ")]
        assert rules == ["allow 127.0.0.1;", *(f"allow {a};" for a in ALLOWED)]
    else:
        rules = [line.split()[-1] for line in text.splitlines() if "acl interlock_scraper" in line]
        assert rules == ["127.0.0.1", *ALLOWED]
        assert "http-request deny deny_status 403 unless interlock_scraper" in text
    result = real_check(desired.proxy.spec.kind, text, tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("proxy", ["ngx", "hap"])
def test_port_zero_renders_no_listener(proxy, tmp_path):
    desired = scenario()[proxy]
    text = render(desired, replace(OPTIONS, status_port=0, status_allow=ALLOWED)).text
    assert "8404" not in text and "stub_status" not in text and "stats uri" not in text
    assert "10.0.1.7" not in text and "interlock_scraper" not in text
    assert real_check(desired.proxy.spec.kind, text, tmp_path).returncode == 0


# -- the real proxies, running ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, path: str, source: str) -> int | None:
    """Status code of GET ``path`` on 127.0.0.1:``port`` from ``source``; None when the proxy
    closed the connection without an answer."""
    with socket.socket() as sock:
        sock.settimeout(3)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: status\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split()[1]) if answer.startswith(b"HTTP/") else None


def _start(kind: str, text: str, tmp_path: Path) -> subprocess.Popen:
    path = tmp_path / f"{kind}.conf"
    binary = shutil.which(kind) or f"/usr/sbin/{kind}"
    if kind == "nginx":
        path.write_text(text)
        command = [binary, "-c", str(path), "-p", str(tmp_path),
                   "-g", f"daemon off; pid {tmp_path}/nginx.pid;"]  # fmt: skip
    else:  # its own admin socket, not the template's shared /tmp path
        path.write_text(text.replace("/tmp/interlock-haproxy.sock", str(tmp_path / "admin.sock")))
        command = [binary, "-db", "-f", str(path)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _answers(port: int, path: str, source: str, process: subprocess.Popen) -> int | None:
    deadline = time.monotonic() + 10
    while True:
        try:
            return _get(port, path, source)
        except ConnectionRefusedError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(process.communicate(timeout=5)[0].decode()) from None
            time.sleep(0.05)


@pytest.mark.parametrize("proxy", ["ngx", "hap"])
@pytest.mark.parametrize("allow", [(), ("127.0.0.2",), ("127.0.0.0/30",)])
def test_a_running_proxy_answers_only_allowed_sources(proxy, allow, tmp_path):
    desired = scenario()[proxy]
    port = _free_port()
    options = replace(OPTIONS, http_port=_free_port(), status_port=port, status_allow=allow)
    process = _start(desired.proxy.spec.kind, render(desired, options).text, tmp_path)
    try:
        mine = _answers(port, PATHS[proxy], "127.0.0.1", process)
        other = _answers(port, PATHS[proxy], "127.0.0.2", process)
        stranger = _answers(port, PATHS[proxy], "127.0.0.5", process)
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(f"{proxy} allow={allow}: 127.0.0.1 {mine}, 127.0.0.2 {other}, 127.0.0.5 {stranger}")
    assert mine == 200
    assert other == (200 if allow else 403)
    assert stranger == 403
