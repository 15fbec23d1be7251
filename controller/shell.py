"""A shell kept open in a proxy container, so that an in-place apply starts no process through
the engine.

Why: every exec is a process the engine starts in the container (``runc exec``: namespaces,
cgroup, a new process), about 0.05 s of engine work on a quiet node of the 3-node bed, 0.1-0.4 s
when a change reaches every node and six proxies apply at once on two cores. The apply itself
(write, check, rename, signal) takes a few milliseconds. Measured on a node of the bed, the whole
apply by one exec: 49 ms (median); written into a kept shell: 7 ms.

The wire: one exec of ``sh`` per container (stdin, stdout and stderr attached, no terminal),
opened by the first apply and kept. Each command is written as its argv, quoted for ``sh``,
reading a here-document: ``<argv> <<'<end>'``, the data, the ``<end>`` line; then ``printf
'\\n<done> %s\\n' "$?"``. Both words carry a fresh random token, so no data can end the
here-document early or fake the answer, and the command reads its data, never the commands that
follow. The answer is everything the command wrote (the engine's frames, stdout and stderr in
the order they came) before the done line, and the exit code that line carries.

A here-document ends its last line with a newline and cannot carry a NUL: data that does not end
with a newline or holds a NUL does not ``fit``, and the caller runs a one-shot exec instead.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import socket
import struct
import threading
from typing import Any

import docker.errors

ANSWER_TIMEOUT = 120.0  # seconds a command may take (a large HAProxy config's check included)
CANNOT_RUN = (126, 127)  # the engine's exit codes for an exec whose binary cannot start


END, DONE = "INTERLOCK_END_", "INTERLOCK_DONE_"  # + the command's token


def command(argv: list[str], data: bytes, token: str) -> bytes:
    """What the shell is sent to run ``argv`` with ``data`` on its stdin and answer its exit
    code on a line of its own; ``token`` must not occur in ``data`` (pure)."""
    end, done = f"{END}{token}", f"{DONE}{token}"
    return (
        f"{shlex.join(argv)} <<'{end}'\n".encode()
        + data
        + f"{end}\nprintf '\\n{done} %s\\n' \"$?\"\n".encode()
    )


class ShellLost(RuntimeError):
    """The shell ended before it answered (its container stopped or restarted): the caller may
    run the command again in a new shell (what ran of it is repeatable)."""


class Shell:
    """One ``sh`` kept running in ``container``, through ``api`` (the gateway)."""

    def __init__(self, api: Any, container: str, timeout: float = ANSWER_TIMEOUT) -> None:
        self.api, self.container = api, container
        created = api.exec_create(container, ["sh"], stdin=True, stdout=True, stderr=True, user="0")
        self.exec_id = created["Id"]
        self.stream = api.exec_start(self.exec_id, socket=True)  # keeps the response alive
        self.sock: socket.socket = getattr(self.stream, "_sock", self.stream)
        self.sock.settimeout(timeout)
        self.lock = threading.Lock()

    @staticmethod
    def fits(data: bytes) -> bool:
        """Whether a here-document carries ``data`` byte for byte."""
        return data.endswith(b"\n") and b"\0" not in data

    def run(self, argv: list[str], data: bytes) -> tuple[int, str]:
        """Run ``argv`` with ``data`` on its stdin: its exit code and output. Raises
        ``ShellLost`` when the shell ended first; a shell that never started (no ``sh`` in the
        image) answers the engine's exit code (126 or 127) and words, as a one-shot exec does."""
        token = secrets.token_hex(16)
        while token.encode() in data:  # never by chance (128 bits): but then nothing can end it
            token = secrets.token_hex(16)
        with self.lock:
            with contextlib.suppress(OSError):  # a shell that ended: the read says how
                self.sock.sendall(command(argv, data, token))
            return self._answer(f"\n{DONE}{token} ".encode())

    def _answer(self, done: bytes) -> tuple[int, str]:
        """Frames until the done line; its exit code and what came before it."""
        out = b""
        try:
            while True:
                out += self._frame()
                at = out.rfind(done)
                if at >= 0 and out.endswith(b"\n"):
                    code = int(out[at + len(done) :].strip() or b"-1")
                    return code, out[:at].decode(errors="replace").strip()
        except EOFError:
            pass
        except OSError as error:  # a timeout included: the command may still run; never rerun
            self.close()
            why = f"no answer from the shell in {self.container[:12]}: {error}"
            raise RuntimeError(why) from error
        words = out.decode(errors="replace").strip()
        try:
            code = self.api.exec_inspect(self.exec_id).get("ExitCode")
        except docker.errors.APIError as error:  # the engine restarted: it forgot the exec
            raise ShellLost(f"the shell is gone ({error}): {words[-200:]}") from error
        if code in CANNOT_RUN:
            return code, words
        raise ShellLost(f"the shell ended (exit code {code}): {words[-200:]}")

    def _frame(self) -> bytes:
        """One frame of the engine's stream (8-byte header: stream, 3 zero bytes, size)."""
        _, size = struct.unpack(">BxxxL", self._exactly(8))
        return self._exactly(size)

    def _exactly(self, size: int) -> bytes:
        got = bytearray()
        while len(got) < size:
            chunk = self.sock.recv(size - len(got))
            if not chunk:
                raise EOFError
            got += chunk
        return bytes(got)

    def close(self) -> None:
        """End the shell: the engine closes its stdin, and ``sh`` exits at the end of input."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        for closable in (self.sock, self.stream):
            with contextlib.suppress(OSError):
                closable.close()
