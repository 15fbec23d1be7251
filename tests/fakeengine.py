"""The Engine API as the unit tests of a pass see it: list answers from plain data (shaped by
``tests.builders``), and a record of every write, named as the SDK names it.

Only for tests of a pass's rules and wiring (``tests/unit``): it stands at the gateway boundary
and proves no convergence, which only the Swarm tests show.
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

import docker.errors

from tests import builders as b


class FakeEngine:
    """Answers the list calls from plain data and records every write (as the SDK names it)."""

    def __init__(self, services: list[dict], tasks: list[dict]) -> None:
        self.services_, self.tasks_ = services, tasks
        self.configs_: list[dict] = []
        self.writes: list[tuple[str, Any]] = []
        self.fail_update_of: set[str] = set()
        self._ids = itertools.count(1)

    # reads
    def services(self, filters=None):
        return self.services_

    def tasks(self, filters=None):
        return self.tasks_

    def networks(self):
        return [b.network("net1")]

    def configs(self, filters=None):
        name = (filters or {}).get("name", "")
        return [c for c in self.configs_ if c["Spec"]["Name"].startswith(name)]

    def inspect_config(self, config_id):
        return next(c for c in self.configs_ if c["ID"] == config_id)

    def containers(self, filters=None):
        return []

    def secrets(self):
        return []

    # writes
    def create_config(self, name, data, labels=None):
        self.writes.append(("create_config", name))
        config = b.config(f"cfg{next(self._ids)}", name, labels or {}, "2026-01-01T00:00:00Z")
        config["Spec"]["Data"] = base64.b64encode(data).decode()
        self.configs_.append(config)
        return {"ID": config["ID"]}

    def update_service(self, service_id, version, **spec):
        self.writes.append(("update_service", service_id))
        if service_id in self.fail_update_of:
            raise docker.errors.APIError("update out of sequence")
        service = next(s for s in self.services_ if s["ID"] == service_id)
        service["Spec"]["TaskTemplate"] = spec["task_template"]
        service["Version"]["Index"] += 1

    def remove_config(self, config_id):
        self.writes.append(("remove_config", config_id))
        self.configs_ = [c for c in self.configs_ if c["ID"] != config_id]
