"""The settings of the controller the Swarm runs, so the CLI shows what it does (pure).

`interlock status` run from a user's shell has that shell's environment, not the running
controller's: its default mode, ports or prefix may differ, and it would report a proxy as out
of sync while it is in sync. The controller's service carries ``<prefix>.ext.controller=true``
(stack.yml sets it); its ``INTERLOCK_*`` environment is read from the service spec in the
snapshot and applied over the shell's, and the CLI says where its settings came from.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from .settings import Settings
from .snapshot import Service, Snapshot
from .vocabulary import Vocabulary

ENV_PREFIX = "INTERLOCK_"


def controller_service(snapshot: Snapshot, prefix: str) -> Service | None:
    """The service labelled as this prefix's controller (the oldest name first if several)."""
    mark = Vocabulary(prefix).key("ext.controller")
    found = [s for s in snapshot.services if s.labels.get(mark) == "true"]
    return min(found, key=lambda s: s.name) if found else None


def environment(service: Service) -> dict[str, str]:
    """The ``INTERLOCK_*`` variables of a service's containers."""
    container = (service.spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    pairs = (str(item).partition("=") for item in container.get("Env") or [])
    return {key: value for key, _, value in pairs if key.startswith(ENV_PREFIX)}


def with_deployed(settings: Settings, snapshot: Snapshot) -> tuple[Settings, str]:
    """The settings the deployed controller runs with (its environment over this shell's),
    and a line saying where they come from."""
    service = controller_service(snapshot, settings.label_prefix)
    if service is None:
        mark = Vocabulary(settings.label_prefix).key("ext.controller")
        return settings, f"settings: this shell's environment (no service labelled {mark}=true)"
    overrides = _fields(environment(service))
    try:
        merged = Settings(**{**settings.model_dump(), **overrides})
    except ValidationError as error:
        return settings, f"settings: this shell's (service {service.name}'s are invalid: {error})"
    shown = ", ".join(f"{ENV_PREFIX}{k.upper()}={v}" for k, v in sorted(overrides.items()))
    return merged, f"settings: from service {service.name} ({shown or 'its defaults'})"


def _fields(env: Mapping[str, str]) -> dict[str, str]:
    known = set(Settings.model_fields)
    fields = {key[len(ENV_PREFIX) :].lower(): value for key, value in env.items()}
    return {key: value for key, value in fields.items() if key in known}
