"""The grammars of label values (pure): each takes the text and returns the value or raises.

Label values are user input that ends up inside a proxy configuration, so every value is checked
against a strict grammar and nothing else ever reaches a template: a host is an RFC 1123 name,
a port a number, a path a plain URL path. ``labels`` calls these through the declarations in
``vocabulary`` and turns a ``LabelError`` into a ``Problem`` of that service; nothing here is
ever called on a value that could make the pass fail.

Every grammar is ASCII where ASCII is meant: digits are ``[0-9]`` (never ``\\d``, ``isdigit`` or a
bare ``int()``, which take Arabic-Indic or superscript digits), host names are checked before they
are lower-cased (``str.lower`` turns the Kelvin sign into ``k``), and every pattern must match the
whole value (``fullmatch``; a ``$`` also matches before a trailing newline). Surrounding ASCII
blanks are trimmed (YAML block scalars leave a newline at the end); nothing else is forgiven.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

BALANCE_ALGORITHMS = ("roundrobin", "leastconn", "first", "source", "random")
BACKEND_MODES = ("task", "vip")  # Interlock 2's com.docker.lb.backend_mode
HEALTH_INTERVAL_MS = (100, 3_600_000)
DEFAULT_HEALTH_INTERVAL_MS = 2000

# Always used with fullmatch: the whole value, nothing before or after (not even a newline).
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PATH = re.compile(r"(?:/[A-Za-z0-9._~-]+)+/?")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_FILE_PATH = re.compile(r"(?:/[A-Za-z0-9_.-]+)+")
_PORT = re.compile(r"[0-9]{1,5}")
_MILLIS = re.compile(r"[0-9]{1,7}")
_BLANKS = " \t\r\n"
MAX_FILE_PATH = 1024
SHOWN_CHARS = 64  # of a bad value, quoted in its Problem: enough to recognise it, never a flood


class LabelError(ValueError):
    """A label value outside its grammar; the message says what was expected."""


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


def one_of(allowed: tuple[str, ...]) -> Callable[[str], str]:
    """The grammar of a keyword from a fixed list."""
    return lambda value: choice(value, allowed)


# ---- routing features (issue 16) ------------------------------------------------------------

WEIGHT_RANGE = (0, 100)
REDIRECT_CODES = (301, 302, 303, 307, 308)
MAX_LIST = 64  # entries in one list label (hosts excepted): a config stays readable
MAX_HOSTS = 1000  # hosts in one com.docker.lb.hosts, as alias_domain.N allows
DURATION_MS = (1, 86_400_000)  # 1 ms to a day
BODY_BYTES = (1, 1 << 40)  # 1 byte to 1 TiB
_WEIGHT = re.compile(r"[0-9]{1,3}")
_COOKIE = re.compile(r"[A-Za-z0-9_]{1,64}")
_DURATION = re.compile(r"([0-9]{1,8})(ms|s|m|h)?")
_SIZE = re.compile(r"([0-9]{1,13})([kmg]?)")
_ADDRESS = re.compile(r"[0-9A-Fa-f.:]{2,39}(?:/[0-9]{1,3})?")
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
# Header values: printable ASCII without any character that quotes, escapes, expands or
# comments in nginx or HAProxy (no quotes, backslash, $, %, #, {, }, `, <, >, |, ^).
HEADER_VALUE_CHARS = r"A-Za-z0-9 ._~:/=,;+*()?!@&-"
_HEADER_VALUE = re.compile(rf"[{HEADER_VALUE_CHARS}]{{1,512}}")
_URL = re.compile(r"(?:(https?)://)?([^/:]+)(?::([0-9]{1,5}))?(/.*)?", re.ASCII)
# Headers the proxies frame, hop or route with: setting them would break the exchange.
FORBIDDEN_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-connection",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_UNITS_BYTES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass(frozen=True, slots=True)
class Redirect:
    """Requests for ``source`` (a host) answer ``code`` with Location ``target`` + the request's
    path and query; a target without a scheme keeps the request's scheme."""

    source: str
    scheme: str  # "http", "https" or "" (the request's)
    target: str  # host[:port][/path], no scheme
    code: int = 301


def weight(value: str) -> int:
    low, high = WEIGHT_RANGE
    text = _trim(value)
    if not _WEIGHT.fullmatch(text) or not low <= int(text) <= high:
        raise LabelError(f"{shown(value)} is not a weight from {low} to {high}")
    return int(text)


def tls_verify(value: str) -> bool:
    """Interlock 2's ``ssl_backend_tls_verify``: ``none`` or ``required``."""
    return choice(value, ("none", "required")) == "required"


def cookie_name(value: str) -> str:
    """A cookie name both proxies read by name: ASCII letters, digits and '_' (nginx reads a
    cookie through a variable, whose name ends at any other character)."""
    text = _trim(value)
    if not _COOKIE.fullmatch(text):
        raise LabelError(
            f"{shown(value)} is not a cookie name (1 to 64 ASCII letters, digits or '_')"
        )
    return text


def duration_ms(value: str) -> int:
    """A duration: digits with ms, s (the default), m or h; returned in milliseconds."""
    low, high = DURATION_MS
    found = _DURATION.fullmatch(_trim(value).lower() if _trim(value).isascii() else "\0")
    millis = int(found[1]) * _UNITS_MS[found[2] or "s"] if found else 0
    if not low <= millis <= high:
        raise LabelError(
            f"{shown(value)} is not a duration from 1ms to 24h (digits, then ms, s, m or h; "
            "seconds by default)"
        )
    return millis


def byte_size(value: str) -> int:
    """A size in bytes: digits, optionally k, m or g (powers of 1024)."""
    low, high = BODY_BYTES
    text = _trim(value)
    found = _SIZE.fullmatch(text.lower() if text.isascii() else "\0")
    size = int(found[1]) * _UNITS_BYTES[found[2]] if found else 0
    if not low <= size <= high:
        raise LabelError(f"{shown(value)} is not a size from 1 byte to 1024g (digits, k, m or g)")
    return size


def _items(value: str, separator: str, what: str, limit: int = MAX_LIST) -> list[str]:
    """The trimmed, non-empty items of a list value; an empty item is a mistake worth saying."""
    items = [item.strip(_BLANKS) for item in _trim(value).split(separator)]
    if not items or any(not item for item in items):
        raise LabelError(f"{shown(value)} is not a {separator!r}-separated list of {what}")
    if len(items) > limit:
        raise LabelError(f"{shown(value)} lists {len(items)} {what}; at most {limit}")
    return items


def host_list(value: str) -> tuple[str, ...]:
    """Comma-separated host names (Interlock 2's com.docker.lb.hosts), duplicates dropped."""
    hosts: list[str] = []
    for item in _items(value, ",", "host names", MAX_HOSTS):
        name = host(item)
        if name not in hosts:
            hosts.append(name)
    return tuple(hosts)


def path_list(value: str) -> tuple[str, ...]:
    """Comma-separated URL paths (Interlock 2's com.docker.lb.websocket_endpoints)."""
    return tuple(path(item) or "/" for item in _items(value, ",", "paths"))


def cidr_list(value: str) -> tuple[str, ...]:
    """Comma- or blank-separated IPv4/IPv6 addresses and networks, normalised (``10.1.2.3/8``
    -> ``10.0.0.0/8``); ASCII hex digits, dots, colons and one '/' only (no zone ids)."""
    text = _trim(value).replace(",", " ")
    items = text.split()
    if not items or len(items) > MAX_LIST:
        raise LabelError(f"{shown(value)} is not a list of 1 to {MAX_LIST} addresses or networks")
    found: list[str] = []
    for item in items:
        if not _ADDRESS.fullmatch(item):
            raise LabelError(f"{shown(item)} is not an IPv4 or IPv6 address or network")
        try:
            network = str(ipaddress.ip_network(item, strict=False))
        except ValueError as error:
            raise LabelError(f"{shown(item)} is not an address or network: {error}") from None
        if network not in found:
            found.append(network)
    return tuple(found)


def header_name(value: str) -> str:
    """A response header a route may set: a token of letters, digits and '-', not one the
    proxies frame or hop with (Connection, Content-Length, ..., Set-Cookie, Host)."""
    text = _trim(value)
    if not _HEADER_NAME.fullmatch(text):
        raise LabelError(f"{shown(value)} is not a header name (ASCII letters, digits, '-')")
    if text.lower() in FORBIDDEN_HEADERS:
        raise LabelError(f"{shown(value)} is a header the proxies manage; it cannot be set")
    return text


def header_value(value: str) -> str:
    """A header value of printable ASCII without quotes, backslashes, '$', '%', '#', braces and
    the like: nothing either proxy would read as syntax."""
    text = _trim(value)
    if not _HEADER_VALUE.fullmatch(text):
        raise LabelError(
            f"{shown(value)} is not a header value (1 to 512 of ASCII letters, digits, blanks "
            "and ._~:/=,;+*()?!@&-)"
        )
    return text


def _redirect_target(text: str, whole: str) -> tuple[str, str]:
    """(scheme, host[:port][/path]) of a redirect target; the host and path by their grammars."""
    found = _URL.fullmatch(text) if text.isascii() else None
    if not found:
        raise LabelError(f"{shown(whole)}: {shown(text)} is not a host or an http(s) URL")
    scheme, name, number, rest = found[1] or "", host(found[2]), found[3], found[4] or ""
    target = name + (f":{port(number)}" if number else "")
    if rest not in ("", "/"):
        target += path(rest)
    return scheme, target


def redirects(value: str) -> tuple[Redirect, ...]:
    """``;``-separated ``source,target[,code]``: source a host (or an http(s) URL of one, whose
    scheme is not looked at), target a host or an http(s) URL, code 301 (default), 302, 303,
    307 or 308. A redirect of a host to itself would loop, so it is refused."""
    found: list[Redirect] = []
    for entry in _items(value, ";", "redirects"):
        parts = [part.strip(_BLANKS) for part in entry.split(",")]
        if len(parts) not in (2, 3) or not all(parts):
            raise LabelError(f"{shown(entry)} is not source,target or source,target,code")
        source_scheme, source = _redirect_target(parts[0], entry)
        if ":" in source or "/" in source:
            raise LabelError(f"{shown(entry)}: the source is a host, without a port or path")
        scheme, target = _redirect_target(parts[1], entry)
        code = 301
        if len(parts) == 3:
            code = int(choice(parts[2], tuple(str(c) for c in REDIRECT_CODES)))
        if target.split("/")[0].split(":")[0] == source:
            why = f"redirects {source} to itself (ssl_only redirects to HTTPS)"
            raise LabelError(f"{shown(entry)} {why}")
        if any(r.source == source for r in found):
            raise LabelError(f"{shown(value)} redirects {source} twice")
        del source_scheme  # accepted for Interlock 2's form (http://old,http://new); not used
        found.append(Redirect(source, scheme, target, code))
    return tuple(found)
