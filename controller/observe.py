"""Read the Swarm: a constant number of list calls per pass, whatever the number of services.

Read-only by construction: nothing here writes to Docker. The six calls are services, tasks (only of
routed and proxy services, only those Swarm wants running), networks, the configs named with the
controller's prefix (owned or not, with their data, so that a config squatting a name the
controller will use is seen for what it holds), the running containers of the controller's own
engine (for proxies reloaded in place), and the names of secrets (for TLS certificates).

Only while a proxy's last update stands rolled back does a pass make more: one listing of those
proxies' tasks in every state (which config failed, and how), and, once per failed task, the last
lines its container wrote when it ran on this engine.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field

import docker
import docker.errors

from . import labels as lbl
from .bounded import remember
from .desired import Proxy
from .gateway import Gateway
from .plan import name_prefix, proxy_containers
from .snapshot import Parses, Snapshot, snapshot_from_api, sortable_time
from .verify import proxy_words

# Past this many service ids in one tasks filter, listing all running tasks is cheaper than a
# query string that long.
_MAX_SERVICE_FILTER = 200
_OUTPUT_LINES = 20  # of a failed proxy task's container, for the report


@dataclass
class Observer:
    api: Gateway
    prefix: str
    # What failed proxy tasks' containers wrote, by task id: a stopped task never changes.
    outputs: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    # The tasks and services of the last listings, parsed: an unchanged one is not parsed again.
    parses: Parses = field(default_factory=Parses, init=False, repr=False)

    def _relevant(self, services: list[dict]) -> list[str]:
        """Ids of services that are routed or are proxies: only their tasks matter."""
        ids = []
        for service in services:
            found = (service.get("Spec") or {}).get("Labels") or {}
            if lbl.is_routed(found, self.prefix) or lbl.is_proxy(found, self.prefix):
                ids.append(service["ID"])
        return ids

    def _tasks(self, service_ids: list[str]) -> list[dict]:
        if not service_ids:
            return []
        filters: dict = {"desired-state": "running"}
        if len(service_ids) <= _MAX_SERVICE_FILTER:
            filters["service"] = service_ids
        return self.api.tasks(filters=filters)

    def _rolled_back(self, services: list[dict]) -> list[str]:
        """Ids of proxy services whose last update Swarm rolled back (or is rolling back)."""
        return [
            s["ID"]
            for s in services
            if str((s.get("UpdateStatus") or {}).get("State", "")).startswith("rollback_")
            and lbl.is_proxy((s.get("Spec") or {}).get("Labels") or {}, self.prefix)
        ]

    def _history(self, service_ids: list[str]) -> list[dict]:
        if not service_ids:
            return []
        return self.api.tasks(filters={"service": service_ids})

    def _output(self, task: dict) -> str:
        """The last lines a failed task's container wrote ("" when it ran on another engine)."""
        if task["ID"] in self.outputs:
            return self.outputs[task["ID"]]
        container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        text = ""
        if container:
            try:
                raw = self.api.logs(container, stdout=True, stderr=True, tail=_OUTPUT_LINES)
                text = proxy_words(raw.decode(errors="replace"))
            except docker.errors.APIError:
                text = ""  # not on this engine, or already removed
        remember(self.outputs, task["ID"], text)
        return text

    def _failed_outputs(self, history: list[dict]) -> dict[str, str]:
        """Output of the newest failed task of each service in ``history``."""
        newest: dict[str, dict] = {}
        for task in history:
            if (task.get("Status") or {}).get("State") not in ("failed", "rejected"):
                continue
            known = newest.get(task.get("ServiceID", ""))
            created = sortable_time(str(task.get("CreatedAt", "")))
            if known is None or created > sortable_time(str(known.get("CreatedAt", ""))):
                newest[task.get("ServiceID", "")] = task
        return {task["ID"]: self._output(task) for task in newest.values()}

    def snapshot(self) -> Snapshot:
        taken_at = time.time()
        services = self.api.services()
        tasks = self._tasks(self._relevant(services))
        networks = self.api.networks()
        configs = self.api.configs(filters={"name": name_prefix(self.prefix)})
        containers = self.api.containers(filters={"status": "running"})
        secrets = self.api.secrets()  # names and ids only: the API never gives data
        history = self._history(self._rolled_back(services))
        outputs = self._failed_outputs(history)
        return snapshot_from_api(
            services,
            tasks,
            networks,
            configs,
            containers,
            secrets,
            history,
            outputs,
            self.parses,
            taken_at,
        )


def deployed_text(api: Gateway, snapshot: Snapshot, proxy: Proxy) -> str | None:
    """The configuration a proxy serves now, as the CLI's `diff` shows it."""
    if proxy.mode == "signal":
        containers = proxy_containers(snapshot, proxy)
        return api.read_file(containers[0], proxy.spec.config_path) if containers else None
    service = snapshot.service(proxy.service_id)
    ref = next(
        (r for r in (service.config_refs if service else ()) if r.path == proxy.spec.config_path),
        None,
    )
    if not ref:
        return None
    return base64.b64decode(api.inspect_config(ref.config_id)["Spec"]["Data"]).decode()


def task_configs(api: Gateway, proxy: Proxy) -> list[str]:
    """Name of the config each running task of a proxy service mounts at its config path.

    For `interlock status` only (one call per proxy): the loop itself never needs it.
    """
    tasks = api.tasks(filters={"service": proxy.service_id, "desired-state": "running"})
    names = []
    for task in tasks:
        if (task.get("Status") or {}).get("State") != "running":
            continue
        refs = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Configs") or []
        mounted = [
            r.get("ConfigName", "")
            for r in refs
            if (r.get("File") or {}).get("Name") == proxy.spec.config_path
        ]
        names.append(mounted[0] if mounted else "")
    return names
