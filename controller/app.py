"""The composition root: every part of the controller is built here, and only here.

Each part gets the options it uses and nothing else; no part builds another. ``Controller``
holds what was built; ``serve`` starts the metrics endpoint and the telemetry threads, runs the
loop, and stops them all again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import docker

from .acmeworker import AcmeWorker
from .act import Executor
from .agentapi import new_board, start_agents
from .beacon import Beacon
from .board import AgentObserver, Board
from .certcheck import CertificateChecker
from .check import Checker
from .desired import Proxy
from .gateway import Gateway
from .inplace import SignalPusher
from .logs import event
from .loop import Loop
from .metrics import Telemetry, serve_http
from .observe import Observer, deployed_text
from .reconcile import Reconciler
from .scrape import Scraper
from .settings import Settings
from .smallserver import SmallServer
from .snapshot import Snapshot
from .vocabulary import Vocabulary

log = logging.getLogger(__name__)


@dataclass
class Controller:
    settings: Settings
    api: Gateway  # every Docker call of the controller goes through this one
    reconciler: Reconciler
    loop: Loop
    telemetry: Telemetry
    board: Board | None = None  # agent mode: every node's agent reports here
    acme: AcmeWorker | None = None  # orders ACME certificates in a thread of its own

    @classmethod
    def from_settings(
        cls, settings: Settings, api: docker.APIClient | None = None, board: Board | None = None
    ) -> Controller:
        """Build every part; the engine is the environment's (DOCKER_HOST) unless given. With
        INTERLOCK_AGENT_PORT the agents reload proxies in place (on a ``board``, given or new)."""
        api = gateway(api or docker.from_env(timeout=int(settings.docker_timeout)).api)
        words = Vocabulary(settings.label_prefix)
        pusher = SignalPusher(api, settings.check_timeout, runtime_dir=settings.runtime_dir)
        checker = (
            Checker(api, settings.check_timeout, words.check) if settings.check_configs else None
        )
        observer, push, served = Observer(api, settings.label_prefix), pusher.push, pusher.served
        refused_by_agents: Callable[[], set[str]] = set
        if board is None and settings.agent_port:
            board = new_board(settings)
        if board is not None:  # the agents write into containers; the controller into none
            observer, push, served = AgentObserver(observer, board), board.push, board.served
            refused_by_agents = board.refused
        cert_checker = (
            CertificateChecker(api, settings.label_prefix, settings.check_timeout)
            if settings.check_configs
            else None
        )
        reconciler = Reconciler(
            settings,
            observer,
            Executor(api, push=push),
            checker,
            served,
            lambda: api.calls,
            cert_checker,
            refused_by_agents,
        )
        telemetry = build_telemetry(settings, api)
        counted = board if board is not None else pusher.converger
        telemetry.count_reloads(lambda: dict(counted.totals))
        worker = AcmeWorker(api, settings)

        def on_pass(result, error) -> None:
            telemetry.record(result, error)
            worker.offer(result, error)

        loop = Loop(reconciler, api, settings.poll_interval, on_pass, words.check)
        worker.wake = loop.wake.set
        return cls(settings, api, reconciler, loop, telemetry, board, worker)

    def serve(self) -> None:
        """The metrics endpoint, beacon and scraper, then the loop, which feeds them each pass."""
        server = serve_metrics(self.telemetry, self.settings)
        parts = [p for p in (self.telemetry.beacon, self.telemetry.scraper) if p] if server else []
        for part in parts:
            part.start()
        agents = (
            start_agents(self.board, self.settings, self.loop, self.telemetry)
            if self.board
            else None
        )
        if self.acme is not None:
            self.acme.start()
        try:
            self.loop.run()
        finally:
            if self.acme is not None:
                self.acme.stop.set()
            if agents:
                agents.stop()
            for part in parts:
                part.stop.set()
            if server:
                server.shutdown()
                server.server_close()

    def deployed_text(self, snapshot: Snapshot, proxy: Proxy) -> str | None:
        return deployed_text(self.api, snapshot, proxy)


def gateway(api: docker.APIClient | Gateway) -> Gateway:
    """The one gateway for this engine (an engine client given twice is wrapped once)."""
    return api if isinstance(api, Gateway) else Gateway(api)


def build_telemetry(
    settings: Settings, api: docker.APIClient | None, clock: Callable[[], float] = time.time
) -> Telemetry:
    """Pass counters, and the beacon and scraper when their intervals are set."""
    telemetry = Telemetry(settings.label_prefix, settings.health_max_age_seconds, clock)
    beacon = None
    if api is not None and settings.beacon_interval:
        beacon = Beacon(
            api,
            lambda: telemetry.latest.snapshot if telemetry.latest else None,
            settings.label_prefix,
            settings.beacon_interval,
            settings.beacon_image_pattern,
            settings.beacon_label,
        )
    scraper = None
    if settings.scrape_interval and settings.proxy_status_port:
        scraper = Scraper(
            telemetry.proxies,
            settings.proxy_status_port,
            settings.scrape_interval,
            settings.scrape_timeout,
        )
    telemetry.attach(beacon, scraper)
    return telemetry


def serve_metrics(telemetry: Telemetry, settings: Settings) -> SmallServer | None:
    """/metrics and /healthz; None when the port is 0 (then nothing else starts either: nothing
    would read the beacon's and the scraper's figures)."""
    if not settings.metrics_port:
        return None
    address, port = settings.metrics_address, settings.metrics_port
    try:
        server = serve_http(telemetry, address, port, settings.metrics_timeout)
    except OSError as error:
        shown = f"[{address}]" if ":" in address else address
        raise RuntimeError(
            f"cannot serve metrics on {shown}:{port} "
            f"(INTERLOCK_METRICS_ADDRESS, INTERLOCK_METRICS_PORT): {error}"
        ) from None
    telemetry.server = server
    event(log, "metrics_listening", address=address, port=server.server_address[1])
    return server
