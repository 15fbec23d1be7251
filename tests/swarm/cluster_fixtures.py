"""Fixtures for tests on the multi-node bed (:mod:`tests.bed.cluster`); conftest imports them.

    cluster  (session)  :class:`tests.bed.cluster.Cluster` - ``nodes`` (index, hostname,
             docker_host), ``client(i)`` (node i's engine), ``manager_client``,
             ``host_ports(slot)``, ``env(i)``. Brought up (or reused) on first use.
    cluster_swarm (function) :class:`tests.bed.clusterharness.ClusterTest` - a namespace on the
             nodes' Swarm (the one-node ``swarm`` fixture's methods, on the manager) plus
             ``slot()``, ``global_service()``, ``tasks_by_node()``, ``containers_on(i)``. Holds
             the nodes shared; removes all it made, on every node, afterwards.
    cluster_swarm_exclusive (function) the same, holding the nodes alone: for tests that drain
             a node (``set_availability``), which moves every test's tasks.

A multi-node test that cannot get its cluster fails. Outside CI (``CI`` unset or not ``true``),
``INTERLOCK_BED_NODES=0`` skips them instead; under CI they are never skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.bed import Bed
from tests.bed.cluster import Cluster, ClusterConfig, ensure_cluster
from tests.bed.clusterharness import ClusterTest, nodes_lock

MIN_NODES = 3  # a manager and two workers: the tests drain one node and route across the others
SEEN: list[str] = []  # what the terminal summary says about the cluster the tests ran on


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _describe(cluster: Cluster, seconds: float) -> str:
    """One line naming each node and its Swarm role, from the manager's own node list."""
    roles = {
        n.attrs["Description"]["Hostname"]: n.attrs["Spec"]["Role"]
        for n in cluster.manager_client.nodes.list()
    }
    nodes = ", ".join(f"{name} {role}" for name, role in sorted(roles.items()))
    return f"{len(roles)}-node Swarm ({nodes}), ready in {seconds:.1f}s"


@pytest.fixture(scope="session")
def cluster(bed: Bed) -> Iterator[Cluster]:
    """The multi-node bed; brought up if needed. Fails when impossible (see module docstring)."""
    if os.environ.get("INTERLOCK_BED_NODES") == "0":
        if _under_ci():
            pytest.fail("INTERLOCK_BED_NODES=0 under CI: the multi-node tests must run")
        pytest.skip("INTERLOCK_BED_NODES=0: multi-node tests turned off")
    started = time.monotonic()
    found, reason = None, ""
    try:
        config = ClusterConfig.from_env()
        if config.nodes < MIN_NODES:
            raise ValueError(
                f"the tests need {MIN_NODES} nodes, INTERLOCK_BED_NODES={config.nodes}"
            )
        found = ensure_cluster(config)
    except Exception as err:
        reason = f"{type(err).__name__}: {err}"
    if found is None:
        pytest.fail(  # outside the except block, so the message is not buried in a traceback chain
            f"the multi-node test bed is not available: {reason}\n"
            "Start it with `python -m tests.bed up --nodes 3` as root (see scripts/test.sh).",
            pytrace=False,
        )
    SEEN.append(_describe(found, time.monotonic() - started))
    yield found
    found.close()


def _namespace(cluster: Cluster, exclusive: bool) -> Iterator[ClusterTest]:
    with nodes_lock(cluster, exclusive=exclusive):
        namespace = ClusterTest(cluster)
        try:
            yield namespace
        finally:
            namespace.cleanup()


@pytest.fixture
def cluster_swarm(cluster: Cluster) -> Iterator[ClusterTest]:
    """A fresh namespace on the nodes' Swarm, sharing the nodes with other tests."""
    yield from _namespace(cluster, exclusive=False)


@pytest.fixture
def cluster_swarm_exclusive(cluster: Cluster) -> Iterator[ClusterTest]:
    """A fresh namespace holding the nodes alone (a drain moves other tests' tasks)."""
    yield from _namespace(cluster, exclusive=True)


def pytest_terminal_summary(terminalreporter) -> None:
    """Say which cluster the multi-node tests ran on (CI's log must show a 3-node Swarm)."""
    if SEEN:
        terminalreporter.section("multi-node bed")
        for line in SEEN:
            terminalreporter.write_line(f"multi-node tests ran on a {line}")
