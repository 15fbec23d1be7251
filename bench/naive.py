"""Part 4: our pass against a naive one, over the same sequence of Swarm events.

Both start from the same converged synthetic Swarm (``bench.synthetic``) and see the same events,
drawn from ``EVENT_MIX`` by a seeded generator. After each event:

- ours runs desired + render + plan, with one ``Verifier`` kept from event to event as the
  controller keeps its own; the plan compares digests, and only a proxy whose config changed
  gets a reload (a ``PushConfig``, counted, then taken as served);
- the naive pass renders every proxy's config and reloads every proxy, without comparing
  (what a controller does that pushes and signals on every event it is woken by).

Reloads are counted, not done: each would be one in-place reload (or, for the seed's HAProxy, a
restart) whose cost under load part 2 measures.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench import progress
from bench.scale import SIZES, one_pass, served_digests
from bench.synthetic import EVENT_MIX, PREFIX, SyntheticSwarm
from controller.collector import collector_paused
from controller.desired import desired_state
from controller.plan import PushConfig
from controller.render import RenderOptions
from controller.snapshot import Parses
from controller.verify import Verifier, render_all

EVENTS = 50
QUICK_EVENTS = 12


def naive_pass(swarm: SyntheticSwarm, options: RenderOptions) -> int:
    """Render every proxy and reload them all; returns the reloads."""
    desired = desired_state(swarm.snapshot(), PREFIX)
    rendered, _ = render_all(desired, options)
    return len(rendered)


def our_pass(
    swarm: SyntheticSwarm,
    options: RenderOptions,
    served: dict[str, str],
    verifier: Verifier,
    parses: Parses,
) -> int:
    """A pass that pushes only changed configs; ``served`` is updated; returns the reloads.
    ``verifier`` lives from pass to pass, as the controller's own does (its last render of each
    proxy, by desired state), and so do ``parses`` (unchanged tasks are not parsed again). The
    listing is parsed with the garbage collector paused, as the controller's pass does
    (``controller.collector``)."""
    with collector_paused():
        actions = one_pass(swarm.snapshot(parses), options, served, verifier)["actions"]
    pushes = [a for a in actions if isinstance(a, PushConfig)]
    for push in pushes:
        served[push.container_id] = push.digest
    return len(pushes)


def compare(size: int, events: int, options: RenderOptions) -> dict[str, Any]:
    ours_swarm, naive_swarm = SyntheticSwarm(size), SyntheticSwarm(size)
    served = served_digests(ours_swarm.snapshot(), options)
    verifier, parses = Verifier(options), Parses()
    picker = SyntheticSwarm(0, seed=size).random  # the same event sequence for both
    kinds = [e for e, _ in EVENT_MIX]
    sequence = picker.choices(kinds, weights=[w for _, w in EVENT_MIX], k=events)
    ours_s, naive_s, counts = [], [], {"route_changing_events": 0}
    ours_reloads = naive_reloads = 0
    for event in sequence:
        changes = event(ours_swarm)
        assert event(naive_swarm) == changes
        counts["route_changing_events"] += changes
        started = time.perf_counter()
        ours_reloads += our_pass(ours_swarm, options, served, verifier, parses)
        ours_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        naive_reloads += naive_pass(naive_swarm, options)
        naive_s.append(time.perf_counter() - started)
    return {
        "services": size,
        "events": events,
        **counts,
        "ours_reloads": ours_reloads,
        "naive_reloads": naive_reloads,
        "reloads_avoided": naive_reloads - ours_reloads,
        "avoided_share": (naive_reloads - ours_reloads) / naive_reloads,
        "ours_pass_s": statistics.median(ours_s),
        "naive_pass_s": statistics.median(naive_s),
        "pass_time_ratio": statistics.median(ours_s) / statistics.median(naive_s),
    }


def run(quick: bool) -> dict[str, Any]:
    options = RenderOptions()
    events = QUICK_EVENTS if quick else EVENTS
    rows = []
    for size in SIZES:
        row = compare(size, events, options)
        rows.append(row)
        progress(
            f"naive: {size} services, {events} events ({row['route_changing_events']} change a "
            f"route): reloads ours {row['ours_reloads']} vs naive {row['naive_reloads']}, pass "
            f"{row['ours_pass_s'] * 1000:.0f} ms vs {row['naive_pass_s'] * 1000:.0f} ms"
        )
    mix = {event.__name__: weight for event, weight in EVENT_MIX}
    return {"event_mix_percent": mix, "proxies": 2, "rows": rows}
