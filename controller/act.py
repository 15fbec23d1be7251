"""Carry out a plan: the only module that writes to Docker.

Each action is one write (or one in-place reload). When a write fails, the rest of that proxy's
actions are skipped and the other proxies go on; the next pass lists the state again and plans
what is still missing, so no failure here needs undoing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import docker
import docker.errors

from .gateway import Gateway
from .logs import event
from .plan import (
    Action,
    CreateConfig,
    PushConfig,
    RemoveConfig,
    UpdateProxyService,
    with_mounts,
)
from .result import Outcome
from .snapshot import Snapshot, config_from_api, data_digest

log = logging.getLogger(__name__)


class ConfigMismatch(RuntimeError):
    """A config under the name the controller would use holds other data: never mounted."""


@dataclass
class Executor:
    api: Gateway
    push: Callable[[PushConfig], None] | None = None  # signal mode's in-place reload

    def run(self, actions: list[Action], snapshot: Snapshot) -> list[Outcome]:
        config_ids = {c.name: c.id for c in snapshot.configs}
        failed: set[str] = set()
        outcomes = []
        for action in actions:
            if action.proxy in failed:
                continue
            outcome = self._one(action, config_ids)
            outcomes.append(outcome)
            if not outcome.ok:
                failed.add(action.proxy)
        return outcomes

    def _one(self, action: Action, config_ids: dict[str, str]) -> Outcome:
        kind = type(action).__name__
        try:
            self._dispatch(action, config_ids)
        except Exception as error:  # one proxy's failure must not stop the others
            event(
                log,
                "action_failed",
                logging.ERROR,
                action=kind,
                proxy=action.proxy,
                error=str(error),
            )
            return Outcome(action, str(error) or type(error).__name__)
        event(log, "action_done", action=kind, proxy=action.proxy, **_describe(action))
        return Outcome(action)

    def _dispatch(self, action: Action, config_ids: dict[str, str]) -> None:
        if isinstance(action, CreateConfig):
            config_ids[action.name] = self.create_config(action)
        elif isinstance(action, UpdateProxyService):
            self.update_service(action, config_ids)
        elif isinstance(action, RemoveConfig):
            self.remove_config(action)
        elif isinstance(action, PushConfig):
            if self.push is None:
                raise RuntimeError("signal mode is not available in this controller")
            self.push(action)

    def create_config(self, action: CreateConfig) -> str:
        """Create the config; if one of that name exists (an earlier, killed pass), reuse it
        only when its data is the rendered text (anyone may have created that name first)."""
        data = action.data.encode()
        try:
            return self.api.create_config(action.name, data, labels=action.labels)["ID"]
        except docker.errors.APIError as error:
            if error.status_code != 409:
                raise
        return self._config_id(action.name, data_digest(data))

    def _config_id(self, name: str, digest: str = "") -> str:
        """The id of the config ``name``, after checking its data has sha256 ``digest``."""
        found = [c for c in self.api.configs(filters={"name": name}) if c["Spec"]["Name"] == name]
        if not found:
            raise LookupError(f"config {name} does not exist")
        config = config_from_api(found[0])
        if digest and not config.digest:  # the listing left the data out: ask for it
            raw = self.api.inspect_config(config.id)
            config = config_from_api(raw)
        if digest and config.digest != digest:
            raise ConfigMismatch(
                f"Docker config {name} exists with other content than the rendered config "
                f"(sha256 {config.digest[:12] or 'unknown'}, rendered {digest[:12]}): "
                "refusing to mount it; the proxy keeps its config until that config is removed"
            )
        return config.id

    def update_service(self, action: UpdateProxyService, config_ids: dict[str, str]) -> None:
        """Post the full observed spec with the config swapped, at the observed version.

        Every field is passed explicitly: docker-py would otherwise send what it was not given as
        empty. A concurrent change makes Swarm refuse the stale version; the next pass retries.
        """
        config, files = None, []
        if action.config_name is not None:
            name = action.config_name
            found = config_ids.get(name) or (self._config_id(name, action.digest) if name else "")
            config = (found, name)
            files = [
                (path, config_ids.get(file) or self._config_id(file, sha), file)
                for path, file, sha in action.files
            ]
        secrets = None if action.secrets is None else list(action.secrets)
        spec = with_mounts(action.spec, action.path, config, secrets, action.owner, files)
        self.api.update_service(
            action.service_id,
            action.version,
            task_template=spec["TaskTemplate"],
            name=spec.get("Name"),
            labels=spec.get("Labels") or {},
            mode=spec.get("Mode"),
            update_config=spec.get("UpdateConfig"),
            rollback_config=spec.get("RollbackConfig"),
            endpoint_spec=spec.get("EndpointSpec"),
            fetch_current_spec=False,
        )

    def remove_config(self, action: RemoveConfig) -> None:
        with contextlib.suppress(docker.errors.NotFound):  # already gone: converged
            self.api.remove_config(action.config_id)


def _describe(action: Action) -> Mapping[str, object]:
    if isinstance(action, CreateConfig | RemoveConfig):
        return {"config": action.name}
    if isinstance(action, UpdateProxyService):
        config = (
            "(unchanged)" if action.config_name is None else action.config_name or "(unmounted)"
        )
        return {
            "config": config,
            "service_version": action.version,
            "tls_files": len(action.secrets or ()),
        }
    if isinstance(action, PushConfig):
        return {"container": action.container_id[:12], "digest": action.digest[:16]}
    return {}
