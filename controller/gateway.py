"""The one gateway to the Docker Engine: every call the controller or an agent makes.

Every Engine API call goes through ``Gateway``: one retry policy (``retry.docker_call``: a
connection error, a timeout or a 5xx is tried again with back-off; a refusal is not, the next
pass decides anew) and one call counter, so ``interlock_docker_api_calls_total`` counts what the
process really did. The gateway answers to the SDK's own method names (``gateway.services()``
is ``APIClient.services()``, retried and counted), and adds the engine helpers the stages share
(files into and out of a container, a command run in one), so no I/O module reaches into
another's internals.
"""

from __future__ import annotations

import io
import itertools
import posixpath
import struct
import tarfile
import time
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

import docker.errors

from .retry import docker_call


class Gateway:
    """A ``docker.APIClient`` whose every call is retried and counted."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self._counter = itertools.count()
        self._count = 0

    @property
    def calls(self) -> int:
        """Engine API calls made so far (each attempt of a retried call counts)."""
        return self._count

    def _counted(self) -> None:
        self._count = next(self._counter) + 1  # itertools.count is atomic under the GIL

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.api, name)
        if not callable(method):
            return method

        @docker_call
        def call(*args: Any, **kwargs: Any) -> Any:
            self._counted()
            return method(*args, **kwargs)

        return call

    # -- engine helpers shared by the stages ----------------------------------------------

    def put_files(
        self,
        container: str,
        folder: str,
        files: Mapping[str, str],
        mode: int = 0o644,
        links: Mapping[str, str] | None = None,
        owner: tuple[int, int] = (0, 0),
    ) -> None:
        """Write text files (names relative to ``folder``) into a container in one upload;
        ``links`` (name -> existing name) become hard links first, then the files are written
        (mode ``mode``, uid and gid ``owner``: a key readable by the proxy's user alone)."""
        self.put_archive(container, folder, tar_files(files, mode, links, owner))

    def read_file(self, container: str, path: str) -> str | None:
        """A file's text from inside a container (None when it is not there)."""
        try:
            stream, _ = self.get_archive(container, path)
        except docker.errors.NotFound:
            return None
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.next()
            handle = archive.extractfile(member) if member else None
            return handle.read().decode(errors="replace") if handle else None

    @docker_call
    def service_output(self, service: str, timeout: float = 30.0, tail: str = "all") -> bytes:
        """What a service's tasks wrote (stdout and stderr, not followed), read within
        ``timeout`` seconds of silence. The SDK's ``service_logs`` always streams with its
        socket timeout turned off, and a Swarm log read that never ends (a task whose node
        stopped answering) would hold its caller, and with it a pass, forever."""
        self._counted()
        params = {"stdout": 1, "stderr": 1, "follow": 0, "timestamps": 0, "tail": tail}
        url = self.api._url("/services/{0}/logs", service)
        response = self.api.get(url, params=params, timeout=timeout)
        self.api._raise_for_status(response)
        return b"".join(demultiplexed(response.content))

    def run_in(self, container: str, argv: list[str], user: str = "0") -> tuple[int, str]:
        """Run a command in a running container: its exit code and output."""
        created = self.exec_create(container, argv, user=user, stdout=True, stderr=True)
        output = self.exec_start(created["Id"]).decode(errors="replace")
        return self.exec_inspect(created["Id"])["ExitCode"], output.strip()


def demultiplexed(buffer: bytes) -> list[bytes]:
    """The payloads of an Engine log buffer without a TTY: frames of an 8-byte header (stream,
    three zero bytes, a big-endian length) and that many bytes."""
    chunks, at = [], 0
    while len(buffer) - at >= 8:
        (length,) = struct.unpack_from(">L", buffer, at + 4)
        chunks.append(buffer[at + 8 : at + 8 + length])
        at += 8 + length
    return chunks


def tar_files(
    files: Mapping[str, str],
    mode: int = 0o644,
    links: Mapping[str, str] | None = None,
    owner: tuple[int, int] = (0, 0),
) -> bytes:
    """A tar archive of text files (parent folders included), as the archive upload takes it.

    ``links`` (name -> an existing name, both relative to where it is extracted) come before the
    files, in order: the engine extracts entries one by one, and the order is what a reader who
    comes in between sees. A hard link replaces its name in one ``link(2)``: never a partial
    file, unlike a file the engine writes in place.
    """
    buffer = io.BytesIO()
    names = [*(links or {}), *files]
    folders = sorted({str(PurePosixPath(n).parent) for n in names} - {"."})
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
            archive.addfile(info)
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(posixpath.normpath(name))
            info.type, info.linkname = tarfile.LNKTYPE, posixpath.normpath(target)
            info.mode, info.mtime = mode, int(time.time())
            archive.addfile(info)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(posixpath.normpath(name))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            info.uid, info.gid = owner
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
