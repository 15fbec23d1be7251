"""nginx reloads on every change (stock nginx has no endpoint API), so: its
worker_shutdown_timeout setting reaches the rendered config, which the real nginx accepts (0
leaves nginx's own behaviour: old workers wait for their connections); and a pass reloads a
container at most once, in signal mode (the plan) and with agents (the board's answer).
The Swarm test of both is ``tests/swarm/test_nginx_reloads.py``."""

import threading
import time

import pytest

from controller import plan as planning
from controller.board import Board
from controller.reconcile import render_options
from controller.render import RenderOptions, render
from controller.settings import Settings
from tests import builders as b
from tests.unit.test_board import push, report
from tests.unit.test_plan import APP, P, deployable, make, proxy_service
from tests.unit.test_render import real_check, scenario


def test_the_default_bounds_old_workers_and_nginx_accepts_it(tmp_path):
    text = render(scenario()["ngx"], RenderOptions()).text
    assert "\nworker_shutdown_timeout 60000ms;\n" in text
    result = real_check("nginx", text, tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_setting_is_rendered_and_zero_renders_none(monkeypatch):
    monkeypatch.setenv("INTERLOCK_NGINX_WORKER_SHUTDOWN_TIMEOUT", "2.5")
    text = render(scenario()["ngx"], render_options(Settings())).text
    assert "\nworker_shutdown_timeout 2500ms;\n" in text
    off = render(scenario()["ngx"], RenderOptions(worker_shutdown_timeout=0)).text
    assert "worker_shutdown_timeout" not in off


def test_a_negative_timeout_is_refused(monkeypatch):
    monkeypatch.setenv("INTERLOCK_NGINX_WORKER_SHUTDOWN_TIMEOUT", "-1")
    with pytest.raises(ValueError, match="nginx_worker_shutdown_timeout"):
        Settings()


def test_a_container_listed_twice_gets_one_push_a_pass():
    """Two agents reporting one container (a misconfigured node) must not reload it twice."""
    labels = {f"{P}.ext.name": "nginx", f"{P}.ext.mode": "signal"}
    twice = [b.container("c1", "proxy.1", {"com.docker.swarm.service.id": "p1"})] * 2
    snapshot = make([proxy_service(labels=labels), APP], containers=twice)
    actions = planning.plan(snapshot, P, deployable(snapshot), {}, keep_configs=3)
    assert [a.container_id for a in actions] == ["c1"]


def test_an_agent_gets_one_config_per_container_for_a_pass_that_pushed_twice():
    """A pass that handed a container two configs answers its agent with the last one only."""
    board = Board("interlock")
    board.batch = True
    labels = {"interlock.ext.name": "nginx", "com.docker.swarm.node.id": "n1"}
    node, generation = board.report(report("n1", [b.container("c1", "proxy.c1", labels)]))
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(board.wait(node, generation, 10)))
    waiter.start()
    time.sleep(0.1)
    board.push(push("c1", "1" * 64))
    board.push(push("c1", "2" * 64))
    board.flush()
    waiter.join(5)
    assert [(w.container, w.digest) for w in got[0]] == [("c1", "2" * 64)]
