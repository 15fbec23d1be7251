"""Read a service's labels into what it asks for (pure): an ``AppSpec`` or a ``ProxySpec``.

Which labels exist, and the grammar of each value, are declared in ``vocabulary`` (grammars in
``grammar``); this module applies them to one service at a time. A bad value rejects the service
(or the proxy) with a ``Problem`` naming the service, the label and the reason; it never raises:
whatever goes wrong while reading one service's labels costs that service alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from itertools import compress

from . import grammar as g
from . import vocabulary as vocab
from .grammar import DEFAULT_HEALTH_INTERVAL_MS, LabelError, Redirect
from .kinds import KINDS
from .logs import printable
from .vocabulary import FAMILIES, LB, NATIVE, Vocabulary


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class TlsSpec:
    """TLS termination for an app's hosts: Docker secrets holding the certificate and key."""

    cert_secret: str
    key_secret: str
    only: bool  # plain HTTP requests are redirected to HTTPS


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-route limits a service asks for; None / empty: the proxy's defaults."""

    connect_timeout_ms: int | None = None
    read_timeout_ms: int | None = None
    max_body_bytes: int | None = None
    ip_allow: tuple[str, ...] = ()  # CIDRs; others get 403
    response_headers: tuple[tuple[str, str], ...] = ()  # (name, value), set on every answer
    basic_auth_secret: str = ""  # Docker secret with an htpasswd file


@dataclass(frozen=True, slots=True)
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
    family: str = NATIVE  # the label family it was read from (vocabulary.FAMILIES)
    weight: int | None = None  # set: shares its host and path with other weighted services
    sticky_cookie: str = ""  # requests with this cookie's value keep reaching one task
    redirects: tuple[Redirect, ...] = ()  # each source host (one of ``hosts``) redirects
    default_backend: bool = False  # answers the hosts that no route serves
    limits: Limits = field(default_factory=Limits)
    ssl_backend: bool = False  # TLS to the tasks
    ssl_backend_verify: bool = False  # ... verified against the system's CAs and the Host
    ssl_passthrough: bool = False  # TLS passed through by SNI: the tasks terminate it
    acme: bool = False  # its hosts get certificates from the ACME CA (unless ssl_cert names one)

    def uses(self) -> tuple[str, ...]:
        """The labels (our names) of the features this spec asks for that a proxy kind may
        lack: ``kinds.ProxyKind.cannot`` refuses them by these names."""
        used = {
            "basic_auth_secret": bool(self.limits.basic_auth_secret),
            "ssl_passthrough": self.ssl_passthrough,
            "ssl_backend": self.ssl_backend,
            "sticky_session_cookie": bool(self.sticky_cookie),
            "redirects": bool(self.redirects),
            "default_backend": self.default_backend,
            "weight": self.weight is not None,
            "ip_allow": bool(self.limits.ip_allow),
            "response_header": bool(self.limits.response_headers),
            "max_body_size": self.limits.max_body_bytes is not None,
        }
        return tuple(compress(used, used.values()))


@dataclass(frozen=True, slots=True)
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


@functools.lru_cache(maxsize=4096)
def _declared_name(name: str) -> str:
    """Cached ``vocabulary.declared_name``: every reader asks for the same thirty names, once per
    service per pass (``alias_domain.N`` and ``response_header.<Name>`` vary: a bounded cache)."""
    return vocab.declared_name(name)


def _present(
    ours: Iterable[tuple[str, str]],
    labels: Mapping[str, str],
    family: str,
    declared: Mapping[str, vocab.Declared],
) -> dict[str, tuple[str, vocab.Declared]]:
    """The key and declaration of each declared label a service carries in ``family``, by the
    name of ours it is asked for (in Interlock 2's family, the one its label ``means``)."""
    if family == LB:
        lb = ((meaning, vocab.lb_key(meaning), one) for meaning, one in vocab.LB_BY_MEANING.items())
        return {meaning: (key, one) for meaning, key, one in lb if key in labels}
    found = ((key, name, declared.get(_declared_name(name))) for key, name in ours)
    return {name: (key, one) for key, name, one in found if one is not None}


class _Reader:
    """Reads one service's labels of one family, collecting a Problem per bad value instead of
    raising. Labels are asked for by our names; in Interlock 2's family each name reads the
    ``com.docker.lb.*`` label that ``means`` it (and one with no such label reads as absent)."""

    def __init__(
        self,
        service: str,
        labels: Mapping[str, str],
        prefix: str,
        declared: Mapping[str, vocab.Declared],
        family: str = NATIVE,
    ) -> None:
        self.service = service
        self.labels = labels
        self.prefix = prefix
        self.words = Vocabulary(prefix)
        self.declared = declared
        self.family = family
        self.problems: list[Problem] = []
        self._ours = vocab.names_under(LB if family == LB else prefix, labels)
        # A service carries a few of the thirty labels a reader asks for, found here once: an
        # absent one costs one look-up (a first pass reads every routed service's labels).
        self.present = _present(self._ours, labels, family, declared)

    def key(self, name: str) -> str:
        """The key of our label ``name`` in this reader's family (what Problems name)."""
        return vocab.family_key(self.prefix, self.family, name)

    def _declared(self, name: str) -> tuple[str, vocab.Declared] | None:
        if self.family == LB:
            label = vocab.LB_BY_MEANING.get(name)
            return (vocab.lb_key(name), label) if label else None
        declared = self.declared.get(_declared_name(name))
        return (self.key(name), declared) if declared else None  # an Interlock 2 label only

    def get(self, name: str, default=None, parse: Callable[[str], object] | None = None):
        """The value of a declared label read by its grammar, or ``default``."""
        found = self.present.get(name)
        if found is None:
            return default
        label, declared = found
        return self.read(label, parse or declared.grammar, default)

    def read(self, label: str, grammar: Callable[[str], object], default=None):
        """``grammar`` applied to the value of ``label``; a Problem and ``default`` if it fails."""
        try:
            return grammar(self.labels[label])
        except LabelError as error:
            self.problems.append(Problem(self.service, label, str(error)))
        except Exception as error:  # a grammar bug costs this service, never the pass
            why = f"could not be read ({type(error).__name__}); the service is rejected"
            self.problems.append(Problem(self.service, label, why))
        return default

    def ours(self) -> list[tuple[str, str]]:
        """(key, name) of every label of this reader's family, sorted (found once, when the
        reader is made: hosts, headers and the unknown-label report all walk them)."""
        return self._ours

    def ignore(self, label: str, reason: str) -> None:
        self.problems.append(Problem(self.service, label, reason, rejected=False))

    def refuse(self, name: str, reason: str) -> None:
        self.problems.append(Problem(self.service, self.key(name), reason))

    @property
    def failed(self) -> bool:
        return any(problem.rejected for problem in self.problems)


def _hosts(reader: _Reader) -> tuple[str, ...]:
    if reader.family == LB:
        return reader.get("hostname", ())
    hostname = reader.get("hostname")
    domain = reader.get("domain")
    main = f"{hostname}.{domain}" if hostname and domain else hostname or domain
    # Each part is already a host name read by ``host`` (lower-cased, RFC 1123 labels): joined,
    # they are one as well, once no longer than a host name may be.
    hosts = [main] if main and len(main) <= 253 else []
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
    """Labels of the family read that are not declared, or declared but not supported."""
    for label, name in reader.ours():
        if reader.family == LB:
            declared = vocab.LB_BY_NAME.get(name)
        else:
            declared = reader.declared.get(_declared_name(name))
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
            names = f"{reader.key('ssl_cert')} and {reader.key('ssl_cert_key')}"
            why = f"missing: TLS needs both {names} (names of Docker secrets)"
            reader.problems.append(Problem(reader.service, reader.key(label), why))
    return None


Parsed = tuple[object | None, list[Problem]]


def _total(parse: Callable[[str, Mapping[str, str], str], Parsed]):
    """The last wall: whatever goes wrong while reading one service's labels (a bug, a value no
    grammar foresaw) rejects that service with a Problem; it never escapes into the pass."""

    @functools.wraps(parse)
    def guarded(service: str, labels: Mapping[str, str], prefix: str, **options):
        try:
            return parse(service, labels, prefix, **options)
        except Exception as error:
            why = f"labels could not be read ({type(error).__name__}); the service is rejected"
            return None, [Problem(str(service), Vocabulary(prefix).key("*"), why)]

    return guarded


def family_of(
    labels: Mapping[str, str], prefix: str, families: Iterable[str] = FAMILIES
) -> str | None:
    """The one family a service is read from: ours when it is routed by our labels, else
    Interlock 2's when routed by those; None when neither family read routes it."""
    words = Vocabulary(prefix)
    for family in (NATIVE, LB):
        if family in families and words.is_routed(labels, (family,)):
            return family
    return None


def _other_family(reader: _Reader) -> None:
    """Labels of the family not read are reported once: ours win over Interlock 2's."""
    name_of = vocab.lb_name_of if reader.family == NATIVE else reader.words.name_of
    other = [key for key in reader.labels if name_of(key) is not None]
    if not other:
        return
    if reader.family == NATIVE:
        label, why = f"{LB}.*", f"ignored: the service is routed by its {reader.key('*')} labels"
    else:
        label = reader.words.key("*")
        why = f"ignored: the service is routed by its {LB}.* labels (it names no host of ours)"
    reader.ignore(label, f"{why} ({len(other)} label(s): {', '.join(sorted(other)[:5])})")


def _headers(reader: _Reader) -> tuple[tuple[str, str], ...]:
    """``response_header.<Name>`` labels: the name by its grammar, then the value by its."""
    found: list[tuple[str, str]] = []
    if reader.family != NATIVE:
        return ()
    for key, name in reader.ours():
        if vocab.is_header(name):
            header = reader.read(key, lambda _v, n=name: g.header_name(n.split(".", 1)[1]))
            value = reader.get(name)
            if header and value and header.lower() not in {h.lower() for h, _ in found}:
                found.append((header, value))
    return tuple(found)


_NO_LIMITS = Limits()
# The labels of a ``Limits`` besides ``response_header.<Name>`` (``_limits`` reads each).
_LIMIT_LABELS = frozenset(
    ("connect_timeout", "read_timeout", "max_body_size", "ip_allow", "basic_auth_secret")
)
# Services whose parsed labels are remembered between passes (the largest Swarm measured has
# 10,000; each entry is one service's labels and its spec).
PARSED_SERVICES = 1 << 15


def _limits(reader: _Reader) -> Limits:
    """Most services set no limit: they share one ``Limits()`` (one object fewer per service
    that lives through the pass, for the garbage collector to walk), found without asking for
    each limit's label."""
    present = reader.present.keys()
    if present.isdisjoint(_LIMIT_LABELS) and not any(map(vocab.is_header, present)):
        return _NO_LIMITS
    limits = Limits(
        connect_timeout_ms=reader.get("connect_timeout"),
        read_timeout_ms=reader.get("read_timeout"),
        max_body_bytes=reader.get("max_body_size"),
        ip_allow=reader.get("ip_allow", ()),
        response_headers=_headers(reader),
        basic_auth_secret=reader.get("basic_auth_secret", ""),
    )
    return _NO_LIMITS if limits == _NO_LIMITS else limits


def _balance(reader: _Reader) -> str | None:
    """Ours name the algorithm; Interlock 2's ``ip_hash=true`` means ``source``."""
    if reader.family == LB:
        return "source" if reader.get("balance_algorithm", False) else None
    return reader.get("balance_algorithm")


# What TLS passthrough cannot be combined with: the proxy never reads the HTTP inside.
_NOT_WITH_PASSTHROUGH = (
    "context_root",
    "ssl_cert",
    "redirects",
    "sticky_session_cookie",
    "response_header",
    "basic_auth_secret",
    "max_body_size",
    "ip_allow",
    "ssl_backend",
    "default_backend",
    "health_check",
)


def _check_combinations(reader: _Reader, spec: AppSpec) -> None:
    if not spec.ssl_passthrough:
        return
    for name in _NOT_WITH_PASSTHROUGH:
        if name == "response_header":
            present = bool(spec.limits.response_headers)
        else:
            found = reader._declared(name)
            present = bool(found) and found[0] in reader.labels
        if present:
            reader.refuse(
                "ssl_passthrough",
                f"cannot be combined with {reader.key(name)}: a passed-through TLS stream is "
                "never read as HTTP by the proxy",
            )


def parse_app(
    service: str, labels: Mapping[str, str], prefix: str, families: Iterable[str] = FAMILIES
) -> tuple[AppSpec | None, list[Problem]]:
    """``read_app`` of these labels, remembered: every pass reads every routed service's labels,
    and between two passes almost none change. Keyed by the labels' content (each pass lists
    them anew); a spec is immutable and each caller gets its own list of problems."""
    try:
        key = (service, tuple(sorted(labels.items())), prefix, tuple(families))
        hash(key)
    except Exception:  # not a mapping of text: read_app says what is wrong with it
        return read_app(service, labels, prefix, families=families)
    spec, problems = _read_app_once(*key)
    return spec, list(problems)


def forget_parsed() -> None:
    """Empty the memory of parsed labels (benchmarks and tests of a first pass)."""
    _read_app_once.cache_clear()


@functools.lru_cache(maxsize=PARSED_SERVICES)
def _read_app_once(
    service: str, labels: tuple[tuple[str, str], ...], prefix: str, families: tuple[str, ...]
) -> tuple[AppSpec | None, tuple[Problem, ...]]:
    spec, problems = read_app(service, dict(labels), prefix, families=families)
    return spec, tuple(problems)


@_total
def read_app(
    service: str, labels: Mapping[str, str], prefix: str, families: Iterable[str] = FAMILIES
) -> tuple[AppSpec | None, list[Problem]]:
    """Turn an app service's labels into an AppSpec, or None and the reasons it is rejected.

    The service is read from one family (``family_of``); its hosts are the ones it names plus
    the sources of its redirects."""
    family = family_of(labels, prefix, families) or NATIVE
    reader = _Reader(service, labels, prefix, vocab.APP, family)
    _other_family(reader)
    hosts = _hosts(reader)
    redirects = reader.get("redirects", ())
    if redirects:
        hosts += tuple(dict.fromkeys(r.source for r in redirects if r.source not in hosts))
    spec = AppSpec(
        hosts=hosts,
        port=reader.get("port"),
        network=reader.get("network"),
        context_root=reader.get("context_root", ""),
        rewrite=reader.get("context_root_rewrite", False),
        cluster=reader.get("ext.service_cluster", ""),
        balance=_balance(reader),
        tls=_tls(reader),
        health_check=reader.get("health_check", "") or "",
        health_interval_ms=reader.get("health_check_interval", DEFAULT_HEALTH_INTERVAL_MS),
        share_host=reader.get("share_host", False),
        access_log=reader.get("access_log", True),
        family=family,
        weight=reader.get("weight"),
        sticky_cookie=reader.get("sticky_session_cookie", ""),
        redirects=redirects,
        default_backend=reader.get("default_backend", False),
        limits=_limits(reader),
        ssl_backend=reader.get("ssl_backend", False),
        ssl_backend_verify=reader.get("ssl_backend_tls_verify", False),
        ssl_passthrough=reader.get("ssl_passthrough", False),
        acme=reader.get("acme", False),
    )
    reader.get("websocket_endpoint")
    if reader.get("backend_mode") == "vip":
        reader.ignore(
            f"{LB}.backend_mode",
            "vip is not supported: the proxies reach the tasks directly (task mode)",
        )
    if reader.key("health_check") in labels and not spec.health_check:
        spec = replace(spec, health_check="/")  # health_check=/ checks the root
    _check_combinations(reader, spec)
    _report_unknown(reader)
    if not hosts and not spec.default_backend and not reader.failed:
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
