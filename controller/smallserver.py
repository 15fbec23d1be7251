"""A small HTTP/1.0 server whose threads, connections and time are bounded, for ``/metrics``.

``http.server.ThreadingHTTPServer`` starts a thread per connection and waits on each socket with
no timeout: a client (or a port scanner, or a slowloris) that opens connections and sends
nothing, or half a request, or never reads the answer, holds a thread each, for ever. Here one
I/O thread does every socket operation, non-blocking (``selectors``): it reads the request
heads of all open connections at once and writes all answers. Only a complete head goes to one
of a fixed number of worker threads, which compute the answer and never touch a socket. So:

- threads: 1 I/O thread + ``workers``, however many clients connect;
- connections: at most ``max_pending`` still sending their head, and as many being answered;
  beyond that the oldest is closed (a real client sends its head at once and reads at once:
  what has waited longest is what is stalling);
- time: a client has ``timeout`` seconds from connecting to finish its head, and ``timeout``
  seconds to read its answer;
- size: a head over ``MAX_HEAD`` bytes is closed.

Every close of that kind is counted in ``closed`` by reason, never logged per connection (a
flood must not flood the logs too). The handler is a ``BaseHTTPRequestHandler`` class, given the
head as its input and a buffer as its output, so its parsing and error answers are the standard
library's. GET only, no bodies: what ``/metrics`` and ``/healthz`` need.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import ipaddress
import logging
import queue
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

from .logs import event

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")
REASONS = ("timeout", "evicted", "busy", "too_large")
FAILED = b"HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"


@dataclass
class _Conn:
    """A connection the I/O thread holds: reading its head, or writing its answer."""

    client: tuple
    deadline: float
    data: bytearray = field(default_factory=bytearray)  # head so far, or answer still to send


class BoundedHandler(http.server.BaseHTTPRequestHandler):
    """Base for handlers of ``SmallServer``: ``request`` is the head (bytes); the answer goes
    to ``wfile``, a buffer the server sends."""

    server_version = "interlock"
    sys_version = ""

    def setup(self) -> None:
        self.rfile = io.BytesIO(self.request)
        self.wfile = io.BytesIO()

    def finish(self) -> None:
        pass

    def log_message(self, format: str, *args) -> None:  # no access log on stderr
        pass


# Connections the kernel completes before the reader accepts them: a burst beyond it (a scrape
# beside hundreds of idle clients, on a busy node) has its SYNs dropped, and each client retries
# a second later. The kernel caps it at net.core.somaxconn.
BACKLOG = 1024


def _listener(address: str, port: int) -> socket.socket:
    """A listening socket of the address's family; ``::`` takes IPv4 clients too."""
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and ip.is_unspecified:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((address, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class SmallServer:
    """Serves ``handler`` on ``address:port`` in daemon threads from ``start()`` on."""

    def __init__(
        self,
        address: str,
        port: int,
        handler: type[BoundedHandler],
        timeout: float = 5.0,
        workers: int = 4,
        max_pending: int = 256,
        name: str = "interlock-http",
    ) -> None:
        self.listener = _listener(address, port)
        self.server_address = self.listener.getsockname()
        self.handler, self.timeout, self.max_pending = handler, timeout, max_pending
        self.name = name
        self.closed: dict[str, int] = dict.fromkeys(REASONS, 0)
        # Insertion order is deadline order: the oldest is first.
        self._reading: dict[socket.socket, _Conn] = {}
        self._writing: dict[socket.socket, _Conn] = {}
        self._work: queue.Queue = queue.Queue(maxsize=2 * workers)
        self._answers: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_write.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._threads = [threading.Thread(target=self._io_loop, name=name, daemon=True)]
        self._threads += [
            threading.Thread(target=self._work_loop, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self) -> SmallServer:
        for thread in self._threads:
            thread.start()
        return self

    def shutdown(self) -> None:
        """Stop every thread and wait for them."""
        self._stop.set()
        self._wake()
        for _ in self._threads[1:]:
            self._work.put(None)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(self.timeout + 1)

    def server_close(self) -> None:
        """Close the listener and every connection still held (call after ``shutdown``)."""
        for conn in [*self._reading, *self._writing]:
            self._drop(conn)
        while not self._answers.empty():
            self._answers.get_nowait()[0].close()
        self._selector.close()
        for sock in (self.listener, self._wake_read, self._wake_write):
            sock.close()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # already awake: the buffer is full
            self._wake_write.send(b"x")

    # -- the I/O thread --------------------------------------------------------------------

    def _io_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._io_round()
            except Exception as error:  # the endpoint outlives any surprise
                event(log, "http_io_failed", logging.ERROR, server=self.name, error=str(error))
                time.sleep(0.1)

    def _io_round(self) -> None:
        for key, _ in self._selector.select(self._wait()):
            sock = key.fileobj
            if sock is self.listener:
                self._accept()
            elif sock is self._wake_read:
                self._wake_read.recv(4096)
                self._take_answers()
            elif sock in self._reading:
                self._read(sock)
            elif sock in self._writing:
                self._write(sock)
        self._expire(time.monotonic())

    def _wait(self) -> float:
        """Until the earliest deadline, at most a second."""
        deadlines = [
            next(iter(held.values())).deadline for held in (self._reading, self._writing) if held
        ]
        return min([1.0, *(max(0.0, d - time.monotonic()) for d in deadlines)])

    def _accept(self) -> None:
        for _ in range(self.max_pending):
            try:
                conn, client = self.listener.accept()
            except BlockingIOError:
                return
            except OSError:  # out of descriptors: make room, or pause, and try next round
                if not self._evict_oldest(self._reading):
                    time.sleep(0.05)
                return
            conn.setblocking(False)
            self._selector.register(conn, selectors.EVENT_READ)
            self._reading[conn] = _Conn(client, time.monotonic() + self.timeout)
            if len(self._reading) > self.max_pending:
                self._evict_oldest(self._reading)

    def _evict_oldest(self, held: dict[socket.socket, _Conn]) -> bool:
        oldest = next(iter(held), None)
        if oldest is None:
            return False
        self._drop(oldest, "evicted")
        return True

    def _read(self, conn: socket.socket) -> None:
        held = self._reading[conn]
        try:
            chunk = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(conn)
            return
        held.data += chunk
        if any(end in held.data for end in _HEAD_ENDS):
            self._dispatch(conn, held)
        elif len(held.data) > MAX_HEAD:
            self._drop(conn, "too_large")

    def _dispatch(self, conn: socket.socket, held: _Conn) -> None:
        """A complete head goes to a worker; the connection waits, unwatched, for the answer."""
        self._selector.unregister(conn)
        del self._reading[conn]
        try:
            self._work.put_nowait((conn, bytes(held.data), held.client))
        except queue.Full:  # every worker busy and a queue behind them: shed, do not wait
            self.closed["busy"] += 1
            conn.close()

    def _take_answers(self) -> None:
        while True:
            try:
                conn, client, answer = self._answers.get_nowait()
            except queue.Empty:
                return
            self._writing[conn] = _Conn(client, time.monotonic() + self.timeout, answer)
            self._selector.register(conn, selectors.EVENT_WRITE)
            if len(self._writing) > self.max_pending:
                self._evict_oldest(self._writing)

    def _write(self, conn: socket.socket) -> None:
        held = self._writing[conn]
        try:
            sent = conn.send(held.data)
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn)
            return
        del held.data[:sent]
        if not held.data:
            self._drop(conn)

    def _expire(self, now: float) -> None:
        for held in (self._reading, self._writing):
            while held:
                conn, oldest = next(iter(held.items()))
                if oldest.deadline > now:
                    break
                self._drop(conn, "timeout")

    def _drop(self, conn: socket.socket, reason: str = "") -> None:
        if reason:
            self.closed[reason] += 1
        self._reading.pop(conn, None)
        self._writing.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):  # never registered, or closed
            self._selector.unregister(conn)
        conn.close()

    # -- the workers -----------------------------------------------------------------------

    def _work_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            conn, head, client = item
            try:
                answer = bytearray(self.handler(head, client, self).wfile.getvalue())
            except Exception as error:  # a handler's bug costs one answer, never a worker
                event(log, "http_handler_failed", logging.ERROR, server=self.name, error=str(error))
                answer = bytearray(FAILED)
            self._answers.put((conn, client, answer))
            self._wake()
