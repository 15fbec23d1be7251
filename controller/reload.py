"""Reload one proxy container in place: the steps both the controller (signal mode on its own
engine) and the per-node agent (``interlock agent``) take, so there is one implementation.

For a container: upload the new file beside the live one, check it there with the proxy's own
binary, rename it over the live file (atomic within one directory), write the digest file that
records what the container serves, then signal the proxy's master process (nginx SIGHUP, HAProxy
master-worker SIGUSR2). A config that fails its check is removed and nothing is signalled: the
proxy keeps serving the old one, and the proxy's own words say why.

The digest file beside the config (``<path>.interlock-digest``) is the state: whoever reads it
back after a restart knows what the container serves without trusting any memory.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass

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

    def served(self, container: str, path: str) -> str:
        """The digest the container serves, from the file beside its config ("" if none)."""
        return (self.api.read_file(container, path + DIGEST_SUFFIX) or "").strip()

    def _exec(self, container: str, command: list[str]) -> tuple[int, str]:
        return self.api.run_in(container, command)

    def apply(self, container: str, kind: str, path: str, text: str, digest: str) -> None:
        """Write, check, swap, signal. Raises ``CheckFailed`` with the proxy's own words when
        its binary refuses the config (then the live file and the proxy are untouched)."""
        folder, name = posixpath.split(path)
        new, digest_new = name + NEW_SUFFIX, name + DIGEST_SUFFIX + ".new"
        self.api.put_files(container, folder, {new: text, digest_new: digest})
        staged = posixpath.join(folder, new)
        code, output = self._exec(container, KINDS[kind].check_argv(staged))
        if code != 0:
            self._exec(container, ["rm", "-f", staged, posixpath.join(folder, digest_new)])
            raise CheckFailed(f"{kind} refused the config: {output}")
        self._swap(container, folder, new, name, digest_new)
        self.api.kill(container, KINDS[kind].reload_signal)

    def _swap(self, container: str, folder: str, new: str, name: str, digest_new: str) -> None:
        """Rename the checked file over the live one, then record its digest beside it."""
        live = posixpath.join(folder, name)
        moves = ["mv", "-f", posixpath.join(folder, new), live]
        code, output = self._exec(container, moves)
        if code != 0:
            raise RuntimeError(f"cannot replace {live}: {output}")
        digest_moves = ["mv", "-f", posixpath.join(folder, digest_new), live + DIGEST_SUFFIX]
        code, output = self._exec(container, digest_moves)
        if code != 0:
            raise RuntimeError(f"cannot record the digest beside {live}: {output}")
