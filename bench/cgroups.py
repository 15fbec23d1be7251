"""Where a change's CPU goes on the multi-node bed, from the host's cgroup accounting (v1
``cpuacct``, as this machine has it).

Each node is a container of the bed's engine (cgroup ``<bed>/<node container>``) running its own
dockerd, containerd and runc; its task containers sit below it, in ``interlock-bed-nodes/node<i>``
(``tests.bed.cluster``). So:

- a task container's CPU is its own cgroup's, named by its Swarm service (without the test's
  namespace, digits dropped: ``lat3`` is ``lat``);
- a node's engine work (execs, task teardown, answering lists) is the node's cgroup less its
  task containers'; a container that is not there at both samples is counted there too;
- what no node accounts for (this bench's polling, the host's port forwarding, the kernel's
  network work) is the machine's busy time (``/proc/stat``) less every node's.

Where the accounting is not found (another cgroup layout), samples are empty and so are figures.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.bed.cluster import CGROUP_PARENT, Cluster

CPUACCT = Path("/sys/fs/cgroup/cpuacct")
SERVICE = "com.docker.swarm.service.name"
ENGINES = "engines (dockerd, containerd, runc)"
OUTSIDE = "outside the nodes (this bench's polling, port forwarding)"


def busy_seconds() -> float:
    """CPU time the whole machine has spent busy (all cores, /proc/stat), in seconds."""
    with open("/proc/stat") as stat:
        fields = [int(f) for f in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _usage(folder: Path) -> float:
    return int((folder / "cpuacct.usage").read_text()) / 1e9


def _node_cgroup(cluster: Cluster, index: int) -> Path | None:
    """The node's own cgroup: the one whose task cgroups are under ``interlock-bed-nodes``."""
    bed = CPUACCT / cluster.config.bed.run_dir.name
    found = list(bed.glob(f"*/{CGROUP_PARENT}/node{index}"))
    return found[0].parent.parent if len(found) == 1 else None


def _role(service: str, namespace: str) -> str:
    return re.sub(r"\d+$", "", service.removeprefix(f"{namespace}-"))


@dataclass(frozen=True)
class Sample:
    """Cumulative CPU seconds at one moment: the machine's busy time, each node's cgroup and each
    task container's (``node<i>/<id>``)."""

    busy: float
    nodes: dict[str, float] = field(default_factory=dict)
    containers: dict[str, float] = field(default_factory=dict)


def sample(cluster: Cluster) -> Sample | None:
    """The counters now (files only: no engine is asked, so a sample costs the nodes nothing);
    None without the accounting."""
    now = Sample(busy_seconds())
    for index in cluster.config.indexes:
        node = _node_cgroup(cluster, index)
        if node is None:
            return None
        now.nodes[f"node{index}"] = _usage(node)
        for task in (node / CGROUP_PARENT / f"node{index}").iterdir():
            if (task / "cpuacct.usage").exists():
                now.containers[f"node{index}/{task.name}"] = _usage(task)
    return now


def roles(cluster: Cluster, namespace: str) -> dict[str, str]:
    """``node<i>/<container id>`` -> its service's role, for the containers of ``namespace``."""
    found = {}
    for index in cluster.config.indexes:
        for container in cluster.client(index).api.containers(all=True):
            service = (container.get("Labels") or {}).get(SERVICE, "")
            if service.startswith(f"{namespace}-"):
                found[f"node{index}/{container['Id']}"] = _role(service, namespace)
    return found


def spent(before: Sample | None, after: Sample | None, named: dict[str, str]) -> dict[str, float]:
    """CPU seconds by part between two samples: one per role (``named``: ``roles``), the
    engines, and outside the nodes."""
    if before is None or after is None:
        return {}
    nodes = sum(now - before.nodes[node] for node, now in after.nodes.items())
    parts = {ENGINES: nodes}
    for container, now in after.containers.items():
        if container in before.containers:
            delta = now - before.containers[container]
            role = named.get(container, "other containers")
            parts[role] = parts.get(role, 0.0) + delta
            parts[ENGINES] -= delta
    parts[OUTSIDE] = after.busy - before.busy - nodes
    return {part: round(max(seconds, 0.0), 3) for part, seconds in parts.items()}
