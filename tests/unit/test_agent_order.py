"""The order of one agent round's applies (pure threading, no engine): a file that only records a
runtime update waits for the round's reloads, and waiting never starves the others."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from controller.agent import ReloadsFirst


def run_round(works, parallel):
    gate = ReloadsFirst(len(works), parallel)
    with ThreadPoolExecutor(max_workers=len(works)) as pool:
        list(pool.map(lambda work: gate.run(work), works))


def test_a_runtime_file_is_written_after_every_reload_of_the_round():
    order, lock = [], threading.Lock()

    def reload(name):
        def work(hold):
            time.sleep(0.2)  # the check and the reload
            with lock:
                order.append(f"{name} reloaded")

        return work

    def runtime(hold):
        with lock:
            order.append("runtime updated")
        hold()
        with lock:
            order.append("runtime file written")

    run_round([runtime, reload("nginx"), reload("other")], parallel=8)
    assert order[0] == "runtime updated"
    assert order[-1] == "runtime file written"


def test_a_waiting_apply_holds_no_place():
    """With one place, a held runtime update must let the reload run (or the round would stall
    until the hold's time limit)."""
    done = threading.Event()

    def runtime(hold):
        hold()

    def reload(hold):
        time.sleep(0.05)
        done.set()

    started = time.monotonic()
    run_round([runtime, reload], parallel=1)
    assert done.is_set() and time.monotonic() - started < 5


def test_a_round_of_holds_only_does_not_wait():
    started = time.monotonic()
    run_round([lambda hold: hold(), lambda hold: hold()], parallel=8)
    assert time.monotonic() - started < 5


def test_a_failed_reload_releases_the_held():
    def runtime(hold):
        hold()

    def broken(hold):
        raise RuntimeError("the engine went away")

    gate = ReloadsFirst(2, 8)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(gate.run, runtime), pool.submit(gate.run, broken)]
    assert futures[0].exception() is None
    assert isinstance(futures[1].exception(), RuntimeError)
    assert time.monotonic() - started < 5
