"""Parse and validate the routing labels of app and proxy services.

Label values are user input that ends up inside a proxy configuration, so every value is checked
against a strict grammar here and nothing else ever reaches a template: a host is an RFC 1123 name,
a port a number, a path a plain URL path. A bad value rejects the service (or the proxy) with a
``Problem`` naming the service, the label and the reason; it never raises.

Every grammar is ASCII where ASCII is meant: digits are ``[0-9]`` (never ``\\d``, ``isdigit`` or a
bare ``int()``, which take Arabic-Indic or superscript digits), host names are checked before they
are lower-cased (``str.lower`` turns the Kelvin sign into ``k``), and every pattern must match the
whole value (``fullmatch``; a ``$`` also matches before a trailing newline). Surrounding ASCII
blanks are trimmed (YAML block scalars leave a newline at the end); nothing else is forgiven.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from .logs import printable

PROXY_KINDS = ("nginx", "haproxy")
MODES = ("rolling", "signal")
BALANCE_ALGORITHMS = ("roundrobin", "leastconn", "first", "source", "random")
DEFAULT_CONFIG_PATHS = {
    "nginx": "/etc/nginx/nginx.conf",
    "haproxy": "/usr/local/etc/haproxy/haproxy.cfg",
}

# Always used with fullmatch: the whole value, nothing before or after (not even a newline).
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PATH = re.compile(r"(?:/[A-Za-z0-9._~-]+)+/?")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_FILE_PATH = re.compile(r"(?:/[A-Za-z0-9_.-]+)+")
_PORT = re.compile(r"[0-9]{1,5}")
_MILLIS = re.compile(r"[0-9]{1,7}")
_ALIAS_NUMBERED = re.compile(r"alias_domain\.[0-9]{1,3}")
_BLANKS = " \t\r\n"
MAX_FILE_PATH = 1024
SHOWN_CHARS = 64  # of a bad value, quoted in its Problem: enough to recognise it, never a flood

# Interlock labels we know but do not (yet) turn into configuration: reported, never passed through.
_UNSUPPORTED = ("ssl_backend", "ssl_backend_tls_verify")
HEALTH_INTERVAL_MS = (100, 3_600_000)
DEFAULT_HEALTH_INTERVAL_MS = 2000


class LabelError(ValueError):
    """A label value outside its grammar; the message says what was expected."""


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


@dataclass(frozen=True)
class ProxySpec:
    """What a proxy service's (or container's) labels say about it."""

    kind: str
    cluster: str
    config_path: str
    mode: str | None  # None: the controller's default


def shown(value: str) -> str:
    """A bad value as quoted in a Problem: its repr, cut to SHOWN_CHARS characters."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}... ({len(value)} characters)"


def _trim(value: str) -> str:
    return str(value).strip(_BLANKS)


def host(value: str) -> str:
    """An RFC 1123 host name, lower-cased; no wildcards, no port, no trailing dot."""
    name = _trim(value)
    if not name or len(name) > 253:
        raise LabelError(f"{shown(value)} must be a host name of 1 to 253 characters")
    # ASCII first: lower() maps some non-ASCII letters (the Kelvin sign) onto ASCII ones.
    if not name.isascii() or not all(
        _HOST_LABEL.fullmatch(part) for part in name.lower().split(".")
    ):
        raise LabelError(
            f"{shown(value)} is not an RFC 1123 host name "
            "(ASCII letters, digits, '-', dot-separated)"
        )
    return name.lower()


def port(value: str) -> int:
    text = _trim(value)
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise LabelError(f"{shown(value)} is not a port number from 1 to 65535")
    return int(text)


def path(value: str) -> str:
    """A plain URL path prefix such as ``/app`` or ``/api/v1``; ``/`` means the whole host."""
    text = _trim(value)
    if text == "/":
        return ""
    if len(text) > 256 or not _PATH.fullmatch(text):
        raise LabelError(
            f"{shown(value)} is not a plain URL path of at most 256 characters "
            "(segments of ASCII letters, digits, '.', '_', '~', '-')"
        )
    segments = text.rstrip("/").split("/")[1:]
    if any(segment in (".", "..") for segment in segments):
        raise LabelError(f"{shown(value)} has a '.' or '..' segment")
    return "/" + "/".join(segments)


def _word(value: str) -> str:
    """A keyword as written, lower-cased; a NUL for non-ASCII, which no keyword list holds."""
    text = _trim(value)
    return text.lower() if text.isascii() else "\0"


def boolean(value: str) -> bool:
    text = _word(value)
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise LabelError(f"{shown(value)} is not true or false")


def name(value: str) -> str:
    """A Docker object name (network, cluster): letters, digits, '_', '.', '-'."""
    text = _trim(value)
    if not _NAME.fullmatch(text):
        raise LabelError(
            f"{shown(value)} is not a name (ASCII letters, digits, '_', '.', '-'; "
            "at most 128 characters)"
        )
    return text


def choice(value: str, allowed: tuple[str, ...]) -> str:
    text = _word(value)
    if text not in allowed:
        raise LabelError(f"{shown(value)} is not one of {', '.join(allowed)}")
    return text


def file_path(value: str) -> str:
    text = _trim(value)
    if (
        len(text) > MAX_FILE_PATH
        or not _FILE_PATH.fullmatch(text)
        or {".", ".."} & set(text.split("/"))
    ):
        raise LabelError(f"{shown(value)} is not an absolute file path")
    return text


def interval_ms(value: str) -> int:
    """ASCII digits only: int() would also take '١٢٣٤' and raise on '²' or on 5,000 digits."""
    low, high = HEALTH_INTERVAL_MS
    text = _trim(value)
    if not _MILLIS.fullmatch(text) or not low <= int(text) <= high:
        raise LabelError(f"{shown(value)} is not a number of milliseconds from {low} to {high}")
    return int(text)


def is_routed(labels: Mapping[str, str], prefix: str) -> bool:
    """An app is routed when it names a host; other services are none of our business."""
    return f"{prefix}.hostname" in labels or f"{prefix}.domain" in labels


def is_proxy(labels: Mapping[str, str], prefix: str) -> bool:
    return f"{prefix}.ext.name" in labels


class _Reader:
    """Reads one service's labels, collecting a Problem per bad value instead of raising."""

    def __init__(self, service: str, labels: Mapping[str, str], prefix: str) -> None:
        self.service = service
        self.labels = labels
        self.prefix = prefix
        self.problems: list[Problem] = []

    def key(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    def owns(self, label: str) -> bool:
        """A label under our prefix (another tool's labels are none of our business)."""
        return label.startswith(self.prefix + ".")

    def get(self, suffix: str, parse, default=None):
        label = self.key(suffix)
        if label not in self.labels:
            return default
        try:
            return parse(self.labels[label])
        except LabelError as error:
            self.problems.append(Problem(self.service, label, str(error)))
        except Exception as error:  # a grammar bug costs this service, never the pass
            why = f"could not be read ({type(error).__name__}); the service is rejected"
            self.problems.append(Problem(self.service, label, why))
        return default

    def ignore(self, label: str, reason: str) -> None:
        self.problems.append(Problem(self.service, label, reason, rejected=False))

    @property
    def failed(self) -> bool:
        return any(problem.rejected for problem in self.problems)


def _hosts(reader: _Reader) -> tuple[str, ...]:
    hostname = reader.get("hostname", host)
    domain = reader.get("domain", host)
    main = ".".join(part for part in (hostname, domain) if part)
    hosts = [host(main)] if main and len(main) <= 253 else []
    if main and not hosts:
        reader.problems.append(
            Problem(reader.service, reader.key("hostname"), "hostname.domain is too long")
        )
    ours = (key[len(reader.prefix) + 1 :] for key in reader.labels if reader.owns(key))
    alias_keys = sorted(s for s in ours if s == "alias_domain" or _ALIAS_NUMBERED.fullmatch(s))
    for suffix in alias_keys:
        alias = reader.get(suffix, host)
        if alias and alias not in hosts:
            hosts.append(alias)
    return tuple(hosts)


def _report_unknown(reader: _Reader) -> None:
    known = {"hostname", "domain", "alias_domain", "port", "network", "context_root"}
    known |= {"context_root_rewrite", "balance_algorithm", "ext.service_cluster"}
    known |= {"ssl", "ssl_only", "ssl_cert", "ssl_cert_key"}
    # WebSocket upgrades pass on every route, so the endpoint label only needs to be valid.
    known |= {"websocket_endpoint", "health_check", "health_check_interval", "share_host"}
    for label in sorted(reader.labels):
        if not reader.owns(label):
            continue
        suffix = label[len(reader.prefix) + 1 :]
        if suffix in known or _ALIAS_NUMBERED.fullmatch(suffix):
            continue
        if suffix in _UNSUPPORTED:
            reader.ignore(label, "not supported yet; the service is routed without it")
        elif suffix.startswith("backend_option"):
            reader.ignore(label, "raw proxy options are never passed through")
        else:
            reader.ignore(label, "unknown label")


def _tls(reader: _Reader) -> TlsSpec | None:
    """TLS is on when both secrets are named (and `ssl` does not say false)."""
    cert, key = reader.get("ssl_cert", name), reader.get("ssl_cert_key", name)
    enabled = reader.get("ssl", boolean, None)
    only = reader.get("ssl_only", boolean, False)
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
            return None, [Problem(str(service), f"{prefix}.*", why)]

    return guarded


@_total
def parse_app(
    service: str, labels: Mapping[str, str], prefix: str
) -> tuple[AppSpec | None, list[Problem]]:
    """Turn an app service's labels into an AppSpec, or None and the reasons it is rejected."""
    reader = _Reader(service, labels, prefix)
    hosts = _hosts(reader)
    spec = AppSpec(
        hosts=hosts,
        port=reader.get("port", port),
        network=reader.get("network", name),
        context_root=reader.get("context_root", path, ""),
        rewrite=reader.get("context_root_rewrite", boolean, False),
        cluster=reader.get("ext.service_cluster", name, ""),
        balance=reader.get("balance_algorithm", lambda v: choice(v, BALANCE_ALGORITHMS)),
        tls=_tls(reader),
        health_check=reader.get("health_check", path, "") or "",
        health_interval_ms=reader.get(
            "health_check_interval", interval_ms, DEFAULT_HEALTH_INTERVAL_MS
        ),
    )
    if reader.get("share_host", boolean, False):
        spec = replace(spec, share_host=True)
    reader.get("websocket_endpoint", path)
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
    reader = _Reader(service, labels, prefix)
    kind = reader.get("ext.name", lambda v: choice(v, PROXY_KINDS))
    spec = None
    if kind:
        spec = ProxySpec(
            kind=kind,
            cluster=reader.get("ext.service_cluster", name, ""),
            config_path=reader.get("ext.config_path", file_path, DEFAULT_CONFIG_PATHS[kind]),
            mode=reader.get("ext.mode", lambda v: choice(v, MODES)),
        )
    return (None if reader.failed else spec), reader.problems
