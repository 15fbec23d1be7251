"""Part 3: the cost of one pass as the Swarm grows.

Without an engine: synthetic Swarms (``bench.synthetic``) of 100, 1,000, 5,000 and 10,000 routed
services with 5 to 10 tasks each; time and peak memory (tracemalloc) of desired + render + plan,
the three pure steps of a pass, on a converged Swarm (the plan comes out empty, as in a steady
state). Growth is fitted from 1,000 services up (k in time ~ services^k; 1.0 is linear), on wall
time and on CPU time (the machine is shared: CPU time does not count waiting for a core), and the
full garbage collections during the timed passes are counted (their cost grows with the heap).

Two figures beside the time say what its growth is made of. ``calls``: the Python and C function
calls of one steady pass, a count that no machine changes; linear work makes them grow with k =
1.0. ``floor``: the time of the least any pass must do, reading each routed service's labels and
each of its tasks' state and address, and nothing else. On a machine whose processor caches hold
the objects of 1,000 services but not those of 5,000, even that grows faster than the services
(the same reads wait on main memory), and a pass, which does more with each object it reads,
grows less than its floor.

On the real Swarm: the Docker API calls of a pass that finds nothing to write, as routed services
are added to one namespace (they must stay the same whatever the number of services).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import statistics
import sys
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

from bench import progress
from bench.lab import bed, namespace
from bench.synthetic import NETWORK, PREFIX, SyntheticSwarm
from controller.collector import collector_paused
from controller.desired import desired_state, forget_made
from controller.labels import forget_parsed
from controller.plan import Deployable, plan, secret_mounts
from controller.render import RenderOptions, forget_rendered
from controller.snapshot import Parses, Snapshot, service_spans
from controller.verify import Verifier, render_all
from tests.swarm.controlled import routed

SIZES = (100, 1000, 5000, 10_000)  # 10,000 services: about 75,000 tasks
FIT_FROM = 1000  # the fitted k: from here to the largest size (below, fixed costs dominate)
SWARM_SIZES = (1, 10, 100, 250)  # past 200 the observer lists tasks without a service filter
QUICK_SWARM_SIZES = (1, 10, 40)


def served_digests(snapshot: Snapshot, options: RenderOptions) -> dict[str, str]:
    """What every proxy container serves once converged: the digest of its rendered config."""
    desired = desired_state(snapshot, PREFIX)
    rendered, _ = render_all(desired, options)
    by_service = {d.proxy.service_id: rendered[d.proxy.name].digest for d in desired.proxies}
    return {c.id: by_service[c.service_id] for c in snapshot.containers}


def one_pass(
    snapshot: Snapshot,
    options: RenderOptions,
    served: dict[str, str],
    verifier: Verifier | None = None,
) -> dict[str, Any]:
    """desired + render + plan, timed step by step (seconds), and the CPU time of the whole;
    ``verifier`` kept from pass to pass as the controller keeps its own (None: a new one). The
    garbage collector is paused as in the controller's pass (``controller.collector``)."""
    with collector_paused():
        started, cpu_started = time.perf_counter(), time.process_time()
        desired = desired_state(snapshot, PREFIX)
        after_desired = time.perf_counter()
        rendered, refused = render_all(desired, options, verifier)
        after_render = time.perf_counter()
        deployable = {
            d.proxy.name: Deployable(d.proxy, rendered[d.proxy.name], secret_mounts(d))
            for d in desired.proxies
        }
        actions = plan(snapshot, PREFIX, deployable, served, keep_configs=3)
        ended, cpu_ended = time.perf_counter(), time.process_time()
    assert not refused, refused
    return {
        "desired_s": after_desired - started,
        "render_s": after_render - after_desired,
        "plan_s": ended - after_render,
        "total_s": ended - started,
        "cpu_s": cpu_ended - cpu_started,
        "actions": actions,
        "config_bytes": sum(len(r.text) for r in rendered.values()),
    }


def listed_passes(
    swarm: SyntheticSwarm,
    options: RenderOptions,
    served: dict[str, str],
    verifier: Verifier,
    repeats: int,
    parses: Parses,
) -> tuple[float, dict[str, float]]:
    """CPU seconds a pass when each pass parses a new listing, as the controller's passes do, the
    garbage collector's work between passes included, and its full collections: the sustained
    cost, where ``one_pass`` times the pure steps over one snapshot. Unchanged tasks are not
    parsed again, as the observer's ``Parses`` spares them (``parses``: new, kept after for the
    pass after a change)."""
    # The pass before, over the listing before: the first parses every task, and from then on
    # what the pass remembers holds the objects of the listing, as in the controller.
    one_pass(swarm.snapshot(parses), options, served, verifier)
    with full_collections() as collected:
        started = time.process_time()
        for _ in range(repeats):
            with collector_paused():
                one_pass(swarm.snapshot(parses), options, served, verifier)
        cpu = (time.process_time() - started) / repeats
    return cpu, collected


def least_read(snapshot: Snapshot) -> int:
    """The least a pass must do (``floor``): each routed service's hostname label, then the
    state and address of each of its tasks, through the snapshot's grouping by service."""
    tasks, spans = service_spans(snapshot.tasks)
    hostname, found = f"{PREFIX}.hostname", 0
    for service in snapshot.services:
        if hostname in service.labels:
            first, last = spans.get(service.id, (0, 0))
            for task in tasks[first:last]:
                found += task.serving and len(task.addresses.get(NETWORK, ""))
    return found


def floor_seconds(snapshot: Snapshot, repeats: int) -> float:
    """Median seconds of ``least_read``, the collector paused as in a pass."""
    with collector_paused():
        least_read(snapshot)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            least_read(snapshot)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def calls_of_a_pass(
    snapshot: Snapshot, options: RenderOptions, served: dict[str, str], verifier: Verifier
) -> int:
    """Function calls (Python and C) of one steady pass: its work, counted, not timed."""
    count = 0

    def profiler(_frame: Any, event: str, _arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profiler)
    try:
        one_pass(snapshot, options, served, verifier)
    finally:
        sys.setprofile(None)
    return count


def peak_memory(snapshot: Snapshot, options: RenderOptions, served: dict[str, str]) -> int:
    """Peak bytes allocated during one pass (tracemalloc), beyond what the snapshot holds."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        one_pass(snapshot, options, served)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def snapshot_memory(swarm: SyntheticSwarm) -> tuple[Snapshot, int, float]:
    """The snapshot, the bytes it holds (tracemalloc) and the seconds parsing the answers took."""
    started = time.perf_counter()
    swarm.snapshot()
    parse_s = time.perf_counter() - started
    tracemalloc.start()
    try:
        snapshot = swarm.snapshot()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return snapshot, held, parse_s


def growth(rows: list[dict[str, Any]], key: str) -> None:
    """Per row, the ratio to the previous size and the exponent k in time ~ services^k."""
    for previous, row in itertools.pairwise(rows):
        ratio = row[key] / previous[key] if previous[key] else float("nan")
        size_ratio = row["services"] / previous["services"]
        row[f"{key}_ratio"] = ratio
        row[f"{key}_exponent"] = math.log(ratio) / math.log(size_ratio) if ratio > 0 else None


def fitted_k(rows: list[dict[str, Any]], key: str, smallest: int = FIT_FROM) -> float | None:
    """Least-squares k in ``key`` ~ services^k over the sizes from ``smallest`` up: one figure for
    the whole range, less at the mercy of one noisy size than the ratio of two neighbours."""
    points = [
        (math.log(r["services"]), math.log(r[key]))
        for r in rows
        if r["services"] >= smallest and r[key] > 0
    ]
    if len(points) < 2:
        return None
    mean_x = statistics.fmean(x for x, _ in points)
    mean_y = statistics.fmean(y for _, y in points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


@contextlib.contextmanager
def full_collections() -> Iterator[dict[str, float]]:
    """Counts the garbage collector's full (oldest-generation) collections and their seconds:
    each walks every tracked object, so their share is what grows faster than the pass."""
    found = {"count": 0, "seconds": 0.0}
    started = [0.0]

    def watch(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            found["count"] += 1
            found["seconds"] += time.perf_counter() - started[0]

    gc.callbacks.append(watch)
    try:
        yield found
    finally:
        gc.callbacks.remove(watch)


def fits(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """k of each step, fitted from ``FIT_FROM`` services to the largest size."""
    keys = (
        "desired_s",
        "render_s",
        "plan_s",
        "total_s",
        "cpu_s",
        "first_cpu_s",
        "changed_cpu_s",
        "listed_cpu_s",
        "floor_s",
        "calls",
    )
    return {
        "from": FIT_FROM,
        "to": max(r["services"] for r in rows),
        **{f"k_{key.removesuffix('_s')}": fitted_k(rows, key) for key in keys},
    }


def synthetic(quick: bool) -> list[dict[str, Any]]:
    options = RenderOptions()
    repeats = 2 if quick else 5
    rows = []
    for size in SIZES:
        swarm = SyntheticSwarm(size)
        snapshot, held, parse_s = snapshot_memory(swarm)
        served = served_digests(snapshot, options)
        forget_parsed()  # the first pass after a start: no labels parsed, nothing rendered yet
        forget_rendered()
        forget_made()
        verifier = Verifier(options)
        first = one_pass(snapshot, options, served, verifier)
        runs = [one_pass(snapshot, options, served, verifier) for _ in range(repeats)]
        parses = Parses()
        listed_cpu_s, collected = listed_passes(swarm, options, served, verifier, repeats, parses)
        assert not runs[0]["actions"], "a converged synthetic Swarm should plan nothing"
        swarm.routed_task_replaced()  # one task replaced: both proxies' configs change
        # Listed as the controller lists it: every other task and service is the object it was.
        changed = one_pass(swarm.snapshot(parses), options, served, verifier)
        assert changed["actions"], "a replaced task should change the configs"
        row = {
            "services": size,
            "tasks": len(snapshot.tasks),
            "proxies": 2,
            "config_bytes": runs[0]["config_bytes"],
            "parse_s": parse_s,
            "snapshot_bytes": held,
            "pass_peak_bytes": peak_memory(snapshot, options, served),
            "repeats": repeats,
            "listed_cpu_s": listed_cpu_s,
            "full_collections": collected["count"],
            "full_collections_s": collected["seconds"],
            "floor_s": floor_seconds(snapshot, repeats),
            "calls": calls_of_a_pass(snapshot, options, served, verifier),
        }
        for step in ("desired_s", "render_s", "plan_s", "total_s", "cpu_s"):
            row[step] = statistics.median(r[step] for r in runs)
            row[f"first_{step}"], row[f"changed_{step}"] = first[step], changed[step]
        rows.append(row)
        progress(
            f"scale: {size} services, {row['tasks']} tasks: pass {row['total_s'] * 1000:.0f} ms "
            f"(desired {row['desired_s'] * 1000:.0f}, render {row['render_s'] * 1000:.0f}, "
            f"plan {row['plan_s'] * 1000:.1f}; CPU {row['cpu_s'] * 1000:.0f}); first pass "
            f"{row['first_total_s'] * 1000:.0f} ms (CPU {row['first_cpu_s'] * 1000:.0f}), after "
            f"a task change {row['changed_total_s'] * 1000:.0f} ms "
            f"(CPU {row['changed_cpu_s'] * 1000:.0f}), "
            f"peak {row['pass_peak_bytes'] / 2**20:.1f} MiB; with a new listing each pass "
            f"CPU {listed_cpu_s * 1000:.0f} ms, {row['full_collections']} full collections in "
            f"{repeats} passes; floor {row['floor_s'] * 1000:.1f} ms, {row['calls']:,} calls"
        )
    growth(rows, "total_s")
    growth(rows, "pass_peak_bytes")
    return rows


def on_swarm(quick: bool) -> list[dict[str, Any]]:
    """Docker API calls (and seconds) of a pass with nothing to write, as services are added."""
    sizes = QUICK_SWARM_SIZES if quick else SWARM_SIZES
    rows = []
    with namespace("scale: API calls on the real Swarm") as swarm:
        lab = routed(swarm, bed().docker_host)
        lab.proxy_service("nginx", mode="signal")
        made = 0
        for size in sizes:
            while made < size:
                replicas = 1 if made < 2 else 0  # a few tasks; the rest are routed, not running
                lab.app(f"s{made}", replicas=replicas, hostname=f"s{made}.example.com", port="8080")
                made += 1
            lab.converge()
            passes = [lab.controller.reconciler.run_pass() for _ in range(3)]
            assert all(not p.actions for p in passes), "a converged namespace planned writes"
            rows.append(
                {
                    "services": size,
                    "services_seen": len(passes[0].snapshot.services),  # apps and the proxy
                    "api_calls": [p.api_calls for p in passes],
                    "pass_s": statistics.median(p.seconds for p in passes),
                }
            )
            progress(f"scale: {size} routed services on the Swarm: {passes[0].api_calls} calls")
    return rows


def run(quick: bool) -> dict[str, Any]:
    rows = synthetic(quick)
    return {"synthetic": rows, "fit": fits(rows), "swarm": on_swarm(quick)}
