"""Structured logs: one event a line, JSON for machines or aligned key=value text for a terminal.

Call ``event(logger, "name", key=value, ...)``. Every event logged while a reconcile pass runs
carries that pass's id (``pass_id``), set once by ``pass_scope`` and read here, so no call site
has to pass it on. Values are data about routing (names, digests, counts, error texts), never
configuration contents or secrets: no caller logs a config's data, fields whose names say they
hold a secret are masked, and any over-long value is cut, so a stray text cannot flood a line.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

_FIELDS = "interlock_fields"
MAX_VALUE_CHARS = 1000
REDACTED = "<redacted>"
_SECRET_NAME = re.compile(
    r"(^|_)(password|passwd|secret|token|credentials?|private_key|api_key|authorization)(_|$)",
    re.I,
)

PASS_ID: contextvars.ContextVar[str] = contextvars.ContextVar("interlock_pass_id", default="")


def new_pass_id() -> str:
    return uuid.uuid4().hex[:12]


@contextlib.contextmanager
def pass_scope(pass_id: str) -> Iterator[str]:
    """Within this block, every event of this thread is logged with ``pass_id``."""
    token = PASS_ID.set(pass_id)
    try:
        yield pass_id
    finally:
        PASS_ID.reset(token)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its fields (and the current pass id, if a pass is running)."""
    logger.log(level, name, extra={_FIELDS: fields, "interlock_pass": PASS_ID.get()})


def _clean(key: str, value: Any) -> Any:
    if _SECRET_NAME.search(key):
        return REDACTED
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = str(value)
    if len(text) > MAX_VALUE_CHARS:
        return text[:MAX_VALUE_CHARS] + f"...({len(text) - MAX_VALUE_CHARS} more chars)"
    return text


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The event's fields, pass id first, cleaned for output."""
    fields: dict[str, Any] = {}
    pass_id = getattr(record, "interlock_pass", "")
    if pass_id:
        fields["pass_id"] = pass_id
    for key, value in (getattr(record, _FIELDS, None) or {}).items():
        fields[key] = _clean(key, value)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, event, logger, pass_id (during a pass), fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        for key, value in fields_of(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def printable(value: Any) -> str:
    """``value`` as text with every non-printable character written as its Python escape.

    Label keys and values are anyone's input: a newline, an ANSI escape or a NUL in one must not
    forge a line or repaint a terminal wherever it is shown (text logs, `validate`, `status`).
    Printable characters, non-ASCII letters included, are kept as they are.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _text_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c.isspace() or c in "\"'=" for c in text):
        return json.dumps(text)  # escapes control characters and every non-ASCII character
    return printable(text)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL   event  [pass 3f2a…] key=value ...`` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = fields_of(record)
        pass_id = fields.pop("pass_id", "")
        head = f"{stamp} {record.levelname:<7} {printable(record.getMessage()):<16}"
        where = f" [pass {printable(pass_id)}]" if pass_id else ""
        rest = " ".join(f"{printable(k)}={_text_value(v)}" for k, v in fields.items())
        text = f"{head}{where} {rest}".rstrip()
        if record.exc_info:  # a traceback keeps its lines; nothing else in it is left raw
            lines = self.formatException(record.exc_info).split("\n")
            text += "\n" + "\n".join(printable(line) for line in lines)
        return text


def setup(level: str, fmt: str) -> None:
    """Route the controller's logs to stderr in the chosen format; quiet the HTTP libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("docker").setLevel(logging.WARNING)
