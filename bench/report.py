"""The machine the benchmark ran on, and its results as Markdown tables."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterator
from typing import Any


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory_gib() -> float:
    with open("/proc/meminfo") as handle:
        total_kib = next(int(line.split()[1]) for line in handle if line.startswith("MemTotal"))
    return round(total_kib / 2**20, 1)


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": _first_line(["nginx", "-v"]),
        "haproxy": _first_line(["haproxy", "-v"]),
        "load_average": os.getloadavg(),
    }


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _machine_line(info: dict[str, Any]) -> str:
    m = info["machine"]
    return (
        f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB memory, Linux {m['kernel']}, "
        f"Python {m['python']}, Docker Engine {info.get('engine', '?')}; "
        f"proxies: {m['nginx']}, {m['haproxy'].split(' - ')[0]} (Debian's, as in the bed's images)"
    )


def latency_md(part: dict[str, Any]) -> list[str]:
    lines = [
        "## 1. Convergence latency on the real Swarm",
        "",
        f"From the change (API call returned; for new tasks, Swarm's timestamp of the task "
        f"reaching running) until the proxy answers accordingly, polled on 127.0.0.1 every "
        f"{part['poll_interval_s'] * 1000:.0f} ms with a fresh connection. The controller is the "
        "real `interlock run` process with default settings (1 s interval, woken by Swarm "
        "events). `failed` = not seen within the timeout.",
        "",
    ]
    rows, by_cell = [], {}
    for cell in part["cells"]:
        by_cell[(cell["kind"], cell["mode"])] = cell
        for op, got in cell["summary"].items():
            rows.append(
                [cell["kind"], cell["mode"], op, got["n"], _s(got["p50_s"]), _s(got["p95_s"]),
                 _s(got["max_s"]), got["failed"]]
            )  # fmt: skip
    lines += _table(["proxy", "mode", "change", "n", "p50", "p95", "max", "failed"], rows)
    ratio_rows = []
    for kind in ("nginx", "haproxy"):
        signal, rolling = by_cell.get((kind, "signal")), by_cell.get((kind, "rolling"))
        if not signal or not rolling:
            continue
        for op in signal["summary"]:
            fast, slow = signal["summary"][op]["p50_s"], rolling["summary"][op]["p50_s"]
            if fast and slow:
                ratio_rows.append([kind, op, f"{slow / fast:.1f}x"])
    if ratio_rows:
        lines += ["Rolling mode against signal mode (p50 over p50):", ""]
        lines += _table(["proxy", "change", "rolling / signal"], ratio_rows)
    return lines


def load_md(part: dict[str, Any]) -> list[str]:
    plan = part["plan"]
    lines = [
        "## 2. Failed requests under load",
        "",
        f"wrk (2 threads, 4 keep-alive connections, no retries) through a plain `docker run` "
        f"proxy container on 127.0.0.1. `rolling update`: a 3-replica backend updated one task "
        f"at a time under {plan['rolling_seconds']} s of load; `route changes`: another "
        f"service's hostname moved {plan['changes']} times, each seen through the proxy, under "
        f"{plan['changes_seconds']} s of load. Controllers: `ours` = `interlock run` (signal "
        "mode); `restart` = restart the proxy container on every change (the seed's HAProxy "
        "way); `until-gone` = route to tasks until their state leaves running (polling peers' "
        "way). `failed` = wrk's non-2xx + socket errors (connect, read, write, timeout); wrk "
        "reconnects at once after an error, so while a proxy is down one lost request can count "
        "as many errors. `probes failed`: beside wrk, one request on a fresh connection every "
        "100 ms; `longest outage`: the longest run of failed probes. `reloads` = config pushes "
        "the controller made (restarts for `restart`).",
        "",
    ]
    rows = []
    for row in part["rows"]:
        for scenario in ("rolling_update", "route_changes"):
            got = row[scenario]
            versus = got.get("failed_vs_ours", "")
            if isinstance(versus, float):
                versus = f"{versus:.1f}x"
            rows.append(
                [row["kind"], scenario.replace("_", " "), row["controller"],
                 got.get("requests", "-"), got.get("failed", "-"), got.get("connect_errors", "-"),
                 f"{got.get('read_errors', '-')}/{got.get('write_errors', '-')}/"
                 f"{got.get('timeouts', '-')}",
                 f"{got.get('probes_failed', '-')}/{got.get('probes', '-')}",
                 _s(got.get("longest_outage_s")), got.get("reloads", "-"), versus or "",
                 got.get("error", "")]
            )  # fmt: skip
    header = ["proxy", "scenario", "controller", "requests", "failed", "connect errors",
              "read/write/timeout", "probes failed", "longest outage", "reloads",
              "failed vs ours", "error"]  # fmt: skip
    lines += _table(header, rows)
    lines += ["`failed vs ours` is `N/0` where ours failed none.", ""]
    return lines


def _k(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def _fit_md(fit: dict[str, Any] | None) -> list[str]:
    """The growth exponents fitted over the larger sizes (least squares on log-log)."""
    if not fit:
        return []
    return [
        f"Growth fitted from {fit['from']:,} to {fit['to']:,} services (k in time ∝ "
        f"services^k, least squares; 1.0 = linear): desired+render+plan **k = "
        f"{_k(fit['k_total'])}** (CPU time {_k(fit['k_cpu'])}); desired {_k(fit['k_desired'])}, "
        f"render {_k(fit['k_render'])}, plan {_k(fit['k_plan'])}; CPU of the first pass "
        f"{_k(fit.get('k_first_cpu'))}, of a pass after a task change "
        f"{_k(fit.get('k_changed_cpu'))}, of a pass that parses a new listing "
        f"{_k(fit.get('k_listed_cpu'))}. The steady pass's function calls: k = "
        f"{_k(fit.get('k_calls'))}; the floor (the least a pass reads): k = "
        f"{_k(fit.get('k_floor'))}.",
        "",
    ]


def _pair(row: dict[str, Any], which: str) -> str:
    """One pass's wall and CPU time (``first`` or ``changed``), '-' in older results."""
    if f"{which}_total_s" not in row:
        return "-"
    return f"{_ms(row[f'{which}_total_s'])} ({_ms(row[f'{which}_cpu_s'])})"


def scale_md(part: dict[str, Any]) -> list[str]:
    lines = [
        "## 3. One pass without an engine",
        "",
        "Synthetic Swarms (Engine API answers shaped as in tests/builders.py): N routed services "
        "with 5-10 running tasks each, N/10 unrouted ones, two signal-mode proxies (nginx, "
        "HAProxy), converged (the plan comes out empty). Time: median of the repeats; memory: "
        "tracemalloc peak during the pass, beyond the snapshot it reads. `growth` = k in "
        "time ∝ services^k from the previous size (1.0 = linear). `CPU` = the pass's CPU time "
        "(median; the machine is shared, and CPU time does not count waiting for a core). "
        "The controller pauses the garbage collector while a pass lists and decides "
        "(`controller.collector`), and so do the timed passes. `new listing` = CPU time of a "
        "pass that parses a new listing first, as each of the controller's does, averaged over "
        "the repeats with the collector's work between them; `full GCs` = the garbage "
        "collector's full collections in those passes, and their time: each walks every object "
        "the process holds. The timed passes are steady "
        "ones (the controller remembers parsed labels, what desired state made of each "
        "service, and each proxy's last render, so a pass over an unchanged Swarm parses, "
        "makes and renders nothing again); `first pass` is the one after a "
        "start (nothing remembered) and `after a change` the pass after one routed task is "
        "replaced (both configs render anew), both as wall (CPU) time of one pass. `floor` = "
        "the least any pass must do (read each routed service's labels and each of its tasks' "
        "state and address, nothing else), timed alike: what the machine's memory alone makes "
        "of the growth; `calls` = the function calls of one steady pass (its work, counted).",
        "",
    ]
    rows = []
    for row in part["synthetic"]:
        exponent = row.get("total_s_exponent")
        collections = row.get("full_collections")
        rows.append(
            [row["services"], row["tasks"], f"{row['config_bytes'] / 2**20:.1f} MiB",
             _ms(row["parse_s"]), _ms(row["desired_s"]), _ms(row["render_s"]),
             f"{row['plan_s'] * 1000:.1f} ms", _ms(row["total_s"]),
             _ms(row["cpu_s"]) if "cpu_s" in row else "-",
             _pair(row, "first"), _pair(row, "changed"),
             _ms(row["listed_cpu_s"]) if "listed_cpu_s" in row else "-",
             f"{exponent:.2f}" if exponent is not None else "-",
             f"{row['floor_s'] * 1000:.1f} ms" if "floor_s" in row else "-",
             f"{row['calls']:,}" if "calls" in row else "-",
             f"{collections} in {row['repeats']} ({_ms(row['full_collections_s'])})"
             if collections is not None else "-",
             f"{row['pass_peak_bytes'] / 2**20:.1f} MiB",
             f"{row['snapshot_bytes'] / 2**20:.1f} MiB"]
        )  # fmt: skip
    header = ["services", "tasks", "configs (2 proxies)", "parse answers", "desired", "render",
              "plan", "desired+render+plan", "CPU", "first pass", "after a change",
              "new listing (CPU)", "growth k", "floor", "calls",
              "full GCs (passes)",
              "peak memory", "snapshot"]  # fmt: skip
    lines += _table(header, rows)
    lines += _fit_md(part.get("fit"))
    lines += [
        "Docker API calls of a pass that finds nothing to write, on the real Swarm (one "
        "namespace, one signal-mode nginx proxy, routed services added; two have a running "
        "task, the rest none):",
        "",
    ]
    rows = [
        [r["services"], r.get("services_seen", "-"), ", ".join(str(c) for c in r["api_calls"]),
         _ms(r["pass_s"])]
        for r in part["swarm"]
    ]  # fmt: skip
    header = ["routed services", "services in the snapshot", "API calls (3 passes)", "pass"]
    lines += _table(header, rows)
    return lines


def naive_md(part: dict[str, Any]) -> list[str]:
    mix = ", ".join(
        f"{name.replace('_', ' ')} {w}%" for name, w in part["event_mix_percent"].items()
    )
    lines = [
        "## 4. Our pass against a naive pass",
        "",
        "The same seeded sequence of events on the same synthetic Swarm, after each event: ours = "
        "desired + render + plan (digest comparison), reloading only proxies whose config "
        "changed; naive = desired + render, reloading every proxy on every event. Reloads are "
        f"counted (2 proxies). Event mix: {mix}. Pass times are medians and include parsing "
        "the answers.",
        "",
    ]
    rows = [
        [r["services"], r["events"], r["route_changing_events"], r["ours_reloads"],
         r["naive_reloads"], f"{r['reloads_avoided']} ({r['avoided_share']:.0%})",
         _ms(r["ours_pass_s"]), _ms(r["naive_pass_s"]), f"{r['pass_time_ratio']:.2f}x"]
        for r in part["rows"]
    ]  # fmt: skip
    header = ["services", "events", "route-changing", "reloads ours", "reloads naive",
              "reloads avoided", "pass ours", "pass naive", "ours / naive time"]  # fmt: skip
    return lines + _table(header, rows)


def _node_steps(part: dict[str, Any], step: str, width: int) -> Iterator[tuple[str, Any]]:
    """(mode, that step's figures) of each mode measured; a failed step is a row saying so."""
    for mode in ("agents", "rolling"):
        got = (part.get(mode) or {}).get(step)
        if got is None:
            continue
        if "error" in got:
            yield mode, [mode, f"{step} failed: {got['error']}"] + [""] * (width - 2)
        else:
            yield mode, got


def _latency_rows(part: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for mode, got in _node_steps(part, "latency", 7):
        if isinstance(got, list):
            rows.append(got)
            continue
        for op in ("create", "remove", "all"):
            one = got[op]
            rows.append(
                [mode, op, one["n"], _s(one["p50_s"]), _s(one["p95_s"]), _s(one["max_s"]),
                 one.get("failed", "")]
            )  # fmt: skip
    return rows


def _load_rows(part: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for scenario, what in (("route_changes", "{changes} route changes"),
                           ("rolling_update", "rolling update")):  # fmt: skip
        for mode, one in _node_steps(part, scenario, 8):
            if isinstance(one, list):
                rows.append(one)
                continue
            rows.append(
                [mode, what.format(**one), one["requests"], one["failed"], one["connect_errors"],
                 one["read_errors"], one["timeouts"], one["non_2xx"]]
            )  # fmt: skip
    return rows


def _parts(parts: dict[str, float], unit: str) -> str:
    ordered = sorted(parts.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {seconds:.2f}{unit}" for name, seconds in ordered)


def _cpu_parts(mode: str, latency: dict[str, Any]) -> list[str]:
    """Where a removal's CPU went (``bench.cgroups``), and what the polling alone costs."""
    removal, polling = latency.get("remove_cpu_s"), latency.get("polling_cpu_s")
    if not removal:
        return []
    lines = [
        f"{mode}: a removal's CPU by part, median over the trials (CPU seconds, from the host's "
        f"cgroups): {_parts(removal, ' s')}.",
    ]
    if polling:
        lines[-1] += (
            " This bench's polling alone, every port polled for a host that does not change, "
            f"costs per second: {_parts(polling, ' s/s')}."
        )
    return [*lines, ""]


def nodes_md(part: dict[str, Any]) -> list[str]:
    lines = [
        "## Agents on a 3-node Swarm: change to routable on every node, and load",
        "",
        f"A {part['nodes']}-node Swarm (bed), the controller a service on the manager, a global "
        "nginx and a global HAProxy proxy (6 proxy tasks). `agents`: an agent on every node, "
        "proxies reloaded in place; `rolling`: no agents, the proxies get a new Docker config "
        "and Swarm replaces their tasks. A change is routable when every proxy task on every "
        "node answers accordingly (fresh connections, 20 ms apart); `create` from max(call "
        "returned, task running), `remove` from the call to 404 everywhere.",
        "",
    ]
    chosen = part.get("proxy_nodes")
    if chosen and len(chosen) < part["nodes"]:
        lines += [
            f"**Proxies on node(s) {', '.join(map(str, chosen))} only** "
            "(`INTERLOCK_BENCH_PROXY_NODES`): what one node's agent and proxies take for a "
            "change, no other node applying it on the same cores.",
            "",
        ]
    lines += _table(["mode", "change", "n", "p50", "p95", "max", "failed"], _latency_rows(part))
    for mode in ("agents", "rolling"):
        latency = (part.get(mode) or {}).get("latency") or {}
        if latency.get("remove_busy_cpu_s") is not None:
            lines += [
                f"{mode}: the machine's busy CPU time from a removal's call to 404 everywhere, "
                f"median **{latency['remove_busy_cpu_s']:.2f} s** on {latency['cores']} cores "
                "(every node's engine, proxies and agents, the controller and this bench's "
                "polling share them): a change routable everywhere in wall time t needs t ≥ "
                "that / cores here.",
                "",
            ]
        lines += _cpu_parts(mode, latency)
    lines += [
        "Under wrk load through every proxy port at once (2 threads, 2 keep-alive connections per "
        "port, no retries): route changes of another service (each waited for on every "
        "port), and a rolling update of a backend with a task on every node.",
        "",
    ]
    header = ["mode", "scenario", "requests", "failed", "connect", "read", "timeout", "non-2xx"]
    lines += _table(header, _load_rows(part))
    errors = [e for mode in ("agents", "rolling") for e in (part.get(mode) or {}).get(
        "latency", {}).get("errors", [])]  # fmt: skip
    if errors:
        lines += ["Trials that failed: " + "; ".join(errors), ""]
    return lines


def reloads_md(part: dict[str, Any]) -> list[str]:
    plan = part["plan"]
    lines = [
        "## HAProxy reloads: runtime API vs a reload on every change",
        "",
        "One signal-mode HAProxy proxy, the real `interlock run`; `runtime`: address changes "
        "through HAProxy's runtime API (server slots), `reload`: the same controller with "
        '`INTERLOCK_RUNTIME_DIR=""` (a reload on every change). Rolling update of 3 replicas '
        f"with {plan['connections']} WebSocket connections to another backend held open; memory "
        "= RSS of all the proxy's HAProxy processes, old workers included (peak during the "
        "update); scale "
        f"3 -> {' -> '.join(map(str, plan['scale']))}; {plan['changes']} host changes.",
        "",
    ]
    rows = []
    for row in part["rows"]:
        rolled, scaled, routes = row["rolling_update"], row["scale"], row["route_changes"]
        rows.append([
            row["variant"],
            f"{rolled['reloads']} / {rolled['runtime_updates']}",
            f"{scaled['reloads']} / {scaled['runtime_updates']}",
            f"{routes['reloads']} / {routes['runtime_updates']}",
            f"{rolled['rss_before_mib']} → {rolled['rss_peak_mib']}",
            f"{rolled['processes_before']} → {rolled['processes_peak']}",
        ])  # fmt: skip
    header = ["variant", "rolling update: reloads / runtime", "scale", "route changes",
              "RSS MiB (before → peak)", "processes"]  # fmt: skip
    return lines + _table(header, rows)


SECTIONS = {
    "reloads": reloads_md,
    "latency": latency_md,
    "load": load_md,
    "scale": scale_md,
    "naive": naive_md,
    "nodes": nodes_md,
}


def _loads(values: Any) -> str:
    return ", ".join(f"{v:.2f}" for v in values) if values else "?"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# interlock benchmark",
        "",
        f"- Run: {results['started']} → {results['finished']} "
        f"({'quick' if results['quick'] else 'full'}; `{results['command']}`)",
        f"- Machine: {_machine_line(results)}",
        f"- Load average (1, 5, 15 min), start / end: {_loads(results['machine']['load_average'])}"
        f" / {_loads(results.get('load_average_end'))}",
        f"- Other services on the test bed at start / end (other work sharing the machine): "
        f"{results.get('other_services_start', '?')} / {results.get('other_services_end', '?')}",
        "",
    ]
    for name, part in results["parts"].items():
        if "error" in part:
            lines += [f"## {name}", "", f"Failed: `{part['error']}`", ""]
        else:
            lines += SECTIONS[name](part)
    return "\n".join(lines)
