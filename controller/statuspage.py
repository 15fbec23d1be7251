"""The proxies' own status pages, read into samples (pure): nginx ``stub_status`` and
HAProxy's CSV stats. Which page a kind of proxy has, and which parser reads it, is in ``kinds``.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

HAPROXY_FRONTEND = "interlock_http"
_HAPROXY_OWN = {"interlock_status", "stats"}


class ScrapeError(Exception):
    """A status page that could not be had or read; ``reason`` is a short, bounded word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Sample:
    name: str  # a key of METRICS
    value: float
    labels: tuple[tuple[str, str], ...] = ()


# -- parsing --------------------------------------------------------------------------------

_STUB = re.compile(
    r"Active connections:\s*(\d+)\s+server accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)\s+"
    r"Reading:\s*(\d+)\s+Writing:\s*(\d+)\s+Waiting:\s*(\d+)",
    re.S,
)


def parse_stub_status(text: str) -> list[Sample]:
    """nginx ``stub_status`` page -> samples."""
    found = _STUB.search(text)
    if not found:
        raise ScrapeError("parse", "not an nginx stub_status page")
    active, accepts, handled, requests, reading, writing, waiting = map(float, found.groups())
    return [
        Sample("connections_active", active),
        Sample("connections_accepted_total", accepts),
        Sample("connections_handled_total", handled),
        Sample("http_requests_total", requests),
        Sample("connections", reading, (("state", "reading"),)),
        Sample("connections", writing, (("state", "writing"),)),
        Sample("connections", waiting, (("state", "waiting"),)),
    ]


def _number(row: dict[str, str], name: str) -> float | None:
    value = (row.get(name) or "").strip()
    try:
        return float(value) if value else None
    except ValueError:
        return None


def parse_haproxy_csv(text: str) -> list[Sample]:
    """HAProxy ``stats uri ...;csv`` -> samples of the routing frontend and of each backend."""
    lines = text.lstrip().splitlines()
    if not lines or not lines[0].startswith("# pxname,svname,"):
        raise ScrapeError("parse", "not HAProxy CSV stats")
    rows = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    samples: list[Sample] = []
    seen_frontend = False
    for row in rows:
        proxy, server = row.get("pxname", ""), row.get("svname", "")
        if proxy == HAPROXY_FRONTEND and server == "FRONTEND":
            seen_frontend = True
            samples += _frontend(row)
        elif server == "BACKEND" and proxy not in _HAPROXY_OWN:
            samples += _backend(row, proxy)
    if not seen_frontend:
        raise ScrapeError("parse", f"HAProxy CSV stats without frontend {HAPROXY_FRONTEND}")
    return samples


def _frontend(row: dict[str, str]) -> list[Sample]:
    picks = {
        "connections_active": "scur",
        "connections_accepted_total": "conn_tot"
        if _number(row, "conn_tot") is not None
        else "stot",
        "http_requests_total": "req_tot",
        "received_bytes_total": "bin",
        "sent_bytes_total": "bout",
        "request_errors_total": "ereq",
    }
    samples = [
        Sample(name, value)
        for name, column in picks.items()
        if (value := _number(row, column)) is not None
    ]
    for code in ("1xx", "2xx", "3xx", "4xx", "5xx", "other"):
        value = _number(row, f"hrsp_{code}")
        if value is not None:
            samples.append(Sample("http_responses_total", value, (("code", code),)))
    return samples


def _backend(row: dict[str, str], backend: str) -> list[Sample]:
    label = (("backend", backend),)
    samples = []
    for name, column in (
        ("backend_connections_active", "scur"),
        ("backend_sessions_total", "stot"),
        ("backend_servers_up", "act"),
    ):
        value = _number(row, column)
        if value is not None:
            samples.append(Sample(name, value, label))
    errors = [v for v in (_number(row, "econ"), _number(row, "eresp")) if v is not None]
    if errors:
        samples.append(Sample("backend_errors_total", sum(errors), label))
    return samples
