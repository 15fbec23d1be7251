"""Which container is the controller's own, and which source addresses may read status pages.

The proxies' status listeners (nginx ``stub_status``, HAProxy stats) sit on a port no service
publishes, but every container on the proxy network can reach it. They answer only 127.0.0.1,
the controller's own addresses (found here, from the snapshot) and the operator's
``INTERLOCK_STATUS_ALLOW``. That list is part of every rendered config, so it is built to be the
same from pass to pass (deduplicated, sorted by address): it changes only when the controller's
container does (a restart on a new address), never by the order Docker lists things in.

Plain standard library only, so it also runs inside a bare Python container.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Protocol

from .snapshot import Container, Snapshot

MAX_ALLOW = 64  # more than any controller has addresses; keeps the rendered rules short
_CONTAINER_ID = re.compile(r"/containers/([0-9a-f]{64})/")  # /var/lib/docker/containers/<id>/
_CGROUP_ID = re.compile(r"docker[-/]([0-9a-f]{64})(?:\.scope)?")  # cgroup v1 and systemd
_SHORT_ID = re.compile(r"[0-9a-f]{12}")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AllowSettings(Protocol):
    """What ``status_allow`` reads from ``Settings`` (kept narrow for tests)."""

    status_allow: str


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


_OWN_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


def _mounted_ids(mountinfo: str) -> set[str]:
    """Container ids from the mounts at this process's own /etc/hostname, /etc/hosts and
    /etc/resolv.conf. Only those: on a Docker host, the host's own mount table also lists every
    container's shm mount under /var/lib/docker/containers/<id>/, which is not this process's."""
    ids = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] in _OWN_FILES:
            ids |= set(_CONTAINER_ID.findall(fields[3]))
    return ids


def own_container_hints() -> tuple[set[str], str]:
    """What this process knows of its own container: ids in its mounts (Docker bind-mounts
    /etc/hostname, /etc/hosts and resolv.conf from the container's folder) or cgroup path, and
    its hostname (the short id unless the service sets another)."""
    ids = _mounted_ids(_read("/proc/self/mountinfo"))
    ids |= set(_CGROUP_ID.findall(_read("/proc/self/cgroup")))
    return ids, socket.gethostname()


def own_container(
    containers: Iterable[Container], ids: Collection[str], hostname: str
) -> Container | None:
    """The controller's own container on its engine, or None (e.g. it runs on a host)."""
    containers = list(containers)
    for container in containers:
        if container.id in ids:
            return container
    if _SHORT_ID.fullmatch(hostname):
        matches = [c for c in containers if c.id.startswith(hostname)]
        if len(matches) == 1:
            return matches[0]
    return None


def own_addresses(snapshot: Snapshot, hints: tuple[Collection[str], str]) -> set[str]:
    """The controller container's addresses on every network it is attached to (from the
    container listing and, when the snapshot holds it, its Swarm task's attachments)."""
    me = own_container(snapshot.containers, *hints)
    if me is None:
        return set()
    found = set(me.addresses.values())
    for task in snapshot.tasks:
        if task.container_id == me.id:
            found |= set(task.addresses.values())
    return found


def parse_allow(text: str) -> tuple[str, ...]:
    """``INTERLOCK_STATUS_ALLOW``: comma-separated addresses or CIDRs, normalised and sorted.

    Raises ValueError naming the bad entry; a CIDR with host bits set (``10.0.0.5/8``) is refused
    rather than guessed at, since either reading of it may be the one meant.
    """
    networks: list[Network] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        if not entry.isascii():
            raise ValueError(f"{entry!r} is not an address or CIDR")
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError as error:
            raise ValueError(f"{entry!r} is not an address or CIDR: {error}") from None
    if len(networks) > MAX_ALLOW:
        raise ValueError(f"at most {MAX_ALLOW} entries, got {len(networks)}")
    return _canonical(networks)


def _canonical(networks: Iterable[Network]) -> tuple[str, ...]:
    """Deduplicated, sorted (IPv4 first, then by address and prefix); a single host is written
    as a bare address, as nginx and HAProxy both take it."""
    unique = sorted(set(networks), key=lambda n: (n.version, n.network_address, n.prefixlen))
    return tuple(
        str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n) for n in unique
    )


def status_allow(
    snapshot: Snapshot,
    settings: AllowSettings,
    hints: tuple[Collection[str], str] | None = None,
) -> tuple[str, ...]:
    """Sources allowed on the proxies' status pages besides 127.0.0.1, for ``RenderOptions``.

    The controller's own addresses (``hints`` default to this process's own container) plus
    ``INTERLOCK_STATUS_ALLOW``. Pure given ``hints``; deterministic, so passes never differ by it.
    A controller outside any container (on a host) adds no address of its own.
    """
    hints = own_container_hints() if hints is None else hints
    mine = []
    for address in own_addresses(snapshot, hints):
        try:
            mine.append(ipaddress.ip_network(address))
        except ValueError:  # never from Docker; an odd answer must not fail the pass
            continue
    operator = [ipaddress.ip_network(entry) for entry in parse_allow(settings.status_allow)]
    return _canonical([*mine, *operator])
