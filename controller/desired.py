"""What every proxy should serve, computed from a snapshot alone (pure).

For each proxy (a service or a plain container labelled ``<prefix>.ext.name``) this picks the app
services of its cluster, the network on which it reaches them, and the addresses of their serving
tasks.

Hosts are owned whole. The oldest service that names a host (by its creation time to the
nanosecond, ties broken by service id) owns it: its TLS and HTTPS redirect are the host's, and
another service may serve a path under that host only when the owner allows it
(``<prefix>.share_host=true``) or both belong to one stack. A newcomer can never take over a
route, a sub-path, a certificate or a redirect that is already served, and an owner whose labels
are rejected does not hand its host to the next service in line: the loser is reported.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from . import labels as lbl
from . import vocabulary as vocab
from .labels import AppSpec, Problem, ProxySpec
from .snapshot import Service, Snapshot, Task
from .timestamps import nanoseconds
from .vocabulary import STACK_LABEL, Vocabulary

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
    access_log: bool = True  # False: the proxies do not log requests to this backend


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
    owners: tuple[tuple[str, str], ...] = ()  # (host, owning service) of every routed host


@dataclass(frozen=True)
class Desired:
    proxies: tuple[DesiredProxy, ...]
    problems: tuple[Problem, ...]


@dataclass(frozen=True)
class Trust:
    """Which labelled services and containers the operator lets be proxies.

    A proxy gets every routed service's traffic and mounts their TLS keys, so on a Swarm where
    not everyone who creates services is trusted (an authorization plugin, RBAC) the operator
    names the proxies: by a label only the operator's stack sets, and/or a name pattern.
    Empty fields trust every labelled proxy, as plain Swarm (where any service creator can
    read secrets anyway) and Interlock did.
    """

    label: str = ""  # KEY or KEY=VALUE a proxy service or container must carry
    name_pattern: str = ""  # regex the whole proxy name must match

    def refuses(self, name: str, labels: Mapping[str, str]) -> str:
        """Why this proxy is not trusted ("" when it is)."""
        if self.label:
            key, _, value = self.label.partition("=")
            if key not in labels or ("=" in self.label and labels[key] != value):
                return f"it lacks the label {self.label} that INTERLOCK_PROXY_TRUST_LABEL asks for"
        if self.name_pattern and not re.fullmatch(self.name_pattern, name):
            return f"its name does not match INTERLOCK_PROXY_NAME_PATTERN {self.name_pattern!r}"
        return ""


@dataclass(frozen=True)
class _App:
    service: Service
    spec: AppSpec
    age: tuple[int, str]  # (creation nanoseconds, id): the smaller is older

    @property
    def stack(self) -> str:
        return self.service.labels.get(STACK_LABEL, "")


@dataclass(frozen=True)
class _Claim:
    """A service that names a host: the owner is the oldest claim, rejected or not."""

    age: tuple[int, str]
    service: str
    app: _App | None  # None: the service's labels were rejected


def _key(prefix: str, name: str) -> str:
    return Vocabulary(prefix).key(name)


def backend_name(service: Service) -> str:
    """A config identifier that is unique per service and safe in both proxies' grammars."""
    return f"{_UNSAFE.sub('_', service.name.lower())[:48]}_{service.id[:10].lower()}"


def find_proxies(
    snapshot: Snapshot, prefix: str, default_mode: str, trust: Trust = Trust()
) -> tuple[list[Proxy], list[Problem]]:
    """Trusted proxy services, and plain labelled containers that no service owns."""
    proxies: list[Proxy] = []
    problems: list[Problem] = []
    for service in snapshot.services:
        if lbl.is_proxy(service.labels, prefix):
            spec, found = _trusted_proxy(service.name, service.labels, prefix, trust)
            problems += found
            if spec:
                mode = spec.mode or default_mode
                proxies.append(
                    Proxy(service.name, spec, mode, service.image, service.network_ids, service.id)
                )
    for container in snapshot.containers:
        if container.service_id or not lbl.is_proxy(container.labels, prefix):
            continue
        spec, found = _trusted_proxy(container.name, container.labels, prefix, trust)
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


def _trusted_proxy(
    name: str, labels: Mapping[str, str], prefix: str, trust: Trust
) -> tuple[ProxySpec | None, list[Problem]]:
    """A proxy's spec, unless the operator's trust setting leaves it out (then it gets nothing)."""
    refused = trust.refuses(name, labels)
    if refused:
        why = f"not a trusted proxy: {refused}; it gets no routes and no TLS secrets"
        return None, [Problem(name, _key(prefix, "ext.name"), why, proxy=name)]
    return lbl.parse_proxy(name, labels, prefix)


def _age(service: Service) -> tuple[int, str]:
    return nanoseconds(service.created_at), service.id


def _apps(
    snapshot: Snapshot, prefix: str
) -> tuple[list[_App], dict[tuple[str, str], list[_Claim]], list[Problem]]:
    """Routed app services oldest first; every claim on each (cluster, host), oldest first."""
    apps, problems = [], []
    claims: dict[tuple[str, str], list[_Claim]] = {}
    routed = [
        s
        for s in snapshot.services
        if lbl.is_routed(s.labels, prefix) and not lbl.is_proxy(s.labels, prefix)
    ]
    for service in sorted(routed, key=_age):
        spec, found = lbl.parse_app(service.name, service.labels, prefix)
        problems += found
        app = _App(service, spec, _age(service)) if spec else None
        if app:
            apps.append(app)
        cluster, hosts = (spec.cluster, spec.hosts) if spec else _claimed(service, prefix)
        for host in hosts:
            claims.setdefault((cluster, host), []).append(_Claim(_age(service), service.name, app))
    return apps, claims, problems


def _claimed(service: Service, prefix: str) -> tuple[str, tuple[str, ...]]:
    """The cluster and valid host names of a rejected service: it still owns those hosts.

    Parsed by the same grammar from the host and cluster labels alone, so a bad port or path
    does not hide which hosts the service holds, and nobody else takes them meanwhile.
    """
    words = Vocabulary(prefix)
    keys = {words.key(name) for name in ("hostname", "domain", "ext.service_cluster")}
    only_hosts = {
        key: value
        for key, value in service.labels.items()
        if key in keys or vocab.is_alias(words.name_of(key) or "")
    }
    spec, _ = lbl.parse_app(service.name, only_hosts, prefix)
    return (spec.cluster, spec.hosts) if spec else ("", ())


@dataclass(frozen=True)
class _Index:
    """Look-ups built once per pass, so deciding stays linear in the number of services."""

    network_names: Mapping[str, str]
    secret_names: frozenset[str]
    tasks_by_service: Mapping[str, tuple[Task, ...]]

    @classmethod
    def of(cls, snapshot: Snapshot) -> _Index:
        tasks: dict[str, list[Task]] = {}
        for task in snapshot.tasks:
            tasks.setdefault(task.service_id, []).append(task)
        return cls(
            {net.id: net.name for net in snapshot.networks},
            frozenset(secret.name for secret in snapshot.secrets),
            {service: tuple(found) for service, found in tasks.items()},
        )


def _network(app: _App, proxy: Proxy, index: _Index, prefix: str) -> str | Problem:
    """The one network on which this proxy reaches this app's tasks, or why there is none."""
    names = index.network_names
    shared = sorted(set(app.service.network_ids) & set(proxy.network_ids))
    label = _key(prefix, "network")
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
        _key(prefix, "port"),
        f"missing, and the service publishes {len(app.service.target_ports)} target ports "
        "(need exactly one to default to)",
    )


def certificate(cert_secret: str, key_secret: str) -> Certificate:
    """The file name depends on both secrets, so two pairs never share a file."""
    tag = hashlib.sha256(f"{cert_secret}\0{key_secret}".encode()).hexdigest()[:12]
    return Certificate(f"tls-{tag}.pem", cert_secret, key_secret)


def _tls_problem(app: _App, proxy: Proxy, index: _Index, prefix: str) -> Problem | None:
    """Why this app's TLS cannot be served by this proxy (then it is not served there at all)."""
    tls = app.spec.tls
    if not tls:
        return None
    for label, secret in (("ssl_cert", tls.cert_secret), ("ssl_cert_key", tls.key_secret)):
        if secret not in index.secret_names:
            return Problem(
                app.service.name,
                _key(prefix, label),
                f"Docker secret {secret} does not exist",
                proxy=proxy.name,
            )
    if not proxy.service_id:
        return Problem(
            app.service.name,
            _key(prefix, "ssl_cert"),
            f"proxy {proxy.name} is a plain "
            "container and cannot mount secrets; use a proxy service",
            proxy=proxy.name,
        )
    return None


def targets(tasks: Iterable[Task], network_id: str, port: int) -> tuple[str, ...]:
    """Addresses of the tasks that should take traffic now: stopping tasks are already out."""
    found = {t.addresses[network_id] for t in tasks if t.serving and network_id in t.addresses}
    return tuple(f"{address}:{port}" for address in sorted(found))


def _ownership_problem(
    app: _App, host: str, path: str, claims: list[_Claim], prefix: str, proxy: Proxy
) -> Problem | None:
    """Why ``app`` may not serve ``host``+``path``: the host is another's, who did not share it.

    A non-owner may serve a path of the host that the owner does not serve itself, and only
    when the owner shares the host (``share_host``, or both deployed in one stack).
    """
    owner = claims[0]
    if owner.service == app.service.name:
        return None
    label = _key(prefix, "hostname")
    if owner.app is None:
        why = f"{host} belongs to service {owner.service}, which is older and rejected; "
        return Problem(app.service.name, label, why + "it is not handed over", proxy=proxy.name)
    if path != owner.app.spec.context_root and (
        owner.app.spec.share_host or (owner.app.stack and owner.app.stack == app.stack)
    ):
        return None
    reason = f"{host}{path or '/'}: host {host} belongs to service {owner.service}, which is older"
    if path != owner.app.spec.context_root:
        reason += (
            f" and does not share it (set {_key(prefix, 'share_host')}=true on it, or deploy both "
        )
        reason += "in one stack)"
    return Problem(app.service.name, label, reason, proxy=proxy.name)


def _desired_proxy(
    proxy: Proxy,
    apps: list[_App],
    claims: Mapping[tuple[str, str], list[_Claim]],
    index: _Index,
    prefix: str,
) -> tuple[DesiredProxy, list[Problem]]:
    routes: dict[tuple[str, str], Route] = {}
    holders: dict[tuple[str, str], str] = {}  # route -> the service that serves it
    backends: list[Backend] = []
    problems: list[Problem] = []
    tls: dict[str, HostTls] = {}
    certificates: dict[str, Certificate] = {}
    for app in apps:
        if app.spec.cluster != proxy.spec.cluster:
            continue
        network, port = _network(app, proxy, index, prefix), _port(app, prefix)
        refused = _tls_problem(app, proxy, index, prefix)
        if isinstance(network, Problem) or isinstance(port, Problem) or refused:
            problems += [p for p in (network, port, refused) if isinstance(p, Problem)]
            continue
        name = backend_name(app.service)
        served = False
        for host in app.spec.hosts:
            key, owner = (host, app.spec.context_root), claims[(app.spec.cluster, host)]
            lost = _ownership_problem(app, host, key[1], owner, prefix, proxy)
            if lost or key in routes:
                problems.append(lost or _conflict(app, key, holders[key], prefix, proxy))
                continue
            routes[key] = Route(host, app.spec.context_root, app.spec.rewrite, name)
            holders[key], served = app.service.name, True
            if app.spec.tls and owner[0].service == app.service.name:
                cert = certificate(app.spec.tls.cert_secret, app.spec.tls.key_secret)
                certificates[cert.file] = cert
                tls[host] = HostTls(host, cert.file, app.spec.tls.only)
            elif app.spec.tls:
                problems.append(_tls_not_owner(app, host, owner[0].service, prefix, proxy))
        if served:
            found = targets(index.tasks_by_service.get(app.service.id, ()), network, port)
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
                    app.spec.access_log,
                )
            )
    ordered = tuple(routes[key] for key in sorted(routes))
    host_tls = tuple(tls[host] for host in sorted(tls))
    certs = tuple(certificates[file] for file in sorted(certificates))
    cluster = proxy.spec.cluster
    owners = tuple(sorted({(r.host, claims[(cluster, r.host)][0].service) for r in ordered}))
    return DesiredProxy(proxy, ordered, tuple(backends), host_tls, certs, owners), problems


def _conflict(app: _App, key: tuple[str, str], holder: str, prefix: str, proxy: Proxy) -> Problem:
    host, path = key
    return Problem(
        app.service.name,
        _key(prefix, "hostname"),
        f"{host}{path or '/'} is already routed to service {holder}, which is older and keeps it",
        proxy=proxy.name,
    )


def _tls_not_owner(app: _App, host: str, owner: str, prefix: str, proxy: Proxy) -> Problem:
    why = f"TLS of {host} is set by its owner, service {owner}; this service's is not used"
    return Problem(
        app.service.name, _key(prefix, "ssl_cert"), why, rejected=False, proxy=proxy.name
    )


def _unserved_clusters(apps: list[_App], proxies: list[Proxy], prefix: str) -> list[Problem]:
    """Services whose cluster no proxy serves would be dropped silently: say so."""
    clusters = {proxy.spec.cluster for proxy in proxies}
    named = ", ".join(sorted(repr(c) for c in clusters)) or "none"
    return [
        Problem(
            app.service.name,
            _key(prefix, "ext.service_cluster"),
            f"no proxy serves cluster {app.spec.cluster!r} (proxies serve: {named})",
        )
        for app in apps
        if app.spec.cluster not in clusters
    ]


def without(desired: DesiredProxy, services: Iterable[str]) -> DesiredProxy:
    """The same proxy's desired state with these services' routes, TLS and backends left out.

    How a service that a proxy refuses is taken out while every other keeps being served.
    """
    gone = set(services)
    backends = tuple(b for b in desired.backends if b.service not in gone)
    names = {b.name for b in backends}
    routes = tuple(r for r in desired.routes if r.backend in names)
    hosts = {r.host for r in routes}
    tls = tuple(t for t in desired.tls if t.host in hosts)
    files = {t.file for t in tls}
    certificates = tuple(c for c in desired.certificates if c.file in files)
    owners = tuple(o for o in desired.owners if o[0] in hosts)
    return replace(
        desired,
        routes=routes,
        backends=backends,
        tls=tls,
        certificates=certificates,
        owners=owners,
    )


def desired_state(
    snapshot: Snapshot, prefix: str, default_mode: str = "rolling", trust: Trust = Trust()
) -> Desired:
    """Every proxy's routes and backends, and every problem found on the way."""
    proxies, problems = find_proxies(snapshot, prefix, default_mode, trust)
    apps, claims, app_problems = _apps(snapshot, prefix)
    problems += app_problems + _unserved_clusters(apps, proxies, prefix)
    index = _Index.of(snapshot)
    desired = []
    for proxy in proxies:
        one, found = _desired_proxy(proxy, apps, claims, index, prefix)
        desired.append(one)
        problems += found
    return Desired(tuple(desired), tuple(problems))
