"""Small helpers for Swarm tests: a free port, an HTTP probe on 127.0.0.1, and bounded waiting.

Traffic goes to 127.0.0.1 only: the bed publishes proxy ports there in host mode.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

LOOPBACK = "127.0.0.1"


class WaitTimeout(AssertionError):
    """``wait_until`` ran out of time; carries the last value (or exception) it saw."""

    def __init__(self, message: str, last: object) -> None:
        super().__init__(message)
        self.last = last


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the kernel picks it, so processes running
    concurrently rarely collide); use it at once as a host-mode published port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def http_get(
    port: int,
    host_header: str,
    path: str = "/",
    timeout: float = 5.0,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """One request to 127.0.0.1:``port`` with the given Host header; returns (status, body).

    A fresh connection per call (no keep-alive), so each call is an independent sample.
    Connection errors propagate: wrap the call in ``wait_until`` while a proxy is starting.
    """
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Host": host_header, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.25,
    message: str = "condition",
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Exceptions raised by the predicate count as "not yet" (a proxy that is still starting refuses
    connections). On timeout raises :class:`WaitTimeout` naming the last value or exception seen,
    so a failing test says what it was looking at.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as err:
            last = err
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{message} not met within {timeout}s; last seen: {last!r}", last)
        time.sleep(interval)
