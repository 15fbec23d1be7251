"""The proxies' own traffic figures: nginx ``stub_status`` and HAProxy's CSV stats, per task.

The templates give every proxy a status listener on ``INTERLOCK_PROXY_STATUS_PORT``, a port no
service publishes. The controller reaches each proxy task at its address on a network the
controller's own container shares with it (so this works when the controller runs as a service on
the proxies' network); a task it shares no network with is counted as a scrape error, never
guessed at. Scrapes run in their own thread with short timeouts, so a proxy that does not answer
costs an error count, never a stuck reconcile loop.

Plain standard library only (parsing, target choice, fetching), so the functions here also run
inside a bare Python container; the Prometheus side lives in ``metrics``.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from .desired import Proxy
from .identity import own_container, own_container_hints
from .kinds import KINDS
from .logs import event
from .periodic import Periodic
from .snapshot import Snapshot
from .statuspage import Sample, ScrapeError

log = logging.getLogger(__name__)

MAX_BODY = 4 << 20  # a stats page of thousands of backends stays far below this

# name -> (type, help, extra label names). Every sample also has proxy, kind and task labels.
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "connections_active": ("gauge", "Client connections open now.", ()),
    "connections": ("gauge", "nginx client connections by state.", ("state",)),
    "connections_accepted_total": ("counter", "Client connections accepted.", ()),
    "connections_handled_total": ("counter", "Client connections handled (nginx).", ()),
    "http_requests_total": ("counter", "HTTP requests received from clients.", ()),
    "http_responses_total": ("counter", "HTTP responses by class (HAProxy).", ("code",)),
    "received_bytes_total": ("counter", "Bytes received from clients (HAProxy).", ()),
    "sent_bytes_total": ("counter", "Bytes sent to clients (HAProxy).", ()),
    "request_errors_total": ("counter", "Client requests in error (HAProxy ereq).", ()),
    "backend_connections_active": ("gauge", "Sessions open to a backend (HAProxy).", ("backend",)),
    "backend_sessions_total": ("counter", "Sessions sent to a backend (HAProxy).", ("backend",)),
    "backend_servers_up": ("gauge", "Servers of a backend that are up (HAProxy).", ("backend",)),
    "backend_errors_total": (
        "counter",
        "Connection and response errors of a backend (HAProxy econ+eresp).",
        ("backend",),
    ),
}


@dataclass(frozen=True)
class Target:
    proxy: str
    kind: str
    task: str  # task id (12 characters), or the container name of a plain proxy container
    address: str
    port: int

    @property
    def path(self) -> str:
        return KINDS[self.kind].status_path


# -- fetching -------------------------------------------------------------------------------


def fetch(address: str, port: int, path: str, timeout: float) -> str:
    """GET a status page: never through an HTTP proxy, bounded in time and size."""
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": "interlock-scraper"})
        response = connection.getresponse()
        body = response.read(MAX_BODY)
    except TimeoutError as error:
        raise ScrapeError("timeout", f"{address}:{port}: {error or 'timed out'}") from None
    except (OSError, http.client.HTTPException) as error:
        raise ScrapeError("connection", f"{address}:{port}: {error}") from None
    finally:
        connection.close()
    if response.status == 403:
        raise ScrapeError(
            "forbidden",
            f"{address}:{port}{path}: HTTP 403: the proxy does not allow the controller's address "
            "(is the controller in a container of its own engine? else set INTERLOCK_STATUS_ALLOW)",
        )
    if response.status != 200:
        raise ScrapeError("http", f"{address}:{port}{path}: HTTP {response.status}")
    return body.decode(errors="replace")


def scrape_target(target: Target, timeout: float) -> list[Sample]:
    """One proxy task's figures; raises ScrapeError."""
    return KINDS[target.kind].read_status(fetch(target.address, target.port, target.path, timeout))


# -- choosing targets -----------------------------------------------------------------------


def scrape_targets(
    snapshot: Snapshot, proxies: Iterable[Proxy], own_networks: Collection[str], port: int
) -> tuple[list[Target], dict[str, int]]:
    """Each serving proxy task reachable from the controller, and per proxy how many are not.

    A task is reachable at its address on a network the controller's container is attached to
    (the first such network by id, so the choice is stable).
    """
    targets: list[Target] = []
    unreachable: dict[str, int] = {}
    for proxy in proxies:
        if proxy.service_id:
            members = [
                (t.id[:12], t.addresses)
                for t in snapshot.tasks
                if t.service_id == proxy.service_id and t.serving
            ]
        else:
            members = [
                (c.name, c.addresses) for c in snapshot.containers if c.id == proxy.container_id
            ]
        for task, addresses in members:
            shared = sorted(n for n in addresses if n in own_networks)
            if shared:
                targets.append(
                    Target(proxy.name, proxy.spec.kind, task, addresses[shared[0]], port)
                )
            else:
                unreachable[proxy.name] = unreachable.get(proxy.name, 0) + 1
    return targets, unreachable


# -- the scraper thread ---------------------------------------------------------------------


@dataclass
class TaskFigures:
    target: Target
    samples: list[Sample]
    seconds: float


@dataclass
class Scraper(Periodic):
    """Scrapes every reachable proxy task each ``interval`` seconds, in its own thread.

    ``source`` returns the latest (snapshot, proxies) the reconcile loop saw, or None before the
    first pass. ``latest`` holds the figures of the last round (tasks that failed are absent),
    ``errors`` counts failures by (proxy, reason).
    """

    thread_name = "interlock-scraper"
    failure_event = "scrape_round_failed"

    source: Callable[[], tuple[Snapshot, list[Proxy]] | None]
    port: int
    interval: float
    timeout: float
    hints: tuple[set[str], str] = field(default_factory=own_container_hints)
    workers: int = 8
    latest: dict[tuple[str, str], TaskFigures] = field(default_factory=dict, init=False)
    up: dict[tuple[str, str, str], bool] = field(default_factory=dict, init=False)
    errors: dict[tuple[str, str], int] = field(default_factory=dict, init=False)
    rounds: int = field(default=0, init=False)
    round_seconds: float = field(default=0.0, init=False)
    stop: threading.Event = field(default_factory=threading.Event, init=False)
    _said: dict[tuple[str, str], str] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def round(self) -> None:
        seen = self.source()
        if seen is None or not self.port:
            return
        snapshot, proxies = seen
        me = own_container(snapshot.containers, *self.hints)
        networks = set(me.network_ids) if me else set()
        targets, unreachable = scrape_targets(snapshot, proxies, networks, self.port)
        failures: list[tuple[str, str, str]] = [
            (
                proxy,
                "no_shared_network",
                "the controller shares no network with this proxy's task "
                "(run the controller as a service on the proxy's network)",
            )
            for proxy, count in unreachable.items()
            for _ in range(count)
        ]
        began = time.monotonic()
        latest, up = {}, {}
        if targets:
            with concurrent.futures.ThreadPoolExecutor(min(self.workers, len(targets))) as pool:
                for target, outcome in zip(targets, pool.map(self._one, targets), strict=True):
                    up[(target.proxy, target.kind, target.task)] = isinstance(outcome, TaskFigures)
                    if isinstance(outcome, TaskFigures):
                        latest[(target.proxy, target.task)] = outcome
                    else:
                        failures.append((target.proxy, outcome.reason, str(outcome)))
        with self._lock:
            for proxy, reason, _ in failures:
                self.errors[(proxy, reason)] = self.errors.get((proxy, reason), 0) + 1
            self.latest, self.up = latest, up
            self.rounds += 1
            self.round_seconds = time.monotonic() - began
        self._say(failures)

    def _say(self, failures: list[tuple[str, str, str]]) -> None:
        """Log a failure when it starts and when it ends, not every round."""
        now = {(proxy, reason): detail for proxy, reason, detail in failures}
        for (proxy, reason), detail in now.items():
            if (proxy, reason) not in self._said:
                event(
                    log, "scrape_failed", logging.WARNING, proxy=proxy, reason=reason, error=detail
                )
        for proxy, reason in set(self._said) - set(now):
            event(log, "scrape_recovered", proxy=proxy, reason=reason)
        self._said = now

    def _one(self, target: Target) -> TaskFigures | ScrapeError:
        began = time.monotonic()
        try:
            samples = scrape_target(target, self.timeout)
        except ScrapeError as error:
            return error
        except Exception as error:  # a parser's surprise is one task's error, not the round's
            return ScrapeError("parse", f"{type(error).__name__}: {error}")
        return TaskFigures(target, samples, time.monotonic() - began)

    def snapshot(self):
        """A consistent copy of (latest, up, errors) for the metrics collector."""
        with self._lock:
            return dict(self.latest), dict(self.up), dict(self.errors)
