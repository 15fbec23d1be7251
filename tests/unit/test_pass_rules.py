"""The pass's rules, fast: the real Observer, Executor and Reconciler over a fake Engine.

The fake stands at the gateway boundary (it answers the Engine API calls the stages make, and
records the writes); these tests are for the policy of a pass, not for convergence, which only
the Swarm tests show. Rules: a config is checked only when it is not live yet; a refused config
keeps the old one; one proxy's failure skips only its own actions; a dry run calls no writer;
garbage collection keeps the newest N configs of a proxy.
"""

from __future__ import annotations

import base64
import gc
import itertools
from typing import Any

import docker.errors
import pytest

from controller.act import Executor
from controller.board import AgentObserver, Board
from controller.collector import collector_paused
from controller.gateway import Gateway
from controller.observe import Observer
from controller.plan import CreateConfig, PushConfig, RemoveConfig, UpdateProxyService
from controller.reconcile import Reconciler
from controller.settings import Settings
from controller.verify import Verdict
from tests import builders as b

P = "interlock"
SERVICE_ID = "com.docker.swarm.service.id"
WRITES = ("create_config", "update_service", "remove_config", "put_archive", "kill")


class FakeEngine:
    """Answers the list calls from plain data and records every write (as the SDK names it)."""

    def __init__(self, services: list[dict], tasks: list[dict]) -> None:
        self.services_, self.tasks_ = services, tasks
        self.configs_: list[dict] = []
        self.writes: list[tuple[str, Any]] = []
        self.fail_update_of: set[str] = set()
        self._ids = itertools.count(1)

    # reads
    def services(self, filters=None):
        return self.services_

    def tasks(self, filters=None):
        return self.tasks_

    def networks(self):
        return [b.network("net1")]

    def configs(self, filters=None):
        name = (filters or {}).get("name", "")
        return [c for c in self.configs_ if c["Spec"]["Name"].startswith(name)]

    def inspect_config(self, config_id):
        return next(c for c in self.configs_ if c["ID"] == config_id)

    def containers(self, filters=None):
        return []

    def secrets(self):
        return []

    # writes
    def create_config(self, name, data, labels=None):
        self.writes.append(("create_config", name))
        config = b.config(f"cfg{next(self._ids)}", name, labels or {}, "2026-01-01T00:00:00Z")
        config["Spec"]["Data"] = base64.b64encode(data).decode()
        self.configs_.append(config)
        return {"ID": config["ID"]}

    def update_service(self, service_id, version, **spec):
        self.writes.append(("update_service", service_id))
        if service_id in self.fail_update_of:
            raise docker.errors.APIError("update out of sequence")
        service = next(s for s in self.services_ if s["ID"] == service_id)
        service["Spec"]["TaskTemplate"] = spec["task_template"]
        service["Version"]["Index"] += 1

    def remove_config(self, config_id):
        self.writes.append(("remove_config", config_id))
        self.configs_ = [c for c in self.configs_ if c["ID"] != config_id]


class CountingChecker:
    """The proxy's binary, as the check stage sees it: refuses configs naming ``refuse``."""

    def __init__(self, refuse: str = "") -> None:
        self.refuse, self.checked = refuse, 0

    def check(self, desired, rendered, options):
        self.checked += 1
        if self.refuse and self.refuse in rendered.text:
            return Verdict(False, f'[emerg] refused "{self.refuse}"')
        return Verdict(True, "")


def swarm(*hosts: str) -> FakeEngine:
    services = [
        b.service("p1", "edge", {f"{P}.ext.name": "nginx"}),
        b.service("p2", "hap", {f"{P}.ext.name": "haproxy"}),
    ]
    tasks = []
    for i, host in enumerate(hosts):
        services.append(b.service(f"a{i}", f"app{i}", {f"{P}.hostname": host, f"{P}.port": "80"}))
        tasks.append(b.task(f"t{i}", f"a{i}", f"10.0.0.{i + 2}"))
    return FakeEngine(services, tasks)


def reconciler(engine: FakeEngine, checker=None, **settings) -> Reconciler:
    gateway = Gateway(engine)
    config = Settings(label_prefix=P, **settings)
    return Reconciler(
        config,
        Observer(gateway, P),
        Executor(gateway),
        checker,
        api_calls=lambda: gateway.calls,
    )


def test_a_config_is_checked_only_while_it_is_not_live():
    engine, checker = swarm("a.example.com"), CountingChecker()
    first = reconciler(engine, checker).run_pass()
    assert first.converged and checker.checked == 2  # one config per proxy, both new
    again = reconciler(engine, checker).run_pass()  # a new controller: no memory of checks
    assert again.actions == [] and checker.checked == 2


def test_a_refused_config_keeps_the_one_the_proxy_serves():
    engine = swarm("a.example.com")
    reconciler(engine, CountingChecker()).run_pass()
    served = {s["ID"]: s["Spec"]["TaskTemplate"] for s in engine.services_[:2]}
    engine.writes.clear()
    # A route change, and a binary that refuses even a config without services (a broken
    # template): nothing is deployed, and the proxies keep what they serve.
    engine.services_.append(
        b.service("a9", "late", {f"{P}.hostname": "late.example.com", f"{P}.port": "80"})
    )
    refusing = CountingChecker(refuse="Generated by interlock")
    result = reconciler(engine, refusing).run_pass()
    assert set(result.refused) == {"edge", "hap"} and not result.converged
    assert engine.writes == []
    assert {s["ID"]: s["Spec"]["TaskTemplate"] for s in engine.services_[:2]} == served


def test_one_proxys_failure_skips_only_its_own_actions():
    engine = swarm("a.example.com")
    engine.fail_update_of = {"p1"}
    result = reconciler(engine).run_pass()
    failed = [o.action.proxy for o in result.outcomes if not o.ok]
    assert failed == ["edge"]
    done = [type(o.action).__name__ for o in result.outcomes if o.action.proxy == "hap"]
    assert done == ["CreateConfig", "UpdateProxyService"]
    assert ("update_service", "p2") in engine.writes


def test_a_dry_run_calls_no_writer():
    engine = swarm("a.example.com", "b.example.com")
    result = reconciler(engine, CountingChecker()).run_pass(dry_run=True, checks="none")
    assert {type(a) for a in result.actions} == {CreateConfig, UpdateProxyService}
    assert engine.writes == [] and result.outcomes == []
    assert not [w for w in engine.writes if w[0] in WRITES]


@pytest.mark.parametrize("keep", [0, 2])
def test_garbage_collection_keeps_the_newest_configs_of_each_proxy(keep):
    engine = swarm("a.example.com")
    for n in range(4):  # four configs once rendered for proxy p1, none mounted any more
        labels = {f"{P}.ext.owned": "true", f"{P}.ext.proxy": "p1"}
        created = f"2026-01-0{n + 1}T00:00:00Z"
        engine.configs_.append(b.config(f"old{n}", f"{P}-edge-old{n}", labels, created))
    result = reconciler(engine, keep_configs=keep).run_pass()
    removed = [a.name for a in result.actions if isinstance(a, RemoveConfig)]
    kept = 4 - len(removed)
    assert kept == keep and all(f"old{n}" not in " ".join(removed) for n in range(4 - keep, 4))


def test_a_refusal_an_agent_reports_leaves_out_its_culprit_and_keeps_it_out():
    """In agent mode the node's binary checks a push; when it refuses, the next pass finds the
    service the refusal is down to, and later passes do not render it back in (which would
    push the refused config again, every other pass)."""
    engine = swarm("a.example.com", "poison.example.com")
    engine.services_[0]["Spec"]["Labels"][f"{P}.ext.mode"] = "signal"
    board = Board(P)
    labels = {f"{P}.ext.name": "nginx", SERVICE_ID: "p1", "com.docker.swarm.node.id": "n1"}
    container = b.container("c1", "edge.1.c1", labels)

    def agent_reports(**state) -> None:
        board.report({"node": "n1", "containers": [container], **state})

    agent_reports()
    gateway = Gateway(engine)
    rec = Reconciler(
        Settings(label_prefix=P),
        AgentObserver(Observer(gateway, P), board),
        Executor(gateway, push=board.push),
        CountingChecker(refuse="poison.example.com"),
        board.served,
        refused_by_agents=board.refused,
    )
    rec.run_pass()
    pushed = board.wants["c1"]
    assert "poison.example.com" in pushed.text  # checked in the node's proxy container
    agent_reports(errors={"c1": {"digest": pushed.digest, "error": "[emerg] refused"}})
    second = rec.run_pass()
    fixed = board.wants["c1"]
    assert "poison.example.com" not in fixed.text and "a.example.com" in fixed.text
    assert [p.service for p in second.problems if p.proxy == "edge"] == ["app1"]
    agent_reports(served={"c1": fixed.digest})
    for _ in range(2):
        later = rec.run_pass()
        assert board.wants["c1"].digest == fixed.digest
        assert not [a for a in later.actions if isinstance(a, PushConfig)], later.actions


class CollectorWatch(FakeEngine):
    """Notes whether the cyclic garbage collector was on at each engine call."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.collector: dict[str, bool] = {}

    def services(self, filters=None):
        self.collector["list"] = gc.isenabled()
        return super().services(filters)

    def create_config(self, name, data, labels=None):
        self.collector["write"] = gc.isenabled()
        return super().create_config(name, data, labels)


def test_the_collector_is_paused_while_a_pass_decides_and_back_before_it_acts():
    listed = swarm("a.example.com")
    engine = CollectorWatch(listed.services_, listed.tasks_)
    result = reconciler(engine, CountingChecker()).run_pass()
    assert result.actions, "the pass should write the new configs"
    assert engine.collector == {"list": False, "write": True}
    assert gc.isenabled()


def test_a_pass_that_raises_gives_the_collector_back():
    engine = swarm("a.example.com")
    engine.services = lambda filters=None: (_ for _ in ()).throw(RuntimeError("listing broke"))
    with pytest.raises(RuntimeError):
        reconciler(engine, CountingChecker()).run_pass()
    assert gc.isenabled()


def test_a_collector_already_off_stays_off():
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
