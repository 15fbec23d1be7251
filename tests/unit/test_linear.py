"""The pure pass grows linearly with the Swarm, counted in executed lines, not timed.

Issue 12, point 9: desired state and rendering must stay linear in the number of services (a
look-up by a scan inside a loop over services makes them quadratic, and 10,000 services take
seconds). Timings are noise on a shared machine; the number of Python lines the pass executes
is not: a Swarm four times larger must cost at most about four times as many lines. Loops in
Python code count a line per turn, so a scan over every service or task for each service shows
up as a ratio near sixteen.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType

from controller.desired import desired_state, forget_made
from controller.labels import forget_parsed
from controller.render import RenderOptions, forget_rendered
from controller.snapshot import Snapshot, snapshot_from_api
from controller.verify import render_all
from tests import builders as b

P = "interlock"
NETWORK = "net1"


def swarm(services: int) -> Snapshot:
    """Two proxies and ``services`` routed apps of a few tasks each, with a mix of labels."""
    answers = [
        b.service(f"p-{kind}", f"proxy-{kind}", {f"{P}.ext.name": kind, f"{P}.ext.mode": "signal"})
        for kind in ("nginx", "haproxy")
    ]
    tasks = []
    for i in range(services):
        labels = {f"{P}.hostname": f"app{i}", f"{P}.domain": "example.com", f"{P}.port": "80"}
        if i % 3 == 0:
            labels[f"{P}.context_root"] = f"/v{i % 5}"
        if i % 4 == 0:
            labels[f"{P}.sticky_session_cookie"] = "sid"
        if i % 5 == 0:
            labels[f"{P}.alias_domain"] = f"alias{i}.example.com"
        answers.append(
            b.service(f"s{i:05d}", f"app-{i}", labels, created=f"2026-01-01T00:00:{i % 60:02d}Z")
        )
        tasks += [
            b.task(f"t{i}-{n}", f"s{i:05d}", f"10.1.{i // 200}.{i % 200 + n}") for n in range(3)
        ]
    return snapshot_from_api(answers, tasks, [b.network(NETWORK)], [])


def lines_run(work: Callable[[], object]) -> int:
    """Python lines executed by ``work`` (every module: ours, the templates, jinja's)."""
    count = 0

    def tracer(frame: FrameType, event: str, _arg: object):
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        work()
    finally:
        sys.settrace(previous)
    return count


def pass_lines(services: int) -> int:
    """Lines of desired state and rendering (both proxies) for a Swarm of this size."""
    snapshot = swarm(services)

    def one_pass() -> None:
        desired = desired_state(snapshot, P)
        rendered, refused = render_all(desired, RenderOptions())
        assert len(rendered) == 2 and not refused

    one_pass()  # templates compiled: the counted pass reads every label again, as a first does
    forget_parsed()
    forget_rendered()
    forget_made()
    return lines_run(one_pass)


def test_desired_state_and_rendering_grow_linearly_with_services():
    small, large = pass_lines(60), pass_lines(240)
    assert large <= 4.3 * small, f"60 -> 240 services: {small} -> {large} lines executed"
