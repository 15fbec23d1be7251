"""Per-test namespaces on the multi-node bed (:mod:`tests.bed.cluster`).

:class:`ClusterTest` is the one-node :class:`~tests.bed.harness.SwarmTest` bound to the manager's
engine (services, networks, configs and secrets are Swarm-wide, so creating and cleaning them there
is enough), plus what several nodes need: global services placed on chosen nodes, tasks grouped by
node, a port slot that every node publishes on its own 127.0.0.1 port, node drains, and a clean-up
that also waits until no node runs a container of the test.

Tests from several processes share the nodes. Two things are shared beyond names:
- Port slots: a slot's port is published by every node, so one slot serves one test at a time. A
  test leases a slot with an flock (released when its process dies) and skips slots that a
  service on the Swarm already publishes (the leftovers of a crashed run).
- Node availability: a drain moves every test's tasks. Ordinary tests hold the nodes' lock shared;
  a test that drains holds it exclusively (see :func:`nodes_lock`), and each resets every node to
  active first, so a crashed drain cannot leak into the next test.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
from docker.models.services import Service
from docker.types import EndpointSpec

from .cluster import Cluster, locked
from .harness import TEST_LABEL, SwarmTest, leftover_test_ids, owning_test
from .probes import wait_until

log = logging.getLogger(__name__)

SLOT_WAIT = 600.0
NODE_CLEANUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Slot:
    """A leased port slot: services publish ``node_port`` in host mode; node i answers on
    127.0.0.1:``host_ports[i]``."""

    index: int
    node_port: int
    host_ports: dict[int, int]


def _service_ports(service: Service) -> set[int]:
    ports = set()
    for port in (service.attrs.get("Endpoint") or {}).get("Ports") or []:
        ports.add(int(port.get("PublishedPort") or 0))
    for port in (service.attrs["Spec"].get("EndpointSpec") or {}).get("Ports") or []:
        ports.add(int(port.get("PublishedPort") or 0))
    return ports


def _published_ports(client: docker.DockerClient) -> set[int]:
    """Ports that some service on the Swarm publishes (their slots are taken)."""
    return {port for service in client.services.list() for port in _service_ports(service)}


def lease_held(path: Path) -> bool:
    """Whether a live process holds this slot's lease (tried without waiting, given back at
    once; a lease dies with the process that took it)."""
    if not path.exists():
        return False
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _slot_folder(cluster: Cluster) -> Path:
    return cluster.config.bed.state_dir / "cluster-slots"


def unleased_test_ids(cluster: Cluster) -> list[str]:
    """Tests whose services publish a slot's port while no process holds that slot's lease: a
    test takes its lease before it publishes and gives it back after its services are gone, so
    these are leftovers of a process that died, however new their containers look (the nodes
    re-create a leftover's task containers when they restart)."""
    slots = {cluster.config.node_port(i): i for i in range(cluster.config.slots)}
    folder = _slot_folder(cluster)
    found = set()
    for service in cluster.manager_client.services.list():
        test_id = owning_test(service)
        for port in _service_ports(service) & slots.keys():
            if test_id and not lease_held(folder / f"{slots[port]}.lock"):
                found.add(test_id)
    return sorted(found)


@contextlib.contextmanager
def nodes_lock(cluster: Cluster, exclusive: bool = False) -> Iterator[None]:
    """Hold the nodes for a test: shared for ordinary tests, exclusive for one that drains.

    Either way every node is active when the test starts (set so under the exclusive lock), so a
    node that a crashed test left drained is back before anything is placed."""
    path = cluster.config.bed.state_dir / "cluster-tests.lock"
    if _inactive(cluster.manager_client):  # only then: the exclusive lock waits for every test
        with locked(path, timeout=SLOT_WAIT):
            activate_all(cluster.manager_client)
    with locked(path, shared=not exclusive, timeout=SLOT_WAIT):
        if exclusive:
            activate_all(cluster.manager_client)
        try:
            yield
        finally:
            if exclusive:
                activate_all(cluster.manager_client)


def _inactive(manager: docker.DockerClient) -> list[Any]:
    """Nodes whose availability is not active (drained or paused)."""
    return [n for n in manager.nodes.list() if n.attrs["Spec"].get("Availability") != "active"]


def activate_all(manager: docker.DockerClient) -> None:
    """Set every node's availability back to active."""
    for node in _inactive(manager):
        spec = node.attrs["Spec"]
        log.info("node %s was %s; activating it", node.attrs["Description"]["Hostname"],
                 spec.get("Availability"))  # fmt: skip
        node.update({**spec, "Availability": "active"})


class ClusterTest(SwarmTest):
    """Everything one test does on the multi-node bed, under its own id and label.

    Adds to :class:`SwarmTest`: ``cluster`` (per-node clients, ``nodes``), :meth:`slot`,
    :meth:`global_service`, :meth:`tasks_by_node`, :meth:`containers_on`, :meth:`set_availability`.
    """

    def __init__(self, cluster: Cluster, test_id: str | None = None) -> None:
        super().__init__(cluster.manager_client, cluster.images, test_id)
        self.cluster = cluster
        self.expected: dict[str, int] = {}  # global service id -> how many tasks it should run
        self._leases: list[IO[str]] = []

    # -- ports -----------------------------------------------------------------------------

    def slot(self, timeout: float = SLOT_WAIT) -> Slot:
        """Lease a free port slot until :meth:`cleanup` (waits while all are in use)."""
        folder = _slot_folder(self.cluster)
        folder.mkdir(parents=True, exist_ok=True)

        def lease() -> Slot | None:
            taken = _published_ports(self.client)
            for index in range(self.cluster.config.slots):
                port = self.cluster.config.node_port(index)
                if port in taken:
                    continue
                handle = (folder / f"{index}.lock").open("a")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    handle.close()
                    continue
                self._leases.append(handle)
                return Slot(index, port, self.cluster.host_ports(index))
            return None

        return wait_until(lease, timeout, 1.0, "a free port slot on the nodes")

    # -- services on chosen nodes ----------------------------------------------------------

    def hostnames(self) -> dict[str, str]:
        """Swarm node ID -> hostname (``node1`` ...)."""
        return {n.id: n.attrs["Description"]["Hostname"] for n in self.client.nodes.list()}

    def global_service(
        self,
        suffix: str,
        image: str,
        nodes: Iterable[int] | None = None,
        slot: Slot | None = None,
        target_port: int = 80,
        timeout: float = 90.0,
        **kwargs: Any,
    ) -> Service:
        """A global service on ``nodes`` (default: all), optionally publishing ``slot``'s port in
        host mode to ``target_port``; waits until one task runs on each of those nodes."""
        every = set(self.cluster.config.indexes)
        chosen = every if nodes is None else set(nodes)
        kwargs["constraints"] = list(kwargs.get("constraints") or []) + [
            f"node.hostname!={self.cluster.config.hostname(i)}" for i in sorted(every - chosen)
        ]
        if slot is not None:
            ports = [{"Protocol": "tcp", "PublishedPort": slot.node_port,
                      "TargetPort": target_port, "PublishMode": "host"}]  # fmt: skip
            kwargs["endpoint_spec"] = EndpointSpec(ports=ports)
        service = self.service(suffix, image, mode={"Global": {}}, **kwargs)
        self.expected[service.id] = len(chosen)
        self.wait_running(service, timeout=timeout)
        return service

    def wait_running(
        self, service: Service, replicas: int | None = None, timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """As :meth:`SwarmTest.wait_running`; a global service made here waits for one task on
        each node it was placed on (the one-node harness would wait for one in all)."""
        if replicas is None:
            replicas = self.expected.get(service.id)
        return super().wait_running(service, replicas=replicas, timeout=timeout)

    def tasks_by_node(self, service: Service) -> dict[str, list[dict[str, Any]]]:
        """Running tasks of ``service``, grouped by node hostname."""
        names = self.hostnames()
        grouped: dict[str, list[dict[str, Any]]] = {}
        for task in self.tasks(service):
            grouped.setdefault(names.get(task["NodeID"], task["NodeID"]), []).append(task)
        return grouped

    def containers_on(self, i: int, all_states: bool = True) -> list[Any]:
        """This test's containers on node i's own engine."""
        client = self.cluster.client(i)
        found = client.containers.list(
            all=all_states, filters={"label": f"{TEST_LABEL}={self.id}"}, ignore_removed=True
        )  # ignore_removed: Swarm removes task containers between docker-py's list and inspect
        return list(found)

    # -- node availability -----------------------------------------------------------------

    def set_availability(self, i: int, availability: str) -> None:
        """``docker node update --availability`` of node i (drain, pause, active). Needs the
        nodes held exclusively (:func:`nodes_lock`), since it moves every test's tasks."""
        hostname = self.cluster.config.hostname(i)
        (node,) = [
            n for n in self.client.nodes.list() if n.attrs["Description"]["Hostname"] == hostname
        ]
        node.update({**node.attrs["Spec"], "Availability": availability})

    # -- teardown --------------------------------------------------------------------------

    def cleanup(self, timeout: float = 90.0) -> None:
        """The Swarm objects (on the manager), then wait until no node runs a container of this
        test (Swarm removes task containers on the workers by itself), then free the slots."""
        try:
            super().cleanup(timeout)
            for i in self.cluster.config.indexes:
                self._wait_node_clean(i)
        finally:
            self.release_slots()

    def release_slots(self) -> None:
        """Give back every slot this test leased (what its process's death does too)."""
        for handle in self._leases:
            handle.close()
        self._leases.clear()

    def _wait_node_clean(self, i: int) -> None:
        """Wait for Swarm to remove this test's task containers on node i; force out what is
        left after the wait (or what Swarm never owned), and fail if that does not work."""
        deadline = time.monotonic() + NODE_CLEANUP_TIMEOUT
        while (left := self.containers_on(i)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for container in left:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        if self.containers_on(i):
            names = [c.name for c in self.containers_on(i)]
            raise AssertionError(f"test cleanup: containers still on node {i}: {names}")


def clean_cluster_leftovers(cluster: Cluster, older_than: float) -> list[str]:
    """Remove what crashed test runs left on the nodes' Swarm: tests whose newest object is
    older than ``older_than`` seconds, and tests holding a slot nobody leases (at any age);
    returns the test ids cleaned."""
    aged = leftover_test_ids(cluster.manager_client, older_than)
    ids = sorted(set(aged) | set(unleased_test_ids(cluster)))
    for test_id in ids:
        log.info("removing leftovers of test %s on the nodes", test_id)
        ClusterTest(cluster, test_id).cleanup()
    return ids
