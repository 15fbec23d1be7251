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

import re
from collections.abc import Callable

BALANCE_ALGORITHMS = ("roundrobin", "leastconn", "first", "source", "random")
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
