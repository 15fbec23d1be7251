"""Wiring: build the controller's parts from settings, and the reports the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass

import docker

from .act import Executor
from .check import Checker
from .desired import Proxy
from .inplace import SignalPusher
from .loop import Loop
from .metrics import Telemetry
from .observe import Observer, deployed_text
from .reconcile import Reconciler
from .settings import Settings
from .snapshot import Snapshot
from .vocabulary import Vocabulary


@dataclass
class Controller:
    settings: Settings
    api: docker.APIClient
    reconciler: Reconciler
    loop: Loop

    @classmethod
    def from_settings(cls, settings: Settings, api: docker.APIClient | None = None) -> Controller:
        """Build every part; the engine is the environment's (DOCKER_HOST) unless given."""
        api = api or docker.from_env(timeout=int(settings.docker_timeout)).api
        pusher = SignalPusher(api, settings.check_timeout)
        reconciler = Reconciler(
            settings,
            Observer(api, settings.label_prefix),
            Executor(api, push=pusher.push),
            Checker(api, settings.check_timeout, Vocabulary(settings.label_prefix).check)
            if settings.check_configs
            else None,
            served=pusher.served,
        )
        return cls(settings, api, reconciler, Loop(reconciler, api, settings.poll_interval))

    def serve(self) -> None:
        """The metrics endpoint, beacon and scraper, then the loop, which feeds them each pass."""
        telemetry = Telemetry(self.settings, self.api)
        self.loop.on_pass = telemetry.record
        telemetry.start()
        try:
            self.loop.run()
        finally:
            telemetry.stop()

    def deployed_text(self, snapshot: Snapshot, proxy: Proxy) -> str | None:
        return deployed_text(self.api, snapshot, proxy)
