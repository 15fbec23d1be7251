"""Wiring: build the controller's parts from settings, and the reports the CLI prints."""

from __future__ import annotations

import json
from dataclasses import dataclass

import docker

from .act import Executor
from .check import Checker
from .desired import Proxy
from .inplace import SignalPusher
from .loop import Loop
from .metrics import Telemetry
from .observe import Observer, deployed_text
from .plan import is_current
from .reconcile import PassResult, Reconciler
from .settings import Settings
from .snapshot import Snapshot


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
            Checker(api, settings.check_timeout) if settings.check_configs else None,
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


def validation_report(result: PassResult, prefix: str) -> list[str]:
    """One line per routed service (OK with its hosts, or each problem), then refused configs."""
    lines = []
    problems: dict[str, list] = {}
    for problem in result.problems:
        problems.setdefault(problem.service, []).append(problem)
    routes: dict[str, set[str]] = {}
    for desired in result.desired.proxies:
        names = {b.name: b.service for b in desired.backends}
        for route in desired.routes:
            routes.setdefault(names[route.backend], set()).add(route.host + (route.path or "/"))
    for service in sorted(set(routes) | set(problems)):
        if service in routes:
            lines.append(f"ok       {service}: {', '.join(sorted(routes[service]))}")
        lines += [
            f"{'REJECTED' if p.rejected else 'warning'} {p}" for p in problems.get(service, [])
        ]
    lines += [f"REFUSED  proxy {proxy}: {why}" for proxy, why in sorted(result.refused.items())]
    return lines


def status_data(result: PassResult, controller: Controller) -> dict:
    prefix = controller.settings.label_prefix
    served = controller.reconciler.served(
        result.snapshot, [d.proxy for d in result.desired.proxies if d.proxy.mode == "signal"]
    )
    proxies, routes = [], []
    for desired in result.desired.proxies:
        proxy, rendered = desired.proxy, result.rendered.get(desired.proxy.name)
        current = bool(rendered) and is_current(result.snapshot, prefix, proxy, rendered, served)
        proxies.append(
            {
                "proxy": proxy.name,
                "kind": proxy.spec.kind,
                "mode": proxy.mode,
                "desired": rendered.short if rendered else None,
                "in_sync": current,
                "refused": result.refused.get(proxy.name, ""),
            }
        )
        backends = {b.name: b for b in desired.backends}
        for route in desired.routes:
            backend = backends[route.backend]
            routes.append(
                {
                    "proxy": proxy.name,
                    "host": route.host,
                    "path": route.path or "/",
                    "service": backend.service,
                    "backends": len(backend.targets),
                }
            )
    rejected = [
        {"service": p.service, "label": p.label, "reason": p.reason, "proxy": p.proxy}
        for p in result.problems
        if p.rejected
    ]
    return {"proxies": proxies, "routes": routes, "rejected": rejected}


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    widths = [max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += [
        "  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths, strict=True)) for r in rows
    ]
    return lines


def status_report(result: PassResult, controller: Controller, as_json: bool) -> str:
    data = status_data(result, controller)
    if as_json:
        return json.dumps(data, indent=2)
    lines = _table(data["proxies"], ["proxy", "kind", "mode", "desired", "in_sync"])
    lines += ["", *_table(data["routes"], ["proxy", "host", "path", "service", "backends"])]
    if data["rejected"]:
        lines += ["", *_table(data["rejected"], ["service", "label", "reason"])]
    return "\n".join(lines)
