"""The observed state of the Swarm as plain, immutable data.

Everything the decision code needs is here and nothing else: the pure core never sees a Docker
client, only these records. ``snapshot_from_api`` turns the Engine API's JSON answers into them, so
benchmarks and unit tests can build snapshots from recorded or synthetic answers.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import itertools
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

RUNNING = "running"
_TIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?Z", re.ASCII
)


def sortable_time(text: str) -> str:
    """An Engine API time (UTC, RFC 3339, trailing zeros of the nanoseconds trimmed, so that
    the raw strings can sort out of order within a second) as text that sorts by time; "" when
    unreadable."""
    found = _TIME.fullmatch(text)
    return f"{found[1]}.{(found[2] or '').ljust(9, '0')}" if found else ""


@dataclass(frozen=True, slots=True)
class ConfigRef:
    """A Docker config mounted into a service's containers at ``path``."""

    config_id: str
    config_name: str
    path: str


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A Docker secret mounted into a service's containers as /run/secrets/``path``."""

    secret_id: str
    secret_name: str
    path: str


@dataclass(frozen=True, slots=True)
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
    update: UpdateStatus | None = None  # the last update's outcome (None: never updated)
    # The spec before the last update (Swarm clears it when it rolls back an update by itself;
    # a manual rollback leaves the spec it rolled away from here).
    previous_spec: Mapping[str, Any] | None = field(
        default=None, repr=False, compare=False, hash=False
    )


@dataclass(frozen=True, slots=True)
class UpdateStatus:
    """Where a service's last update stands: ``state`` is Swarm's (updating, completed, paused,
    rollback_started, rollback_paused, rollback_completed)."""

    state: str
    started_at: str = ""
    message: str = ""
    completed_at: str = ""

    @property
    def rolled_back(self) -> bool:
        return self.state.startswith("rollback_")


@dataclass(frozen=True, slots=True)
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
    created_at: str = ""
    error: str = ""  # Swarm's Status.Err, e.g. "task: non-zero exit (1)"
    exit_code: int | None = None
    config_refs: tuple[ConfigRef, ...] = ()
    secret_refs: tuple[SecretRef, ...] = ()
    output: str = field(default="", compare=False, hash=False)  # last lines its container wrote

    @property
    def serving(self) -> bool:
        """A task takes traffic only while Swarm both wants it and has it running.

        A task whose desired state left ``running`` is being stopped (scale-down, update, drain):
        it must leave the pool now, before its container gets the stop signal.
        """
        return self.desired_state == RUNNING and self.state == RUNNING


@dataclass(frozen=True, slots=True)
class Network:
    id: str
    name: str
    driver: str
    scope: str


@dataclass(frozen=True, slots=True)
class Config:
    """A Docker config: its name, labels, and the sha256 of its data.

    Names are not proof of content (anyone who can create configs can create one under the name
    the controller will use), so what is mounted is compared by ``digest``: "" when the listing
    did not carry the data (then the executor inspects it before use).
    """

    id: str
    name: str
    labels: Mapping[str, str]
    created_at: str
    digest: str = ""
    # The text of a small record the controller keeps (an ACME order, ``acme.py``); ""
    # for every other config (a proxy's configuration is compared by its digest only).
    data: str = field(default="", repr=False, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class Secret:
    """A Docker secret's name and labels: the Engine API never returns a secret's data, nor do
    we want it (the ACME certificates' host and expiry are in their labels)."""

    id: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
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
    mounts: tuple[str, ...] = ()  # where volumes and bind mounts are in the container


@dataclass(frozen=True)
class Snapshot:
    """One consistent listing of everything a pass decides on."""

    services: tuple[Service, ...]
    tasks: tuple[Task, ...]
    networks: tuple[Network, ...]
    configs: tuple[Config, ...]
    containers: tuple[Container, ...] = ()
    secrets: tuple[Secret, ...] = ()
    # Every task, in any state, of proxy services whose last update was rolled back: which
    # config failed, and how (the running-task listing above never shows failed tasks).
    history: tuple[Task, ...] = ()
    # When the listing began, in seconds since the epoch (0: unknown, so nothing that waits for
    # a time falls due): the only clock the pure stages read.
    taken_at: float = 0.0

    def service(self, service_id: str) -> Service | None:
        """The service with this id (None: not listed)."""
        return self._services_by_id.get(service_id)

    @functools.cached_property
    def _services_by_id(self) -> dict[str, Service]:
        """Made on the first look-up: a pass looks up each proxy's service several times, and a
        scan of 10,000 services each time made planning grow faster than the Swarm."""
        return {service.id: service for service in self.services}


def _labels(raw: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(key): str(value) for key, value in (raw or {}).items()}


def _service_networks(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """Networks live in TaskTemplate.Networks; very old services used the top-level field."""
    attached = spec.get("TaskTemplate", {}).get("Networks") or spec.get("Networks") or []
    return tuple(sorted({str(net["Target"]) for net in attached if net.get("Target")}))


def mount_targets(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """Where a service's tasks mount volumes and bind mounts (the spec's ``Mounts``)."""
    container = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return tuple(sorted(str(m.get("Target", "")) for m in container.get("Mounts") or []))


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


def _update_status(raw: Mapping[str, Any] | None) -> UpdateStatus | None:
    if not raw or not raw.get("State"):
        return None
    return UpdateStatus(
        str(raw["State"]),
        str(raw.get("StartedAt", "")),
        str(raw.get("Message", "")),
        str(raw.get("CompletedAt", "")),
    )


def spec_refs(spec: Mapping[str, Any]) -> tuple[tuple[ConfigRef, ...], tuple[SecretRef, ...]]:
    """The configs and secrets a service spec mounts."""
    container_spec = (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return _config_refs(container_spec), _secret_refs(container_spec)


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
        update=_update_status(raw.get("UpdateStatus")),
        previous_spec=raw.get("PreviousSpec") or None,
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


def task_from_api(raw: Mapping[str, Any], output: str = "") -> Task:
    status = raw.get("Status", {})
    container = status.get("ContainerStatus") or {}
    container_spec = (raw.get("Spec") or {}).get("ContainerSpec") or {}
    code = container.get("ExitCode")
    return Task(
        id=raw["ID"],
        service_id=raw.get("ServiceID", ""),
        node_id=raw.get("NodeID", ""),
        slot=int(raw.get("Slot") or 0),
        desired_state=str(raw.get("DesiredState", "")),
        state=str(status.get("State", "")),
        container_id=str(container.get("ContainerID", "")),
        addresses=_task_addresses(raw),
        created_at=str(raw.get("CreatedAt", "")),
        error=str(status.get("Err", "")),
        exit_code=int(code) if isinstance(code, int) else None,
        config_refs=_config_refs(container_spec),
        secret_refs=_secret_refs(container_spec),
        output=output,
    )


def network_from_api(raw: Mapping[str, Any]) -> Network:
    return Network(
        id=raw["Id"],
        name=raw.get("Name", ""),
        driver=raw.get("Driver", ""),
        scope=raw.get("Scope", ""),
    )


def data_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _config_digest(spec: Mapping[str, Any]) -> str:
    """sha256 of a config's data as the API returns it (base64 in Spec.Data); "" if absent."""
    encoded = spec.get("Data")
    if not isinstance(encoded, str):
        return ""
    try:
        return data_digest(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        return ""


def config_from_api(raw: Mapping[str, Any]) -> Config:
    spec = raw.get("Spec", {})
    return Config(
        id=raw["ID"],
        name=spec.get("Name", ""),
        labels=_labels(spec.get("Labels")),
        created_at=str(raw.get("CreatedAt", "")),
        digest=_config_digest(spec),
        data=_record_text(spec),
    )


RECORD_MARK = ".ext.acme"  # a label key ending so marks a record whose text a pass reads
_RECORD_LIMIT = 16_384


def _record_text(spec: Mapping[str, Any]) -> str:
    """The data of a config that one of the controller's records marks ("" for others, so
    that proxy configurations are not held twice in every snapshot)."""
    labels = spec.get("Labels") or {}
    encoded = spec.get("Data")
    if not any(str(k).endswith(RECORD_MARK) for k in labels) or not isinstance(encoded, str):
        return ""
    if len(encoded) > _RECORD_LIMIT:
        return ""
    try:
        return base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, ValueError):
        return ""


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
        mounts=tuple(sorted(str(m.get("Destination", "")) for m in raw.get("Mounts") or [])),
    )


class _Reused:
    """Objects parsed from earlier listings, by id and version, and the parse for new ones."""

    def __init__(self, parse: Callable[[Mapping[str, Any]], Any]) -> None:
        self.parse = parse
        self._previous: dict[tuple[str, int], Any] = {}
        self._current: dict[tuple[str, int], Any] = {}

    def get(self, raw: Mapping[str, Any]) -> Any:
        version = (raw.get("Version") or {}).get("Index")
        if not isinstance(version, int):
            return self.parse(raw)
        key = (raw["ID"], version)
        found = self._current.get(key) or self._previous.get(key) or self.parse(raw)
        self._current[key] = found
        return found

    def listed(self) -> None:
        self._previous, self._current = self._current, {}


class Parses:
    """Tasks and services parsed from earlier listings, reused when listed again at the same
    version. Swarm gives an object a new version index at every change (a task's state,
    addresses or desired state; a service's spec or update status), so one listed again at the
    same version is the same, and its parse is reused. At 10,000 services and 75,000 tasks that
    spares 0.35 s of CPU a pass for the tasks (a quarter of the pass), and for the services
    0.035 s, a fifth of the parsing left. An object without a version is parsed every time.
    Only the objects of the last listing are kept (and those of the one being parsed)."""

    def __init__(self) -> None:
        self._tasks = _Reused(task_from_api)
        self._services = _Reused(service_from_api)

    def task(self, raw: Mapping[str, Any]) -> Task:
        return self._tasks.get(raw)

    def service(self, raw: Mapping[str, Any]) -> Service:
        return self._services.get(raw)

    def listed(self) -> None:
        """One listing is parsed: the objects it did not list are forgotten."""
        self._tasks.listed()
        self._services.listed()


_ID, _SERVICE_ID = operator.attrgetter("id"), operator.attrgetter("service_id")


def by_service(tasks: list[Task]) -> tuple[Task, ...]:
    """The tasks (the list is sorted in place) in (service, id) order, by two stable sorts: by id,
    then by service. Less than half the time of one sort by a (service, id) tuple, which builds
    a tuple a task and compares them: 0.10 s for 75,000 tasks listed by id, as the Engine lists
    them (a service's tasks scattered through the listing), 0.04 s this way."""
    tasks.sort(key=_ID)
    tasks.sort(key=_SERVICE_ID)
    return tuple(tasks)


def service_spans(tasks: tuple[Task, ...]) -> tuple[tuple[Task, ...], dict[str, tuple[int, int]]]:
    """The tasks grouped by service (a stable sort: a snapshot's are already), and each
    service's span in them: its tasks are ``tasks[first:last]``. Spans of one tuple rather
    than a tuple per service: a span of two ints is nothing for the garbage collector to walk."""
    grouped = tuple(sorted(tasks, key=_SERVICE_ID))
    spans, first = {}, 0
    for service_id, group in itertools.groupby(grouped, key=_SERVICE_ID):
        last = first + sum(1 for _ in group)
        spans[service_id] = (first, last)
        first = last
    return grouped, spans


def snapshot_from_api(
    services: Iterable[Mapping[str, Any]],
    tasks: Iterable[Mapping[str, Any]],
    networks: Iterable[Mapping[str, Any]],
    configs: Iterable[Mapping[str, Any]],
    containers: Iterable[Mapping[str, Any]] = (),
    secrets: Iterable[Mapping[str, Any]] = (),
    history: Iterable[Mapping[str, Any]] = (),
    outputs: Mapping[str, str] | None = None,
    parses: Parses | None = None,
    taken_at: float = 0.0,
) -> Snapshot:
    """Build a snapshot from the Engine API's list answers, sorted so passes are deterministic.

    ``history`` are the tasks (any state) of proxies whose last update rolled back, and
    ``outputs`` what the containers of some of them wrote last, by task id. ``parses``: the
    tasks and services of earlier listings, reused when unchanged (the same snapshot either way).
    ``taken_at``: when the listing began (seconds since the epoch).
    """
    parse_task = parses.task if parses else task_from_api
    parse_service = parses.service if parses else service_from_api
    parsed = [parse_task(t) for t in tasks]
    listed_services = [parse_service(s) for s in services]
    if parses:
        parses.listed()
    return Snapshot(
        services=tuple(sorted(listed_services, key=lambda s: s.name)),
        tasks=by_service(parsed),
        networks=tuple(sorted((network_from_api(n) for n in networks), key=lambda n: n.name)),
        configs=tuple(sorted((config_from_api(c) for c in configs), key=lambda c: c.name)),
        containers=tuple(sorted((container_from_api(c) for c in containers), key=lambda c: c.id)),
        secrets=tuple(
            sorted(
                (
                    Secret(
                        s["ID"],
                        s.get("Spec", {}).get("Name", ""),
                        _labels(s.get("Spec", {}).get("Labels")),
                    )
                    for s in secrets
                ),
                key=lambda s: s.name,
            )
        ),
        history=tuple(
            sorted(
                (task_from_api(t, (outputs or {}).get(t["ID"], "")) for t in history),
                key=lambda t: (t.service_id, t.id),
            )
        ),
        taken_at=taken_at,
    )
