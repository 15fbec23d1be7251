"""The observed state of the Swarm as plain, immutable data.

Everything the decision code needs is here and nothing else: the pure core never sees a Docker
client, only these records. ``snapshot_from_api`` turns the Engine API's JSON answers into them, so
benchmarks and unit tests can build snapshots from recorded or synthetic answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RUNNING = "running"


@dataclass(frozen=True)
class ConfigRef:
    """A Docker config mounted into a service's containers at ``path``."""

    config_id: str
    config_name: str
    path: str


@dataclass(frozen=True)
class SecretRef:
    """A Docker secret mounted into a service's containers as /run/secrets/``path``."""

    secret_id: str
    secret_name: str
    path: str


@dataclass(frozen=True)
class Service:
    """A Swarm service: what routing needs from its spec, and the spec itself for updates."""

    id: str
    name: str
    version: int
    created_at: str
    labels: Mapping[str, str]
    image: str
    network_ids: tuple[str, ...]
    target_ports: tuple[int, ...]
    config_refs: tuple[ConfigRef, ...]
    spec: Mapping[str, Any] = field(repr=False, compare=False, hash=False)
    secret_refs: tuple[SecretRef, ...] = ()


@dataclass(frozen=True)
class Task:
    """A Swarm task, with its address on each network it is attached to."""

    id: str
    service_id: str
    node_id: str
    slot: int
    desired_state: str
    state: str
    container_id: str
    addresses: Mapping[str, str]

    @property
    def serving(self) -> bool:
        """A task takes traffic only while Swarm both wants it and has it running.

        A task whose desired state left ``running`` is being stopped (scale-down, update, drain):
        it must leave the pool now, before its container gets the stop signal.
        """
        return self.desired_state == RUNNING and self.state == RUNNING


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    driver: str
    scope: str


@dataclass(frozen=True)
class Config:
    """A Docker config (its data is never needed to decide, only its name and labels)."""

    id: str
    name: str
    labels: Mapping[str, str]
    created_at: str


@dataclass(frozen=True)
class Secret:
    """A Docker secret's name: the Engine API never returns a secret's data, nor do we want it."""

    id: str
    name: str


@dataclass(frozen=True)
class Container:
    """A container on the controller's own engine (proxy containers for signal mode)."""

    id: str
    name: str
    image: str
    labels: Mapping[str, str]
    state: str
    network_ids: tuple[str, ...]
    service_id: str  # "" for a plain `docker run` container
    addresses: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Snapshot:
    """One consistent listing of everything a pass decides on."""

    services: tuple[Service, ...]
    tasks: tuple[Task, ...]
    networks: tuple[Network, ...]
    configs: tuple[Config, ...]
    containers: tuple[Container, ...] = ()
    secrets: tuple[Secret, ...] = ()


def _labels(raw: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(key): str(value) for key, value in (raw or {}).items()}


def _service_networks(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """Networks live in TaskTemplate.Networks; very old services used the top-level field."""
    attached = spec.get("TaskTemplate", {}).get("Networks") or spec.get("Networks") or []
    return tuple(sorted({str(net["Target"]) for net in attached if net.get("Target")}))


def _config_refs(container_spec: Mapping[str, Any]) -> tuple[ConfigRef, ...]:
    refs = []
    for ref in container_spec.get("Configs") or []:
        target = (ref.get("File") or {}).get("Name")
        if target:
            refs.append(ConfigRef(ref.get("ConfigID", ""), ref.get("ConfigName", ""), target))
    return tuple(refs)


def _secret_refs(container_spec: Mapping[str, Any]) -> tuple[SecretRef, ...]:
    refs = []
    for ref in container_spec.get("Secrets") or []:
        target = (ref.get("File") or {}).get("Name")
        if target:
            refs.append(SecretRef(ref.get("SecretID", ""), ref.get("SecretName", ""), target))
    return tuple(refs)


def service_from_api(raw: Mapping[str, Any]) -> Service:
    spec = raw.get("Spec", {})
    container_spec = spec.get("TaskTemplate", {}).get("ContainerSpec", {})
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    return Service(
        id=raw["ID"],
        name=spec.get("Name", raw["ID"]),
        version=int(raw.get("Version", {}).get("Index", 0)),
        created_at=str(raw.get("CreatedAt", "")),
        labels=_labels(spec.get("Labels")),
        image=str(container_spec.get("Image", "")),
        network_ids=_service_networks(spec),
        target_ports=tuple(sorted({int(p["TargetPort"]) for p in ports if p.get("TargetPort")})),
        config_refs=_config_refs(container_spec),
        spec=spec,
        secret_refs=_secret_refs(container_spec),
    )


def _task_addresses(raw: Mapping[str, Any]) -> dict[str, str]:
    """First address of the task on each network, without its prefix length."""
    addresses = {}
    for attachment in raw.get("NetworksAttachments") or []:
        network_id = attachment.get("Network", {}).get("ID")
        found = attachment.get("Addresses") or []
        if network_id and found:
            addresses[network_id] = str(found[0]).split("/", 1)[0]
    return addresses


def task_from_api(raw: Mapping[str, Any]) -> Task:
    status = raw.get("Status", {})
    return Task(
        id=raw["ID"],
        service_id=raw.get("ServiceID", ""),
        node_id=raw.get("NodeID", ""),
        slot=int(raw.get("Slot") or 0),
        desired_state=str(raw.get("DesiredState", "")),
        state=str(status.get("State", "")),
        container_id=str((status.get("ContainerStatus") or {}).get("ContainerID", "")),
        addresses=_task_addresses(raw),
    )


def network_from_api(raw: Mapping[str, Any]) -> Network:
    return Network(
        id=raw["Id"],
        name=raw.get("Name", ""),
        driver=raw.get("Driver", ""),
        scope=raw.get("Scope", ""),
    )


def config_from_api(raw: Mapping[str, Any]) -> Config:
    spec = raw.get("Spec", {})
    return Config(
        id=raw["ID"],
        name=spec.get("Name", ""),
        labels=_labels(spec.get("Labels")),
        created_at=str(raw.get("CreatedAt", "")),
    )


def container_from_api(raw: Mapping[str, Any]) -> Container:
    labels = _labels(raw.get("Labels"))
    networks = (raw.get("NetworkSettings") or {}).get("Networks") or {}
    names = raw.get("Names") or [raw["Id"]]
    return Container(
        id=raw["Id"],
        name=str(names[0]).lstrip("/"),
        image=str(raw.get("Image", "")),
        labels=labels,
        state=str(raw.get("State", "")),
        network_ids=tuple(sorted(n["NetworkID"] for n in networks.values() if n.get("NetworkID"))),
        service_id=labels.get("com.docker.swarm.service.id", ""),
        addresses={
            n["NetworkID"]: n["IPAddress"]
            for n in networks.values()
            if n.get("NetworkID") and n.get("IPAddress")
        },
    )


def snapshot_from_api(
    services: Iterable[Mapping[str, Any]],
    tasks: Iterable[Mapping[str, Any]],
    networks: Iterable[Mapping[str, Any]],
    configs: Iterable[Mapping[str, Any]],
    containers: Iterable[Mapping[str, Any]] = (),
    secrets: Iterable[Mapping[str, Any]] = (),
) -> Snapshot:
    """Build a snapshot from the Engine API's list answers, sorted so passes are deterministic."""
    return Snapshot(
        services=tuple(sorted((service_from_api(s) for s in services), key=lambda s: s.name)),
        tasks=tuple(sorted((task_from_api(t) for t in tasks), key=lambda t: (t.service_id, t.id))),
        networks=tuple(sorted((network_from_api(n) for n in networks), key=lambda n: n.name)),
        configs=tuple(sorted((config_from_api(c) for c in configs), key=lambda c: c.name)),
        containers=tuple(sorted((container_from_api(c) for c in containers), key=lambda c: c.id)),
        secrets=tuple(
            sorted(
                (Secret(s["ID"], s.get("Spec", {}).get("Name", "")) for s in secrets),
                key=lambda s: s.name,
            )
        ),
    )
