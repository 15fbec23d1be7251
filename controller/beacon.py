"""Container figures from the Engine's stats API, as Interlock's Beacon exported them.

Which containers: the running containers of proxy tasks (and plain proxy containers) and of
routed services' tasks on the controller's own engine, further chosen by a rule: the image must
match ``INTERLOCK_BEACON_IMAGE_PATTERN`` (a regular expression, searched) and, when
``INTERLOCK_BEACON_LABEL`` is set, the container or its service must carry that label (``KEY`` or
``KEY=VALUE``). The list comes from the reconcile loop's latest snapshot, so the beacon makes no
list call of its own: one one-shot stats call per container per round, in its own thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from . import labels as lbl
from .logs import event
from .periodic import Periodic
from .snapshot import Snapshot

log = logging.getLogger(__name__)

NETWORK_FIELDS = (
    "rx_bytes",
    "tx_bytes",
    "rx_packets",
    "tx_packets",
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
)


@dataclass(frozen=True)
class Watched:
    container_id: str
    name: str
    image: str
    service: str  # Swarm service name ("" for a plain container)
    role: str  # "proxy" or "app"


@dataclass(frozen=True)
class Figures:
    cpu_seconds: float
    memory_used: float  # usage less the inactive page cache, as `docker stats` shows it
    memory_limit: float
    memory_peak: float | None  # cgroup v1 only
    networks: Mapping[str, Mapping[str, float]]  # interface -> NETWORK_FIELDS

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used / self.memory_limit if self.memory_limit else 0.0


def _label_matches(rule: str, *label_sets: Mapping[str, str]) -> bool:
    if not rule:
        return True
    key, has_value, value = rule.partition("=")
    return any(key in labels and (not has_value or labels[key] == value) for labels in label_sets)


def image_name(image: str) -> str:
    """``repo/name:tag@sha256:...`` -> ``repo/name:tag`` (the digest says nothing to a person)."""
    return image.split("@", 1)[0]


def watched(snapshot: Snapshot, prefix: str, image_pattern: str, label_rule: str) -> list[Watched]:
    """The containers on the controller's engine whose figures are exported, by the rule."""
    pattern = re.compile(image_pattern) if image_pattern else None
    services = {s.id: s for s in snapshot.services}
    chosen = []
    for container in snapshot.containers:
        if container.state != "running":
            continue
        service = services.get(container.service_id)
        if service is not None:
            if lbl.is_proxy(service.labels, prefix):
                role = "proxy"
            elif lbl.is_routed(service.labels, prefix):
                role = "app"
            else:
                continue
            service_labels, service_name = service.labels, service.name
        elif not container.service_id and lbl.is_proxy(container.labels, prefix):
            role, service_labels, service_name = "proxy", {}, ""
        else:
            continue
        image = image_name(container.image or (service.image if service else ""))
        if pattern and not pattern.search(image):
            continue
        if not _label_matches(label_rule, container.labels, service_labels):
            continue
        chosen.append(Watched(container.id, container.name, image, service_name, role))
    return chosen


def _memory_used(memory: Mapping[str, Any]) -> float:
    usage = float(memory.get("usage") or 0)
    stats = memory.get("stats") or {}
    for inactive in ("total_inactive_file", "inactive_file"):  # cgroup v1, then v2
        if inactive in stats and float(stats[inactive]) < usage:
            return usage - float(stats[inactive])
    return usage


def figures(stats: Mapping[str, Any]) -> Figures:
    """One answer of ``GET /containers/{id}/stats?stream=false`` -> the exported figures."""
    cpu = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
    memory = stats.get("memory_stats") or {}
    networks = {
        str(interface): {name: float(values.get(name) or 0) for name in NETWORK_FIELDS}
        for interface, values in (stats.get("networks") or {}).items()
    }
    peak = memory.get("max_usage")
    return Figures(
        cpu_seconds=float(cpu.get("total_usage") or 0) / 1e9,
        memory_used=_memory_used(memory),
        memory_limit=float(memory.get("limit") or 0),
        memory_peak=float(peak) if peak is not None else None,
        networks=networks,
    )


@dataclass
class Beacon(Periodic):
    """Reads each watched container's stats every ``interval`` seconds, in its own thread.

    ``source`` returns the loop's latest snapshot (or None before the first pass). ``latest``
    maps a container id to (Watched, Figures) from the last round; ``errors`` counts stats
    calls that failed.
    """

    thread_name = "interlock-beacon"
    failure_event = "beacon_round_failed"

    api: docker.APIClient
    source: Callable[[], Snapshot | None]
    prefix: str
    interval: float
    image_pattern: str = ""
    label_rule: str = ""
    latest: dict[str, tuple[Watched, Figures]] = field(default_factory=dict, init=False)
    errors: int = field(default=0, init=False)
    rounds: int = field(default=0, init=False)
    round_seconds: float = field(default=0.0, init=False)
    stop: threading.Event = field(default_factory=threading.Event, init=False)
    _one_shot: bool = field(default=True, init=False)

    def _stats(self, container_id: str) -> Mapping[str, Any]:
        if self._one_shot:  # Engine API 1.41+: the current figures at once, not after 1 s
            try:
                return self.api.stats(container_id, stream=False, one_shot=True)
            except docker.errors.InvalidVersion:
                self._one_shot = False
        return self.api.stats(container_id, stream=False)

    def round(self) -> None:
        snapshot = self.source()
        if snapshot is None:
            return
        began = time.monotonic()
        latest, failed = {}, 0
        for one in watched(snapshot, self.prefix, self.image_pattern, self.label_rule):
            if self.stop.is_set():
                return
            try:
                latest[one.container_id] = (one, figures(self._stats(one.container_id)))
            except docker.errors.NotFound:
                continue  # gone since the snapshot: not an error
            except Exception as error:
                failed += 1
                event(
                    log, "beacon_stats_failed", logging.DEBUG, container=one.name, error=str(error)
                )
        self.latest = latest
        self.errors += failed
        self.rounds += 1
        self.round_seconds = time.monotonic() - began
