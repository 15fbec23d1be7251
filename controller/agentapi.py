"""The agents' API on the controller (``INTERLOCK_AGENT_PORT``): long-polls from ``interlock
agent`` on every node, and a read-only status for ``interlock status``.

    POST /v1/sync    an agent's report (see ``board.parse_report``) with ``wait`` seconds; the
                     answer, at once when the node's wanted configs differ from what it serves,
                     else when they come to differ or ``wait`` passes: ``{"configs": [...]}``
    POST /v1/wake    a hint from an agent: a task container started or stopped on its node
                     (Swarm sends no task events), so a pass now finds it at once
    GET  /v1/status  every node's last report, and what the controller wants of each container

Every request carries ``Authorization: Bearer <token>``, the token read from
``INTERLOCK_AGENT_TOKEN_FILE`` (a Docker secret): without it, 401 and a log line naming the
peer, never the token. A held long-poll holds a thread, so the threads are capped
(``INTERLOCK_AGENT_MAX_CONNECTIONS``; beyond it 503 at once), and every socket read and write
has a timeout: a client that sends nothing, or half a request, or never reads, is dropped.
"""

from __future__ import annotations

import hmac
import http.server
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .board import BadReport, Board
from .logs import event
from .settings import Settings

log = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024  # a report of a node with many proxies is well below this
SOCKET_TIMEOUT = 10.0  # seconds per read or write on a connection
MIN_TOKEN = 16  # characters: scripts/up.sh makes 64
_SAY_EVERY = 10.0  # seconds between two log lines about the same unauthorised peer
BUSY = b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n"


class TokenError(RuntimeError):
    """The token file cannot be used; the message names the setting and the file."""


def read_token(path: str) -> str:
    """The shared token from its file (whitespace around it ignored)."""
    try:
        token = Path(path).read_text().strip()
    except OSError as error:
        raise TokenError(
            f"INTERLOCK_AGENT_TOKEN_FILE: cannot read {path}: {error.strerror or error} "
            "(create the Docker secret interlock-agent-token: see the README, Agents)"
        ) from None
    if len(token) < MIN_TOKEN or any(c.isspace() for c in token):
        raise TokenError(
            f"INTERLOCK_AGENT_TOKEN_FILE: {path} must hold one token of at least {MIN_TOKEN} "
            "characters without spaces"
        )
    return token


def authorised(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


@dataclass
class Stats:
    """Requests by result, for metrics; and when each unauthorised peer was last logged."""

    results: Counter = field(default_factory=Counter)
    said: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, result: str) -> None:
        with self.lock:
            self.results[result] += 1

    def should_say(self, peer: str, now: float) -> bool:
        with self.lock:
            if now - self.said.get(peer, -_SAY_EVERY) < _SAY_EVERY:
                return False
            if len(self.said) > 1024:
                self.said.clear()
            self.said[peer] = now
            return True


class _Handler(http.server.BaseHTTPRequestHandler):
    server: AgentServer
    timeout = SOCKET_TIMEOUT
    server_version = "interlock"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # no access log on stderr
        pass

    def _answer(self, status: int, body: dict[str, Any], result: str) -> None:
        # Counted before the write: a client that has its answer sees it in the metrics.
        self.server.stats.count(result)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="interlock-agents"')
        self.end_headers()
        self.wfile.write(data)

    def _allowed(self) -> bool:
        if authorised(self.headers.get("Authorization"), self.server.token):
            return True
        peer = self.client_address[0]
        if self.server.stats.should_say(peer, time.monotonic()):
            given = "no bearer token" if not self.headers.get("Authorization") else "a wrong token"
            event(
                log,
                "agent_unauthorised",
                logging.WARNING,
                peer=peer,
                path=self.path[:100],
                reason=given,
            )
        self._answer(401, {"error": "unauthorised"}, "unauthorised")
        return False

    def do_GET(self) -> None:
        if not self._allowed():
            return
        if self.path.split("?", 1)[0] == "/v1/status":
            self._answer(200, self.server.board.status(), "status")
        else:
            self._answer(404, {"error": "try POST /v1/sync or GET /v1/status"}, "not_found")

    def do_POST(self) -> None:
        if not self._allowed():
            return
        if self.path.split("?", 1)[0] == "/v1/wake":
            self.server.board.on_change()  # a hint: the next pass lists everything anyway
            self._answer(200, {}, "wake")
            return
        if self.path.split("?", 1)[0] != "/v1/sync":
            self._answer(404, {"error": "try POST /v1/sync or GET /v1/status"}, "not_found")
            return
        try:
            body = self._body()
            node, generation = self.server.board.report(body)
        except BadReport as error:
            self._answer(400, {"error": str(error)}, "bad_request")
            return
        wait = body.get("wait", self.server.wait)
        wait = min(float(wait), self.server.wait) if isinstance(wait, int | float) else 0.0
        wants = self.server.board.wait(node, generation, max(0.0, wait))
        self._answer(200, {"configs": [w.as_json() for w in wants]}, "sync")

    def _body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            raise BadReport("Content-Length is required") from None
        if not 0 < length <= MAX_BODY:
            raise BadReport(f"the body must be 1 to {MAX_BODY} bytes")
        try:
            return json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError):
            raise BadReport("the body is not JSON") from None


class AgentServer(http.server.ThreadingHTTPServer):
    """A thread per connection, at most ``limit`` at once (a held long-poll is one)."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], board: Board, token: str, wait: float, limit: int
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.board, self.token, self.wait = board, token, wait
        self.stats = Stats()
        self.slots = threading.BoundedSemaphore(limit)

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.stats.count("busy")
            try:
                request.settimeout(1.0)
                request.sendall(BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


@dataclass
class Agents:
    """The running agents' API: its server thread, the board, and how to stop them."""

    server: AgentServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.board.close()
        self.server.shutdown()
        self.server.server_close()


def serve_agents(board: Board, settings: Settings, token: str | None = None) -> Agents:
    """Start the agents' API on ``INTERLOCK_AGENT_ADDRESS:INTERLOCK_AGENT_PORT``."""
    token = token if token is not None else read_token(settings.agent_token_file)
    address = settings.agent_address
    try:
        server = AgentServer(
            (address, settings.agent_port),
            board,
            token,
            settings.agent_wait,
            settings.agent_max_connections,
        )
    except OSError as error:
        raise RuntimeError(
            f"cannot serve the agents' API on {address}:{settings.agent_port} "
            f"(INTERLOCK_AGENT_ADDRESS, INTERLOCK_AGENT_PORT): {error}"
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="interlock-agents", daemon=True)
    thread.start()
    event(log, "agents_api_listening", address=address, port=server.server_address[1])
    return Agents(server, thread)


def stale_after(settings: Settings) -> float:
    """Seconds after its last report that a node whose agent is not connected counts as gone:
    three long-polls and some slack, so one lost request never drops a node."""
    return 3 * settings.agent_wait + 15


# -- metrics ----------------------------------------------------------------------------------


class AgentCollector:
    """Per node: its agent's report age and connection, its proxy containers by sync state;
    and the agents' API requests by result."""

    def __init__(self, board: Board, stats: Callable[[], Counter]) -> None:
        self.board, self.stats = board, stats

    def collect(self) -> Iterable[Metric]:
        status = self.board.status()
        age = GaugeMetricFamily(
            "interlock_agent_report_age_seconds",
            "Seconds since the node's agent last reported (it reports again at once on every "
            "answer, and at least every INTERLOCK_AGENT_WAIT seconds).",
            labels=["node"],
        )
        up = GaugeMetricFamily(
            "interlock_agent_connected",
            "1 while the node's agent holds a request (its long-poll) or reported recently.",
            labels=["node"],
        )
        containers = GaugeMetricFamily(
            "interlock_agent_containers",
            "Proxy containers a node's agent reports, by state: in_sync (serves the desired "
            "config), out_of_sync, refused (its proxy refused the desired config), unknown "
            "(no config is desired for it yet).",
            labels=["node", "state"],
        )
        for node in status["nodes"]:
            name = node["hostname"]
            age.add_metric([name], node["report_age_seconds"])
            up.add_metric([name], 1.0 if node["live"] else 0.0)
            states = Counter(_state(node, c["Id"], status["desired"]) for c in node["containers"])
            for state in ("in_sync", "out_of_sync", "refused", "unknown"):
                containers.add_metric([name, state], states.get(state, 0))
        requests = CounterMetricFamily(
            "interlock_agent_requests",
            "Requests to the agents' API by result: sync, wake, status, unauthorised, "
            "bad_request, not_found, busy (over INTERLOCK_AGENT_MAX_CONNECTIONS).",
            labels=["result"],
        )
        for result, count in sorted(self.stats().items()):
            requests.add_metric([result], count)
        yield from (age, up, containers, requests)


def _state(node: dict[str, Any], container: str, desired: dict[str, str]) -> str:
    want = desired.get(container)
    if not want:
        return "unknown"
    if node["served"].get(container) == want:
        return "in_sync"
    if node["errors"].get(container, {}).get("digest") == want:
        return "refused"
    return "out_of_sync"


# -- wiring (app.py) ---------------------------------------------------------------------------


def new_board(settings: Settings) -> Board:
    return Board(settings.label_prefix, stale_after(settings))


def start_agents(board: Board, settings: Settings, loop: Any, telemetry: Any) -> Agents:
    """Serve the agents' API; a report that says something new wakes the loop; each pass's
    configs go out when it is done, and it tells the board what every container should
    serve; metrics per node."""
    agents = serve_agents(board, settings)
    board.on_change = loop.wake.set
    board.batch = True  # a node's configs of one pass go out in one answer
    previous = loop.on_pass

    def on_pass(result: Any, error: BaseException | None) -> None:
        board.flush()
        previous(result, error)
        if result is not None:
            board.observe_pass(result.snapshot, signal_digests(result))

    loop.on_pass = on_pass
    telemetry.registry.register(AgentCollector(board, lambda: Counter(agents.server.stats.results)))
    return agents


def signal_digests(result: Any) -> list[tuple[Any, str]]:
    """(proxy, rendered digest) of every signal-mode proxy a pass rendered."""
    return [
        (d.proxy, result.rendered[d.proxy.name].digest)
        for d in result.desired.proxies
        if d.proxy.mode == "signal" and d.proxy.name in result.rendered
    ]
