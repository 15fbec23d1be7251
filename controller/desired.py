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

Two services may serve one and the same host and path only when both say so: both set
``<prefix>.weight`` (traffic split by weight), or both are read from Interlock 2's labels
without a weight (traffic split by task count: its canary releases). Their tasks then form one
backend for that route (``Backend.members``), with per-task weights that give each service its
share; the route's other settings (sticky cookie, limits, TLS to the tasks) are the first
(oldest) service's. Otherwise the conflict rule above stands.

Features a proxy kind cannot do (``kinds.ProxyKind.cannot``) keep the service off that proxy,
with a Problem naming the label; other proxies still serve it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from . import labels as lbl
from . import vocabulary as vocab
from .bounded import Recall
from .grammar import Redirect
from .kinds import KINDS
from .labels import AppSpec, Limits, Problem, ProxySpec
from .snapshot import Service, Snapshot, Task, mount_targets, service_spans
from .timestamps import nanoseconds
from .vocabulary import FAMILIES, LB, STACK_LABEL, Vocabulary

_UNSAFE = re.compile(r"[^a-z0-9_]")

# What the last pass made (apps, targets, backends, routes), handed back when this pass makes
# them from equal inputs: a pass over 10,000 unchanged services then compares pointers where it
# would read every task and service from memory again (``bounded.Recall``).
_RECALL = Recall()


def forget_made() -> None:
    """Empty the memory of what earlier passes made (benchmarks and tests of a first pass)."""
    _RECALL.clear()


@dataclass(frozen=True, slots=True)
class Proxy:
    """A load balancer the controller converges; a service, or a plain container (signal only)."""

    name: str
    spec: ProxySpec
    mode: str
    image: str
    network_ids: tuple[str, ...]
    service_id: str = ""
    container_id: str = ""
    runtime: bool = False  # it mounts its kind's runtime folder: its runtime API is rendered


@dataclass(frozen=True, slots=True)
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
    weights: tuple[int, ...] = ()  # per target, 1-100 ("" all alike); see ``desired`` docstring
    members: tuple[tuple[str, int], ...] = ()  # shared: (service, its targets), in target order
    sticky_cookie: str = ""  # hash on this cookie's value (a new one is set when absent)
    limits: Limits = field(default_factory=Limits)
    ssl_backend: bool = False  # TLS to the tasks
    ssl_verify: bool = False  # ... verifying their certificates against the system's CAs
    passthrough: bool = False  # a TCP backend: TLS passed through by SNI
    auth_file: str = ""  # htpasswd file under the secrets folder (a SecretFile's file)

    @property
    def services(self) -> tuple[str, ...]:
        """Every service whose tasks are in this backend, oldest first."""
        return tuple(s for s, _ in self.members) or (self.service,)


@dataclass(frozen=True, slots=True)
class Route:
    host: str
    path: str  # "" routes the whole host
    rewrite: bool
    backend: str
    passthrough: bool = False  # TLS on the HTTPS port passed through by SNI, no HTTP route


@dataclass(frozen=True, slots=True)
class SecretFile:
    """A Docker secret a proxy mounts as /run/secrets/<file>, not a certificate (an htpasswd
    file). The ``tls-`` prefix marks it as one of the controller's mounts, as certificates."""

    file: str
    secret: str


@dataclass(frozen=True, slots=True)
class HostRedirect:
    """Every request for ``host`` is redirected (see ``grammar.Redirect``)."""

    host: str
    scheme: str
    target: str
    code: int


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate and its key, mounted from Docker secrets as /run/secrets/<file>[.key];
    or, with ``chain`` and ``key`` (an ACME certificate on a signal-mode proxy, ``acme.py``),
    written in place beside the config: ``file`` is then its absolute path there."""

    file: str
    cert_secret: str
    key_secret: str
    chain: str = field(default="", repr=False, compare=False)
    key: str = field(default="", repr=False, compare=False)

    @property
    def inline(self) -> bool:
        """Delivered as files beside the config, not as secret mounts."""
        return bool(self.chain)


@dataclass(frozen=True, slots=True)
class HostTls:
    host: str
    file: str  # the Certificate's file
    only: bool  # plain HTTP is redirected to HTTPS


@dataclass(frozen=True, slots=True)
class Challenge:
    """An ACME HTTP-01 answer the proxy serves (``acme.py``): ``GET <path>`` on ``host`` ->
    ``keyauth``, ahead of whatever else the host routes."""

    host: str
    token: str
    keyauth: str

    @property
    def path(self) -> str:
        return f"/.well-known/acme-challenge/{self.token}"


@dataclass(frozen=True, slots=True)
class DesiredProxy:
    proxy: Proxy
    routes: tuple[Route, ...]
    backends: tuple[Backend, ...]
    tls: tuple[HostTls, ...] = ()
    certificates: tuple[Certificate, ...] = ()
    owners: tuple[tuple[str, str], ...] = ()  # (host, owning service) of every routed host
    redirects: tuple[HostRedirect, ...] = ()
    default_backend: str = ""  # the backend answering hosts no route serves ("" 404)
    secret_files: tuple[SecretFile, ...] = ()  # mounted beside the certificates (plan)
    challenges: tuple[Challenge, ...] = ()  # ACME answers of pending orders (acme.py)


@dataclass(frozen=True, slots=True)
class Desired:
    proxies: tuple[DesiredProxy, ...]
    problems: tuple[Problem, ...]


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class _App:
    service: Service
    spec: AppSpec
    age: tuple[int, str]  # (creation nanoseconds, id): the smaller is older
    backend: str  # its own backend's name (``backend_name``), made once for every proxy

    @property
    def stack(self) -> str:
        return self.service.labels.get(STACK_LABEL, "")


@dataclass(frozen=True, slots=True)
class _Claim:
    """A service that names a host: the owner is the oldest claim, rejected or not."""

    age: tuple[int, str]
    service: str
    app: _App | None  # None: the service's labels were rejected


def _key(prefix: str, name: str) -> str:
    return Vocabulary(prefix).key(name)


def _label(app: _App, prefix: str, name: str) -> str:
    """The key the app's user wrote for our label ``name``, in the app's family."""
    return vocab.family_key(prefix, app.spec.family, name)


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
                runtime = _runtime(spec, mount_targets(service.spec))
                proxy = Proxy(
                    service.name,
                    spec,
                    mode,
                    service.image,
                    service.network_ids,
                    service.id,
                    runtime=runtime,
                )
                proxies.append(_RECALL.same(("proxy", proxy.name), proxy))
    for container in snapshot.containers:
        if container.service_id or not lbl.is_proxy(container.labels, prefix):
            continue
        spec, found = _trusted_proxy(container.name, container.labels, prefix, trust)
        problems += found
        if spec:
            proxy = Proxy(
                container.name,
                spec,
                "signal",
                container.image,
                container.network_ids,
                container_id=container.id,
                runtime=_runtime(spec, container.mounts),
            )
            proxies.append(_RECALL.same(("proxy", proxy.name), proxy))
    return proxies, problems


def _runtime(spec: ProxySpec, mounts: Iterable[str]) -> bool:
    """A proxy gets a runtime API socket only where its kind keeps one and a volume is mounted
    there (a folder it shares with its node's agent; without it the socket could not be
    reached, or the folder would not exist)."""
    folder = KINDS[spec.kind].runtime_dir
    return bool(folder) and folder in mounts


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


@dataclass(frozen=True, slots=True)
class _Read:
    """What one routed service's labels say, read once while the service stays the same."""

    name: str
    age: tuple[int, str]
    app: _App | None  # None: its labels were rejected
    problems: tuple[Problem, ...]
    cluster: str
    hosts: tuple[str, ...]  # the hosts it claims, rejected or not


def _read(service: Service, prefix: str, families: tuple[str, ...]) -> _Read:
    age = _age(service)
    spec, problems = lbl.parse_app(service.name, service.labels, prefix, families=families)
    if not spec:
        cluster, hosts = _claimed(service, prefix, families)
        return _Read(service.name, age, None, tuple(problems), cluster, hosts)
    app = _App(service, spec, age, backend_name(service))
    return _Read(service.name, age, app, tuple(problems), spec.cluster, spec.hosts)


def _apps(
    snapshot: Snapshot, prefix: str, families: tuple[str, ...] = FAMILIES
) -> tuple[list[_App], dict[tuple[str, str], _Claim], list[Problem]]:
    """Routed app services oldest first; the oldest claim on each (cluster, host), its owner."""
    apps, problems = [], []
    claims: dict[tuple[str, str], _Claim] = {}
    words = Vocabulary(prefix)
    read = [
        _RECALL.get(("read", s.id), (s, prefix, families), _read, s, prefix, families)
        for s in snapshot.services
        if words.is_routed(s.labels, families) and not lbl.is_proxy(s.labels, prefix)
    ]
    for one in sorted(read, key=_oldest):
        problems += one.problems
        if one.app:
            apps.append(one.app)
        for host in one.hosts:
            if (one.cluster, host) not in claims:  # services come oldest first: the owner
                claims[(one.cluster, host)] = _Claim(one.age, one.name, one.app)
    return apps, claims, problems


def _oldest(read: _Read) -> tuple[int, str]:
    return read.age


_HOST_LABELS = ("hostname", "domain", "ext.service_cluster", "redirects", "default_backend")


def _claimed(
    service: Service, prefix: str, families: tuple[str, ...] = FAMILIES
) -> tuple[str, tuple[str, ...]]:
    """The cluster and valid host names of a rejected service: it still owns those hosts.

    Parsed by the same grammar from the host and cluster labels alone (of the family the
    service is read from), so a bad port or path does not hide which hosts the service holds,
    and nobody else takes them meanwhile.
    """
    words = Vocabulary(prefix)
    family = lbl.family_of(service.labels, prefix, families)
    if family == LB:
        keys = {vocab.lb_key(name) for name in _HOST_LABELS}
    else:
        keys = {words.key(name) for name in _HOST_LABELS}
    only_hosts = {
        key: value
        for key, value in service.labels.items()
        if key in keys or (family != LB and vocab.is_alias(words.name_of(key) or ""))
    }
    spec, _ = lbl.parse_app(service.name, only_hosts, prefix, families=families)
    return (spec.cluster, spec.hosts) if spec else ("", ())


@dataclass(frozen=True, slots=True)
class _Index:
    """Look-ups built once per pass, so deciding stays linear in the number of services."""

    network_names: Mapping[str, str]
    secret_names: frozenset[str]
    tasks: tuple[Task, ...]  # grouped by service
    spans: Mapping[str, tuple[int, int]]  # a service's tasks: tasks[first:last]
    found: dict[tuple[str, str, int], tuple[str, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    # Backends of routes that several services share, one object for what several proxies
    # have alike (a lone service's backend is recalled by the service).
    shared: dict[Backend, Backend] = field(default_factory=dict, compare=False, repr=False)

    def backend(self, group: list[_Served]) -> Backend:
        """``_backend`` of a group: the same object for every proxy, and for the next pass
        while the service, its port and its targets stay the same."""
        if len(group) > 1:
            made = _backend(group)
            return self.shared.setdefault(made, made)
        one = group[0]
        return _RECALL.get(
            ("backend", one.app.service.id), (one.app, one.port, one.targets), _backend, group
        )

    def targets(self, service_id: str, network_id: str, port: int) -> tuple[str, ...]:
        """``targets`` of a service's tasks, found once however many proxies reach them, and
        the last pass's tuple when the tasks are the same."""
        key = (service_id, network_id, port)
        if key not in self.found:
            first, last = self.spans.get(service_id, (0, 0))
            tasks = self.tasks[first:last]
            self.found[key] = _RECALL.get(
                ("targets", *key), tasks, targets, tasks, network_id, port
            )
        return self.found[key]

    @classmethod
    def of(cls, snapshot: Snapshot) -> _Index:
        """The snapshot's tasks by service (``snapshot.service_spans``) and its names."""
        tasks, spans = service_spans(snapshot.tasks)
        names = {net.id: net.name for net in snapshot.networks}
        secrets = frozenset(secret.name for secret in snapshot.secrets)
        return cls(
            _RECALL.same("networks", names),
            _RECALL.same("secrets", secrets),
            tasks,
            spans,
        )


def _network(app: _App, proxy: Proxy, index: _Index, prefix: str) -> str | Problem:
    """The one network on which this proxy reaches this app's tasks, or why there is none."""
    names = index.network_names
    shared = sorted(set(app.service.network_ids) & set(proxy.network_ids))
    # Only a Problem names the label: most apps name no network and share exactly one.
    label = _label(app, prefix, "network") if app.spec.network or len(shared) != 1 else ""
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
        _label(app, prefix, "port"),
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
                _label(app, prefix, label),
                f"Docker secret {secret} does not exist",
                proxy=proxy.name,
            )
    if not proxy.service_id:
        return Problem(
            app.service.name,
            _label(app, prefix, "ssl_cert"),
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
    app: _App, host: str, path: str, owner: _Claim, prefix: str, proxy: Proxy
) -> Problem | None:
    """Why ``app`` may not serve ``host``+``path``: the host is another's, who did not share it.

    A non-owner may serve a path of the host that the owner does not serve itself, and only
    when the owner shares the host (``share_host``, or both deployed in one stack).
    """
    if owner.service == app.service.name:
        return None
    label = _label(app, prefix, "hostname")
    if owner.app is None:
        why = f"{host} belongs to service {owner.service}, which is older and rejected; "
        return Problem(app.service.name, label, why + "it is not handed over", proxy=proxy.name)
    if path != owner.app.spec.context_root and (
        owner.app.spec.share_host or (owner.app.stack and owner.app.stack == app.stack)
    ):
        return None
    if path == owner.app.spec.context_root and shares(owner.app.spec, app.spec):
        return None
    reason = f"{host}{path or '/'}: host {host} belongs to service {owner.service}, which is older"
    if path == owner.app.spec.context_root:
        reason += f" (both set {_key(prefix, 'weight')} to share it)"
    else:
        reason += (
            f" and does not share it (set {_key(prefix, 'share_host')}=true on it, or deploy both "
        )
        reason += "in one stack)"
    return Problem(app.service.name, label, reason, proxy=proxy.name)


def shares(first: AppSpec, other: AppSpec) -> bool:
    """Whether ``other`` may serve the same host and path as ``first``, splitting its traffic:
    both weighted, or both Interlock 2 services without weights (split by task count)."""
    if first.ssl_passthrough != other.ssl_passthrough:
        return False
    if first.weight is not None and other.weight is not None:
        return True
    return first.family == other.family == LB and first.weight is None is other.weight


def auth_file(secret: str) -> SecretFile:
    """An htpasswd secret's file, named by the secret (``tls-``: one of the controller's)."""
    tag = hashlib.sha256(f"auth\0{secret}".encode()).hexdigest()[:12]
    return SecretFile(f"tls-auth-{tag}.htpasswd", secret)


@dataclass(frozen=True, slots=True)
class _Served:
    """An app this proxy can serve: where its tasks are, and its own backend's name."""

    app: _App
    name: str
    port: int
    targets: tuple[str, ...]


def _refusals(app: _App, proxy: Proxy, index: _Index, prefix: str) -> list[Problem]:
    """Why this proxy cannot serve this app at all: a feature its kind cannot do, or an
    htpasswd secret that does not exist or cannot be mounted."""
    kind = KINDS[proxy.spec.kind]
    problems = [
        Problem(
            app.service.name,
            _label(app, prefix, name),
            f"not served by {kind.name} proxy {proxy.name}: {kind.cannot[name]}",
            proxy=proxy.name,
        )
        for name in app.spec.uses()
        if name in kind.cannot
    ]
    secret = app.spec.limits.basic_auth_secret
    if not secret or problems:
        return problems
    label = _label(app, prefix, "basic_auth_secret")
    if secret not in index.secret_names:
        why = f"Docker secret {secret} does not exist"
        problems.append(Problem(app.service.name, label, why, proxy=proxy.name))
    elif not proxy.service_id:
        why = f"proxy {proxy.name} is a plain container and cannot mount secrets"
        problems.append(Problem(app.service.name, label, why, proxy=proxy.name))
    return problems


def _serve(app: _App, proxy: Proxy, index: _Index, prefix: str) -> _Served | tuple[Problem, ...]:
    where = _RECALL.get(
        ("where", proxy.name, app.service.id),
        (app, proxy, index.network_names, index.secret_names, prefix),
        _where,
        app,
        proxy,
        index,
        prefix,
    )
    if isinstance(where[0], Problem):
        return where
    network, port = where
    return _Served(app, app.backend, port, index.targets(app.service.id, network, port))


def _where(
    app: _App, proxy: Proxy, index: _Index, prefix: str
) -> tuple[str, int] | tuple[Problem, ...]:
    """The network and port on which this proxy reaches this app's tasks, or why it cannot."""
    network, port = _network(app, proxy, index, prefix), _port(app, prefix)
    refused = [_tls_problem(app, proxy, index, prefix), *_refusals(app, proxy, index, prefix)]
    problems = tuple(p for p in (network, port, *refused) if isinstance(p, Problem))
    if problems:
        return problems
    return network, port


def _passthrough_problem(
    app: _App, host: str, owner: _Claim, prefix: str, proxy: Proxy
) -> Problem | None:
    """A passed-through host is one TLS stream: its owner passes it through, or nobody does."""
    owner_passes = owner.app is not None and owner.app.spec.ssl_passthrough
    if owner.service == app.service.name or owner_passes == app.spec.ssl_passthrough:
        return None
    what = "passes TLS through" if owner_passes else "does not pass TLS through"
    why = f"host {host} belongs to service {owner.service}, which {what}"
    return Problem(app.service.name, _label(app, prefix, "ssl_passthrough"), why, proxy=proxy.name)


def _split(group: list[_Served]) -> tuple[tuple[str, ...], tuple[int, ...], tuple]:
    """(targets, per-target weights, members) of services sharing one route.

    A weighted service's share is its weight, spread evenly over its tasks (weight 0: none of
    its tasks); Interlock 2's canaries weigh every task alike. Weights are scaled to 1-100
    (both proxies take that range) and left out when all are equal."""
    parts = [
        (one, one.app.spec.weight)
        for one in group
        if one.targets and (one.app.spec.weight is None or one.app.spec.weight > 0)
    ]
    raw = [(1.0 if w is None else w / len(one.targets)) for one, w in parts]
    top = max(raw, default=1.0)
    found, weights, members = [], [], []
    for (one, _weight), share in zip(parts, raw, strict=True):
        found += one.targets
        weights += [max(1, round(share * 100 / top))] * len(one.targets)
        members.append((one.app.service.name, len(one.targets)))
    members += [(one.app.service.name, 0) for one in group if one not in [p for p, _ in parts]]
    if len(set(weights)) <= 1:
        weights = []
    return tuple(found), tuple(weights), tuple(members)


def _backend(group: list[_Served]) -> Backend:
    """The backend of one service, or of services sharing a route (named after all of them)."""
    first = group[0]
    spec = first.app.spec
    name, found, weights, members = first.name, first.targets, (), ()
    if len(group) > 1:
        tag = hashlib.sha256(",".join(one.name for one in group).encode()).hexdigest()[:10]
        name = f"{first.name[:40]}_shared_{tag}"
        found, weights, members = _split(group)
    return Backend(
        name,
        first.app.service.name,
        first.port,
        found,
        spec.balance,
        spec.context_root if spec.rewrite else "",
        spec.health_check,
        spec.health_interval_ms,
        spec.access_log,
        weights=weights,
        members=members,
        sticky_cookie=spec.sticky_cookie,
        limits=spec.limits,
        ssl_backend=spec.ssl_backend,
        ssl_verify=spec.ssl_backend_verify,
        passthrough=spec.ssl_passthrough,
        auth_file=auth_file(spec.limits.basic_auth_secret).file
        if spec.limits.basic_auth_secret
        else "",
    )


class _Builder:
    """The routes, TLS, redirects and default backend of one proxy, filled app by app."""

    def __init__(self, proxy: Proxy, claims: Mapping, prefix: str) -> None:
        self.proxy, self.claims, self.prefix = proxy, claims, prefix
        # Who serves each (host, path): positions in ``served``. Tuples of ints, not lists:
        # the garbage collector stops walking them at once (a pass holds one per route).
        self.served: list[_Served] = []
        self.holders: dict[tuple[str, str], tuple[int, ...]] = {}
        self.problems: list[Problem] = []
        self.tls: dict[str, HostTls] = {}
        self.certificates: dict[str, Certificate] = {}
        self.redirects: dict[str, HostRedirect] = {}
        self.default: _Served | None = None

    def add(self, one: _Served) -> None:
        app, proxy, prefix = one.app, self.proxy, self.prefix
        for host in app.spec.hosts:
            key, owner = (host, app.spec.context_root), self.claims[(app.spec.cluster, host)]
            held = self.served[self.holders[key][0]] if key in self.holders else None
            lost = _ownership_problem(app, host, key[1], owner, prefix, proxy)
            lost = lost or _passthrough_problem(app, host, owner, prefix, proxy)
            if lost or (held and not shares(held.app.spec, app.spec)):
                self.problems.append(
                    lost or _conflict(app, key, held.app.service.name, prefix, proxy)
                )
                continue
            self._hold(key, one)
            if owner.service == app.service.name:
                self._host_settings(app, host)
            elif app.spec.tls and (owner.app is None or owner.app.spec.tls != app.spec.tls):
                self.problems.append(_tls_not_owner(app, host, owner.service, prefix, proxy))
        if app.spec.default_backend:
            self._default(one)

    def _hold(self, key: tuple[str, str], one: _Served) -> None:
        if not self.served or self.served[-1] is not one:
            self.served.append(one)
        self.holders[key] = (*self.holders.get(key, ()), len(self.served) - 1)

    def _host_settings(self, app: _App, host: str) -> None:
        """The owner's TLS and redirect of a host."""
        if app.spec.tls:
            cert = certificate(app.spec.tls.cert_secret, app.spec.tls.key_secret)
            self.certificates[cert.file] = cert
            self.tls[host] = HostTls(host, cert.file, app.spec.tls.only)
        for redirect in app.spec.redirects:
            if redirect.source == host:
                self.redirects[host] = _host_redirect(redirect)

    def _default(self, one: _Served) -> None:
        if self.default is None:
            self.default = one
            return
        why = (
            f"proxy {self.proxy.name} already answers unrouted hosts with service "
            f"{self.default.app.service.name}, which is older"
        )
        label = _label(one.app, self.prefix, "default_backend")
        self.problems.append(Problem(one.app.service.name, label, why, proxy=self.proxy.name))

    def desired(self, age: Mapping[str, tuple[int, str]], index: _Index) -> DesiredProxy:
        """``index``: the pass's look-ups and its backends so far."""
        backends: dict[str, Backend] = {}
        routes = []
        for key in sorted(self.holders):
            group = [self.served[at] for at in self.holders[key]]
            backend = index.backend(group)
            backend = backends.setdefault(backend.name, backend)
            spec = group[0].app.spec
            routes.append(
                _RECALL.get(
                    ("route", *key),
                    (spec.rewrite, backend.name, spec.ssl_passthrough),
                    Route,
                    *key,
                    spec.rewrite,
                    backend.name,
                    spec.ssl_passthrough,
                )
            )
        default = ""
        if self.default:
            default = backends.setdefault(self.default.name, _backend([self.default])).name
        ordered = sorted(backends.values(), key=lambda b: (age[b.service], b.name))
        files = {b.auth_file: b.limits.basic_auth_secret for b in ordered if b.auth_file}
        cluster = self.proxy.spec.cluster
        owners = {(r.host, self.claims[(cluster, r.host)].service) for r in routes}
        return DesiredProxy(
            self.proxy,
            tuple(routes),
            tuple(ordered),
            tuple(self.tls[host] for host in sorted(self.tls)),
            tuple(self.certificates[file] for file in sorted(self.certificates)),
            tuple(sorted(owners)),
            tuple(self.redirects[host] for host in sorted(self.redirects)),
            default,
            tuple(SecretFile(file, secret) for file, secret in sorted(files.items())),
        )


def _host_redirect(redirect: Redirect) -> HostRedirect:
    return HostRedirect(redirect.source, redirect.scheme, redirect.target, redirect.code)


def _desired_proxy(
    proxy: Proxy,
    apps: list[_App],
    claims: Mapping[tuple[str, str], _Claim],
    index: _Index,
    prefix: str,
) -> tuple[DesiredProxy, list[Problem]]:
    builder = _Builder(proxy, claims, prefix)
    for app in apps:
        if app.spec.cluster != proxy.spec.cluster:
            continue
        one = _serve(app, proxy, index, prefix)
        if isinstance(one, tuple):
            builder.problems += one
            continue
        builder.add(one)
    age = {app.service.name: app.age for app in apps}
    return builder.desired(age, index), builder.problems


def _conflict(app: _App, key: tuple[str, str], holder: str, prefix: str, proxy: Proxy) -> Problem:
    host, path = key
    return Problem(
        app.service.name,
        _label(app, prefix, "hostname"),
        f"{host}{path or '/'} is already routed to service {holder}, which is older and keeps it",
        proxy=proxy.name,
    )


def _tls_not_owner(app: _App, host: str, owner: str, prefix: str, proxy: Proxy) -> Problem:
    why = f"TLS of {host} is set by its owner, service {owner}; this service's is not used"
    return Problem(
        app.service.name, _label(app, prefix, "ssl_cert"), why, rejected=False, proxy=proxy.name
    )


def _unserved_clusters(apps: list[_App], proxies: list[Proxy], prefix: str) -> list[Problem]:
    """Services whose cluster no proxy serves would be dropped silently: say so."""
    clusters = {proxy.spec.cluster for proxy in proxies}
    named = ", ".join(sorted(repr(c) for c in clusters)) or "none"
    return [
        Problem(
            app.service.name,
            _label(app, prefix, "ext.service_cluster"),
            f"no proxy serves cluster {app.spec.cluster!r} (proxies serve: {named})",
        )
        for app in apps
        if app.spec.cluster not in clusters
    ]


def _without_members(backend: Backend, gone: set[str]) -> Backend | None:
    """A backend without the tasks of ``gone`` services; None when its first service is gone
    (the route's settings are that service's)."""
    if backend.service in gone:
        return None
    if not gone & {service for service, _ in backend.members}:
        return backend
    found, weights, members, at = [], [], [], 0
    for service, count in backend.members:
        if service not in gone:
            found += backend.targets[at : at + count]
            weights += backend.weights[at : at + count]
            members.append((service, count))
        at += count
    return replace(backend, targets=tuple(found), weights=tuple(weights), members=tuple(members))


def without(desired: DesiredProxy, services: Iterable[str]) -> DesiredProxy:
    """The same proxy's desired state with these services' routes, TLS and backends left out.

    How a service that a proxy refuses is taken out while every other keeps being served. A
    route shared by several services loses only the tasks of the ones left out (all of it when
    the first is: its settings are the first's).
    """
    gone = set(services)
    trimmed = (_without_members(b, gone) for b in desired.backends)
    backends = tuple(b for b in trimmed if b is not None)
    names = {b.name for b in backends}
    routes = tuple(r for r in desired.routes if r.backend in names)
    hosts = {r.host for r in routes}
    tls = tuple(t for t in desired.tls if t.host in hosts)
    files = {t.file for t in tls}
    certificates = tuple(c for c in desired.certificates if c.file in files)
    owners = tuple(o for o in desired.owners if o[0] in hosts)
    auth = {b.auth_file for b in backends}
    return replace(
        desired,
        routes=routes,
        backends=backends,
        tls=tls,
        certificates=certificates,
        owners=owners,
        redirects=tuple(r for r in desired.redirects if r.host in hosts),
        default_backend=desired.default_backend if desired.default_backend in names else "",
        secret_files=tuple(f for f in desired.secret_files if f.file in auth),
    )


def desired_state(
    snapshot: Snapshot,
    prefix: str,
    default_mode: str = "rolling",
    trust: Trust = Trust(),
    families: Iterable[str] = FAMILIES,
) -> Desired:
    """Every proxy's routes and backends, and every problem found on the way.

    ``families``: the label families read (``vocabulary.FAMILIES``, the setting
    INTERLOCK_LABEL_FAMILIES)."""
    proxies, problems = find_proxies(snapshot, prefix, default_mode, trust)
    apps, claims, app_problems = _apps(snapshot, prefix, tuple(families))
    problems += app_problems + _unserved_clusters(apps, proxies, prefix)
    index = _Index.of(snapshot)
    desired = []
    for proxy in proxies:
        one, found = _desired_proxy(proxy, apps, claims, index, prefix)
        desired.append(one)
        problems += found
    _RECALL.passed()
    return Desired(tuple(desired), tuple(problems))
