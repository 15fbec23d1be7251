"""Signal mode: write the config into running proxy containers and reload them in place.

For each container: upload the new file beside the live one, check it there with the proxy's own
binary, rename it over the live file (atomic within one directory), write the digest file that
records what the container serves, then signal the proxy's master process (nginx SIGHUP, HAProxy
master-worker SIGUSR2). A config that fails its check is removed and nothing is signalled: the
proxy keeps serving the old one.

The digest file is the state: after a controller restart, ``served`` reads it back once per
container, so an unchanged proxy gets nothing and a new or restarted one gets the current config.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field

import docker

from .bounded import remember
from .check import tar_files
from .desired import Proxy
from .kinds import KINDS
from .observe import read_container_file
from .plan import PushConfig, proxy_containers
from .snapshot import Snapshot

log = logging.getLogger(__name__)

NEW_SUFFIX = ".interlock-new"
DIGEST_SUFFIX = ".interlock-digest"


class CheckFailed(RuntimeError):
    """The proxy's binary refused the config inside the container; nothing was signalled."""


@dataclass
class SignalPusher:
    api: docker.APIClient
    timeout: float = 30.0
    known: dict[str, str] = field(default_factory=dict)  # container id -> digest it serves
    refused: dict[tuple[str, str], str] = field(default_factory=dict)  # (container, digest) -> why

    def served(self, snapshot: Snapshot, proxies: list[Proxy]) -> dict[str, str]:
        """What each reachable proxy container serves; read from the container once, then kept."""
        live = {}
        for proxy in proxies:
            for container in proxy_containers(snapshot, proxy):
                if container not in self.known:
                    path = proxy.spec.config_path + DIGEST_SUFFIX
                    self.known[container] = (
                        read_container_file(self.api, container, path) or ""
                    ).strip()
                live[container] = self.known[container]
        self.known = dict(live)
        return live

    def _exec(self, container: str, command: list[str]) -> tuple[int, str]:
        result = self.api.exec_create(container, command, user="0", stdout=True, stderr=True)
        output = self.api.exec_start(result["Id"]).decode(errors="replace")
        return self.api.exec_inspect(result["Id"])["ExitCode"], output.strip()

    def push(self, action: PushConfig) -> None:
        key = (action.container_id, action.digest)
        if key in self.refused:
            raise CheckFailed(self.refused[key])
        folder, name = posixpath.split(action.path)
        new, digest_new = name + NEW_SUFFIX, name + DIGEST_SUFFIX + ".new"
        self.api.put_archive(
            action.container_id, folder, tar_files({new: action.text, digest_new: action.digest})
        )
        staged = posixpath.join(folder, new)
        code, output = self._exec(action.container_id, KINDS[action.kind].check_argv(staged))
        if code != 0:
            self._exec(
                action.container_id, ["rm", "-f", staged, posixpath.join(folder, digest_new)]
            )
            remember(self.refused, key, f"{action.kind} refused the config: {output}")
            raise CheckFailed(self.refused[key])
        self._swap(action.container_id, folder, new, name, digest_new)
        self.api.kill(action.container_id, KINDS[action.kind].reload_signal)
        self.known[action.container_id] = action.digest

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
