"""Synthetic Swarms of any size, as Engine API answers (shapes from tests/builders.py).

A synthetic Swarm has two signal-mode proxy services (nginx and HAProxy, one running container
each), ``services`` routed app services with 5 to 10 running tasks each on one overlay network,
and one unrouted service for every ten routed ones (the kind of neighbour whose events a naive
controller reacts to). Everything is drawn from a seeded generator: the same size gives the same
Swarm. ``SyntheticSwarm`` also applies events to its answers, for the naive-versus-ours part.

Tasks are listed as the Engine lists them: in the order of their ids (Swarm's store iterates its
id index), and an id is 25 random characters, so a service's tasks are scattered through the
listing, not side by side.
"""

from __future__ import annotations

import bisect
import random
import string
from dataclasses import dataclass, field
from typing import Any

from controller.snapshot import Parses, Snapshot, snapshot_from_api
from tests import builders as b

PREFIX = "interlock"
NETWORK = "net-apps"
KINDS = ("nginx", "haproxy")
TASKS_PER_SERVICE = (5, 10)
ID_CHARACTERS = string.ascii_lowercase + string.digits  # as Swarm's ids


def _created(index: int) -> str:
    return f"2026-01-01T{index // 3600 % 24:02d}:{index // 60 % 60:02d}:{index % 60:02d}.0Z"


@dataclass
class SyntheticSwarm:
    """The Engine API answers that a snapshot is made of, by kind (``services``, ``tasks``...)."""

    services: int
    seed: int = 7
    answers: dict[str, list[dict[str, Any]]] = field(init=False)
    random: random.Random = field(init=False, repr=False)
    ids: random.Random = field(init=False, repr=False)  # apart: events draw what they did
    _next_address: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)
        self.ids = random.Random(self.seed + 1)
        services, tasks, containers = [], [], []
        for kind in KINDS:
            sid = f"proxy{kind}"
            labels = {f"{PREFIX}.ext.name": kind, f"{PREFIX}.ext.mode": "signal"}
            services.append(b.service(sid, f"proxy-{kind}", labels, networks=[NETWORK]))
            task = self._task(sid)
            tasks.append(task)
            container = b.container(
                task["Status"]["ContainerStatus"]["ContainerID"],
                f"proxy-{kind}.1.{task['ID']}",
                {"com.docker.swarm.service.id": sid},
                networks=[NETWORK],
            )
            containers.append(container)
        for index in range(self.services):
            sid = f"app{index:05d}"
            labels = {f"{PREFIX}.hostname": f"app{index}.example.com", f"{PREFIX}.port": "8080"}
            if index % 10 == 3:
                labels[f"{PREFIX}.context_root"] = f"/v{index % 7}"
            services.append(
                b.service(sid, f"app-{index}", labels, networks=[NETWORK], created=_created(index))
            )
            tasks += [self._task(sid) for _ in range(self.random.randint(*TASKS_PER_SERVICE))]
        for index in range(self.services // 10):
            services.append(b.service(f"other{index:05d}", f"other-{index}", {}, [NETWORK]))
        self.answers = {
            "services": services,
            "tasks": sorted(tasks, key=_task_id),
            "networks": [b.network(NETWORK, "apps")],
            "configs": [],
            "containers": containers,
        }

    def _task(self, service_id: str) -> dict[str, Any]:
        self._next_address += 1
        n = self._next_address
        address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        tid = "".join(self.ids.choices(ID_CHARACTERS, k=25))
        task = b.task(tid, service_id, address, network=NETWORK)
        task["Version"] = {"Index": 1}  # as the Engine's answers carry; events replace tasks
        return task

    def snapshot(self, parses: Parses | None = None) -> Snapshot:
        """The snapshot of the answers; ``parses`` reused as the controller's observer does."""
        return snapshot_from_api(**self.answers, parses=parses)

    # -- events (each returns whether it changes any route) ---------------------------------

    def _pick(self, prefix: str) -> dict[str, Any]:
        chosen = [s for s in self.answers["services"] if s["ID"].startswith(prefix)]
        return self.random.choice(chosen)

    def unrelated_service_updated(self) -> bool:
        """An unrouted service rolls its tasks (its tasks are not routed, nor even listed)."""
        if self.services < 10:
            return self.routed_service_relabelled()
        self._pick("other")["Version"]["Index"] += 1
        return False

    def routed_service_relabelled(self) -> bool:
        """A routed service gets a label that does not route (Spec.Labels: no task is replaced)."""
        service = self._pick("app")
        service["Version"]["Index"] += 1
        service["Spec"]["Labels"]["com.example.build"] = str(self.random.randint(1, 10**6))
        return False

    def container_event_elsewhere(self) -> bool:
        """A container outside any routed service starts or dies (a job, a sidecar)."""
        return False

    def routed_service_scaled(self) -> bool:
        """A routed service gets one more running task."""
        bisect.insort(self.answers["tasks"], self._task(self._pick("app")["ID"]), key=_task_id)
        return True

    def routed_task_replaced(self) -> bool:
        """A task of a routed service is replaced by a new one (a crash, a node drain)."""
        tasks = self.answers["tasks"]
        index = self.random.choice([i for i, t in enumerate(tasks) if t["ServiceID"][:3] == "app"])
        bisect.insort(tasks, self._task(tasks.pop(index)["ServiceID"]), key=_task_id)
        return True


def _task_id(task: dict[str, Any]) -> str:
    return task["ID"]


# The event mix of the naive-versus-ours part: (event, weight). 20% change a route.
EVENT_MIX = (
    (SyntheticSwarm.unrelated_service_updated, 30),
    (SyntheticSwarm.routed_service_relabelled, 15),
    (SyntheticSwarm.container_event_elsewhere, 35),
    (SyntheticSwarm.routed_service_scaled, 10),
    (SyntheticSwarm.routed_task_replaced, 10),
)
