"""What a pass remembers of the last one (``bounded.Recall``, used by ``desired``) changes only
how soon it decides, never what.

A pass hands back the objects the last pass made (apps, targets, backends, routes) when they are
made from equal inputs. The property below runs sequences of Swarm changes (labels, tasks,
networks, secrets, ages, proxies, services removed), listed through one ``Parses`` as the
observer lists them, and compares every pass with a pass that remembers nothing.
"""

from __future__ import annotations

import copy

from hypothesis import given
from hypothesis import strategies as st

from controller import desired as desired_module
from controller.bounded import Recall
from controller.desired import desired_state
from controller.snapshot import Parses, Snapshot, snapshot_from_api
from tests import builders as b
from tests.unit.test_fuzz import SECRETS, P, good_labels, hostile_labels, swarm_settings, swarms

# ---- Recall itself ----------------------------------------------------------------------------


def test_equal_inputs_hand_back_the_same_object_and_changed_ones_remake_it():
    recall, made = Recall(), []

    def make(value: int) -> list[int]:
        made.append(value)
        return [value]

    first = recall.get("k", (1, "a"), make, 1)
    assert recall.get("k", (1, "a"), make, 1) is first
    assert recall.get("k", (1, "b"), make, 2) == [2]
    assert made == [1, 2]
    assert recall.same("s", frozenset({"x"})) is recall.same("s", frozenset({"x"}))


def test_what_a_pass_did_not_ask_for_is_forgotten_once_it_outgrows_twice_the_pass():
    recall = Recall()
    for key in range(200):
        recall.get(key, (key,), str, key)
    recall.passed()
    for _ in range(3):
        recall.get("only", (0,), str, 0)
        recall.passed()
    assert len(recall) == 1  # 200 keys not asked for in the pass before: dropped
    recall.clear()
    assert len(recall) == 0


# ---- a pass with memory decides what a pass without it decides --------------------------------

NETWORKS = [b.network("net1"), b.network("net2")]


def _listing(services, tasks, secrets) -> tuple:
    return (
        services,
        tasks,
        NETWORKS,
        [],
        [],
        [{"ID": f"id-{name}", "Spec": {"Name": name}} for name in secrets],
    )


def _fresh(snapshot: Snapshot):
    """The pass of a controller that has just started: nothing remembered (a Recall of its
    own, the module's put back after)."""
    kept = desired_module._RECALL
    desired_module._RECALL = Recall()
    try:
        return desired_state(snapshot, P)
    finally:
        desired_module._RECALL = kept


def _bump(raw: dict) -> None:
    raw["Version"] = {"Index": raw.get("Version", {}).get("Index", 0) + 1}


@st.composite
def changes(draw) -> list[tuple]:
    """Changes to a Swarm, each (what, which, a value drawn for it)."""
    what = st.sampled_from(
        ["labels", "hostile", "scale", "stop", "move", "drop", "network", "secret", "age",
         "proxy", "remove", "nothing"]
    )  # fmt: skip
    steps = []
    for index in range(draw(st.integers(1, 6))):
        kind = draw(what)
        value = None
        if kind == "labels":
            value = draw(good_labels(100 + index))
        elif kind == "hostile":
            value = draw(hostile_labels(100 + index))
        steps.append((kind, draw(st.integers(0, 20)), value))
    return steps


def _change(services: list, tasks: list, secrets: list, step: tuple, serial: int) -> None:
    """Apply one change to the raw answers, as Swarm would (a changed object gets a new
    version; a new task a new id)."""
    kind, which, value = step
    apps = services[2:]
    app = apps[which % len(apps)] if apps else None
    task = tasks[which % len(tasks)] if tasks else None
    if kind in ("labels", "hostile") and app:
        app["Spec"]["Labels"] = dict(value)
        _bump(app)
    elif kind == "scale" and app:
        tasks.append(_versioned(b.task(f"n{serial}", app["ID"], f"10.9.0.{serial % 250 + 2}")))
    elif kind == "stop" and task:
        task["DesiredState"] = "shutdown"
        _bump(task)
    elif kind == "move" and task:
        task["NetworksAttachments"][0]["Addresses"] = [f"10.8.0.{serial % 250 + 2}/24"]
        _bump(task)
    elif kind == "drop" and task:
        tasks.remove(task)
    elif kind == "network" and app:
        networks = [["net2"], ["net1", "net2"], ["net1"]][which % 3]
        app["Spec"]["TaskTemplate"]["Networks"] = [{"Target": n} for n in networks]
        _bump(app)
    elif kind == "secret":  # every certificate's secret gone, or back
        secrets[:] = [] if secrets else SECRETS
    elif kind == "age" and app:
        app["CreatedAt"] = f"2025-12-31T23:59:{which % 60:02d}.{serial:09d}Z"
        _bump(app)
    elif kind == "proxy":  # off the apps' network, or onto two (then each app names one)
        proxy = services[which % 2]
        attached = proxy["Spec"]["TaskTemplate"]["Networks"]
        networks = ["net1"] if len(attached) == 1 and attached[0]["Target"] == "net2" else ["net2"]
        if which % 3 == 0:
            networks = ["net1", "net2"]
        proxy["Spec"]["TaskTemplate"]["Networks"] = [{"Target": n} for n in networks]
        _bump(proxy)
    elif kind == "remove" and app:
        services.remove(app)


def _versioned(task: dict) -> dict:
    task["Version"] = {"Index": 1}
    return task


@swarm_settings(60)
@given(swarm=swarms(), steps=changes())
def test_a_pass_that_remembers_decides_what_a_fresh_pass_decides(swarm, steps):
    _passes_agree(swarm, steps)


def test_a_host_handed_to_the_next_service_routes_to_its_backend():
    """Two services name one host; the owner goes, or turns out younger: the route must lead
    to the other's backend although host and path are the same."""
    services = [
        b.service("p1", "ngx", {f"{P}.ext.name": "nginx"}),
        b.service("p2", "hap", {f"{P}.ext.name": "haproxy"}),
    ]
    for i in range(2):
        labels = {f"{P}.hostname": "shared.example.com", f"{P}.port": "80"}
        created = f"2026-01-01T00:00:0{i}.0Z"
        services.append(b.service(f"s{i}", f"app{i}", labels, created=created))
    tasks = [b.task(f"t{i}", f"s{i}", f"10.0.0.{i + 2}") for i in range(2)]
    _passes_agree((services, tasks, set()), [("age", 1, None)])
    _passes_agree((services, tasks, set()), [("remove", 0, None)])


def _passes_agree(swarm: tuple, steps: list[tuple]) -> None:
    """Each pass over the changing Swarm, with memory, equals a fresh pass."""
    services, tasks, _ = copy.deepcopy(swarm)
    tasks = [_versioned(t) for t in tasks]
    secrets = list(SECRETS)
    parses = Parses()
    for serial, step in enumerate([("nothing", 0, None), *steps]):
        _change(services, tasks, secrets, step, serial)
        snapshot = snapshot_from_api(*_listing(services, tasks, secrets), parses=parses)
        remembered = desired_state(snapshot, P)
        assert remembered == _fresh(snapshot), step


def test_after_one_task_moves_only_its_service_is_made_again():
    """What makes a pass over a large Swarm fast: the other services' backends and routes are
    the very objects of the last pass (so the render stage compares pointers, not routes)."""
    services = [
        b.service("p1", "ngx", {f"{P}.ext.name": "nginx"}),
        b.service("p2", "hap", {f"{P}.ext.name": "haproxy"}),
    ]
    tasks = []
    for i in range(4):
        services.append(b.service(f"s{i}", f"app{i}", {f"{P}.hostname": f"app{i}.example.com"}))
        tasks.append(_versioned(b.task(f"t{i}", f"s{i}", f"10.0.0.{i + 2}")))
    for one in services[2:]:
        one["Spec"]["Labels"][f"{P}.port"] = "80"
    parses = Parses()
    before = desired_state(snapshot_from_api(*_listing(services, tasks, []), parses=parses), P)
    tasks[1]["NetworksAttachments"][0]["Addresses"] = ["10.0.0.99/24"]
    _bump(tasks[1])
    after = desired_state(snapshot_from_api(*_listing(services, tasks, []), parses=parses), P)
    for old, new in zip(before.proxies, after.proxies, strict=True):
        kept = [n is o for o, n in zip(old.backends, new.backends, strict=True)]
        assert kept == [True, False, True, True], kept
        assert new.backends[1].targets == ("10.0.0.99:80",)
        assert all(n is o for o, n in zip(old.routes, new.routes, strict=True))
