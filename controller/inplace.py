"""Signal mode on the controller's own engine: write the config into running proxy containers
and reload them in place (the steps themselves are in ``reload``, shared with the agent).

The digest file is the state: after a controller restart, ``served`` reads it back once per
container, so an unchanged proxy gets nothing and a new or restarted one gets the current config.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import docker

from .bounded import remember
from .desired import Proxy
from .plan import PushConfig, proxy_containers
from .reload import DIGEST_SUFFIX, STAGED_SUFFIX, CheckFailed, InPlace
from .runtime import Converger
from .snapshot import Snapshot

log = logging.getLogger(__name__)

__all__ = ["DIGEST_SUFFIX", "STAGED_SUFFIX", "CheckFailed", "SignalPusher"]


@dataclass
class SignalPusher:
    api: docker.APIClient
    timeout: float = 30.0
    known: dict[str, str] = field(default_factory=dict)  # container id -> digest it serves
    refused: dict[tuple[str, str], str] = field(default_factory=dict)  # (container, digest) -> why
    runtime_dir: str = ""  # where the proxies' runtime sockets are ("" always reloads)

    def __post_init__(self) -> None:
        self.converger = Converger(InPlace(self.api), self.runtime_dir)

    def served(self, snapshot: Snapshot, proxies: list[Proxy]) -> dict[str, str]:
        """What each reachable proxy container serves; read from the container once, then kept."""
        live = {}
        reader = InPlace(self.api)
        for proxy in proxies:
            for container in proxy_containers(snapshot, proxy):
                if container not in self.known:
                    self.known[container] = reader.served(container, proxy.spec.config_path)
                live[container] = self.known[container]
        self.known = dict(live)
        self.converger.forget(set(live))
        return live

    def push(self, action: PushConfig) -> None:
        key = (action.container_id, action.digest)
        if key in self.refused:
            raise CheckFailed(self.refused[key])
        try:
            self.converger.apply(
                action.container_id,
                action.kind,
                action.path,
                action.text,
                action.digest,
                action.files,
                proxy=action.proxy,
                serving=self.known.get(action.container_id, ""),
            )
        except CheckFailed as refused:
            remember(self.refused, key, str(refused))
            raise
        self.known[action.container_id] = action.digest
