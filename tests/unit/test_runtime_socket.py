"""The runtime API client against the real HAProxy binary (a local process on a unix socket in
a temporary folder; no engine): commands applied are read back, anything else is a failure."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.runtime import Converger, RuntimeFailed, ask, run_commands, worker_pid
from controller.slots import initial, server_line
from tests.bed.probes import free_port


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[str]:
    """A running HAProxy with backend ``b`` of 4 slots (one task); yields its socket's path."""
    with running_haproxy(tmp_path) as (sock, _):
        yield sock


@contextlib.contextmanager
def running_haproxy(tmp_path: Path, *flags: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """HAProxy (``flags``: e.g. ``-W``, master-worker) serving backend ``b`` of 4 slots."""
    sock = tmp_path / "admin.sock"
    slots = initial(["127.0.0.1:9001"])[:4]
    lines = "\n".join(f"    {server_line(s, '')}" for s in slots)
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"global\n    stats socket {sock} mode 600 level admin\n"
        "defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n"
        f"    timeout server 5s\nfrontend f\n    bind 127.0.0.1:{free_port()}\n"
        f"    default_backend b\nbackend b\n{lines}\n"
    )
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    process = subprocess.Popen([binary, "-db", *flags, "-f", str(config)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield str(sock), process
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_commands_are_applied_and_read_back(haproxy):
    filled = [
        "set server b/t2 addr 10.0.0.7 port 8080",
        "set server b/t2 weight 3",
        "set server b/t2 state ready",
        "set server b/t1 state drain",
    ]
    run_commands(path=haproxy, commands=filled, timeout=2.0)
    run_commands(path=haproxy, commands=["set server b/t1 state maint"], timeout=2.0)


def test_a_command_haproxy_refuses_or_a_missing_socket_is_a_failure(haproxy, tmp_path):
    with pytest.raises(RuntimeFailed, match="not applied: set server b/t9 state ready"):
        run_commands(path=haproxy, commands=["set server b/t9 state ready"], timeout=2.0)
    with pytest.raises(RuntimeFailed, match="runtime socket"):
        run_commands(
            path=str(tmp_path / "gone"), commands=["set server b/t2 state ready"], timeout=2.0
        )


def test_a_runtime_update_after_a_reload_waits_for_the_new_process(tmp_path):
    """HAProxy reloads after SIGUSR2, not at it: a command sent at once reaches the old process,
    which shows it back and exits, and the new one never has it. The converger waits until a
    new process answers on the socket."""
    with running_haproxy(tmp_path, "-W") as (sock, master):
        before = worker_pid(ask(sock, "show info", 2.0))
        assert before
        os.kill(master.pid, signal.SIGUSR2)
        Converger(inplace=None)._await_reload("c1", sock, before)
        commands = ["set server b/t2 addr 10.0.0.7 port 8080", "set server b/t2 state ready"]
        run_commands(path=sock, commands=commands, timeout=2.0)
        time.sleep(1.0)  # the old process, had it taken the commands, is gone by now
        assert worker_pid(ask(sock, "show info", 2.0)) != before
        assert "10.0.0.7" in ask(sock, "show servers state b", 2.0)
