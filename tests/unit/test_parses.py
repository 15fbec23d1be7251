"""Tasks and services parsed once per version: one listed again unchanged is not parsed again, a
changed one (Swarm gives it a new version) always is."""

import random

from controller.gateway import Gateway
from controller.observe import Observer
from controller.snapshot import Parses, snapshot_from_api
from tests import builders as b
from tests.fakeengine import FakeEngine


def versioned(tid: str, version: int, state: str = "running", address: str = "10.0.0.2"):
    raw = b.task(tid, "a1", address, state=state)
    raw["Version"] = {"Index": version}
    return raw


def listing(parses: Parses, *tasks):
    return snapshot_from_api([], list(tasks), [], [], parses=parses)


def test_a_task_listed_again_at_its_version_is_the_same_object():
    parses = Parses()
    first = listing(parses, versioned("t1", 7)).tasks[0]
    again = listing(parses, versioned("t1", 7)).tasks[0]
    assert again is first


def test_a_new_version_is_parsed_anew_and_shows_the_change():
    parses = Parses()
    listing(parses, versioned("t1", 7, address="10.0.0.2"))
    moved = listing(parses, versioned("t1", 8, state="shutdown", address="10.0.0.9")).tasks[0]
    assert (moved.state, moved.addresses) == ("shutdown", {"net1": "10.0.0.9"})


def test_a_service_listed_again_at_its_version_is_the_same_and_a_new_version_is_read_anew():
    parses = Parses()

    def service(version: int, hostname: str):
        raw = b.service("a1", "web", {"interlock.hostname": hostname})
        raw["Version"] = {"Index": version}
        return snapshot_from_api([raw], [], [], [], parses=parses).services[0]

    first = service(7, "web.example.com")
    assert service(7, "web.example.com") is first
    relabelled = service(8, "shop.example.com")
    assert relabelled.labels["interlock.hostname"] == "shop.example.com"
    assert (relabelled.version, first.version) == (8, 7)


def test_a_task_without_a_version_is_parsed_every_time():
    parses = Parses()
    raw = b.task("t1", "a1", "10.0.0.2")
    first = listing(parses, raw).tasks[0]
    again = listing(parses, raw).tasks[0]
    assert again == first and again is not first


def test_a_task_missing_from_a_listing_is_forgotten():
    parses = Parses()
    first = listing(parses, versioned("t1", 7), versioned("t2", 1)).tasks[0]
    assert listing(parses, versioned("t1", 7)).tasks[0] is first
    listing(parses, versioned("t2", 1))
    assert listing(parses, versioned("t1", 7)).tasks[0] is not first


def test_reused_or_not_the_snapshot_is_the_same():
    raws = [versioned(f"t{i}", i, address=f"10.0.0.{i + 2}") for i in range(5)]
    parses = Parses()
    listing(parses, *raws)
    assert listing(parses, *raws) == snapshot_from_api([], raws, [], [])


def test_the_observer_keeps_its_parses_from_one_listing_to_the_next():
    """Wired in where the controller lists: the observer's second listing of an unchanged task
    gives the task parsed by its first (a plain engine double: no convergence is claimed)."""
    service = b.service("a1", "web", {"interlock.hostname": "web.example.com"})
    engine = FakeEngine([service], [versioned("t1", 7)])
    observer = Observer(Gateway(engine), "interlock")
    first = observer.snapshot()
    again = observer.snapshot()
    assert again.tasks[0] is first.tasks[0] and again.services[0] is first.services[0]
    engine.tasks_ = [versioned("t1", 8, state="shutdown")]
    assert observer.snapshot().tasks[0].state == "shutdown"


def test_a_snapshot_holds_the_tasks_by_service_then_id_whatever_order_they_are_listed_in():
    """The Engine lists tasks by id, a service's scattered among the others: the snapshot has
    them in (service, id) order, as one sort by that pair would (``snapshot.by_service``)."""
    listed = [b.task(f"t{n:03d}", f"s{n * 7 % 13:02d}", "10.0.0.2") for n in range(200)]
    expected = sorted((t["ServiceID"], t["ID"]) for t in listed)
    for seed in range(3):
        random.Random(seed).shuffle(listed)
        tasks = snapshot_from_api([], listed, [], []).tasks
        assert [(t.service_id, t.id) for t in tasks] == expected
