"""The controller's board of agent reports (pure state; plain data, a fake clock)."""

from __future__ import annotations

import threading
import time

import pytest

from controller.board import BadReport, Board, parse_report
from controller.desired import desired_state
from controller.plan import PushConfig
from controller.snapshot import snapshot_from_api
from tests import builders as b

PREFIX = "interlock"
NGINX = {"interlock.ext.name": "nginx"}
D1, D2 = "1" * 64, "2" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def proxy_task_container(cid: str, node: str, service: str = "sp") -> dict:
    labels = {
        **NGINX,
        "com.docker.swarm.service.id": service,
        "com.docker.swarm.node.id": node,
    }
    return b.container(cid, f"proxy.{node}.{cid}", labels)


def report(node: str, containers: list[dict], served=None, errors=None, host="") -> dict:
    return {
        "node": node,
        "hostname": host or node,
        "containers": containers,
        "served": served or {},
        "errors": errors or {},
    }


def push(cid: str, digest: str, text: str = "conf") -> PushConfig:
    return PushConfig("proxy", "nginx", cid, "/etc/nginx/nginx.conf", text, digest)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"node": ""},
        {"node": "n1", "containers": "x"},
        {"node": "n1", "containers": [{"Names": []}]},
        {"node": "n1", "containers": [], "served": {"c": "not-hex"}},
        {"node": "n1", "containers": [], "errors": {"c": "words"}},
        {"node": "n1", "hostname": "bad host\n", "containers": []},
        {"node": "n 1", "containers": []},
    ],
)
def test_a_malformed_report_is_refused_with_a_reason(body):
    with pytest.raises(BadReport):
        parse_report(body)


def test_only_running_proxy_containers_of_the_reporting_node_are_kept():
    board = Board(PREFIX)
    other_node = proxy_task_container("c2", "n2")
    not_proxy = b.container("c3", "app", {})
    stopped = {**proxy_task_container("c4", "n1"), "State": "exited"}
    board.report(report("n1", [proxy_task_container("c1", "n1"), other_node, not_proxy, stopped]))
    assert [c.id for c in board.containers()] == ["c1"]


def test_pending_is_what_is_wanted_not_served_and_not_refused():
    board = Board(PREFIX)
    board.report(report("n1", [proxy_task_container("c1", "n1"), proxy_task_container("c2", "n1")]))
    assert board.pending("n1") == []
    board.push(push("c1", D1))
    board.push(push("c2", D1))
    assert [w.container for w in board.pending("n1")] == ["c1", "c2"]
    errors = {"c2": {"digest": D1, "error": "nginx: [emerg] unknown directive"}}
    board.report(
        report(
            "n1",
            [proxy_task_container("c1", "n1"), proxy_task_container("c2", "n1")],
            served={"c1": D1},
            errors=errors,
        )
    )
    assert board.pending("n1") == []  # c1 serves it; c2 refused exactly this config
    board.push(push("c2", D2))
    assert [w.digest for w in board.pending("n1")] == [D2]  # a new config is tried again


def test_a_held_request_answers_when_a_config_is_wanted():
    board = Board(PREFIX)
    node, generation = board.report(report("n1", [proxy_task_container("c1", "n1")]))
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(board.wait(node, generation, 10)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.2)
    assert not got and board.waiting == {"n1": 1}
    board.push(push("c1", D1))
    waiter.join(5)
    assert [w.digest for w in got[0]] == [D1]
    assert time.monotonic() - started < 2
    assert board.waiting == {}


def test_a_newer_report_of_the_same_node_ends_the_held_request():
    board = Board(PREFIX)
    node, generation = board.report(report("n1", [proxy_task_container("c1", "n1")]))
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(board.wait(node, generation, 10)))
    waiter.start()
    time.sleep(0.1)
    board.report(report("n1", [proxy_task_container("c1", "n1")]))
    waiter.join(5)
    assert got == [[]]


def test_a_quiet_wait_ends_after_its_timeout_with_nothing():
    board = Board(PREFIX)
    node, generation = board.report(report("n1", [proxy_task_container("c1", "n1")]))
    started = time.monotonic()
    assert board.wait(node, generation, 0.3) == []
    assert 0.25 < time.monotonic() - started < 2


def test_a_report_wakes_the_loop_only_when_it_says_something_new():
    woken: list = []
    board = Board(PREFIX, on_change=lambda: woken.append(1))
    containers = [proxy_task_container("c1", "n1")]
    board.report(report("n1", containers))
    board.report(report("n1", containers))
    assert len(woken) == 1
    board.report(report("n1", containers, served={"c1": D1}))
    assert len(woken) == 2


def test_a_silent_node_goes_stale_and_its_containers_leave_the_snapshot():
    clock = Clock()
    board = Board(PREFIX, stale_after=90, clock=clock)
    board.report(report("n1", [proxy_task_container("c1", "n1")]))
    clock.now += 60
    assert [c.id for c in board.containers()] == ["c1"]
    clock.now += 31
    assert board.containers() == []
    assert board.status()["nodes"][0]["live"] is False


def test_merge_takes_proxy_containers_from_agents_only_and_names_plain_ones_by_node():
    services = [b.service("sp", "edge", NGINX), b.service("sa", "app", {"interlock.hostname": "a"})]
    local = [
        proxy_task_container("local-task", "n1"),  # on the controller's engine, not reported
        b.container("plain-local", "edge", NGINX),  # idem
        b.container("mine", "controller", {}),  # not a proxy: stays
    ]
    snapshot = snapshot_from_api(services, [], [b.network("net1")], [], local)
    board = Board(PREFIX)
    remote = [proxy_task_container("remote-task", "n2"), b.container("plain-remote", "edge", NGINX)]
    board.report(report("n2", remote, host="node2"))
    merged = board.merge(snapshot)
    assert {c.id: c.name for c in merged.containers} == {
        "mine": "controller",
        "remote-task": "proxy.n2.remote-task",
        "plain-remote": "node2/edge",
    }
    proxies = {d.proxy.name for d in desired_state(merged, PREFIX, "signal").proxies}
    assert proxies == {"edge", "node2/edge"}


def test_served_for_the_plan_is_the_config_handed_out_until_the_agent_says_otherwise():
    services = [b.service("sp", "edge", NGINX)]
    board = Board(PREFIX)
    board.report(report("n1", [proxy_task_container("c1", "n1")], served={"c1": D1}))
    snapshot = board.merge(snapshot_from_api(services, [], [b.network("net1")], []))
    (proxy,) = [d.proxy for d in desired_state(snapshot, PREFIX, "signal").proxies]
    assert board.served(snapshot, [proxy]) == {"c1": D1}
    board.push(push("c1", D2))
    assert board.served(snapshot, [proxy]) == {"c1": D2}  # in flight: no second push
    assert board.status()["nodes"][0]["served"] == {"c1": D1}  # what status shows: the truth


def test_wants_of_containers_no_report_lists_are_forgotten():
    board = Board(PREFIX)
    board.report(report("n1", [proxy_task_container("c1", "n1")]))
    board.push(push("c1", D1))
    board.report(report("n1", [proxy_task_container("c9", "n1")]))  # c1 gone (task restarted)
    assert board.wants == {}


def test_status_round_trips_into_a_read_only_board():
    clock = Clock()
    board = Board(PREFIX, stale_after=90, clock=clock)
    errors = {"c1": {"digest": D2, "error": "haproxy: [ALERT] parsing"}}
    board.report(report("n1", [proxy_task_container("c1", "n1")], {"c1": D1}, errors, "node1"))
    clock.now += 5
    copy = Board.from_status(PREFIX, board.status(), 90)
    (node,) = copy.status()["nodes"]
    assert node["hostname"] == "node1" and node["served"] == {"c1": D1}
    assert node["errors"]["c1"]["error"] == "haproxy: [ALERT] parsing"
    assert 4.5 < node["report_age_seconds"] < 6 and node["live"]


def test_in_batch_mode_a_node_gets_every_config_of_a_pass_in_one_answer():
    board = Board(PREFIX)
    board.batch = True
    containers = [proxy_task_container("c1", "n1"), proxy_task_container("c2", "n1")]
    node, generation = board.report(report("n1", containers))
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(board.wait(node, generation, 10)))
    waiter.start()
    time.sleep(0.1)
    board.push(push("c1", D1))
    time.sleep(0.1)  # a pass still pushing: the held request is not answered with c1 alone
    assert not got
    board.push(push("c2", D1))
    board.flush()
    waiter.join(5)
    assert sorted(w.container for w in got[0]) == ["c1", "c2"]
