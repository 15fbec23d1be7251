"""What every proxy should serve, computed from a snapshot alone (pure).

For each proxy (a service or a plain container labelled ``<prefix>.ext.name``) this picks the app
services of its cluster, the network on which it reaches them, and the addresses of their serving
tasks. Conflicts are settled by a fixed rule: when two services claim the same host and path, the
service created first keeps it (ties broken by service id), so a newcomer can never take over a
route that is already served; the loser is reported.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from . import labels as lbl
from .labels import AppSpec, Problem, ProxySpec
from .snapshot import Network, Service, Snapshot, Task

_UNSAFE = re.compile(r"[^a-z0-9_]")


@dataclass(frozen=True)
class Proxy:
    """A load balancer the controller converges; a service, or a plain container (signal only)."""

    name: str
    spec: ProxySpec
    mode: str
    image: str
    network_ids: tuple[str, ...]
    service_id: str = ""
    container_id: str = ""


@dataclass(frozen=True)
class Backend:
    name: str
    service: str
    port: int
    targets: tuple[str, ...]  # "address:port" of serving tasks, sorted
    balance: str | None = None
    strip_prefix: str = ""  # the context root removed before forwarding ("" keeps the path)
    health_check: str = ""  # HAProxy's active check path ("" none)
    health_interval_ms: int = 2000


@dataclass(frozen=True)
class Route:
    host: str
    path: str  # "" routes the whole host
    rewrite: bool
    backend: str


@dataclass(frozen=True)
class Certificate:
    """A certificate and its key, mounted from Docker secrets as /run/secrets/<file>[.key]."""

    file: str
    cert_secret: str
    key_secret: str


@dataclass(frozen=True)
class HostTls:
    host: str
    file: str  # the Certificate's file
    only: bool  # plain HTTP is redirected to HTTPS


@dataclass(frozen=True)
class DesiredProxy:
    proxy: Proxy
    routes: tuple[Route, ...]
    backends: tuple[Backend, ...]
    tls: tuple[HostTls, ...] = ()
    certificates: tuple[Certificate, ...] = ()


@dataclass(frozen=True)
class Desired:
    proxies: tuple[DesiredProxy, ...]
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class _App:
    service: Service
    spec: AppSpec


def backend_name(service: Service) -> str:
    """A config identifier that is unique per service and safe in both proxies' grammars."""
    return f"{_UNSAFE.sub('_', service.name.lower())[:48]}_{service.id[:10].lower()}"


def find_proxies(
    snapshot: Snapshot, prefix: str, default_mode: str
) -> tuple[list[Proxy], list[Problem]]:
    """Proxy services, and plain labelled containers that no service owns."""
    proxies: list[Proxy] = []
    problems: list[Problem] = []
    for service in snapshot.services:
        if lbl.is_proxy(service.labels, prefix):
            spec, found = lbl.parse_proxy(service.name, service.labels, prefix)
            problems += found
            if spec:
                mode = spec.mode or default_mode
                proxies.append(
                    Proxy(service.name, spec, mode, service.image, service.network_ids, service.id)
                )
    for container in snapshot.containers:
        if container.service_id or not lbl.is_proxy(container.labels, prefix):
            continue
        spec, found = lbl.parse_proxy(container.name, container.labels, prefix)
        problems += found
        if spec:
            proxies.append(
                Proxy(
                    container.name,
                    spec,
                    "signal",
                    container.image,
                    container.network_ids,
                    container_id=container.id,
                )
            )
    return proxies, problems


def _apps(snapshot: Snapshot, prefix: str) -> tuple[list[_App], list[Problem]]:
    """Routed app services, oldest first (the order that settles conflicts)."""
    apps, problems = [], []
    routed = [
        s
        for s in snapshot.services
        if lbl.is_routed(s.labels, prefix) and not lbl.is_proxy(s.labels, prefix)
    ]
    for service in sorted(routed, key=lambda s: (s.created_at, s.id)):
        spec, found = lbl.parse_app(service.name, service.labels, prefix)
        problems += found
        if spec:
            apps.append(_App(service, spec))
    return apps, problems


def _network(app: _App, proxy: Proxy, networks: Iterable[Network], prefix: str) -> str | Problem:
    """The one network on which this proxy reaches this app's tasks, or why there is none."""
    names = {net.id: net.name for net in networks}
    shared = sorted(set(app.service.network_ids) & set(proxy.network_ids))
    label = f"{prefix}.network"
    if app.spec.network:
        wanted = [n for n in app.service.network_ids if app.spec.network in (n, names.get(n))]
        if not wanted:
            return Problem(
                app.service.name,
                label,
                f"service is not attached to network {app.spec.network}",
                proxy=proxy.name,
            )
        if wanted[0] not in proxy.network_ids:
            return Problem(
                app.service.name,
                label,
                f"proxy {proxy.name} is not attached to network {app.spec.network}",
                proxy=proxy.name,
            )
        return wanted[0]
    if len(shared) == 1:
        return shared[0]
    on = ", ".join(sorted(names.get(n, n) for n in (shared or app.service.network_ids))) or "none"
    reason = (
        f"shares {len(shared)} networks with proxy {proxy.name} ({on}); set {label}"
        if shared
        else f"shares no network with proxy {proxy.name}; attach the proxy to one of: {on}"
    )
    return Problem(app.service.name, label, reason, proxy=proxy.name)


def _port(app: _App, prefix: str) -> int | Problem:
    if app.spec.port:
        return app.spec.port
    if len(app.service.target_ports) == 1:
        return app.service.target_ports[0]
    return Problem(
        app.service.name,
        f"{prefix}.port",
        f"missing, and the service publishes {len(app.service.target_ports)} target ports "
        "(need exactly one to default to)",
    )


def certificate(cert_secret: str, key_secret: str) -> Certificate:
    """The file name depends on both secrets, so two pairs never share a file."""
    tag = hashlib.sha256(f"{cert_secret}\0{key_secret}".encode()).hexdigest()[:12]
    return Certificate(f"tls-{tag}.pem", cert_secret, key_secret)


def _tls_problem(app: _App, proxy: Proxy, snapshot: Snapshot, prefix: str) -> Problem | None:
    """Why this app's TLS cannot be served by this proxy (then it is not served there at all)."""
    tls = app.spec.tls
    if not tls:
        return None
    names = {secret.name for secret in snapshot.secrets}
    for label, secret in (("ssl_cert", tls.cert_secret), ("ssl_cert_key", tls.key_secret)):
        if secret not in names:
            return Problem(
                app.service.name,
                f"{prefix}.{label}",
                f"Docker secret {secret} does not exist",
                proxy=proxy.name,
            )
    if not proxy.service_id:
        return Problem(
            app.service.name,
            f"{prefix}.ssl_cert",
            f"proxy {proxy.name} is a plain "
            "container and cannot mount secrets; use a proxy service",
            proxy=proxy.name,
        )
    return None


def targets(tasks: Iterable[Task], network_id: str, port: int) -> tuple[str, ...]:
    """Addresses of the tasks that should take traffic now: stopping tasks are already out."""
    found = {t.addresses[network_id] for t in tasks if t.serving and network_id in t.addresses}
    return tuple(f"{address}:{port}" for address in sorted(found))


def _desired_proxy(
    proxy: Proxy,
    apps: list[_App],
    snapshot: Snapshot,
    tasks_by_service: dict[str, list[Task]],
    prefix: str,
) -> tuple[DesiredProxy, list[Problem]]:
    routes: dict[tuple[str, str], Route] = {}
    owners: dict[tuple[str, str], str] = {}
    backends: list[Backend] = []
    problems: list[Problem] = []
    tls: dict[str, HostTls] = {}
    certificates: dict[str, Certificate] = {}
    for app in apps:
        if app.spec.cluster != proxy.spec.cluster:
            continue
        network, port = _network(app, proxy, snapshot.networks, prefix), _port(app, prefix)
        refused = _tls_problem(app, proxy, snapshot, prefix)
        if isinstance(network, Problem) or isinstance(port, Problem) or refused:
            problems += [p for p in (network, port, refused) if isinstance(p, Problem)]
            continue
        name = backend_name(app.service)
        served = False
        for host in app.spec.hosts:
            key = (host, app.spec.context_root)
            if key in routes:
                problems.append(_conflict(app, key, owners[key], prefix, proxy))
                continue
            routes[key] = Route(host, app.spec.context_root, app.spec.rewrite, name)
            owners[key], served = app.service.name, True
            if app.spec.tls and host not in tls:  # the oldest TLS service of a host sets it
                cert = certificate(app.spec.tls.cert_secret, app.spec.tls.key_secret)
                certificates[cert.file] = cert
                tls[host] = HostTls(host, cert.file, app.spec.tls.only)
        if served:
            found = targets(tasks_by_service.get(app.service.id, ()), network, port)
            strip = app.spec.context_root if app.spec.rewrite else ""
            backends.append(
                Backend(
                    name,
                    app.service.name,
                    port,
                    found,
                    app.spec.balance,
                    strip,
                    app.spec.health_check,
                    app.spec.health_interval_ms,
                )
            )
    ordered = tuple(routes[key] for key in sorted(routes))
    host_tls = tuple(tls[host] for host in sorted(tls))
    certs = tuple(certificates[file] for file in sorted(certificates))
    return DesiredProxy(proxy, ordered, tuple(backends), host_tls, certs), problems


def _conflict(app: _App, key: tuple[str, str], owner: str, prefix: str, proxy: Proxy) -> Problem:
    host, path = key
    return Problem(
        app.service.name,
        f"{prefix}.hostname",
        f"{host}{path or '/'} is already routed to service {owner}, which is older and keeps it",
        proxy=proxy.name,
    )


def desired_state(snapshot: Snapshot, prefix: str, default_mode: str = "rolling") -> Desired:
    """Every proxy's routes and backends, and every problem found on the way."""
    proxies, problems = find_proxies(snapshot, prefix, default_mode)
    apps, app_problems = _apps(snapshot, prefix)
    problems += app_problems
    tasks_by_service: dict[str, list[Task]] = {}
    for task in snapshot.tasks:
        tasks_by_service.setdefault(task.service_id, []).append(task)
    desired = []
    for proxy in proxies:
        one, found = _desired_proxy(proxy, apps, snapshot, tasks_by_service, prefix)
        desired.append(one)
        problems += found
    return Desired(tuple(desired), tuple(problems))
