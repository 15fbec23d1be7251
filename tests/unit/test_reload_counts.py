"""Reloads and runtime updates counted: per proxy task on the board, per proxy and reason in
the metrics (plain data)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from controller.board import Board
from controller.metrics import ReloadCollector
from tests.unit.test_board import proxy_task_container, report


def counts(proxy: str, **numbers: int) -> dict:
    return {"c1": {"proxy": proxy, **numbers}}


def test_the_board_adds_what_each_report_grew_by_and_survives_an_agent_restart():
    board = Board("interlock")
    container = [proxy_task_container("c1", "n1")]
    for numbers in ({"runtime": 2, "restart": 1}, {"runtime": 5, "restart": 1}, {"runtime": 1}):
        board.report({**report("n1", container), "counts": counts("edge", **numbers)})
    assert board.totals == {("edge", "runtime"): 6, ("edge", "restart"): 1}
    node = board.status()["nodes"][0]
    assert node["counts"] == {"c1": {"proxy": "edge", "runtime": 1}}


def test_malformed_counts_are_left_out_and_a_gone_container_is_not_counted():
    board = Board("interlock")
    body = report("n1", [proxy_task_container("c1", "n1")])
    bad = {"c1": {"proxy": "edge", "runtime": "many", "structural": 2}, "c9": {"runtime": 3}}
    board.report({**body, "counts": bad})
    assert board.totals == {("edge", "structural"): 2}


def test_the_metrics_say_reloads_per_proxy_and_reason_and_runtime_updates():
    registry = CollectorRegistry()
    totals = {("edge", "runtime"): 7, ("edge", "endpoints"): 1, ("edge", "structural"): 2}
    registry.register(ReloadCollector(lambda: totals))
    text = generate_latest(registry).decode()
    assert 'interlock_proxy_runtime_updates_total{proxy="edge"} 7.0' in text
    assert 'interlock_proxy_inplace_reloads_total{proxy="edge",reason="endpoints"} 1.0' in text
    assert 'interlock_proxy_inplace_reloads_total{proxy="edge",reason="structural"} 2.0' in text
