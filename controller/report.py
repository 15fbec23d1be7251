"""What the CLI shows: `validate` lines and the `status` tables (pure, from a dry-run pass)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping

from .logs import printable
from .plan import config_name, proxy_containers
from .result import PassResult

SHORT = 12


def validation_report(result: PassResult) -> list[str]:
    """One line per routed service (OK with its hosts, or each problem), then refused configs."""
    problems: dict[str, list] = {}
    for problem in result.problems:
        problems.setdefault(problem.service, []).append(problem)
    routes: dict[str, set[str]] = {}
    for desired in result.desired.proxies:
        names = {b.name: b.service for b in desired.backends}
        for route in desired.routes:
            routes.setdefault(names[route.backend], set()).add(route.host + (route.path or "/"))
    lines = []
    for service in sorted(set(routes) | set(problems)):
        if service in routes:
            lines.append(f"ok       {printable(service)}: {', '.join(sorted(routes[service]))}")
        lines += [
            f"{'REJECTED' if p.rejected else 'warning'} {p}" for p in problems.get(service, [])
        ]
    lines += [  # one line each: the proxy's own words may span lines or hold a label's bytes
        f"REFUSED  proxy {printable(proxy)}: {printable(why)}"
        for proxy, why in sorted(result.refused.items())
    ]
    return lines


def _sync(desired: str, deployed: list[str]) -> tuple[str, str]:
    """The most common deployed value, and "in sync/total"."""
    common = Counter(deployed).most_common(1)
    current = common[0][0] if common else ""
    return current, f"{sum(1 for d in deployed if d == desired)}/{len(deployed)}"


def proxy_rows(
    result: PassResult,
    prefix: str,
    served: Mapping[str, str],
    task_configs: Mapping[str, list[str]],
) -> list[dict]:
    """Per proxy: mode, desired and deployed digests, and how many tasks serve the desired one.

    ``served`` maps signal-mode containers to the digest they serve; ``task_configs`` maps a
    rolling-mode proxy to the config name each of its running tasks mounts.
    """
    rows = []
    for desired in result.desired.proxies:
        proxy, rendered = desired.proxy, result.rendered.get(desired.proxy.name)
        want = rendered.digest[:SHORT] if rendered else "-"
        if proxy.mode == "signal":
            mine = set(proxy_containers(result.snapshot, proxy))
            digests = [d[:SHORT] for c, d in served.items() if c in mine]
            deployed, in_sync = _sync(want, digests)
        else:
            name = config_name(prefix, proxy, rendered) if rendered else ""
            mounted = task_configs.get(proxy.name, [])
            current, in_sync = _sync(name, mounted)
            deployed = current[-SHORT:] if current.startswith(f"{prefix}-") else current or "-"
        rows.append(
            {
                "proxy": proxy.name,
                "kind": proxy.spec.kind,
                "mode": proxy.mode,
                "desired": want,
                "deployed": deployed or "-",
                "tasks_in_sync": in_sync,
                "refused": result.refused.get(proxy.name, ""),
            }
        )
    return rows


def route_rows(result: PassResult) -> list[dict]:
    rows = []
    for desired in result.desired.proxies:
        backends = {b.name: b for b in desired.backends}
        for route in desired.routes:
            backend = backends[route.backend]
            rows.append(
                {
                    "proxy": desired.proxy.name,
                    "host": route.host,
                    "path": route.path or "/",
                    "service": backend.service,
                    "backends": len(backend.targets),
                }
            )
    return rows


def rejected_rows(result: PassResult) -> list[dict]:
    return [
        {"service": p.service, "label": p.label, "reason": p.reason, "proxy": p.proxy}
        for p in result.problems
        if p.rejected
    ]


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    """Aligned columns; a cell's control characters (a label key's, say) are shown escaped."""
    cells = [[printable(r[c]) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return [line.rstrip() for line in lines]


def status_report(
    proxies: list[dict],
    routes: list[dict],
    rejected: list[dict],
    as_json: bool,
    certificates: list[dict] | None = None,
) -> str:
    """``certificates``: the ACME hosts (``acme.certificate_rows``), shown when there are any."""
    if as_json:
        found = {"proxies": proxies, "routes": routes, "rejected": rejected}
        return json.dumps({**found, "certificates": certificates or []}, indent=2)
    lines = _table(proxies, ["proxy", "kind", "mode", "desired", "deployed", "tasks_in_sync"])
    lines += ["", *_table(routes, ["proxy", "host", "path", "service", "backends"])]
    if certificates:
        columns = ["host", "service", "state", "expires", "secret", "last_error"]
        lines += ["", *_table(certificates, columns)]
    if rejected:
        lines += ["", *_table(rejected, ["service", "label", "reason"])]
    return "\n".join(lines)
