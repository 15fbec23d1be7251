"""Read a service's labels into what it asks for (pure): an ``AppSpec`` or a ``ProxySpec``.

Which labels exist, and the grammar of each value, are declared in ``vocabulary`` (grammars in
``grammar``); this module applies them to one service at a time. A bad value rejects the service
(or the proxy) with a ``Problem`` naming the service, the label and the reason; it never raises:
whatever goes wrong while reading one service's labels costs that service alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from . import vocabulary as vocab
from .grammar import DEFAULT_HEALTH_INTERVAL_MS, LabelError, host
from .kinds import KINDS
from .logs import printable
from .vocabulary import Vocabulary


@dataclass(frozen=True)
class Problem:
    """Something wrong with a service's labels, as shown to users in logs and `validate`."""

    service: str
    label: str
    reason: str
    rejected: bool = True  # False: the label was ignored but the service is still routed
    proxy: str = ""

    def __str__(self) -> str:
        """One line for people: control characters in any part (a label key is anyone's
        input) are shown as escapes, so they cannot forge a line or drive a terminal."""
        where = f" (proxy {self.proxy})" if self.proxy else ""
        verdict = "rejected" if self.rejected else "ignored label"
        return printable(f"service {self.service}{where}: {verdict}: {self.label}: {self.reason}")


@dataclass(frozen=True)
class TlsSpec:
    """TLS termination for an app's hosts: Docker secrets holding the certificate and key."""

    cert_secret: str
    key_secret: str
    only: bool  # plain HTTP requests are redirected to HTTPS


@dataclass(frozen=True)
class AppSpec:
    """What an app service's labels ask for, all values validated."""

    hosts: tuple[str, ...]
    port: int | None
    network: str | None
    context_root: str  # "" routes the whole host
    rewrite: bool
    cluster: str
    balance: str | None
    tls: TlsSpec | None = None
    health_check: str = ""  # HAProxy checks GET <path> on every task ("" no active check)
    health_interval_ms: int = DEFAULT_HEALTH_INTERVAL_MS
    share_host: bool = False  # other services may serve paths under this service's hosts
    access_log: bool = True  # False: the proxies leave this service's requests out of their log


@dataclass(frozen=True)
class ProxySpec:
    """What a proxy service's (or container's) labels say about it."""

    kind: str
    cluster: str
    config_path: str
    mode: str | None  # None: the controller's default


def is_routed(labels: Mapping[str, str], prefix: str) -> bool:
    return Vocabulary(prefix).is_routed(labels)


def is_proxy(labels: Mapping[str, str], prefix: str) -> bool:
    return Vocabulary(prefix).is_proxy(labels)


class _Reader:
    """Reads one service's labels, collecting a Problem per bad value instead of raising."""

    def __init__(
        self,
        service: str,
        labels: Mapping[str, str],
        prefix: str,
        declared: Mapping[str, vocab.Declared],
    ) -> None:
        self.service = service
        self.labels = labels
        self.words = Vocabulary(prefix)
        self.declared = declared
        self.problems: list[Problem] = []

    def key(self, name: str) -> str:
        return self.words.key(name)

    def get(self, name: str, default=None, parse: Callable[[str], object] | None = None):
        """The value of a declared label read by its grammar, or ``default``."""
        label = self.key(name)
        if label not in self.labels:
            return default
        grammar = parse or self.declared[vocab.declared_name(name)].grammar
        try:
            return grammar(self.labels[label])
        except LabelError as error:
            self.problems.append(Problem(self.service, label, str(error)))
        except Exception as error:  # a grammar bug costs this service, never the pass
            why = f"could not be read ({type(error).__name__}); the service is rejected"
            self.problems.append(Problem(self.service, label, why))
        return default

    def ours(self) -> list[tuple[str, str]]:
        """(key, name) of every label under our prefix, sorted."""
        found = ((key, self.words.name_of(key)) for key in sorted(self.labels))
        return [(key, name) for key, name in found if name is not None]

    def ignore(self, label: str, reason: str) -> None:
        self.problems.append(Problem(self.service, label, reason, rejected=False))

    @property
    def failed(self) -> bool:
        return any(problem.rejected for problem in self.problems)


def _hosts(reader: _Reader) -> tuple[str, ...]:
    hostname = reader.get("hostname")
    domain = reader.get("domain")
    main = ".".join(part for part in (hostname, domain) if part)
    hosts = [host(main)] if main and len(main) <= 253 else []
    if main and not hosts:
        reader.problems.append(
            Problem(reader.service, reader.key("hostname"), "hostname.domain is too long")
        )
    for _key, name in reader.ours():
        if vocab.is_alias(name):
            alias = reader.get(name)
            if alias and alias not in hosts:
                hosts.append(alias)
    return tuple(hosts)


def _report_unknown(reader: _Reader) -> None:
    """Labels under our prefix that are not declared, or declared but not supported."""
    for label, name in reader.ours():
        declared = reader.declared.get(vocab.declared_name(name))
        if declared and declared.supported:
            continue
        if declared:
            reader.ignore(label, "not supported yet; the service is routed without it")
        elif name.startswith("backend_option"):
            reader.ignore(label, "raw proxy options are never passed through")
        else:
            reader.ignore(label, "unknown label")


def _tls(reader: _Reader) -> TlsSpec | None:
    """TLS is on when both secrets are named (and `ssl` does not say false)."""
    cert, key = reader.get("ssl_cert"), reader.get("ssl_cert_key")
    enabled = reader.get("ssl")
    only = reader.get("ssl_only", False)
    if cert and key and enabled is not False:
        return TlsSpec(cert, key, only)
    for label, present in (("ssl_cert", cert), ("ssl_cert_key", key)):
        if (
            not present
            and (enabled or only or cert or key)
            and reader.key(label) not in reader.labels
        ):
            why = "missing: TLS needs both ssl_cert and ssl_cert_key (names of Docker secrets)"
            reader.problems.append(Problem(reader.service, reader.key(label), why))
    return None


Parsed = tuple[object | None, list[Problem]]


def _total(parse: Callable[[str, Mapping[str, str], str], Parsed]):
    """The last wall: whatever goes wrong while reading one service's labels (a bug, a value no
    grammar foresaw) rejects that service with a Problem; it never escapes into the pass."""

    @functools.wraps(parse)
    def guarded(service: str, labels: Mapping[str, str], prefix: str):
        try:
            return parse(service, labels, prefix)
        except Exception as error:
            why = f"labels could not be read ({type(error).__name__}); the service is rejected"
            return None, [Problem(str(service), Vocabulary(prefix).key("*"), why)]

    return guarded


@_total
def parse_app(
    service: str, labels: Mapping[str, str], prefix: str
) -> tuple[AppSpec | None, list[Problem]]:
    """Turn an app service's labels into an AppSpec, or None and the reasons it is rejected."""
    reader = _Reader(service, labels, prefix, vocab.APP)
    hosts = _hosts(reader)
    spec = AppSpec(
        hosts=hosts,
        port=reader.get("port"),
        network=reader.get("network"),
        context_root=reader.get("context_root", ""),
        rewrite=reader.get("context_root_rewrite", False),
        cluster=reader.get("ext.service_cluster", ""),
        balance=reader.get("balance_algorithm"),
        tls=_tls(reader),
        health_check=reader.get("health_check", "") or "",
        health_interval_ms=reader.get("health_check_interval", DEFAULT_HEALTH_INTERVAL_MS),
        share_host=reader.get("share_host", False),
        access_log=reader.get("access_log", True),
    )
    reader.get("websocket_endpoint")
    if reader.key("health_check") in labels and not spec.health_check:
        spec = replace(spec, health_check="/")  # health_check=/ checks the root
    _report_unknown(reader)
    if not hosts and not reader.failed:
        reader.problems.append(Problem(service, reader.key("hostname"), "no host name given"))
    return (None if reader.failed else spec), reader.problems


@_total
def parse_proxy(
    service: str, labels: Mapping[str, str], prefix: str
) -> tuple[ProxySpec | None, list[Problem]]:
    """Read a proxy's own labels: its kind, its cluster, where its config goes, how it reloads."""
    reader = _Reader(service, labels, prefix, vocab.PROXY)
    kind = reader.get("ext.name")
    spec = None
    if kind:
        spec = ProxySpec(
            kind=kind,
            cluster=reader.get("ext.service_cluster", ""),
            config_path=reader.get("ext.config_path", KINDS[kind].config_path),
            mode=reader.get("ext.mode"),
        )
    return (None if reader.failed else spec), reader.problems
