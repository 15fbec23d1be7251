"""`interlock status` in agent mode: every proxy task on every node, from the controller's board.

The board lives in the controller's process, so the CLI asks it: ``GET /v1/status`` on the
agents' API, with the shared token. Run the CLI where both are at hand, in the controller's own
container: ``docker exec <controller container> interlock status`` (the API listens there on
INTERLOCK_AGENT_PORT; ``--controller URL`` reaches it elsewhere). The reports it gets feed the
CLI's own dry-run pass (a read-only copy of the board), so the proxies' "in sync" counts cover
every node, and one row per proxy task says what it serves, how old its agent's report is, or
"no agent" when its node has none.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .agentapi import TokenError, read_token, stale_after
from .board import Board
from .logs import printable
from .result import PassResult
from .settings import Settings

SHORT = 12
NO_AGENT = "no agent"


def status_url(settings: Settings, given: str | None) -> str:
    return (given or f"http://127.0.0.1:{settings.agent_port}").rstrip("/") + "/v1/status"


def remote_board(settings: Settings, url: str | None = None) -> tuple[Board, str]:
    """A copy of the controller's board, and a line saying where it came from (or, with an
    empty board, why it could not be had)."""
    where = status_url(settings, url)
    empty = Board(settings.label_prefix, stale_after(settings))
    try:
        token = read_token(settings.agent_token_file)
    except TokenError as error:
        return empty, f"agents: unknown ({error})"
    request = urllib.request.Request(where, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            data = json.loads(answer.read())
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        return empty, f"agents: cannot read the controller's board at {where}: {reason}"
    board = Board.from_status(settings.label_prefix, data, stale_after(settings))
    return board, f"agents: {len(data.get('nodes') or [])} node(s) reporting to {where}"


def _agent(board: Board, node: str) -> str:
    report = board.reports.get(node)
    if report is None or report not in board.live():
        return NO_AGENT
    age = board.clock() - report.at
    return f"connected, report {age:.1f}s old" if board.waiting.get(node) else f"{age:.1f}s old"


def node_names(api: Any) -> dict[str, str]:
    """Swarm node id -> hostname, to name the nodes no agent reports from ({} if unknown)."""
    try:
        return {n["ID"]: n["Description"]["Hostname"] for n in api.nodes()}
    except Exception:  # not a manager, or no Swarm: ids it is
        return {}


def _row(
    proxy: str, board: Board, node: str, container: str, want: str, names: dict[str, str]
) -> dict[str, Any]:
    report = board.reports.get(node)
    hostname = report.hostname if report else names.get(node, node[:SHORT])
    agent = _agent(board, node)
    row = {
        "proxy": proxy,
        "node": hostname,
        "container": container[:SHORT],
        "desired": want[:SHORT] or "-",
        "served": "-",
        "in_sync": "no",
        "agent": agent,
        "reloads": "-",  # in-place reloads by its agent since it started; "runtime": updates
        "runtime": "-",  # through HAProxy's runtime API, without a reload
        "error": "",
    }
    if agent == NO_AGENT:
        row["served"] = NO_AGENT
        return row
    if container not in {c.id for c in report.containers}:
        row["served"] = "not reported"
        row["error"] = "the container does not carry the proxy label, so no agent touches it"
        return row
    counts = report.counts.get(container, ("", {}))[1]
    row["reloads"] = sum(n for k, n in counts.items() if k != "runtime")
    row["runtime"] = counts.get("runtime", 0)
    served = report.served.get(container, "")
    refused = report.errors.get(container)
    row["served"] = served[:SHORT] or "-"
    if want and served == want:
        row["in_sync"] = "yes"
    elif refused and refused[0] == want:
        row["in_sync"], row["error"] = "refused", refused[1]
    return row


def task_rows(
    result: PassResult, board: Board, names: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per running container of every signal-mode proxy, on every node (``names``:
    node id -> hostname, for nodes no agent reports from)."""
    names = names or {}
    where = {c.id: r.node for r in board.reports.values() for c in r.containers}
    rows = []
    for desired in result.desired.proxies:
        proxy = desired.proxy
        if proxy.mode != "signal":
            continue
        rendered = result.rendered.get(proxy.name)
        want = rendered.digest if rendered else ""
        if proxy.container_id:  # a plain container: only an agent's report knows of it
            node = where.get(proxy.container_id, "")
            rows.append(_row(proxy.name, board, node, proxy.container_id, want, names))
            continue
        for task in result.snapshot.tasks:
            if task.service_id == proxy.service_id and task.serving:
                row = _row(proxy.name, board, task.node_id, task.container_id, want, names)
                rows.append(row)
    return sorted(rows, key=lambda r: (r["proxy"], r["node"], r["container"]))


COLUMNS = ["proxy", "node", "container", "desired", "served", "in_sync", "reloads", "runtime",
           "agent"]  # fmt: skip


def with_tasks(text: str, rows: list[dict[str, Any]], note: str, as_json: bool) -> str:
    """The status report with the proxy tasks per node added."""
    if as_json:
        data = json.loads(text)
        data["tasks"], data["agents"] = rows, note
        return json.dumps(data, indent=2)
    lines = [text, "", f"# {printable(note)}"]
    if rows:
        cells = [[printable(str(r[c])) for c in COLUMNS] for r in rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(COLUMNS)]
        lines.append(
            "  ".join(c.upper().ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip()
        )
        lines += [
            "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
            for row in cells
        ]
        lines += [
            f"{'REFUSED' if r['in_sync'] == 'refused' else 'NOTE   '}  "
            f"{printable(r['proxy'])} on {r['node']} ({r['container']}): "
            f"{printable(r['error'])}"
            for r in rows
            if r["error"]
        ]
    return "\n".join(lines)
