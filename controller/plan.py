"""Decide the writes that take the Swarm from what it is to what it should be (pure).

A plan is an ordered list of actions. It is empty when every proxy already serves its desired
configuration, which is what makes a pass idempotent: the comparison is by content digest, carried
in the name of the Docker config (rolling mode) or in the digest file beside the config inside each
proxy container (signal mode). Executing any prefix of a plan leaves a state from which the next
plan finishes the job, which is what makes a kill between two writes harmless.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .desired import DesiredProxy, Proxy
from .labels import Problem
from .render import Rendered
from .snapshot import Config, Snapshot

# Rolling a proxy whose ports are published in host mode must stop the old task first: the new
# one cannot bind the port while the old one holds it.
DEFAULT_UPDATE_CONFIG = {
    "Parallelism": 1,
    "Delay": 0,
    "FailureAction": "pause",
    "Monitor": 5_000_000_000,
    "MaxFailureRatio": 0,
    "Order": "stop-first",
}


@dataclass(frozen=True)
class CreateConfig:
    proxy: str
    name: str
    data: str = field(repr=False)
    labels: Mapping[str, str]


@dataclass(frozen=True)
class UpdateProxyService:
    """Mount ``config_name`` at ``path`` ("" unmounts, None leaves it) and, unless ``secrets``
    is None, exactly these TLS secrets as (file under /run/secrets, secret id, secret name)."""

    proxy: str
    service_id: str
    version: int
    config_name: str | None
    path: str
    spec: Mapping[str, Any] = field(repr=False)
    secrets: tuple[tuple[str, str, str], ...] | None = None


@dataclass(frozen=True)
class RemoveConfig:
    proxy: str
    config_id: str
    name: str


@dataclass(frozen=True)
class PushConfig:
    """Write a config into a running proxy container, check it there, swap it in, signal."""

    proxy: str
    kind: str
    container_id: str
    path: str
    text: str = field(repr=False)
    digest: str


Action = CreateConfig | UpdateProxyService | RemoveConfig | PushConfig


@dataclass(frozen=True)
class Labels:
    """The label keys the controller puts on what it owns."""

    prefix: str

    @property
    def owned(self) -> str:
        return f"{self.prefix}.ext.owned"

    @property
    def proxy(self) -> str:
        return f"{self.prefix}.ext.proxy"

    @property
    def digest(self) -> str:
        return f"{self.prefix}.ext.digest"


TLS_FILE_PREFIX = "tls-"  # secret mounts the controller owns on a proxy: /run/secrets/tls-*


@dataclass(frozen=True)
class Deployable:
    """A proxy, the rendered config that may go live on it, and the TLS secrets it needs."""

    proxy: Proxy
    rendered: Rendered
    secrets: tuple[tuple[str, str], ...] = ()


def secret_mounts(desired: DesiredProxy) -> tuple[tuple[str, str], ...]:
    """(file under /run/secrets, secret name) for every certificate and key the proxy serves."""
    mounts = []
    for cert in desired.certificates:
        mounts += [(cert.file, cert.cert_secret), (f"{cert.file}.key", cert.key_secret)]
    return tuple(sorted(mounts))


def with_ids(snapshot: Snapshot, mounts: tuple[tuple[str, str], ...]) -> tuple:
    """(file, secret id, secret name) for each (file, secret name); desired has checked that
    every named secret exists, so a missing one can only be a race Docker will refuse."""
    ids = {secret.name: secret.id for secret in snapshot.secrets}
    return tuple((file, ids.get(name, ""), name) for file, name in mounts)


def mounted_secrets(snapshot: Snapshot, proxy: Proxy) -> tuple[tuple[str, str], ...]:
    service = _service(snapshot, proxy.service_id)
    refs = service.secret_refs if service else ()
    return tuple(
        sorted((r.path, r.secret_name) for r in refs if r.path.startswith(TLS_FILE_PREFIX))
    )


def config_name(prefix: str, proxy: Proxy, rendered: Rendered) -> str:
    """Docker config names are capped at 64 characters; the digest part keeps them unique."""
    suffix = f"-{rendered.digest[:12]}"
    return f"{prefix}-{proxy.name}"[: 64 - len(suffix)] + suffix


def _service(snapshot: Snapshot, service_id: str):
    return next((s for s in snapshot.services if s.id == service_id), None)


def mounted_config(snapshot: Snapshot, proxy: Proxy) -> str:
    """Name of the Docker config a proxy service mounts at its config path ("" if none)."""
    service = _service(snapshot, proxy.service_id)
    refs = service.config_refs if service else ()
    return next((r.config_name for r in refs if r.path == proxy.spec.config_path), "")


def proxy_containers(snapshot: Snapshot, proxy: Proxy) -> list[str]:
    """Running containers of a proxy on the controller's engine, which signal mode can reach."""
    if proxy.container_id:
        return [c.id for c in snapshot.containers if c.id == proxy.container_id]
    return [
        c.id
        for c in snapshot.containers
        if c.service_id == proxy.service_id and c.state == "running"
    ]


def unreachable_tasks(snapshot: Snapshot, proxy: Proxy) -> int:
    """Serving tasks of a signal-mode proxy that run on other engines than the controller's."""
    local = set(proxy_containers(snapshot, proxy))
    return sum(
        1
        for t in snapshot.tasks
        if t.service_id == proxy.service_id and t.serving and t.container_id not in local
    )


def is_current(
    snapshot: Snapshot, prefix: str, target: Deployable, served: Mapping[str, str]
) -> bool:
    """Whether the proxy already serves this configuration everywhere the controller can see."""
    proxy, rendered = target.proxy, target.rendered
    if proxy.service_id and mounted_secrets(snapshot, proxy) != target.secrets:
        return False
    if proxy.mode == "signal":
        return all(served.get(c) == rendered.digest for c in proxy_containers(snapshot, proxy))
    return mounted_config(snapshot, proxy) == config_name(prefix, proxy, rendered)


def _file(path: str) -> dict[str, Any]:
    # Readable by the proxy's own user (the official HAProxy image runs as one), in its container.
    return {"Name": path, "UID": "0", "GID": "0", "Mode": 0o444}


def with_mounts(
    spec: Mapping[str, Any],
    path: str,
    config: tuple[str, str] | None,
    secrets: list[tuple[str, str, str]] | None = None,
) -> dict[str, Any]:
    """A copy of a service spec with its mounts changed.

    The config at ``path`` is replaced by ``config`` (id, name), or removed when the name is
    empty, unless ``config`` is None; unless ``secrets`` is None, the TLS secret mounts are
    replaced by ``secrets`` (file, secret id, secret name). Other mounts are left alone.
    """
    new = copy.deepcopy(dict(spec))
    container = new.setdefault("TaskTemplate", {}).setdefault("ContainerSpec", {})
    if config is not None:
        refs = [
            r for r in container.get("Configs") or [] if (r.get("File") or {}).get("Name") != path
        ]
        if config[1]:
            refs.append({"File": _file(path), "ConfigID": config[0], "ConfigName": config[1]})
        container["Configs"] = refs
    if secrets is not None:
        kept = [
            r
            for r in container.get("Secrets") or []
            if not (r.get("File") or {}).get("Name", "").startswith(TLS_FILE_PREFIX)
        ]
        container["Secrets"] = kept + [
            {"File": _file(file), "SecretID": sid, "SecretName": name}
            for file, sid, name in secrets
        ]
    new["UpdateConfig"] = new.get("UpdateConfig") or dict(DEFAULT_UPDATE_CONFIG)
    return new


def _rolling(snapshot, prefix, target: Deployable, existing) -> list[Action]:
    proxy, rendered = target.proxy, target.rendered
    name = config_name(prefix, proxy, rendered)
    if is_current(snapshot, prefix, target, {}):
        return []
    keys = Labels(prefix)
    actions: list[Action] = []
    if name not in existing:
        labels = {keys.owned: "true", keys.proxy: proxy.service_id, keys.digest: rendered.digest}
        actions.append(CreateConfig(proxy.name, name, rendered.text, labels))
    service = _service(snapshot, proxy.service_id)
    actions.append(
        UpdateProxyService(
            proxy.name,
            proxy.service_id,
            service.version,
            name,
            proxy.spec.config_path,
            service.spec,
            with_ids(snapshot, target.secrets),
        )
    )
    return actions


def _signal(snapshot, prefix, target: Deployable, served, owned_names) -> list[Action]:
    proxy, rendered = target.proxy, target.rendered
    if proxy.service_id and mounted_secrets(snapshot, proxy) != target.secrets:
        # Certificates come as secrets, which only a service update can mount (one restart of
        # the proxy's tasks); the new tasks then get the config pushed.
        service = _service(snapshot, proxy.service_id)
        return [
            UpdateProxyService(
                proxy.name,
                proxy.service_id,
                service.version,
                None,
                proxy.spec.config_path,
                service.spec,
                with_ids(snapshot, target.secrets),
            )
        ]
    mounted = mounted_config(snapshot, proxy)
    if mounted and mounted in owned_names:
        # Left over from rolling mode: the read-only mount would block writes. Unmount it once.
        service = _service(snapshot, proxy.service_id)
        path = proxy.spec.config_path
        return [
            UpdateProxyService(
                proxy.name, proxy.service_id, service.version, "", path, service.spec
            )
        ]
    return [
        PushConfig(
            proxy.name,
            proxy.spec.kind,
            container,
            proxy.spec.config_path,
            rendered.text,
            rendered.digest,
        )
        for container in proxy_containers(snapshot, proxy)
        if served.get(container) != rendered.digest
    ]


def signal_problems(snapshot: Snapshot, prefix: str, proxy: Proxy, owned: set[str]) -> list:
    """What keeps a signal-mode proxy from being fully converged, said to the user."""
    problems = []
    mounted = mounted_config(snapshot, proxy) if proxy.service_id else ""
    if mounted and mounted not in owned:
        problems.append(
            Problem(
                proxy.name,
                f"{prefix}.ext.mode",
                f"signal mode cannot write {proxy.spec.config_path}: the service "
                f"mounts Docker config {mounted} there",
                proxy=proxy.name,
            )
        )
    away = unreachable_tasks(snapshot, proxy) if proxy.service_id else 0
    if away:
        problems.append(
            Problem(
                proxy.name,
                f"{prefix}.ext.mode",
                f"{away} task(s) run on engines the controller cannot reach; "
                "use rolling mode for proxies on other nodes",
                rejected=False,
                proxy=proxy.name,
            )
        )
    return problems


def _owned(snapshot: Snapshot, prefix: str) -> list[Config]:
    return [c for c in snapshot.configs if c.labels.get(Labels(prefix).owned) == "true"]


def _garbage(snapshot: Snapshot, prefix: str, keep: int, protect: set[str]) -> list[Action]:
    """Owned configs no service mounts, beyond the newest ``keep`` per proxy (for rollback)."""
    used = {r.config_name for s in snapshot.services for r in s.config_refs}
    used |= {r.config_id for s in snapshot.services for r in s.config_refs}
    proxies = {s.id for s in snapshot.services}
    by_proxy: dict[str, list[Config]] = {}
    for config in _owned(snapshot, prefix):
        if config.name in used or config.id in used or config.name in protect:
            continue
        by_proxy.setdefault(config.labels.get(Labels(prefix).proxy, ""), []).append(config)
    actions: list[Action] = []
    for proxy_id, configs in sorted(by_proxy.items()):
        kept = keep if proxy_id in proxies else 0
        newest_first = sorted(configs, key=lambda c: (c.created_at, c.name), reverse=True)
        actions += [RemoveConfig(proxy_id, c.id, c.name) for c in newest_first[kept:]]
    return actions


def plan(
    snapshot: Snapshot,
    prefix: str,
    deployable: Mapping[str, Deployable],
    served: Mapping[str, str],
    keep_configs: int,
) -> list[Action]:
    """The ordered writes of one pass.

    ``deployable`` maps a proxy name to what may go live on it: the rendered config that passed
    its check and the secrets it needs (proxies whose config failed are absent, so they keep what
    they serve). ``served`` maps a proxy container id to the digest it serves (signal mode).
    """
    existing = {c.name for c in snapshot.configs}
    owned_names = {c.name for c in _owned(snapshot, prefix)}
    actions: list[Action] = []
    for _name, target in sorted(deployable.items()):
        if target.proxy.mode == "signal":
            actions += _signal(snapshot, prefix, target, served, owned_names)
        else:
            actions += _rolling(snapshot, prefix, target, existing)
    protect = {a.name for a in actions if isinstance(a, CreateConfig)}
    return actions + _garbage(snapshot, prefix, keep_configs, protect)
