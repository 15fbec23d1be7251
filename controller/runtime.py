"""In-place convergence of one proxy container, with HAProxy's runtime API where it is enough.

The imperative shell around ``slots.plan``: read back the config the container serves, let the
pure planner say "runtime: these commands" or "reload", and carry it out. A runtime update sends
the commands to the container's runtime socket and reads the servers' state back; only when the
process shows every change is it done without a signal, and the file (written after, with the
same slots) says the same, so a later reload or restart serves it. A socket that is absent,
refuses or shows anything else falls back to a reload of that same file: nothing stays
half-applied. The commands go first: should the file write then fail, the digest beside it
still names the old config, and the next pass plans the same commands again (they are
idempotent) and writes it.

The socket is in a volume the proxy shares with its node's agent (or the controller, on its
own engine), at ``<folder>/<kind's socket name for the container's $HOSTNAME>``: ``folder`` is
where this process sees that volume. Reloads are counted per container and reason
("structural", "endpoints": an address change that could not go through the runtime API,
"restart": a container that served no config of ours), runtime updates as "runtime".
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from . import slots
from .kinds import KINDS
from .logs import event
from .reload import InPlace

log = logging.getLogger(__name__)

BATCH = 40  # commands a connection: a line stays far below HAProxy's 16 kB buffer
RUNTIME = "runtime"
RELOAD_WAIT = 10.0  # seconds a reload's new process has to answer on the runtime socket


class RuntimeFailed(RuntimeError):
    """The runtime API could not be reached or did not do what it was asked."""


def ask(path: str, command: str, timeout: float) -> str:
    """One command line (``;``-separated commands) on a unix socket; HAProxy's answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def run_commands(path: str, commands: Sequence[str], timeout: float) -> None:
    """Send the commands, then read the touched backends back: RuntimeFailed unless the running
    process shows every one of them."""
    try:
        for start in range(0, len(commands), BATCH):
            ask(path, "; ".join(commands[start : start + BATCH]), timeout)
        shown = "\n".join(
            ask(path, f"show servers state {b}", timeout) for b in slots.backends_of(commands)
        )
    except OSError as error:
        raise RuntimeFailed(f"runtime socket {path}: {error}") from error
    missed = slots.unmet(commands, slots.read_states(shown))
    if missed:
        raise RuntimeFailed(f"not applied: {'; '.join(missed[:3])}")


def worker_pid(info: str) -> str:
    """The ``Pid:`` of a ``show info`` answer ("" if none): which process answers there."""
    for line in info.splitlines():
        if line.startswith("Pid:"):
            return line.split(":", 1)[1].strip()
    return ""


def _has_socket(served: str, kind: str) -> bool:
    """Whether the config the container serves opened a runtime socket (its proxy mounts the
    runtime folder); without one every change reloads, as it always did, and nothing is said."""
    return f'stats socket "{KINDS[kind].runtime_dir}/' in served


@dataclass
class Converger:
    """Applies configs to the containers of one engine (``inplace``), through the runtime API
    when it is enough (``folder`` "": never), and counts what it did per container."""

    inplace: InPlace
    folder: str = ""
    timeout: float = 2.0
    counts: dict[str, Counter] = field(default_factory=dict)  # container -> reason -> count
    proxies: dict[str, str] = field(default_factory=dict)  # container -> proxy name
    totals: Counter = field(default_factory=Counter)  # (proxy, outcome) -> count, never reset
    _hostnames: dict[str, str] = field(default_factory=dict)
    # container -> (digest, text) this process last wrote there: no read-back while it serves it
    _written: dict[str, tuple[str, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _unsure: set[str] = field(default_factory=set)  # reloaded, new process not seen: no runtime

    def apply(
        self,
        container: str,
        kind: str,
        path: str,
        text: str,
        digest: str,
        files: Mapping[str, str] | None = None,
        proxy: str = "",
        serving: str = "",
        hold: Callable[[], None] = lambda: None,
    ) -> str:
        """Converge one container to ``text``; "runtime" or the reason it was reloaded.
        ``serving``: the digest the caller knows the container serves (its digest file), so
        the text this process wrote there needs no read back (one engine round trip less on
        every change). ``hold`` is called after a runtime update, before the file that only
        records it is written (and checked): the caller can let reloads go first, as they
        are what clients wait for. Raises what ``InPlace.apply`` raises (then nothing is
        counted)."""
        served = self._served_text(container, path, serving)
        endpoint_line = KINDS[kind].endpoint_line
        if KINDS[kind].runtime_dir:
            update = slots.plan(served, text)
        else:
            update = slots.Update(text, slots.reload_reason(served, text, endpoint_line))
        done = (
            update.runtime
            and _has_socket(served, kind)
            and container not in self._unsure
            and self._runtime(container, kind, update)
        )
        if done:
            hold()
        before = None if done else self._worker(container, kind, served)
        with self._lock:
            self._written.pop(container, None)  # until it is known to be written
        self.inplace.apply(container, kind, path, update.text, digest, files, signal=not done)
        if before is not None:
            self._await_reload(container, *before)
        outcome = RUNTIME if done else update.reason
        with self._lock:
            self._written[container] = (digest, update.text)
            self.counts.setdefault(container, Counter())[outcome] += 1
            self.proxies[container] = proxy
            self.totals[proxy, outcome] += 1
        if outcome != RUNTIME:
            event(log, "proxy_reload", proxy=proxy, container=container[:12], reason=outcome)
        return outcome

    def _served_text(self, container: str, path: str, serving: str) -> str:
        """The config the container serves: the one written here when its digest is the one
        served, else read back from the container."""
        with self._lock:
            digest, text = self._written.get(container, ("", ""))
        if serving and digest == serving:
            return text
        return self.inplace.api.read_file(container, path) or ""

    def _runtime(self, container: str, kind: str, update: slots.Update) -> bool:
        """Carry out a runtime update; False (logged) when it must be a reload instead."""
        started = time.monotonic()
        try:
            sock = self._socket(container, kind)
            if update.commands:
                run_commands(sock, update.commands, self.timeout)
        except RuntimeFailed as error:
            event(log, "runtime_update_failed", logging.WARNING, container=container[:12],
                  reason=str(error), fallback="reload")  # fmt: skip
            return False
        event(log, "runtime_update", container=container[:12], commands=len(update.commands),
              seconds=round(time.monotonic() - started, 3))  # fmt: skip
        return True

    def _worker(self, container: str, kind: str, served: str) -> tuple[str, str] | None:
        """Before a reload: the runtime socket and the pid of the process answering there."""
        if not _has_socket(served, kind):
            return None
        try:
            sock = self._socket(container, kind)
            return sock, worker_pid(ask(sock, "show info", self.timeout))
        except (RuntimeFailed, OSError):
            return None

    def _await_reload(self, container: str, sock: str, pid: str) -> None:
        """Return once a new process answers on the runtime socket. HAProxy reloads after the
        signal, not at it: a runtime update sent in between reaches the old process, which
        shows it back and exits, and the new one runs the file as it was read, without it.
        (Seen on the 3-node bed as a task missing on one node's HAProxy for good.) Not seen
        within ``RELOAD_WAIT``: the next change to this container reloads."""
        deadline = time.monotonic() + RELOAD_WAIT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if worker_pid(ask(sock, "show info", self.timeout)) not in ("", pid):
                    with self._lock:
                        self._unsure.discard(container)
                    return
            time.sleep(0.02)
        with self._lock:
            self._unsure.add(container)
        event(log, "reload_not_seen", logging.WARNING, container=container[:12],
              waited=RELOAD_WAIT, next_change="reload")  # fmt: skip

    def _socket(self, container: str, kind: str) -> str:
        """Where this process reaches the container's runtime socket (RuntimeFailed if absent)."""
        if not self.folder:
            raise RuntimeFailed("runtime updates are off (INTERLOCK_RUNTIME_DIR is empty)")
        hostname = self._hostnames.get(container) or self._hostname(container)
        path = os.path.join(self.folder, KINDS[kind].runtime_socket(hostname))
        if not os.path.exists(path):
            raise RuntimeFailed(f"no runtime socket at {path} (is the volume shared?)")
        return path

    def _hostname(self, container: str) -> str:
        """The container's $HOSTNAME, which names its socket (its env, else its hostname)."""
        config = self.inplace.api.inspect_container(container).get("Config") or {}
        env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
        self._hostnames[container] = env.get("HOSTNAME") or str(config.get("Hostname", ""))
        return self._hostnames[container]

    def forget(self, live: set[str]) -> None:
        """Drop what is kept of containers that are gone."""
        with self._lock:
            for gone in set(self.counts) - live:
                del self.counts[gone]
                self.proxies.pop(gone, None)
            for gone in set(self._hostnames) - live:
                del self._hostnames[gone]
            for gone in set(self._written) - live:
                del self._written[gone]
            self._unsure &= live
        self.inplace.forget(live)

    def report(self) -> dict[str, dict[str, object]]:
        """Per container: its proxy and what was done to it ("runtime" and reload reasons)."""
        with self._lock:
            return {c: {"proxy": self.proxies.get(c, ""), **n} for c, n in self.counts.items()}
