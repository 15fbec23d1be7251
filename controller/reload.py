"""Reload one proxy container in place: the steps both the controller (signal mode on its own
engine) and the per-node agent (``interlock agent``) take, so there is one implementation.

Nothing in the proxy's image is required but the proxy's own binary: a hardened image
(distroless, a ``scratch`` image holding only nginx or HAProxy and its libraries) converges like
the official ones. Two ways to the same steps (write beside the live file, check with the
proxy's binary, swap, signal), with the same guarantees:

**The Engine API path** (any image; every step an API call):

1. *Stage* (``PUT /containers/{id}/archive``, one tar): the files the config names beside it
   (HAProxy's crt-list, named by their content) and the config at ``<path>.interlock-staged``.
2. *Check*: one exec of the proxy's binary alone (argv from ``kinds``: ``nginx -t -c
   <staged>``, ``haproxy -c -f <staged>``). A refusal raises ``CheckFailed`` with the proxy's
   own words; nothing live changed, nothing is signalled. The staged file stays, inert (the
   proxy reads only the live path; without a shell nothing can delete it; the next push
   replaces it).
3. *Swap* (one tar): a hard link ``<path>`` -> the staged file. The engine extracts a link
   with one ``link(2)`` after removing the old name, so the live path holds the previous config
   or the checked one, whole: never a partial file, as a file the engine rewrites in place would
   be for a moment (it unlinks, then writes). The link is the very inode that was checked; the
   next stage removes the staged name before writing, so it never touches the live inode
   (``tests/swarm/test_binary_only.py``).

Then *signal* (``POST /containers/{id}/kill``): nginx SIGHUP, HAProxy master-worker SIGUSR2;
and only then *record* the digest beside the config (``<path>.interlock-digest``, one tar). The
digest never claims a config the running proxy was not told about: a controller or agent killed
between the swap and the signal leaves the old digest, so the next pass pushes (and signals)
again, instead of taking a proxy that still runs the old config for converged (an ACME
challenge it does not answer yet, a route it does not serve). Killed between the signal and the
record, it costs one more reload. If the signal cannot be sent the digest is emptied and the
error raised. A proxy that restarts between any two calls reads a complete config that its
binary checked, or, after a runtime update (not signalled, not checked again: ``check_argv``),
that config with the server lines its running binary took through the runtime API.

**The shell path** (images with ``sh``, ``cat`` and ``mv``, as the official ones): the same steps in
the same order in one ``sh -c`` with the config on its stdin: write, check, rename (atomic within
one directory), signal the container's PID 1 (the process the engine's kill signals) and record the
digest. It is written to a shell kept open in the container (``shell.Shell``: opened by the first
apply, replaced when the container restarted, closed by ``forget``), so an apply starts no process
through the engine; a one-shot exec runs it where the config does not fit a here-document (no final
newline, or a NUL). An image that cannot run it (exit 126/127, or a tool "not found") takes the API
path, and the container is remembered as such, so it costs one failed exec once; a shell that cannot
signal (exit 99: swapped, not signalled) hands the signal and the record to the engine's calls
above.

Why two paths: measured cost. Each archive call makes the engine start a chrooted helper
process, each exec a process in the container. On the bed's engine (2 busy cores, Docker 20.10)
an apply took 0.13-0.21 s (median) by the shell path and 0.26-0.37 s by the API path; on a node
of the 3-node bed (an engine in a container, where the agents run) 0.20-0.31 s against 0.77-0.86
s. When a change reaches every node at once, 6 proxies apply together on 2 cores: the shell
path's one exec an apply (it was an exec, a kill and a second exec for the digest) is what keeps
the change routable everywhere within a fraction of a second. The kept shell takes the exec out
too: an apply on a quiet node 49 ms by one exec, 7 ms through the kept shell; on the 3-node bed
a removal routable everywhere p95 0.54 -> 0.36 s, 0.74 -> 0.45 CPU-seconds. nginx reloads on
every change, and a stopping task must leave the pool within the 2 s Swarm waits before SIGTERM,
so 0.5 s more per node is a real cost where the image allows the fast way. Both paths run in
every test run: the bed's full images take the shell path, its binary-only images the API path.

The digest file is the state: whoever reads it back after a restart (``served``, one GET
archive) knows what the container serves without trusting any memory.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

import docker.errors
from docker.utils.socket import frames_iter

from .bounded import remember
from .gateway import Gateway
from .kinds import KINDS
from .logs import event
from .shell import CANNOT_RUN, Shell, ShellLost

log = logging.getLogger(__name__)

# The API path's staged name. Not the shell path's ``.interlock-new``, which ``cat >`` writes in
# place: on a name hard-linked to the live file that would rewrite the live file.
STAGED_SUFFIX = ".interlock-staged"
NEW_SUFFIX = ".interlock-new"
DIGEST_SUFFIX = ".interlock-digest"
KEY_SUFFIX, KEY_MODE = ".key", 0o400  # as the proxies' secret mounts of keys


class CheckFailed(RuntimeError):
    """The proxy's binary refused the config inside the container; nothing was signalled."""


class NoShell(RuntimeError):
    """The container cannot run the shell step (no ``sh``, ``cat`` or ``mv``)."""


def _relative(path: str) -> str:
    """A path in the container as a name in an archive extracted at "/"."""
    return path.lstrip("/")


@dataclass
class InPlace:
    """In-place reloads of containers on one engine (``api``)."""

    api: Gateway
    shell_less: dict[str, bool] = field(default_factory=dict)  # containers that take the API path
    shells: dict[str, Shell] = field(default_factory=dict)  # the shell kept in each container
    keep_shells: bool = True  # False: every shell step is a one-shot exec

    def __post_init__(self) -> None:
        if not isinstance(self.api, Gateway):  # an engine client given as it is: wrap it once
            self.api = Gateway(self.api)

    def served(self, container: str, path: str) -> str:
        """The digest the container serves, from the file beside its config ("" if none)."""
        return (self.api.read_file(container, path + DIGEST_SUFFIX) or "").strip()

    def apply(
        self,
        container: str,
        kind: str,
        path: str,
        text: str,
        digest: str,
        files: Mapping[str, str] | None = None,
        signal: bool = True,
    ) -> None:
        """Write, check, swap, signal (see the module doc; ``signal`` off: the running proxy
        already serves it, through HAProxy's runtime API, and only the file must say so; then
        there is no check either, see ``check_argv``).
        Raises ``CheckFailed`` with the proxy's own words when its binary refuses the config
        (then the live file and the proxy are untouched).

        ``files`` (absolute path -> text) are the files the config names beside it (HAProxy's
        crt-list): named by their content, so they are written as they are, before the check.
        """
        beside = {p: t for p, t in (files or {}).items() if p.startswith(f"{path}.")}
        if container not in self.shell_less:
            if beside:  # the files the config names, first (an upload: no shell needed)
                self._put(container, kind, beside)
            try:
                done = self._by_shell(container, kind, path, text, digest, signal)
            except NoShell as why:
                self._close(container)
                remember(self.shell_less, container, True)
                event(log, "inplace_without_shell", container=container[:12], reason=str(why))
            else:
                if not done:  # swapped, but the shell could not signal: the engine's way
                    self._finish(container, kind, path, digest, signal)
                return
        self._by_api(container, kind, path, text, beside, signal)
        self._finish(container, kind, path, digest, signal)

    def _finish(self, container: str, kind: str, path: str, digest: str, signal: bool) -> None:
        """Signal (unless the runtime API already did the work), then record the digest."""
        if signal:
            self._signal(container, kind, path)
        self._record(container, path + DIGEST_SUFFIX, digest)

    def _record(self, container: str, where: str, digest: str) -> None:
        """The digest file: by a small ``sh`` exec where the image has one (a process start
        costs less than the engine's archive helper), else by an archive."""
        if container not in self.shell_less:
            code, output = self._run(container, ["sh", "-c", RECORD, "sh", where], digest.encode())
            if code != 0:
                raise RuntimeError(f"cannot record the digest at {where}: {output}")
            return
        self.api.put_files(container, "/", {_relative(where): digest})

    # -- the Engine API path -----------------------------------------------------------------

    def _by_api(
        self,
        container: str,
        kind: str,
        path: str,
        text: str,
        beside: Mapping,
        signal: bool,
    ) -> None:
        """Stage (one archive), check (the binary alone), swap (one archive: the link)."""
        staged = path + STAGED_SUFFIX
        self._put(container, kind, {**beside, staged: text})
        code, output = self._check(container, kind, staged, signal)
        if code in CANNOT_RUN:
            raise RuntimeError(f"cannot run {kind}'s check in the container: {output}")
        if code != 0:
            raise CheckFailed(f"{kind} refused the config: {output}")
        swap = {_relative(path): _relative(staged)}
        self.api.put_files(container, "/", {}, links=swap)

    def _check(self, container: str, kind: str, staged: str, signal: bool) -> tuple[int, str]:
        """The binary's check of the staged file (exit code, words); none when not signalled."""
        if not signal:
            return 0, ""
        return self.api.run_in(container, KINDS[kind].check_argv(staged))

    # -- the shell path ----------------------------------------------------------------------

    def _by_shell(
        self, container: str, kind: str, path: str, text: str, digest: str, signal: bool
    ) -> bool:
        """Write, check, rename, signal and record in one ``sh -c`` (config on stdin), in the
        kept shell: no engine round trip at all, where an exec, the engine's kill and a second
        exec for the digest cost three on a node that every change keeps busy. False when all
        but the signal was done (the caller sends it through the engine); NoShell when the image
        cannot run it (nothing live was touched then)."""
        new = path + NEW_SUFFIX
        sig = KINDS[kind].reload_signal.removeprefix("SIG") if signal else "-"
        argv = ["sh", "-c", STEP, "sh", new, path, sig, "1", digest, path + DIGEST_SUFFIX]
        code, output = self._step(container, argv + check_argv(kind, new, signal), text.encode())
        if code in CANNOT_RUN or (code in STEP_FAILURES and "not found" in output):
            raise NoShell(output or f"exit code {code}")
        if code == UNSIGNALLED:
            event(log, "inplace_shell_signal_failed", logging.WARNING, container=container[:12],
                  output=output[:200], fallback="engine kill")  # fmt: skip
            return False
        if code == REFUSED:
            raise CheckFailed(f"{kind} refused the config: {output}")
        if code != 0:
            why = STEP_FAILURES.get(code, f"the in-place step failed (exit code {code})")
            raise RuntimeError(f"{why} ({path}): {output}")
        return True

    def _step(self, container: str, argv: list[str], data: bytes) -> tuple[int, str]:
        """Run ``argv`` in the shell kept in the container (opened on first use; see
        ``shell``), else by a one-shot exec, when the data does not fit a here-document. A kept
        shell that ended (the container restarted) is replaced, and the step runs again from
        its start in the new one."""
        if self.keep_shells and Shell.fits(data):
            for _ in range(2):
                shell = self.shells.get(container) or self._open(container)
                try:
                    return shell.run(argv, data)
                except ShellLost as lost:
                    self._close(container)
                    event(log, "inplace_shell_lost", container=container[:12], reason=str(lost))
                except BaseException:  # no answer, or the engine failed: the next try opens anew
                    self._close(container)
                    raise
        return self._run(container, argv, data)

    def _open(self, container: str) -> Shell:
        shell = self.shells[container] = Shell(self.api, container)
        return shell

    def _close(self, container: str) -> None:
        shell = self.shells.pop(container, None)
        if shell is not None:
            shell.close()

    def forget(self, live: set[str]) -> None:
        """Close the shells of containers that are gone."""
        for gone in set(self.shells) - live:
            self._close(gone)

    def _run(self, container: str, argv: list[str], data: bytes) -> tuple[int, str]:
        """Run ``argv`` in the container with ``data`` on its stdin: its exit code and output
        (one exec, no archive upload: on a busy node each engine round trip counts)."""
        created = self.api.exec_create(
            container, argv, stdin=True, stdout=True, stderr=True, user="0"
        )
        sock = self.api.exec_start(created["Id"], socket=True)
        try:
            raw = getattr(sock, "_sock", sock)
            with contextlib.suppress(OSError):  # an exec that could not start reads nothing
                raw.sendall(data)
                raw.shutdown(socket.SHUT_WR)
            output = b"".join(chunk for _, chunk in frames_iter(sock, tty=False))
        finally:
            sock.close()
        code = self.api.exec_inspect(created["Id"])["ExitCode"]
        return code, output.decode(errors="replace").strip()

    # -- both --------------------------------------------------------------------------------

    def _put(self, container: str, kind: str, files: Mapping[str, str]) -> None:
        """Files into the container: keys (``*.key``, an ACME certificate's, see
        ``Certificate.inline``) in an upload of their own, mode 0400 and owned by the user the
        proxy loads them as, as its secret mounts are; the rest world-readable, as its configs."""
        keys = {_relative(p): t for p, t in files.items() if p.endswith(KEY_SUFFIX)}
        rest = {_relative(p): t for p, t in files.items() if not p.endswith(KEY_SUFFIX)}
        if keys:
            uid, gid = KINDS[kind].user
            self.api.put_files(container, "/", keys, mode=KEY_MODE, owner=(int(uid), int(gid)))
        if rest:
            self.api.put_files(container, "/", rest)

    def _signal(self, container: str, kind: str, path: str) -> None:
        """Reload the master; if that fails, empty the digest so the next pass pushes again."""
        try:
            self.api.kill(container, KINDS[kind].reload_signal)
        except docker.errors.APIError:
            with contextlib.suppress(docker.errors.APIError):
                self.api.put_files(container, "/", {_relative(path + DIGEST_SUFFIX): ""})
            raise


def check_argv(kind: str, path: str, signal: bool) -> list[str]:
    """The check the shell step runs: the proxy's binary on the new file, or ``true`` when the
    change is not signalled. That file only records a runtime update: it is the live config
    (which the binary checked and loads) with server lines rewritten to what the running
    process took through its runtime API and showed back (``runtime.run_commands``), so the
    binary has nothing to decide, and its check (HAProxy parses the whole file, about 0.1 s
    of CPU) ran beside the reloads of every change that moves a task."""
    return KINDS[kind].check_argv(path) if signal else ["true"]


# The shell path's one process in the container: each exec is a process start (about 0.05 s on
# a quiet node, several times that when every node applies at once), so it does everything. The
# config comes on stdin; $1 is where it is written, $2 the live config, $3 the signal ("-": none,
# a runtime update already applied it), $4 the process told (the container's PID 1, which is
# what the engine's kill signals too), $5 the digest and $6 its file; then the check's argv.
STEP = (
    "new=$1 live=$2 sig=$3 pid=$4 digest=$5 record=$6; shift 6; "
    'cat > "$new" || { rm -f "$new"; exit 96; }; '
    'out=$("$@" 2>&1) || { rm -f "$new"; printf "%s" "$out"; exit 97; }; '
    'mv -f "$new" "$live" || exit 98; '
    '[ "$sig" = - ] || kill -s "$sig" "$pid" || exit 99; '
    'printf "%s" "$digest" > "$record.new" && mv -f "$record.new" "$record" || exit 95'
)
RECORD = 'cat > "$1.new" && mv -f "$1.new" "$1"'  # the digest on stdin; $1 the digest file
REFUSED = 97
UNSIGNALLED = 99  # swapped, but the shell could not signal: the engine's kill is tried instead
STEP_FAILURES = {
    95: "cannot record the digest beside the live config (it was signalled)",
    96: "cannot write beside the live config",
    98: "cannot replace the live config",
}
