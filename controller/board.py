"""The controller's side of the per-node agents: what each node reported, what each proxy
container should serve, and the long-polls that wait for a difference between the two.

Level-triggered like the rest: an agent's report is its node's whole state (every local proxy
container, the digest each serves, the proxy's own words for a config it refused), and the
answer is every config of that node that differs from what it serves. Nothing depends on an
earlier request having arrived, so a restarted agent, a new node or a restarted proxy task
converges on its next request, and a node that stops reporting holds up no other.

The board is plain state under one ``threading.Condition``; the HTTP side (``agentapi``) calls
``report`` and ``wait``, the reconcile pass reads ``merge`` and ``served`` and hands its
``PushConfig`` actions to ``push``. In agent mode the controller never writes into a container.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .desired import Proxy
from .logs import event
from .plan import PushConfig, proxy_containers
from .snapshot import Container, Snapshot, container_from_api
from .vocabulary import Vocabulary

log = logging.getLogger(__name__)

MAX_CONTAINERS = 1000  # per report: far beyond any node's proxies
MAX_WORDS = 2000  # characters of a proxy's refusal kept
_DIGEST = re.compile(r"[0-9a-f]{0,64}", re.ASCII)
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", re.ASCII)
_ID = re.compile(r"[A-Za-z0-9:_.-]{1,128}", re.ASCII)
SWARM_NODE_LABEL = "com.docker.swarm.node.id"


class BadReport(ValueError):
    """A report that is not what an agent sends; the API answers 400 with this text."""


@dataclass(frozen=True)
class Want:
    """A config the controller wants a proxy container to serve."""

    container: str
    proxy: str
    kind: str
    path: str
    digest: str
    text: str = field(repr=False)
    files: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # beside the config

    def as_json(self) -> dict[str, Any]:
        return {
            "files": dict(self.files),
            "container": self.container,
            "proxy": self.proxy,
            "kind": self.kind,
            "path": self.path,
            "digest": self.digest,
            "text": self.text,
        }


@dataclass
class Report:
    """One node's last report, and who is waiting on it."""

    node: str
    hostname: str
    at: float  # board clock
    raw: tuple[dict[str, Any], ...]
    containers: tuple[Container, ...]
    served: dict[str, str]
    errors: dict[str, tuple[str, str]]  # container -> (refused digest, the proxy's words)
    generation: int = 0
    # container -> (its proxy, {"runtime" or a reload reason: count since its agent started})
    counts: dict[str, tuple[str, dict[str, int]]] = field(default_factory=dict)

    def signature(self) -> tuple:
        """What a pass decides on: a report that only repeats this needs no new pass."""
        ids = tuple(sorted(c.id for c in self.containers))
        return ids, tuple(sorted(self.served.items())), tuple(sorted(self.errors.items()))


def _text(value: Any, what: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadReport(f"{what}: not a valid value")
    return value


def parse_report(body: Any) -> tuple[str, str, list[dict], dict[str, str], dict[str, tuple]]:
    """(node, hostname, raw containers, served, errors) from a report's JSON, or BadReport."""
    if not isinstance(body, dict):
        raise BadReport("the report must be a JSON object")
    node = _text(body.get("node"), "node", _ID)
    hostname = body.get("hostname") or node[:12]
    hostname = _text(hostname, "hostname", _HOSTNAME)
    raw = body.get("containers")
    if not isinstance(raw, list) or len(raw) > MAX_CONTAINERS:
        raise BadReport(f"containers: a list of at most {MAX_CONTAINERS} is expected")
    if not all(isinstance(c, dict) and isinstance(c.get("Id"), str) for c in raw):
        raise BadReport("containers: each must be an object with an Id")
    served = body.get("served") or {}
    if not isinstance(served, dict):
        raise BadReport("served: an object is expected")
    served = {
        _text(k, "served container", _ID): _text(v, "served digest", _DIGEST)
        for k, v in served.items()
    }
    errors: dict[str, tuple[str, str]] = {}
    for key, value in (body.get("errors") or {}).items():
        if not isinstance(value, dict) or not isinstance(value.get("error"), str):
            raise BadReport("errors: each must be an object with digest and error")
        digest = _text(value.get("digest", ""), "error digest", _DIGEST)
        errors[_text(key, "error container", _ID)] = (digest, value["error"][:MAX_WORDS])
    return node, hostname, raw, served, errors


OUTCOMES = ("runtime", "structural", "endpoints", "restart")  # runtime.Converger's


def parse_counts(body: Any) -> dict[str, tuple[str, dict[str, int]]]:
    """A report's ``counts`` (what its agent did to each container: runtime updates and
    reloads by reason); what is malformed is left out, never trusted."""
    found = {}
    raw = body.get("counts") if isinstance(body, dict) else None
    for container, entry in (raw if isinstance(raw, dict) else {}).items():
        if not isinstance(entry, dict) or not _ID.fullmatch(str(container)):
            continue
        numbers = {k: max(0, entry[k]) for k in OUTCOMES if isinstance(entry.get(k), int)}
        found[container] = (str(entry.get("proxy", ""))[:200], numbers)
    return found


def _is_proxy_container(container: Container, words: Vocabulary) -> bool:
    return container.state == "running" and words.is_proxy(container.labels)


class Board:
    """Each node's last report and the configs wanted per container (see the module doc)."""

    def __init__(
        self,
        prefix: str,
        stale_after: float = 90.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.words = Vocabulary(prefix)
        self.stale_after = stale_after
        self.clock = clock
        self.on_change = on_change
        self.cond = threading.Condition()
        self.reports: dict[str, Report] = {}
        self.wants: dict[str, Want] = {}
        self.desired: dict[str, str] = {}  # container -> digest the latest pass wanted
        self.waiting: dict[str, int] = {}  # node -> its requests held now
        self.batch = False  # push() waits for flush() to answer (the controller flushes a pass)
        self._unsent = False
        self._said: set[tuple[str, str]] = set()  # refusals logged (container, digest)
        self.closed = False
        self.totals: Counter = Counter()  # (proxy, outcome) -> count, summed over agents

    # -- what agents send ------------------------------------------------------------------

    def report(self, body: Any) -> tuple[str, int]:
        """Take a node's report (BadReport if malformed); returns (node, generation).

        A newer report supersedes a request of the same node still held (its agent has given
        up on it); the loop is woken when the report says something a pass has not seen.
        """
        old, new, dropped = self._store(body)
        if dropped:
            event(
                log, "agent_report_containers_dropped", logging.WARNING, node=new.node, ids=dropped
            )
        self._say_refusals(new)
        if old is None or old.signature() != new.signature():
            self.on_change()
        return new.node, new.generation

    def _store(self, body: Any) -> tuple[Report | None, Report, list[str]]:
        node, hostname, raw, served, errors = parse_report(body)
        kept, dropped = self._containers(node, raw)
        ids = {c.id for c in kept}
        with self.cond:
            old = self.reports.get(node)
            new = Report(
                node,
                hostname,
                self.clock(),
                tuple(r for r in raw if r["Id"] in ids),
                tuple(kept),
                {k: v for k, v in served.items() if k in ids},
                {k: v for k, v in errors.items() if k in ids},
                generation=(old.generation + 1) if old else 1,
                counts={k: v for k, v in parse_counts(body).items() if k in ids},
            )
            self._add_counts(old, new)
            self.reports[node] = new
            self._forget_gone()
            self.cond.notify_all()
        return old, new, dropped

    def _add_counts(self, old: Report | None, new: Report) -> None:
        """Add what a report's counts grew by to the totals (a count that shrank: its agent
        restarted and counts from 0 again)."""
        before = old.counts if old else {}
        for container, (proxy, numbers) in new.counts.items():
            seen = before.get(container, ("", {}))[1]
            for outcome, count in numbers.items():
                grew = count - seen.get(outcome, 0)
                self.totals[proxy, outcome] += grew if grew >= 0 else count

    def _containers(self, node: str, raw: list[dict]) -> tuple[list[Container], list[str]]:
        """The reported proxy containers that may be this node's; ids of the others."""
        kept, dropped = [], []
        for item in raw:
            container = container_from_api(item)
            elsewhere = container.labels.get(SWARM_NODE_LABEL, node) != node
            if elsewhere or not _is_proxy_container(container, self.words):
                dropped.append(container.id[:12])
            else:
                kept.append(container)
        return kept, dropped

    def _say_refusals(self, report: Report) -> None:
        for container, (digest, words) in report.errors.items():
            if (container, digest) not in self._said:
                self._said.add((container, digest))
                event(
                    log,
                    "agent_config_refused",
                    logging.ERROR,
                    node=report.hostname,
                    container=container[:12],
                    digest=digest[:16],
                    reason=words,
                )

    def _forget_gone(self) -> None:
        """Wants of containers no live report lists, and reports long dead (under the lock)."""
        now = self.clock()
        for node in [n for n, r in self.reports.items() if now - r.at > 10 * self.stale_after]:
            if not self.waiting.get(node):
                del self.reports[node]
        listed = {c.id for r in self.reports.values() for c in r.containers}
        self.wants = {k: v for k, v in self.wants.items() if k in listed}
        self._said = {s for s in self._said if s[0] in listed}

    def pending(self, node: str) -> list[Want]:
        """Configs this node's containers should get: wanted, not served, not refused."""
        report = self.reports.get(node)
        if report is None:
            return []
        found = []
        for container in report.containers:
            want = self.wants.get(container.id)
            if want is None or report.served.get(container.id) == want.digest:
                continue
            if report.errors.get(container.id, ("",))[0] == want.digest:
                continue  # refused by this proxy: never again, until the config changes
            found.append(want)
        return found

    def wait(self, node: str, generation: int, timeout: float) -> list[Want]:
        """Block until this node has pending configs, a newer report of it arrives, or
        ``timeout`` passes; the pending configs ([] when there are none or it was superseded)."""
        deadline = self.clock() + timeout
        with self.cond:
            self.waiting[node] = self.waiting.get(node, 0) + 1
            try:
                while True:
                    current = self.reports.get(node)
                    if self.closed or current is None or current.generation != generation:
                        return []
                    # In batch mode a pass still handing configs over is waited for.
                    found = [] if self.batch and self._unsent else self.pending(node)
                    left = deadline - self.clock()
                    if found or left <= 0:
                        return found or self.pending(node)
                    self.cond.wait(min(left, 1.0))
            finally:
                self.waiting[node] -= 1
                if not self.waiting[node]:
                    del self.waiting[node]

    def close(self) -> None:
        """Answer every held request now (the controller is stopping)."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # -- what the reconcile pass uses ------------------------------------------------------

    def live(self) -> list[Report]:
        """Reports of nodes whose agent is connected or reported recently."""
        now = self.clock()
        with self.cond:
            return [
                r
                for r in self.reports.values()
                if self.waiting.get(r.node) or now - r.at <= self.stale_after
            ]

    def containers(self) -> list[Container]:
        """Proxy containers of live reports; a plain container is named ``<node>/<name>``
        (the same name on two nodes is two proxies)."""
        found = []
        for report in self.live():
            for container in report.containers:
                if not container.service_id:
                    container = replace(container, name=f"{report.hostname}/{container.name}")
                found.append(container)
        return found

    def merge(self, snapshot: Snapshot) -> Snapshot:
        """The snapshot with proxy containers as the agents report them: every node's, and
        only those (a local proxy container no agent reports is reached by no one)."""
        reported = self.containers()
        ids = {c.id for c in reported}
        proxy_services = {s.id for s in snapshot.services if self.words.is_proxy(s.labels)}
        local = [
            c
            for c in snapshot.containers
            if c.id not in ids
            and not self.words.is_proxy(c.labels)
            and c.service_id not in proxy_services
        ]
        merged = sorted([*local, *reported], key=lambda c: c.id)
        return replace(snapshot, containers=tuple(merged))

    def served(self, snapshot: Snapshot, proxies: list[Proxy]) -> dict[str, str]:
        """For the plan: what each container serves, or the config it was already handed
        (in flight, or refused by it): so a pass plans a push only for a new difference."""
        reported = {k: v for r in self.live() for k, v in r.served.items()}
        with self.cond:
            wants = {k: w.digest for k, w in self.wants.items()}
        found = {}
        for proxy in proxies:
            for container in proxy_containers(snapshot, proxy):
                found[container] = wants.get(container, reported.get(container, ""))
        return found

    def refused(self) -> set[str]:
        """Proxies whose config wanted now some node's binary refused: the pass sends them to
        the check stage, which finds the services the refusal is down to (as when a push is
        refused in signal mode); a refusal only one node makes finds none, and holds back only
        that node."""
        with self.cond:
            wants = dict(self.wants)
        found = set()
        for report in self.live():
            for container, (digest, _words) in report.errors.items():
                want = wants.get(container)
                if want is not None and want.digest == digest:
                    found.add(want.proxy)
        return found

    def push(self, action: PushConfig) -> None:
        """The executor's push: hand the config to the container's agent (never raises for one
        container, so one refusing node holds back no other)."""
        want = Want(
            action.container_id,
            action.proxy,
            action.kind,
            action.path,
            action.digest,
            action.text,
            tuple(sorted(action.files.items())),
        )
        with self.cond:
            if self.wants.get(action.container_id) != want:
                self.wants[action.container_id] = want
                self._unsent = True
                if not self.batch:
                    self.cond.notify_all()

    def flush(self) -> None:
        """Answer the held requests with what the pass handed over (``batch``: once a pass is
        done, so a node gets all its configs in one answer and applies them at once)."""
        with self.cond:
            if self._unsent:
                self._unsent = False
                self.cond.notify_all()

    def observe_pass(self, snapshot: Snapshot, proxies: Iterable[tuple[Proxy, str]]) -> None:
        """What the latest pass wanted each signal-mode container to serve, (proxy, digest)."""
        desired = {}
        for proxy, digest in proxies:
            for container in proxy_containers(snapshot, proxy):
                desired[container] = digest
        with self.cond:
            self.desired = desired

    # -- what status and metrics read ------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Every report as JSON (``/v1/status``): what `interlock status` and tests read."""
        now = self.clock()
        live = {r.node for r in self.live()}
        with self.cond:
            nodes = [
                {
                    "node": r.node,
                    "hostname": r.hostname,
                    "report_age_seconds": round(now - r.at, 3),
                    "connected": bool(self.waiting.get(r.node)),
                    "live": r.node in live,
                    "containers": list(r.raw),
                    "served": dict(r.served),
                    "errors": {k: {"digest": d, "error": w} for k, (d, w) in r.errors.items()},
                    "counts": {k: {"proxy": p, **n} for k, (p, n) in r.counts.items()},
                }
                for r in sorted(self.reports.values(), key=lambda r: r.hostname)
            ]
            wants = {k: w.digest for k, w in self.wants.items()}
            desired = dict(self.desired)
        return {"nodes": nodes, "wants": wants, "desired": desired}

    @classmethod
    def from_status(cls, prefix: str, data: Mapping[str, Any], stale_after: float) -> Board:
        """A read-only copy of a controller's board from its ``/v1/status`` (for the CLI): the
        same reports, as old as they were there, live or not as they were there."""
        board = cls(prefix, stale_after)
        now = board.clock()
        for node in data.get("nodes") or []:
            _, report, _ = board._store({**node, "errors": node.get("errors") or {}})
            report.at = now - float(node.get("report_age_seconds") or 0)
            if node.get("connected"):
                board.waiting[report.node] = 1
            if not node.get("live", True):
                report.at = min(report.at, now - stale_after - 1)
                board.waiting.pop(report.node, None)
        board.desired = dict(data.get("desired") or {})
        return board


class AgentObserver:
    """An observer whose snapshots carry the proxy containers the agents report (``merge``)."""

    def __init__(self, inner: Any, board: Board) -> None:
        self.inner, self.board = inner, board

    @property
    def calls(self) -> int:
        return self.inner.calls

    def snapshot(self) -> Snapshot:
        return self.board.merge(self.inner.snapshot())
