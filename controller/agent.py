"""``interlock agent``: reloads the proxies of one node in place, for the controller.

Run as a global service on every node that runs proxies, with that node's Docker socket. The
loop: list this engine's running containers labelled ``<prefix>.ext.name`` (proxy tasks and
plain ``docker run`` proxies); read what each serves (the digest file beside its config, read
once per container and again after every quiet long-poll); send all of it, with the proxy's own
words for any config it refused, to the controller (``POST /v1/sync``), which holds the request
until this node's wanted configs differ from what it serves; apply what the answer says (write,
check with the proxy's binary in the container, swap, signal: ``reload.InPlace``, the same code
the controller uses on its own engine); and report again at once.

A proxy container starting or stopping here ends the wait at once (the engine's events), so a
restarted proxy task gets its config within one round trip. When the controller cannot be
reached the proxies keep serving what they serve; the agent retries with back-off.

What the agent writes is bounded by what it sees, not by what it is told: only containers of
its own engine that carry the proxy label, only the kind that label names, only at the config
path their own labels give (``<prefix>.ext.config_path``, else the kind's default), and only a
text whose sha256 is the digest it comes with. Anything else in an answer is refused and logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import re
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
from tenacity import wait_exponential_jitter

from .gateway import Gateway
from .kinds import KINDS
from .logs import event
from .reload import CheckFailed, InPlace
from .runtime import Converger
from .settings import Settings
from .vocabulary import Vocabulary

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"[0-9a-f]{64}", re.ASCII)
MAX_TEXT = 16 * 1024 * 1024
RETRY_MAX = 5.0  # seconds between attempts while the controller cannot be reached
MAX_PARALLEL = 8  # containers reloaded at once
TASK_LABEL = "com.docker.swarm.task.id"  # on the containers of Swarm tasks
HINT_EVERY = 0.1  # seconds between two hints to the controller
HOLD_MAX = 30.0  # the longest a runtime update's file waits for the round's reloads


class Unauthorised(RuntimeError):
    """The controller refused the token."""


class Interrupted(Exception):
    """A local proxy container started or stopped while a request was held: report again."""


@dataclass(frozen=True)
class LocalProxy:
    """A proxy container on this engine, with the kind and path its own labels give."""

    id: str
    name: str
    kind: str
    path: str
    raw: dict[str, Any] = field(repr=False, compare=False)


def local_proxies(raw: list[dict[str, Any]], words: Vocabulary) -> dict[str, LocalProxy]:
    """Running containers labelled as proxies of a known kind, by id (pure)."""
    found = {}
    for item in raw:
        labels = item.get("Labels") or {}
        kind = labels.get(words.key("ext.name"), "")
        if item.get("State") != "running" or kind not in KINDS:
            continue
        path = labels.get(words.key("ext.config_path")) or KINDS[kind].config_path
        name = str((item.get("Names") or [item["Id"]])[0]).lstrip("/")
        found[item["Id"]] = LocalProxy(item["Id"], name, kind, path, item)
    return found


def refusal(config: Any, local: dict[str, LocalProxy]) -> str:
    """Why a config in an answer must not be applied here ("" when it may be) (pure)."""
    if not isinstance(config, dict):
        return "not an object"
    target = local.get(str(config.get("container", "")))
    if target is None:
        return "not a running proxy container on this node"
    if config.get("kind") != target.kind:
        return f"kind {config.get('kind')!r} is not the container's {target.kind!r}"
    if config.get("path") != target.path:
        return f"path {config.get('path')!r} is not the container's config path {target.path!r}"
    text, digest = config.get("text"), config.get("digest")
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return "no text, or too long"
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        return "no digest"
    if hashlib.sha256(text.encode()).hexdigest() != digest:
        return "the text does not have the digest it came with"
    files = config.get("files") or {}
    if not isinstance(files, dict) or any(
        not isinstance(p, str)
        or not p.startswith(f"{target.path}.")
        or "/../" in p
        or not isinstance(t, str)
        or len(t) > MAX_TEXT
        for p, t in files.items()
    ):
        return "a file beside the config that is not at <config path>.<name>"
    return ""


class ReloadsFirst:
    """Orders one round's applies on this node: a file that only records a runtime update
    (HAProxy already routes by it) is written and checked after every reload of the round,
    because a reload is what clients wait for and the node's cores are shared (on the 3-node
    bed, the HAProxy file's check ran beside nginx's reload on every task change). At most
    ``parallel`` applies work at once; one that waits holds no place."""

    def __init__(self, applies: int, parallel: int) -> None:
        self.busy = applies  # applies that have neither finished nor reached their hold
        self.places = threading.Semaphore(parallel)
        self.cond = threading.Condition()
        self.held: set[int] = set()

    def run(self, work: Callable[[Callable[[], None]], None]) -> None:
        """``work(hold)`` in a place of its own; the round counts it done when it returns."""
        self.places.acquire()
        try:
            work(self.hold)
        finally:
            self.places.release()
            with self.cond:
                if threading.get_ident() not in self.held:
                    self.busy -= 1
                    self.cond.notify_all()
                self.held.discard(threading.get_ident())

    def hold(self) -> None:
        """A runtime-updated apply waits here until no apply of the round still reloads."""
        self.places.release()
        try:
            with self.cond:
                self.held.add(threading.get_ident())
                self.busy -= 1
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.busy <= 0, timeout=HOLD_MAX)
        finally:
            self.places.acquire()


@dataclass
class Agent:
    api: Gateway  # the node's engine; every call retried and counted
    settings: Settings
    token: str
    served: dict[str, str] = field(default_factory=dict)  # container -> digest it serves
    errors: dict[str, tuple[str, str]] = field(default_factory=dict)  # container -> refusal
    stop: threading.Event = field(default_factory=threading.Event)
    changed: threading.Event = field(default_factory=threading.Event)
    hinted: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.words = Vocabulary(self.settings.label_prefix)
        self.inplace = InPlace(self.api)
        self.converger = Converger(self.inplace, self.settings.runtime_dir)
        url = urllib.parse.urlsplit(self.settings.agent_url)
        self.host, self.port = url.hostname or "", url.port or 80
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        info = self.api.info()
        swarm = info.get("Swarm") or {}
        self.node = str(swarm.get("NodeID") or f"engine-{info.get('ID', '')[:12]}")
        self.hostname = str(info.get("Name") or self.node)

    # -- what is here ----------------------------------------------------------------------

    def local(self) -> dict[str, LocalProxy]:
        raw = self.api.containers(
            filters={"status": "running", "label": self.words.key("ext.name")}
        )
        return local_proxies(raw, self.words)

    def report(self, local: dict[str, LocalProxy], reread: bool = False) -> dict[str, Any]:
        """This node's state: its proxy containers as the engine lists them, what each serves
        (read from the container when not known, or when ``reread``), what each refused."""
        for gone in set(self.served) - set(local):
            del self.served[gone]
        for gone in set(self.errors) - set(local):
            del self.errors[gone]
        self.converger.forget(set(local))
        for proxy in local.values():
            if reread or proxy.id not in self.served:
                with contextlib.suppress(docker.errors.APIError):  # gone since the listing
                    self.served[proxy.id] = self.inplace.served(proxy.id, proxy.path)
        return {
            "node": self.node,
            "hostname": self.hostname,
            "containers": [p.raw for p in local.values()],
            "served": {k: v for k, v in self.served.items() if k in local},
            "errors": {k: {"digest": d, "error": w} for k, (d, w) in self.errors.items()},
            "counts": self.converger.report(),
            "wait": self.settings.agent_wait,
        }

    # -- talking to the controller ---------------------------------------------------------

    def sync(self, body: dict[str, Any]) -> list[Any]:
        """One long-poll; the configs of the answer. Raises Interrupted when a local change
        ended it, Unauthorised on 401, OSError or HTTPException when the controller is away."""
        data = json.dumps(body).encode()
        conn = http.client.HTTPConnection(
            self.host, self.port, timeout=self.settings.agent_wait + 15
        )
        with self._lock:
            self._conn = conn
        try:
            if self.changed.is_set() or self.stop.is_set():
                raise Interrupted()
            headers = {
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
            }
            conn.request("POST", "/v1/sync", data, headers)
            response = conn.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException):
            if self.changed.is_set() or self.stop.is_set():
                raise Interrupted() from None
            raise
        finally:
            with self._lock:
                self._conn = None
            conn.close()
        if response.status == 401:
            raise Unauthorised("the controller refused the token (INTERLOCK_AGENT_TOKEN_FILE)")
        if response.status != 200:
            raise http.client.HTTPException(f"HTTP {response.status}: {answer[:200]!r}")
        configs = json.loads(answer).get("configs")
        return configs if isinstance(configs, list) else []

    def interrupt(self) -> None:
        """End a held request now (a local change, or stopping)."""
        self.changed.set()
        with self._lock:
            if self._conn is not None and self._conn.sock is not None:
                with contextlib.suppress(OSError):
                    self._conn.sock.shutdown(socket.SHUT_RDWR)

    # -- applying an answer ----------------------------------------------------------------

    def apply(self, configs: list[Any], local: dict[str, LocalProxy]) -> None:
        """Apply every config the answer holds that this node's labels allow, at once: each
        container's reload is independent, and together they must land within seconds."""
        allowed = []
        for config in configs:
            why = refusal(config, local)
            if why:
                container = config.get("container", "") if isinstance(config, dict) else ""
                event(
                    log, "agent_answer_refused", logging.ERROR, container=str(container)[:12],
                    reason=why,
                )  # fmt: skip
                continue
            allowed.append((config, local[config["container"]]))
        if len(allowed) == 1:
            self._apply_one(*allowed[0])
        elif allowed:
            gate = ReloadsFirst(len(allowed), MAX_PARALLEL)
            with ThreadPoolExecutor(max_workers=len(allowed)) as pool:
                list(pool.map(lambda p: gate.run(lambda hold: self._apply_one(*p, hold)), allowed))

    def _apply_one(
        self, config: dict[str, Any], proxy: LocalProxy, hold: Callable[[], None] = lambda: None
    ) -> None:
        digest, started = config["digest"], time.monotonic()
        try:
            files = config.get("files") or {}
            outcome = self.converger.apply(
                proxy.id, proxy.kind, proxy.path, config["text"], digest, files,
                proxy=str(config.get("proxy", ""))[:200], serving=self.served.get(proxy.id, ""),
                hold=hold,
            )  # fmt: skip
        except CheckFailed as refused:
            self.errors[proxy.id] = (digest, str(refused))
            event(
                log,
                "config_refused_in_container",
                logging.ERROR,
                container=proxy.name,
                digest=digest[:16],
                reason=str(refused),
            )
            return
        except (docker.errors.APIError, RuntimeError) as error:
            event(log, "push_failed", logging.ERROR, container=proxy.name, error=str(error))
            self.served.pop(proxy.id, None)  # read it back on the next report
            return
        self.served[proxy.id] = digest
        self.errors.pop(proxy.id, None)
        event(
            log,
            "config_applied",
            container=proxy.name,
            digest=digest[:16],
            kind=proxy.kind,
            how=outcome,
            seconds=round(time.monotonic() - started, 3),
        )

    # -- the loop --------------------------------------------------------------------------

    def watch(self) -> None:
        """Interrupt the held request whenever a local proxy container starts or stops, and
        hint the controller when a task container does (Swarm sends no task events: without
        the hint it sees a new task at its next pass)."""
        delay = wait_exponential_jitter(initial=0.5, max=RETRY_MAX)
        attempt = 0
        proxy_label = self.words.key("ext.name")
        filters = {"type": "container", "event": ["start", "die"]}
        while not self.stop.is_set():
            try:
                for message in self.api.events(decode=True, filters=filters):
                    attempt = 0
                    labels = (message.get("Actor") or {}).get("Attributes") or {}
                    if proxy_label in labels:
                        self.interrupt()
                    elif TASK_LABEL in labels:
                        self.hinted.set()
                    if self.stop.is_set():
                        return
            except Exception as error:
                event(log, "agent_events_broken", logging.WARNING, error=str(error))
            attempt += 1
            self.stop.wait(_delay(delay, attempt))
            self.interrupt()  # something may have changed while nobody listened

    def hint(self) -> None:
        """Tell the controller a task started or stopped here (``POST /v1/wake``), at most
        every ``HINT_EVERY`` seconds; a lost hint costs only time (the next pass sees it)."""
        while not self.stop.is_set():
            if not self.hinted.wait(1.0):
                continue
            self.hinted.clear()
            conn = http.client.HTTPConnection(self.host, self.port, timeout=2.0)
            try:
                conn.request("POST", "/v1/wake", b"{}", {"Authorization": f"Bearer {self.token}"})
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            self.stop.wait(HINT_EVERY)

    def run(self) -> None:
        threading.Thread(target=self.watch, name="agent-events", daemon=True).start()
        threading.Thread(target=self.hint, name="agent-hints", daemon=True).start()
        event(log, "agent_started", node=self.node, hostname=self.hostname, controller=self.host)
        delay = wait_exponential_jitter(initial=0.5, max=RETRY_MAX)
        failures, reread = 0, False
        while not self.stop.is_set():
            self.changed.clear()
            try:
                reread = self._round(reread)
            except Interrupted:
                reread = False
                continue
            except Exception as error:  # the agent outlives any error: proxies keep serving
                failures += 1
                wait = _delay(delay, failures)
                level = logging.WARNING if failures < 3 else logging.ERROR
                event(
                    log,
                    "agent_retry",
                    level,
                    error=str(error) or type(error).__name__,
                    attempt=failures,
                    retry_in=round(wait, 2),
                )
                self.stop.wait(wait)
                continue
            if failures:
                event(log, "agent_reconnected", after_failures=failures)
            failures = 0
        event(log, "agent_stopped")

    def _round(self, reread: bool) -> bool:
        """Report, wait for the answer, apply it; whether the next report reads every
        container's digest afresh (after a quiet poll: level-triggered, cheaply)."""
        local = self.local()
        configs = self.sync(self.report(local, reread))
        self.apply(configs, local)
        return not configs


def _delay(strategy: Any, attempt: int) -> float:
    """The back-off strategy's delay for the nth attempt (tenacity's, outside a Retrying)."""

    class _State:
        attempt_number = attempt

    return float(strategy(_State()))


def main(settings: Settings) -> int:
    """`interlock agent`: run until SIGTERM or SIGINT."""
    from .agentapi import TokenError, read_token

    try:
        token = read_token(settings.agent_token_file)
    except TokenError as error:
        print(f"interlock agent: {error}")
        return 2
    api = Gateway(docker.from_env(timeout=int(settings.docker_timeout)).api)
    agent = Agent(api, settings, token)

    def stop(*_: object) -> None:
        agent.stop.set()
        agent.interrupt()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
    return 0
