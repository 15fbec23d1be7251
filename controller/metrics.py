"""Prometheus metrics and ``/healthz`` on ``INTERLOCK_METRICS_PORT``.

``Telemetry.record`` takes each pass's result from the loop (its ``on_pass`` callback): counters
(passes, errors, reloads) go up there, and everything per proxy (routes, backends, config digest
and size, rejected services) is read from the latest result when Prometheus scrapes, so a proxy
or service that is gone leaves no stale series behind. The beacon (container figures) and the
scraper (the proxies' own traffic) run in their own threads and are read the same way.

Label values are bounded: proxy and service names, label names (never a problem's free text),
response classes. Nothing here holds or prints a configuration's text.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from . import scrape
from .beacon import NETWORK_FIELDS, Beacon
from .logs import event
from .plan import PushConfig, UpdateProxyService
from .result import PassResult
from .smallserver import BoundedHandler, SmallServer
from .vocabulary import label_kind

log = logging.getLogger(__name__)

NS = "interlock"
PASS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# -- health ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str
    last_success_age: float | None

    def body(self) -> bytes:
        age = None if self.last_success_age is None else round(self.last_success_age, 3)
        data = {"ok": self.ok, "reason": self.reason, "last_success_age_seconds": age}
        return json.dumps(data).encode() + b"\n"


def health(now: float, last_success: float | None, last_error: str, max_age: float) -> Health:
    """Healthy when the last pass that completed did so less than ``max_age`` seconds ago.

    A pass completes when it listed the Swarm and carried out its plan; failed writes to one
    proxy are errors in the metrics, not a dead controller. ``last_error`` says why passes fail.
    """
    if last_success is None:
        why = f"no pass has completed yet{': ' + last_error if last_error else ''}"
        return Health(False, why, None)
    age = now - last_success
    if age > max_age:
        why = f"last completed pass was {age:.1f}s ago (max {max_age:g}s)"
        return Health(False, why + (f": {last_error}" if last_error else ""), age)
    return Health(True, "last pass completed recently", age)


# -- collectors reading the latest state at scrape time -------------------------------------


def _tasks_per_service(backends) -> dict[str, int]:
    """Serving tasks of each service over a proxy's backends: a service may have its own
    backend and share another (canary, weights), and one series a service keeps it unique."""
    counts: dict[str, int] = {}
    for backend in backends:
        shares = backend.members or ((backend.service, len(backend.targets)),)
        for service, count in shares:
            counts[service] = counts.get(service, 0) + count
    return counts


class PassCollector:
    """Per-proxy figures of the latest pass."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterable[Metric]:
        result = self.telemetry.latest
        if result is None:
            return
        prefix = self.telemetry.prefix
        routes = GaugeMetricFamily(
            f"{NS}_proxy_routes", "Routes (host, path) a proxy serves.", labels=["proxy"]
        )
        backends = GaugeMetricFamily(
            f"{NS}_proxy_backends", "Backends (routed services) of a proxy.", labels=["proxy"]
        )
        servers = GaugeMetricFamily(
            f"{NS}_proxy_backend_servers",
            "Serving task addresses over all backends of a proxy.",
            labels=["proxy"],
        )
        empty = GaugeMetricFamily(
            f"{NS}_proxy_backends_without_servers",
            "Backends of a proxy with no serving task (they answer 503).",
            labels=["proxy"],
        )
        targets = GaugeMetricFamily(
            f"{NS}_backend_servers",
            "Serving task addresses of one routed service behind one proxy.",
            labels=["proxy", "service"],
        )
        info = GaugeMetricFamily(
            f"{NS}_proxy_config_info",
            "The rendered configuration of a proxy: its sha256 digest (first 16 hex digits).",
            labels=["proxy", "kind", "mode", "digest"],
        )
        size = GaugeMetricFamily(
            f"{NS}_proxy_config_bytes",
            "Size of a proxy's rendered configuration.",
            labels=["proxy"],
        )
        refused = GaugeMetricFamily(
            f"{NS}_proxy_config_refused",
            "1 when the latest config of a proxy was refused (render or check); it keeps the old.",
            labels=["proxy"],
        )
        for desired in result.desired.proxies:
            proxy = desired.proxy
            name = proxy.name
            routes.add_metric([name], len(desired.routes))
            backends.add_metric([name], len(desired.backends))
            servers.add_metric([name], sum(len(b.targets) for b in desired.backends))
            empty.add_metric([name], sum(1 for b in desired.backends if not b.targets))
            for service, count in sorted(_tasks_per_service(desired.backends).items()):
                targets.add_metric([name, service], count)
            rendered = result.rendered.get(name)
            if rendered is not None:
                info.add_metric([name, proxy.spec.kind, proxy.mode, rendered.short], 1)
                size.add_metric([name], len(rendered.text.encode()))
            refused.add_metric([name], 1 if name in result.refused else 0)
        yield from (routes, backends, servers, empty, targets, info, size, refused)

        rejected: dict[str, set[str]] = {}
        ignored: dict[str, int] = {}
        for problem in result.problems:
            kind = label_kind(problem.label, prefix)
            if problem.rejected:
                rejected.setdefault(kind, set()).add(problem.service)
            else:
                ignored[kind] = ignored.get(kind, 0) + 1
        family = GaugeMetricFamily(
            f"{NS}_rejected_services",
            "Services (or proxies) rejected, by the label that was wrong.",
            labels=["label"],
        )
        for kind, services in sorted(rejected.items()):
            family.add_metric([kind], len(services))
        yield family
        family = GaugeMetricFamily(
            f"{NS}_ignored_labels",
            "Labels ignored on routed services (unsupported, unknown, raw options).",
            labels=["label"],
        )
        for kind, count in sorted(ignored.items()):
            family.add_metric([kind], count)
        yield family
        routed = {b.service for d in result.desired.proxies for b in d.backends}
        yield GaugeMetricFamily(
            f"{NS}_routed_services", "Services routed by some proxy.", value=len(routed)
        )
        yield GaugeMetricFamily(
            f"{NS}_services",
            "Swarm services seen in the latest pass.",
            value=len(result.snapshot.services),
        )


class BeaconCollector:
    """Container figures, Beacon's set, labelled with container id, name, image and service."""

    LABELS = ("container_id", "name", "image", "service", "role")

    def __init__(self, beacon: Beacon) -> None:
        self.beacon = beacon

    def collect(self) -> Iterable[Metric]:
        latest = dict(self.beacon.latest)
        labels = list(self.LABELS)
        cpu = CounterMetricFamily(
            f"{NS}_container_cpu_seconds", "CPU time used by a container.", labels=labels
        )
        used = GaugeMetricFamily(
            f"{NS}_container_memory_usage_bytes",
            "Memory used by a container (less inactive page cache).",
            labels=labels,
        )
        peak = GaugeMetricFamily(
            f"{NS}_container_memory_max_usage_bytes",
            "Peak memory of a container (cgroup v1).",
            labels=labels,
        )
        limit = GaugeMetricFamily(
            f"{NS}_container_memory_limit_bytes", "Memory limit of a container.", labels=labels
        )
        percent = GaugeMetricFamily(
            f"{NS}_container_memory_percent",
            "Memory used as a percentage of the limit.",
            labels=labels,
        )
        net_labels = [*labels, "interface"]
        network = {
            name: CounterMetricFamily(
                f"{NS}_container_network_{_network_name(name)}",
                f"Network {_network_name(name).replace('_', ' ')} of a container, per interface.",
                labels=net_labels,
            )
            for name in NETWORK_FIELDS
        }
        for watched, figures in latest.values():
            values = [
                watched.container_id[:12],
                watched.name,
                watched.image,
                watched.service,
                watched.role,
            ]
            cpu.add_metric(values, figures.cpu_seconds)
            used.add_metric(values, figures.memory_used)
            limit.add_metric(values, figures.memory_limit)
            percent.add_metric(values, figures.memory_percent)
            if figures.memory_peak is not None:
                peak.add_metric(values, figures.memory_peak)
            for interface, counts in sorted(figures.networks.items()):
                for name, value in counts.items():
                    network[name].add_metric([*values, interface], value)
        yield from (cpu, used, peak, limit, percent, *network.values())
        yield GaugeMetricFamily(
            f"{NS}_beacon_containers",
            "Containers whose stats were read last round.",
            value=len(latest),
        )
        yield CounterMetricFamily(
            f"{NS}_beacon_errors", "Container stats calls that failed.", value=self.beacon.errors
        )
        yield GaugeMetricFamily(
            f"{NS}_beacon_round_seconds",
            "Seconds the last round of stats calls took.",
            value=self.beacon.round_seconds,
        )


def _network_name(field: str) -> str:
    """``rx_bytes`` -> ``receive_bytes``, ``tx_dropped`` -> ``transmit_dropped``."""
    way, _, what = field.partition("_")
    return f"{'receive' if way == 'rx' else 'transmit'}_{what}"


class ScrapeCollector:
    """The proxies' own traffic figures, per proxy task, and the scrapes' own health."""

    def __init__(self, scraper: scrape.Scraper) -> None:
        self.scraper = scraper

    def collect(self) -> Iterable[Metric]:
        latest, up, errors = self.scraper.snapshot()
        base = ["proxy", "kind", "task"]
        families: dict[str, Metric] = {}
        for name, (kind, text, extra) in scrape.METRICS.items():
            full = f"{NS}_proxy_{name.removesuffix('_total')}"
            make = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            families[name] = make(full, text, labels=[*base, *extra])
        for (proxy, task), figures in sorted(latest.items()):
            for sample in figures.samples:
                values = [proxy, figures.target.kind, task, *(v for _, v in sample.labels)]
                families[sample.name].add_metric(values, sample.value)
        yield from families.values()
        family = GaugeMetricFamily(
            f"{NS}_proxy_scrape_up",
            "1 when the last scrape of a proxy task's status page worked.",
            labels=base,
        )
        for (proxy, kind, task), ok in sorted(up.items()):
            family.add_metric([proxy, kind, task], 1 if ok else 0)
        yield family
        family = CounterMetricFamily(
            f"{NS}_proxy_scrape_errors",
            "Failed scrapes of proxy tasks, by reason (no_shared_network, timeout, connection, "
            "forbidden, http, parse).",
            labels=["proxy", "reason"],
        )
        for (proxy, reason), count in sorted(errors.items()):
            family.add_metric([proxy, reason], count)
        yield family


# -- the telemetry hub ----------------------------------------------------------------------


class ReloadCollector:
    """In-place reloads per proxy and reason, and HAProxy runtime API updates (counted where
    they happen: the controller on its own engine, or the agents, summed on the board)."""

    REASONS = ("structural", "endpoints", "restart")

    def __init__(self, totals: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        self.totals = totals

    def collect(self) -> Iterable[Metric]:
        reloads = CounterMetricFamily(
            f"{NS}_proxy_inplace_reloads",
            "In-place reloads of proxy containers, by reason: structural (more than task "
            "addresses changed), endpoints (only addresses changed, but no runtime API could "
            "take them: nginx, no socket, or it failed), restart (a new or restarted container).",
            labels=["proxy", "reason"],
        )
        runtime = CounterMetricFamily(
            f"{NS}_proxy_runtime_updates",
            "Task address changes applied through HAProxy's runtime API, without a reload.",
            labels=["proxy"],
        )
        for (proxy, outcome), count in sorted(dict(self.totals()).items()):
            if outcome == "runtime":
                runtime.add_metric([proxy], count)
            elif outcome in self.REASONS:
                reloads.add_metric([proxy, outcome], count)
        yield reloads
        yield runtime


class Telemetry:
    """The registry, the pass counters, the beacon, the scraper and the HTTP endpoint."""

    def __init__(
        self,
        prefix: str,
        health_max_age: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.prefix = prefix
        self.health_max_age = health_max_age
        self.clock = clock
        self.registry = CollectorRegistry()
        self.latest: PassResult | None = None
        self.last_success: float | None = None
        self.last_error = ""
        self.server: SmallServer | None = None  # set by whoever serves it (app.serve_metrics)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.passes = Counter(
            f"{NS}_reconcile_passes",
            "Reconcile passes, by outcome: converged, errors (some write or check failed), "
            "failed (the pass itself raised).",
            ["outcome"],
            registry=r,
        )
        self.duration = Histogram(
            f"{NS}_reconcile_pass_duration_seconds",
            "Seconds one reconcile pass took.",
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            f"{NS}_reconcile_errors",
            "Errors in reconcile passes: action (a write failed), refused (a config was refused), "
            "pass (the pass raised).",
            ["kind"],
            registry=r,
        )
        for kind in ("action", "refused", "pass"):  # at 0 from the start: increase() sees the 1st
            self.errors.labels(kind)
        for outcome in ("converged", "errors", "failed"):
            self.passes.labels(outcome)
        self.last_success_time = Gauge(
            f"{NS}_reconcile_last_success_timestamp_seconds",
            "Unix time the last pass completed.",
            registry=r,
        )
        self.last_converged_time = Gauge(
            f"{NS}_reconcile_last_converged_timestamp_seconds",
            "Unix time of the last pass after which every proxy served its desired config.",
            registry=r,
        )
        self.api_calls = Counter(
            f"{NS}_docker_api_calls", "Docker API calls made by reconcile passes.", registry=r
        )
        self.actions = Counter(
            f"{NS}_actions",
            "Writes carried out, by action and result (ok, failed).",
            ["action", "result"],
            registry=r,
        )
        self.reloads = Counter(
            f"{NS}_proxy_reloads",
            "Config changes that reached a proxy: an in-place push and reload (signal) or a "
            "service update (rolling).",
            ["proxy", "mode"],
            registry=r,
        )
        self.reload_failures = Counter(
            f"{NS}_proxy_reload_failures",
            "Config changes to a proxy that failed (push, check in place, or service update).",
            ["proxy", "mode"],
            registry=r,
        )
        r.register(PassCollector(self))
        r.register(AcmeCollector(self))
        r.register(ServerCollector(self))
        self.beacon: Beacon | None = None
        self.scraper: scrape.Scraper | None = None

    def count_reloads(self, totals: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        """Export the in-place reloads and runtime updates ``totals`` gives ((proxy, outcome))."""
        self.registry.register(ReloadCollector(totals))

    def attach(self, beacon: Beacon | None, scraper: scrape.Scraper | None) -> None:
        """Export the figures of the container-stats beacon and the proxies' scraper."""
        self.beacon, self.scraper = beacon, scraper
        if beacon:
            self.registry.register(BeaconCollector(beacon))
        if scraper:
            self.registry.register(ScrapeCollector(scraper))

    def proxies(self):
        """The latest (snapshot, proxies) a pass saw, for the scraper; None before one."""
        result = self.latest
        if result is None:
            return None
        return result.snapshot, [d.proxy for d in result.desired.proxies]

    # -- recording passes -----------------------------------------------------------------

    def record(self, result: PassResult | None, error: BaseException | None = None) -> None:
        """The loop's ``on_pass``: never raises (metrics must not stop the loop)."""
        try:
            self._record(result, error)
        except Exception as failure:
            event(log, "metrics_record_failed", logging.ERROR, error=str(failure))

    def _record(self, result: PassResult | None, error: BaseException | None) -> None:
        if result is None:
            self.passes.labels("failed").inc()
            self.errors.labels("pass").inc()
            self.last_error = f"{type(error).__name__}: {error}" if error else "pass failed"
            return
        now = self.clock()
        self.latest = result
        self.last_success, self.last_error = now, ""
        self.last_success_time.set(now)
        self.passes.labels("converged" if result.converged else "errors").inc()
        if result.converged:
            self.last_converged_time.set(now)
        self.duration.observe(result.seconds)
        self.api_calls.inc(result.api_calls)
        modes = {d.proxy.name: d.proxy.mode for d in result.desired.proxies}
        failed = 0
        for outcome in result.outcomes:
            action = outcome.action
            self.actions.labels(type(action).__name__, "ok" if outcome.ok else "failed").inc()
            failed += not outcome.ok
            if isinstance(action, PushConfig | UpdateProxyService):
                mode = (
                    "signal"
                    if isinstance(action, PushConfig)
                    else modes.get(action.proxy, "rolling")
                )
                counter = self.reloads if outcome.ok else self.reload_failures
                counter.labels(action.proxy, mode).inc()
        if failed:
            self.errors.labels("action").inc(failed)
        if result.refused:
            self.errors.labels("refused").inc(len(result.refused))

    # -- health and HTTP ------------------------------------------------------------------

    def health(self) -> Health:
        return health(self.clock(), self.last_success, self.last_error, self.health_max_age)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def serve_http(telemetry: Telemetry, address: str, port: int, timeout: float = 5.0) -> SmallServer:
    """``/metrics`` and ``/healthz`` in daemon threads (bounded: see ``smallserver``); returns
    the running server."""

    class Handler(BoundedHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, telemetry.exposition())
            elif path == "/healthz":
                verdict = telemetry.health()
                self._send(200 if verdict.ok else 503, "application/json", verdict.body())
            else:
                self._send(404, "text/plain", b"not found: try /metrics or /healthz\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return SmallServer(address, port, Handler, timeout=timeout, name="interlock-metrics").start()


class AcmeCollector:
    """Automatic HTTPS as the last pass saw it in the Swarm (``acme.py``): read at scrape time,
    so a host that stops asking for a certificate leaves the series."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterable[Metric]:
        result = self.telemetry.latest
        found = result.acme if result is not None else None
        expiry = GaugeMetricFamily(
            f"{NS}_acme_certificate_expiry_timestamp_seconds",
            "Unix time the newest ACME certificate of a host expires (hosts asking for one).",
            labels=["host"],
        )
        failed = GaugeMetricFamily(
            f"{NS}_acme_failed_attempts",
            "Failed orders in a row of a host (0: none); it is backed off meanwhile.",
            labels=["host"],
        )
        wanted = found.wanted if found else {}
        for host in sorted(wanted):
            if found and host in found.issued:
                expiry.add_metric([host], found.issued[host].expires)
            attempts = found.failures[host].attempt if found and host in found.failures else 0
            failed.add_metric([host], attempts)
        orders = GaugeMetricFamily(
            f"{NS}_acme_orders_in_flight", "ACME orders recorded in the Swarm and not done yet."
        )
        orders.add_metric([], len(found.orders) if found else 0)
        yield from (expiry, failed, orders)


class ServerCollector:
    """Connections the metrics endpoint closed before answering (a flood shows here)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterable[Metric]:
        server = self.telemetry.server
        family = CounterMetricFamily(
            f"{NS}_http_connections_closed",
            "Connections to /metrics closed unanswered: timeout (no full request in time), "
            "evicted (too many waiting), busy (every worker busy), too_large (request head).",
            labels=["reason"],
        )
        for reason, count in sorted((server.closed if server else {}).items()):
            family.add_metric([reason], count)
        yield family
