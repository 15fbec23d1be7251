"""`interlock top`: a live terminal view of every route's traffic, for an operator without Grafana.

What it shows comes from the proxies' own JSON access logs (``INTERLOCK_ACCESS_LOG=json``, the
default), followed through the Docker API (``docker service logs -f`` of each proxy service, or
``docker logs -f`` of a plain proxy container): one line per request, with its route (the
service), status and the proxy's own ``request_time``. Per route, over a sliding window: requests
per second, the share of 4xx and 5xx answers, and the 50th and 95th percentiles of the request
time and of the task's answer time (nearest rank over the window's requests, milliseconds).
The proxies' status pages cannot give this: nginx's stub_status has no per-route figures and no
status codes, and neither proxy keeps a latency histogram. A service whose label turns its log
off, a proxy with logs off or in text, and a log driver Docker cannot read back show no figures;
the proxies table says which proxies sent no JSON line.

Reading is split from showing: ``Window`` holds the requests (bounded, pure), ``screen`` turns
rows into lines (pure), ``Follower`` threads feed the window, and ``run`` refreshes the screen.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

from .desired import Proxy
from .logs import printable

NO_ROUTE = "(no route)"  # requests no route matched (404, bad requests, redirects)
MAX_PER_ROUTE = 200_000  # requests kept per route: a flood costs memory, never all of it
MAX_LINE = 16_384  # a longer "line" is not one of ours


@dataclass(frozen=True)
class Hit:
    """One request as a proxy logged it."""

    at: float  # when it was read (monotonic seconds)
    proxy: str
    route: str
    status: int
    request_ms: int
    upstream_ms: int  # -1: no answer from a task


def parse_line(line: bytes | str, proxy: str, at: float) -> Hit | None:
    """A proxy's JSON access-log line as a Hit; None for anything else (its other output)."""
    text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
    text = text.strip()
    if not text.startswith("{") or len(text) > MAX_LINE:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    try:
        route = str(record["route"])
        status = int(record["status"])
        request_ms = int(record["request_time"])
        upstream_ms = int(record.get("upstream_time", -1))
    except (KeyError, TypeError, ValueError):
        return None
    return Hit(at, proxy, route if route not in ("", "-") else NO_ROUTE, status, request_ms,
               upstream_ms)  # fmt: skip


def percentile(values: list[int], share: float) -> int | None:
    """Nearest-rank percentile of ``values`` (sorted here); None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass(frozen=True)
class RouteRow:
    route: str
    requests: int
    rate: float  # requests per second over the window
    share_4xx: float
    share_5xx: float
    p50_ms: int | None
    p95_ms: int | None
    upstream_p95_ms: int | None
    proxies: tuple[str, ...]


@dataclass(frozen=True)
class ProxyRow:
    proxy: str
    kind: str
    requests: int
    rate: float
    share_5xx: float
    lines: int  # JSON lines read since start
    state: str


@dataclass
class Window:
    """The requests of the last ``seconds``, per route; safe to feed from several threads."""

    seconds: float = 30.0
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    _hits: dict[str, deque[Hit]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.started = self.started or self.clock()

    def add(self, hit: Hit) -> None:
        with self._lock:
            self._hits.setdefault(hit.route, deque(maxlen=MAX_PER_ROUTE)).append(hit)

    def _recent(self) -> dict[str, list[Hit]]:
        """Drop what left the window; a copy of the rest."""
        horizon = self.clock() - self.seconds
        with self._lock:
            for route in list(self._hits):
                hits = self._hits[route]
                while hits and hits[0].at < horizon:
                    hits.popleft()
                if not hits:
                    del self._hits[route]
            return {route: list(hits) for route, hits in self._hits.items()}

    def span(self) -> float:
        """Seconds the rates are over: the window, or less just after the start."""
        return max(min(self.seconds, self.clock() - self.started), 1e-3)

    def routes(self) -> list[RouteRow]:
        """Busiest first, then by name."""
        span = self.span()
        rows = [_route_row(route, hits, span) for route, hits in self._recent().items()]
        return sorted(rows, key=lambda row: (-row.requests, row.route))

    def per_proxy(self) -> dict[str, list[Hit]]:
        found: dict[str, list[Hit]] = {}
        for hits in self._recent().values():
            for hit in hits:
                found.setdefault(hit.proxy, []).append(hit)
        return found


def _share(hits: list[Hit], low: int) -> float:
    return sum(1 for h in hits if low <= h.status < low + 100) / len(hits) if hits else 0.0


def _route_row(route: str, hits: list[Hit], span: float) -> RouteRow:
    answered = [h.upstream_ms for h in hits if h.upstream_ms >= 0]
    return RouteRow(
        route=route,
        requests=len(hits),
        rate=len(hits) / span,
        share_4xx=_share(hits, 400),
        share_5xx=_share(hits, 500),
        p50_ms=percentile([h.request_ms for h in hits], 0.50),
        p95_ms=percentile([h.request_ms for h in hits], 0.95),
        upstream_p95_ms=percentile(answered, 0.95),
        proxies=tuple(sorted({h.proxy for h in hits})),
    )


# -- following the proxies' logs ------------------------------------------------------------


def lines_of(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Whole lines out of a stream of chunks (Docker frames need not end at a newline)."""
    rest, skipping = b"", False
    for chunk in chunks:
        rest += chunk
        *whole, rest = rest.split(b"\n")
        if whole and skipping:  # the end of a line too long to be ours
            whole, skipping = whole[1:], False
        yield from whole
        if len(rest) > MAX_LINE:  # no newline in sight: not a log line of ours, drop it all
            rest, skipping = b"", True
    if rest and not skipping:
        yield rest


@dataclass
class Follower:
    """Follows one proxy's stdout through the Docker API in a daemon thread, feeding a Window.

    A stream that ends or fails is opened again (from the time it was lost) after a pause;
    ``state`` says what it is doing, for the proxies table.
    """

    api: object  # docker.APIClient
    proxy: Proxy
    window: Window
    pause: float = 2.0
    lines: int = 0
    state: str = "starting"
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Follower:
        name = f"interlock-top-{self.proxy.name[:40]}"
        threading.Thread(target=self._follow, name=name, daemon=True).start()
        return self

    def _stream(self, since: int) -> Iterable[bytes]:
        common = {"follow": True, "stdout": True, "stderr": False, "since": since}
        if self.proxy.service_id:
            return self.api.service_logs(self.proxy.service_id, **common)
        return self.api.logs(self.proxy.container_id, stream=True, **common)

    def _follow(self) -> None:
        since = int(time.time())
        while not self.stop.is_set():
            try:
                self.state = "following"
                for line in lines_of(self._stream(since)):
                    hit = parse_line(line, self.proxy.name, self.window.clock())
                    if hit is not None:
                        self.lines += 1
                        self.window.add(hit)
                    if self.stop.is_set():
                        return
                self.state = "stream ended; again"
            except Exception as error:  # shown in the table; the view goes on
                self.state = f"error: {type(error).__name__}: {error}"[:120]
            since = int(time.time())
            self.stop.wait(self.pause)


# -- the screen -----------------------------------------------------------------------------


def _ms(value: int | None) -> str:
    return "-" if value is None else str(value)


def _percent(share: float) -> str:
    return f"{100 * share:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [line.format(*header).rstrip(), *(line.format(*r).rstrip() for r in rows)]


def screen(
    routes: list[RouteRow],
    proxies: list[ProxyRow],
    window: float,
    interval: float,
    now: float,
    max_routes: int = 40,
) -> list[str]:
    """The lines of one refresh. Every name is shown escaped (they are Docker names, but a
    terminal is no place to trust that)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(now))
    lines = [
        f"interlock top  {stamp}  {len(proxies)} proxies, rates over the last {window:g} s, "
        f"refreshed every {interval:g} s (Ctrl-C quits)",
        "From the proxies' JSON access logs; P50/P95: the proxy's request time, UP P95: the "
        "task's answer time (ms, nearest rank).",
        "",
    ]
    body = [
        [
            printable(r.route),
            f"{r.rate:.1f}",
            _percent(r.share_4xx),
            _percent(r.share_5xx),
            _ms(r.p50_ms),
            _ms(r.p95_ms),
            _ms(r.upstream_p95_ms),
            str(r.requests),
            printable(",".join(r.proxies)),
        ]
        for r in routes[:max_routes]
    ]
    header = ["ROUTE", "REQ/S", "4XX%", "5XX%", "P50", "P95", "UP P95", "REQUESTS", "PROXIES"]
    lines += _table(header, body) if body else ["(no requests in the window)"]
    if len(routes) > max_routes:
        lines.append(f"... and {len(routes) - max_routes} more routes")
    lines.append("")
    body = [
        [
            printable(p.proxy),
            p.kind,
            f"{p.rate:.1f}",
            _percent(p.share_5xx),
            str(p.lines),
            printable(p.state),
        ]
        for p in proxies
    ]
    lines += _table(["PROXY", "KIND", "REQ/S", "5XX%", "LINES", "LOG"], body)
    return lines


def proxy_rows(followers: list[Follower], window: Window) -> list[ProxyRow]:
    span, seen = window.span(), window.per_proxy()
    rows = []
    for follower in sorted(followers, key=lambda f: f.proxy.name):
        hits = seen.get(follower.proxy.name, [])
        state = follower.state
        if follower.lines == 0 and state == "following":
            state = "no JSON line yet (INTERLOCK_ACCESS_LOG=json? a log driver Docker reads?)"
        rows.append(
            ProxyRow(
                follower.proxy.name,
                follower.proxy.spec.kind,
                len(hits),
                len(hits) / span,
                _share(hits, 500),
                follower.lines,
                state,
            )
        )
    return rows


# -- the command ----------------------------------------------------------------------------


CLEAR = "\x1b[H\x1b[2J"


def run(
    api: object,
    discover: Callable[[], list[Proxy]],
    interval: float = 2.0,
    window_seconds: float = 30.0,
    iterations: int = 0,
    out: TextIO = sys.stdout,
    rediscover_every: float = 30.0,
) -> int:
    """Follow every proxy's log and redraw every ``interval`` seconds, ``iterations`` times (0:
    until Ctrl-C). Proxies are looked up again every ``rediscover_every`` seconds."""
    window = Window(window_seconds)
    followers: dict[str, Follower] = {}
    looked = -math.inf
    done = 0
    try:
        while not iterations or done < iterations:
            if time.monotonic() - looked >= rediscover_every:
                looked = time.monotonic()
                for proxy in discover():
                    if proxy.name not in followers:
                        followers[proxy.name] = Follower(api, proxy, window).start()
            width = shutil.get_terminal_size((120, 40)).columns
            lines = screen(
                window.routes(),
                proxy_rows(list(followers.values()), window),
                window_seconds,
                interval,
                time.time(),
            )
            clear = CLEAR if out.isatty() else ""
            out.write(clear + "\n".join(line[:width] for line in lines) + "\n")
            out.flush()
            done += 1
            if not iterations or done < iterations:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        for follower in followers.values():
            follower.stop.set()
    return 0


def seconds(text: str) -> float:
    """An argparse type: seconds between 0.1 and one hour, or a clear error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.1 <= value <= 3600:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r}: give between 0.1 and 3600 seconds")
    return value
