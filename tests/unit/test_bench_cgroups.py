"""The bench's split of a change's CPU by part (``bench.cgroups.spent``), on plain samples."""

from __future__ import annotations

from bench.cgroups import ENGINES, OUTSIDE, Sample, spent


def test_each_part_gets_what_its_cgroups_spent():
    before = Sample(
        busy=100.0,
        nodes={"node1": 10.0, "node2": 20.0},
        containers={"node1/a": 1.0, "node1/b": 2.0, "node2/c": 3.0, "node2/gone": 4.0},
    )
    after = Sample(
        busy=103.0,  # the machine: 3 s busy
        nodes={"node1": 11.0, "node2": 21.5},  # the nodes: 2.5 s, so 0.5 s outside them
        containers={"node1/a": 1.25, "node1/b": 2.25, "node2/c": 3.5, "node2/new": 0.25},
    )
    roles = {"node1/a": "nginx-proxy", "node1/b": "agent", "node2/c": "nginx-proxy"}
    assert spent(before, after, roles) == {
        "nginx-proxy": 0.75,
        "agent": 0.25,
        # the nodes' own work, and containers not there at both samples (gone, new)
        ENGINES: 2.5 - 1.0,
        OUTSIDE: 0.5,
    }


def test_without_the_accounting_there_are_no_figures():
    assert spent(None, Sample(1.0), {}) == {}
    assert spent(Sample(1.0), None, {}) == {}
