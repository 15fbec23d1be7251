"""Reload one proxy container in place: the steps both the controller (signal mode on its own
engine) and the per-node agent (``interlock agent``) take, so there is one implementation.

For a container: write the new file beside the live one (sent on the stdin of one ``sh`` in the
container, which also checks it with the proxy's own binary, renames it over the live file,
atomic within one directory, and writes the digest file that records what the container
serves), then signal the proxy's master process (nginx SIGHUP, HAProxy
master-worker SIGUSR2). A config that fails its check is removed and nothing is signalled: the
proxy keeps serving the old one, and the proxy's own words say why.

The digest file beside the config (``<path>.interlock-digest``) is the state: whoever reads it
back after a restart knows what the container serves without trusting any memory.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from docker.utils.socket import frames_iter

from .gateway import Gateway
from .kinds import KINDS

log = logging.getLogger(__name__)

NEW_SUFFIX = ".interlock-new"
DIGEST_SUFFIX = ".interlock-digest"


class CheckFailed(RuntimeError):
    """The proxy's binary refused the config inside the container; nothing was signalled."""


@dataclass
class InPlace:
    """In-place reloads of containers on one engine (``api``)."""

    api: Gateway

    def __post_init__(self) -> None:
        if not isinstance(self.api, Gateway):  # an engine client given as it is: wrap it once
            self.api = Gateway(self.api)

    def served(self, container: str, path: str) -> str:
        """The digest the container serves, from the file beside its config ("" if none)."""
        return (self.api.read_file(container, path + DIGEST_SUFFIX) or "").strip()

    def _run(self, container: str, argv: list[str], data: bytes) -> tuple[int, str]:
        """Run ``argv`` in the container with ``data`` on its stdin: its exit code and output
        (one exec, no archive upload: on a busy node each engine round trip counts)."""
        created = self.api.exec_create(
            container, argv, stdin=True, stdout=True, stderr=True, user="0"
        )
        sock = self.api.exec_start(created["Id"], socket=True)
        try:
            raw = getattr(sock, "_sock", sock)
            raw.sendall(data)
            raw.shutdown(socket.SHUT_WR)
            output = b"".join(chunk for _, chunk in frames_iter(sock, tty=False))
        finally:
            sock.close()
        code = self.api.exec_inspect(created["Id"])["ExitCode"]
        return code, output.decode(errors="replace").strip()

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
        """Write, check, swap, signal (``signal`` off: the running proxy already serves it,
        through HAProxy's runtime API, and only the file must say so). Raises ``CheckFailed``
        with the proxy's own words when its binary refuses the config (then the live file and
        the proxy are untouched).

        ``files`` (absolute path -> text) are the files the config names beside it (HAProxy's
        crt-list): named by their content, so they are written as they are, before the check.
        """
        beside = {p: t for p, t in (files or {}).items() if p.startswith(f"{path}.")}
        if beside:
            self.api.put_files(container, "/", {p.lstrip("/"): t for p, t in beside.items()})
        new, digest_new = path + NEW_SUFFIX, path + DIGEST_SUFFIX + ".new"
        argv = ["sh", "-c", STEP, "sh", new, path, digest_new, path + DIGEST_SUFFIX, digest]
        code, output = self._run(container, argv + KINDS[kind].check_argv(new), text.encode())
        if code == REFUSED:
            raise CheckFailed(f"{kind} refused the config: {output}")
        if code != 0:
            why = STEP_FAILURES.get(code, f"the in-place step failed (exit code {code})")
            raise RuntimeError(f"{why} ({path}): {output}")
        if signal:
            self.api.kill(container, KINDS[kind].reload_signal)


# Write, check, swap and record in one process in the container: each exec is a process start
# (about 0.1 s, more on a busy node), and the reload must be done within the 2 s Swarm gives a
# stopping task. The config comes on stdin; $1 is where it is staged, $2 the live config, $3
# and $4 their digest files, $5 the digest, then the check's argv.
STEP = (
    "new=$1 live=$2 dnew=$3 dlive=$4 digest=$5; shift 5; "
    'cat > "$new" && printf "%s" "$digest" > "$dnew" || { rm -f "$new" "$dnew"; exit 96; }; '
    'out=$("$@" 2>&1) || { rm -f "$new" "$dnew"; printf "%s" "$out"; exit 97; }; '
    'mv -f "$new" "$live" || exit 98; mv -f "$dnew" "$dlive" || exit 99'
)
REFUSED = 97
STEP_FAILURES = {
    96: "cannot write beside the live config",
    98: "cannot replace the live config",
    99: "cannot record the digest beside the config",
    126: "the proxy's image cannot run sh (signal mode needs sh, cat, mv and rm in it)",
    127: "the proxy's image has no sh (signal mode needs sh, cat, mv and rm in it)",
}
