"""Fixtures for tests that run against the private test-bed Swarm (``tests.bed``).

Every test in tests/swarm is marked ``swarm``. Swarm tests are never skipped: if the bed cannot be
reached or started, they fail with the reason.

Fixtures:
    bed      (session)  :class:`tests.bed.Bed` - ``docker_host``, ``images``, ``client()``.
    docker_client (session) a ``docker.DockerClient`` bound to the bed.
    swarm    (function) :class:`tests.bed.harness.SwarmTest` - a namespace for one test: ``id``,
             ``prefix``, ``labels``; ``network()``, ``config()``, ``secret()``, ``service()``,
             ``container()``, ``published_service()``, ``wait_running()``, ``task_addresses()``,
             ``update_service()``, ``wait_updated()``, ``wait_http()``. Everything it made (all
             labelled ``interlock-test=<id>``) is removed at teardown, and only that.

Multi-node tests use ``cluster``, ``cluster_swarm`` and ``cluster_swarm_exclusive`` from
:mod:`tests.swarm.cluster_fixtures` (a 3-node Swarm of node containers on the bed; see there).

``pebble`` (session) is a real ACME CA on 127.0.0.1 (:mod:`tests.swarm.pebble`).

Plain helpers live in :mod:`tests.bed.probes`: ``free_port()``, ``http_get(port, host_header,
path="/", timeout=5.0)`` -> (status, body), ``wait_until(predicate, timeout, interval)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.bed import Bed, ensure_bed
from tests.bed.engine import DEFAULT_SOCKET, socket_fingerprint
from tests.bed.harness import SwarmTest
from tests.swarm.cluster_fixtures import (  # noqa: F401 (fixtures and a hook, used by name)
    cluster,
    cluster_swarm,
    cluster_swarm_exclusive,
    pytest_terminal_summary,
)
from tests.swarm.pebble import Pebble, start_pebble

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """One real ACME CA (Debian's pebble, on 127.0.0.1) for the whole session."""
    ca = start_pebble(tmp_path_factory.mktemp("pebble"))
    yield ca
    ca.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/swarm with ``swarm`` (so ``-m swarm`` / ``-m 'not swarm'``)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.swarm)


@pytest.fixture(scope="session")
def default_socket_before() -> tuple[int, int, float] | None:
    """The default socket as it was before the bed was ensured (for the isolation test)."""
    return socket_fingerprint(DEFAULT_SOCKET)


@pytest.fixture(scope="session")
def bed(default_socket_before: tuple[int, int, float] | None) -> Bed:
    """The running bed; brings it up if needed. Fails (never skips) when that is impossible."""
    try:
        return ensure_bed()
    except Exception as err:
        reason = f"{type(err).__name__}: {err}"
    pytest.fail(  # outside the except block, so the message is not buried in a traceback chain
        f"the Swarm test bed is not available: {reason}\n"
        "Start it with `python -m tests.bed up` as root (see scripts/test.sh).",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def docker_client(bed: Bed) -> Iterator[docker.DockerClient]:
    """One Docker SDK client on the bed for the whole session."""
    client = bed.client()
    try:
        client.ping()
    except Exception as err:
        pytest.fail(f"the bed at {bed.docker_host} does not answer: {err}", pytrace=False)
    yield client
    client.close()


@pytest.fixture
def swarm(bed: Bed, docker_client: docker.DockerClient) -> Iterator[SwarmTest]:
    """A fresh namespace (``t<8 hex>``) for one test; removes all it created afterwards."""
    namespace = SwarmTest(docker_client, bed.images)
    yield namespace
    namespace.cleanup()
