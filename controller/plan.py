"""Decide the writes that take the Swarm from what it is to what it should be (pure).

A plan is an ordered list of actions. It is empty when every proxy already serves its desired
configuration, which is what makes a pass idempotent: the comparison is by content digest, carried
in the name of the Docker config (rolling mode) or in the digest file beside the config inside each
proxy container (signal mode). Executing any prefix of a plan leaves a state from which the next
plan finishes the job, which is what makes a kill between two writes harmless.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .desired import DesiredProxy, Proxy
from .kinds import KINDS
from .labels import Problem
from .render import Rendered, digest
from .snapshot import Config, Snapshot, Task, UpdateStatus, sortable_time, spec_refs
from .timestamps import UNKNOWN, nanoseconds
from .vocabulary import Vocabulary

# How long Swarm watches a new proxy task for failure: a proxy that cannot load its config or
# certificates exits within a second of starting, so this catches it with room to spare.
MONITOR_NS = 5_000_000_000

# Rolling a proxy whose ports are published in host mode must stop the old task first: the new
# one cannot bind the port while the old one holds it. An update whose task fails is rolled back
# by Swarm itself, so a proxy is never left paused with no task (see ``update_configs``).
DEFAULT_UPDATE_CONFIG = {
    "Parallelism": 1,
    "Delay": 0,
    "FailureAction": "rollback",
    "Monitor": MONITOR_NS,
    "MaxFailureRatio": 0,
    "Order": "stop-first",
}
DEFAULT_ROLLBACK_CONFIG = {
    "Parallelism": 1,
    "Delay": 0,
    "FailureAction": "pause",
    "Monitor": MONITOR_NS,
    "MaxFailureRatio": 0,
    "Order": "stop-first",
}

# The proxy's user, who alone may read a TLS key, when the service does not name a numeric one
# (``kinds.ProxyKind.user``).
PROXY_USERS = {name: kind.user for name, kind in KINDS.items()}
_NUMERIC_USER = re.compile(r"([0-9]{1,10})(?::([0-9]{1,10}))?", re.ASCII)


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
    digest: str = ""  # sha256 the mounted config's data must have ("" not checked here)
    owner: tuple[str, str] = ("0", "0")  # uid, gid of the TLS files (keys: readable by it only)
    files: tuple[tuple[str, str, str], ...] = ()  # (path, config name, sha256) beside the config


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
    # The files the config names beside it (HAProxy's crt-list), by absolute path: written into
    # the container before the config is checked there.
    files: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False, compare=False)


Action = CreateConfig | UpdateProxyService | RemoveConfig | PushConfig


# The keys the controller puts on what it owns: ``owned``, ``proxy``, ``digest``, ``check``.
Labels = Vocabulary


TLS_FILE_PREFIX = "tls-"  # secret mounts the controller owns on a proxy: /run/secrets/tls-*


@dataclass(frozen=True)
class Deployable:
    """A proxy, the rendered config that may go live on it, and the TLS secrets it needs."""

    proxy: Proxy
    rendered: Rendered
    secrets: tuple[tuple[str, str], ...] = ()


def secret_mounts(desired: DesiredProxy) -> tuple[tuple[str, str], ...]:
    """(file under /run/secrets, secret name) for every certificate and key the proxy serves,
    and every other secret file its routes name (basic auth's htpasswd files). A certificate
    written in place beside the config (``Certificate.inline``) is no mount: changing it restarts
    nothing."""
    mounts = []
    for cert in (c for c in desired.certificates if not c.inline):
        mounts += [(cert.file, cert.cert_secret), (f"{cert.file}.key", cert.key_secret)]
    mounts += [(f.file, f.secret) for f in desired.secret_files]
    return tuple(sorted(mounts))


def with_ids(snapshot: Snapshot, mounts: tuple[tuple[str, str], ...]) -> tuple:
    """(file, secret id, secret name) for each (file, secret name); desired has checked that
    every named secret exists, so a missing one can only be a race Docker will refuse."""
    ids = {secret.name: secret.id for secret in snapshot.secrets}
    return tuple((file, ids.get(name, ""), name) for file, name in mounts)


def mounted_secrets(snapshot: Snapshot, proxy: Proxy) -> tuple[tuple[str, str], ...]:
    service = snapshot.service(proxy.service_id)
    refs = service.secret_refs if service else ()
    return tuple(
        sorted((r.path, r.secret_name) for r in refs if r.path.startswith(TLS_FILE_PREFIX))
    )


def _named(prefix: str, proxy: Proxy, sha: str) -> str:
    suffix = f"-{sha[:12]}"
    return f"{prefix}-{proxy.name}"[: 64 - len(suffix)] + suffix


def config_name(prefix: str, proxy: Proxy, rendered: Rendered) -> str:
    """Docker config names are capped at 64 characters; the digest part keeps them unique."""
    return _named(prefix, proxy, rendered.digest)


@dataclass(frozen=True)
class ConfigFile:
    """One file of a proxy's configuration as the Docker config that carries it (rolling)."""

    path: str
    name: str
    text: str = field(repr=False)
    digest: str = ""


def config_files(prefix: str, proxy: Proxy, rendered: Rendered) -> tuple[ConfigFile, ...]:
    """The config at its path, then each file the render put beside it (HAProxy's crt-list),
    each a Docker config named by its own content."""
    main = ConfigFile(
        proxy.spec.config_path, config_name(prefix, proxy, rendered), rendered.text, rendered.digest
    )
    beside = [
        ConfigFile(path, _named(prefix, proxy, digest(text)), text, digest(text))
        for path, text in sorted(rendered.files.items())
    ]
    return (main, *beside)


def _beside(config_path: str, path: str) -> bool:
    """A file the render puts beside the config is named after it (``<config path>.<...>``)."""
    return path == config_path or path.startswith(f"{config_path}.")


def name_prefix(prefix: str) -> str:
    """What every config name the controller uses starts with: the observer lists all configs
    so named, owned or not, so that one squatting a name the controller will use is seen."""
    return f"{prefix}-"[:51]


def secret_owner(kind: str, spec: Mapping[str, Any] | None) -> tuple[str, str]:
    """uid and gid to own a proxy's TLS files: the service's numeric ``user`` if it sets one,
    else the user the official image of that kind loads certificates as."""
    user = ((spec or {}).get("TaskTemplate") or {}).get("ContainerSpec", {}).get("User") or ""
    found = _NUMERIC_USER.fullmatch(str(user))
    if found:
        return found[1], found[2] or found[1]
    return PROXY_USERS.get(kind, ("0", "0"))


def update_configs(spec: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The UpdateConfig and RollbackConfig a proxy is updated with.

    The operator's order, parallelism and delay are kept (they know how the ports are
    published); a failed task always rolls the update back (``docker service create`` sets
    "pause", which leaves a stop-first proxy with no task), within a monitor long enough to see
    a proxy exit at start. The rollback uses the update's order, for the same ports.
    """
    update = {**DEFAULT_UPDATE_CONFIG, **(spec.get("UpdateConfig") or {})}
    update["FailureAction"], update["MaxFailureRatio"] = "rollback", 0
    update["Monitor"] = max(int(update.get("Monitor") or 0), MONITOR_NS)
    rollback = {**DEFAULT_ROLLBACK_CONFIG, **(spec.get("RollbackConfig") or {})}
    rollback["Order"] = update["Order"]
    rollback["Monitor"] = max(int(rollback.get("Monitor") or 0), MONITOR_NS)
    return update, rollback


def mounted_config(snapshot: Snapshot, proxy: Proxy) -> str:
    """Name of the Docker config a proxy service mounts at its config path ("" if none)."""
    service = snapshot.service(proxy.service_id)
    refs = service.config_refs if service else ()
    return next((r.config_name for r in refs if r.path == proxy.spec.config_path), "")


def proxy_containers(snapshot: Snapshot, proxy: Proxy) -> list[str]:
    """Running containers of a proxy on the controller's engine, which signal mode can reach;
    each once, even if listed twice (two agents reporting one container): a push is a reload,
    and a pass reloads a container at most once."""
    if proxy.container_id:
        found = [c.id for c in snapshot.containers if c.id == proxy.container_id]
    else:
        found = [
            c.id
            for c in snapshot.containers
            if c.service_id == proxy.service_id and c.state == "running"
        ]
    return list(dict.fromkeys(found))


def unreachable_tasks(snapshot: Snapshot, proxy: Proxy) -> int:
    """Serving tasks of a signal-mode proxy that run on other engines than the controller's."""
    local = set(proxy_containers(snapshot, proxy))
    return sum(
        1
        for t in snapshot.tasks
        if t.service_id == proxy.service_id and t.serving and t.container_id not in local
    )


def _verified(snapshot: Snapshot, config_id: str, sha: str) -> bool:
    """The config with this id holds data of this digest, or its data is unknown here."""
    config = next((c for c in snapshot.configs if c.id == config_id), None)
    return config is None or config.digest in ("", sha)


def _all_mounted(snapshot: Snapshot, proxy: Proxy, files: tuple[ConfigFile, ...]) -> bool:
    service = snapshot.service(proxy.service_id)
    refs = {r.path: r for r in (service.config_refs if service else ())}
    return all(
        f.path in refs
        and refs[f.path].config_name == f.name
        and _verified(snapshot, refs[f.path].config_id, f.digest)
        for f in files
    )


def is_current(
    snapshot: Snapshot, prefix: str, target: Deployable, served: Mapping[str, str]
) -> bool:
    """Whether the proxy already serves this configuration everywhere the controller can see.

    In rolling mode that is the config of the right name *and* content: a mounted config whose
    data is known to differ from the rendered text is not current, whatever its name.
    """
    proxy, rendered = target.proxy, target.rendered
    if proxy.service_id and mounted_secrets(snapshot, proxy) != target.secrets:
        return False
    if proxy.mode == "signal":
        return all(served.get(c) == rendered.digest for c in proxy_containers(snapshot, proxy))
    return _all_mounted(snapshot, proxy, config_files(prefix, proxy, rendered))


def _file(path: str) -> dict[str, Any]:
    # World-readable: the config and certificates are no secret to anyone in the container.
    return {"Name": path, "UID": "0", "GID": "0", "Mode": 0o444}


def _secret_file(path: str, owner: tuple[str, str]) -> dict[str, Any]:
    """A TLS file owned by the proxy's user; a key is readable by that user only."""
    mode = 0o400 if path.endswith(".key") else 0o444
    return {"Name": path, "UID": owner[0], "GID": owner[1], "Mode": mode}


def with_mounts(
    spec: Mapping[str, Any],
    path: str,
    config: tuple[str, str] | None,
    secrets: list[tuple[str, str, str]] | None = None,
    owner: tuple[str, str] = ("0", "0"),
    files: list[tuple[str, str, str]] = (),
) -> dict[str, Any]:
    """A copy of a service spec with its mounts changed, and updates that roll back on failure.

    Unless ``config`` is None, the config at ``path`` and the files beside it are replaced by
    ``config`` (id, name) and ``files`` (path, id, name), or removed when the name is empty;
    unless ``secrets`` is None, the TLS secret mounts are replaced by ``secrets`` (file, secret
    id, secret name), owned by ``owner`` (uid, gid). Other mounts are left alone.
    """
    new = copy.deepcopy(dict(spec))
    container = new.setdefault("TaskTemplate", {}).setdefault("ContainerSpec", {})
    if config is not None:
        refs = [
            r
            for r in container.get("Configs") or []
            if not _beside(path, (r.get("File") or {}).get("Name", ""))
        ]
        if config[1]:
            refs.append({"File": _file(path), "ConfigID": config[0], "ConfigName": config[1]})
            refs += [
                {"File": _file(where), "ConfigID": cid, "ConfigName": name}
                for where, cid, name in files
            ]
        container["Configs"] = refs
    if secrets is not None:
        kept = [
            r
            for r in container.get("Secrets") or []
            if not (r.get("File") or {}).get("Name", "").startswith(TLS_FILE_PREFIX)
        ]
        container["Secrets"] = kept + [
            {"File": _secret_file(file, owner), "SecretID": sid, "SecretName": name}
            for file, sid, name in secrets
        ]
    new["UpdateConfig"], new["RollbackConfig"] = update_configs(new)
    return new


# -- updates that failed ------------------------------------------------------------------------

_FAILED = ("failed", "rejected")


def _mounts(
    configs: Iterable, secrets: Iterable, path: str
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """(config at ``path``, sorted TLS secret mounts) of a spec or a task."""
    config = next((r.config_name for r in configs if r.path == path), "")
    tls = tuple(
        sorted((r.path, r.secret_name) for r in secrets if r.path.startswith(TLS_FILE_PREFIX))
    )
    return config, tls


def _wanted(prefix: str, target: Deployable) -> tuple[str | None, tuple]:
    """What an update for this target would mount: (config or None if unchanged, TLS files)."""
    if target.proxy.mode == "signal":
        return None, target.secrets
    return config_name(prefix, target.proxy, target.rendered), target.secrets


# An update whose task the engine could not start (the proxy never ran: a mount the kernel
# refused, a node out of resources) says nothing about the config, so it is made again, after a
# back-off that doubles with each such failure of the same mounts Swarm still lists. An update
# whose proxy ran and exited is the config's fault: it waits for another config.
RETRY_FIRST_SECONDS = 10.0
RETRY_MAX_SECONDS = 300.0
_ENGINE_FAILURE = "starting container failed"


def engine_failed(task: Task) -> bool:
    """The task failed before its proxy ran (Swarm rejected it, or the engine could not start
    its container), not because the proxy exited."""
    return task.state == "rejected" or task.error.startswith(_ENGINE_FAILURE)


def retry_after(failures: int) -> float:
    """Seconds from a rollback to the next attempt, after ``failures`` engine failures."""
    return min(RETRY_FIRST_SECONDS * 2 ** max(failures - 1, 0), RETRY_MAX_SECONDS)


@dataclass(frozen=True)
class HeldUpdate:
    """An update that failed and was rolled back: ``why`` in Swarm's and the proxy's words;
    ``retry_seconds`` when the engine failed it, so it is made again that long after the
    rollback (None: held until what it mounts changes)."""

    why: str
    retry_seconds: float | None = None


def failed_update(snapshot: Snapshot, prefix: str, target: Deployable) -> HeldUpdate | None:
    """Why the update this target needs already failed and was rolled back, and so is held
    (None if it did not, or if the engine failed it and its retry is due).

    Swarm rolls a failed update back and (for its own rollbacks) forgets the spec it rolled away
    from, so the attempt is recognised by its failed tasks, created since the update started,
    that mounted what the target would mount; a manual ``docker service rollback`` keeps that
    spec as PreviousSpec. Another config or other secrets is a new attempt: it is made.
    """
    proxy = target.proxy
    service = snapshot.service(proxy.service_id) if proxy.service_id else None
    if not service or not service.update or not service.update.rolled_back:
        return None
    config, secrets = _wanted(prefix, target)
    path = proxy.spec.config_path

    def same(mounts: tuple[str, tuple]) -> bool:
        return (config is None or mounts[0] == config) and mounts[1] == secrets

    since = sortable_time(service.update.started_at)
    attempts = [
        t
        for t in snapshot.history
        if t.service_id == service.id
        and t.state in _FAILED
        and same(_mounts(t.config_refs, t.secret_refs, path))
    ]
    tasks = [
        t
        for t in attempts
        if not (since and sortable_time(t.created_at) and sortable_time(t.created_at) < since)
    ]
    if tasks:
        last = max(tasks, key=lambda t: sortable_time(t.created_at))
        if not engine_failed(last):
            return HeldUpdate(_task_failure(last))
        wait = retry_after(sum(1 for t in attempts if engine_failed(t)))
        return (
            None
            if _retry_due(snapshot, service.update, wait)
            else HeldUpdate(_task_failure(last), wait)
        )
    if service.previous_spec and same(_mounts(*spec_refs(service.previous_spec), path)):
        return HeldUpdate(f"rolled back ({service.update.message or service.update.state})")
    return None


def _retry_due(snapshot: Snapshot, update: UpdateStatus, wait: float) -> bool:
    """The rollback completed at least ``wait`` seconds before the snapshot was taken (never
    while it is still rolling back, nor when either time is unknown)."""
    completed = nanoseconds(update.completed_at)
    if update.state != "rollback_completed" or completed == UNKNOWN or not snapshot.taken_at:
        return False
    return snapshot.taken_at * 1e9 >= completed + wait * 1e9


def _task_failure(task: Task) -> str:
    said = " ".join(task.output.split())[-600:]
    code = f", exit code {task.exit_code}" if task.exit_code is not None else ""
    why = f"task {task.id[:12]} {task.state}{code}: {task.error or 'no error given'}"
    return f"{why}; the proxy said: {said}" if said else why


def squatted_config(snapshot: Snapshot, prefix: str, target: Deployable) -> Config | None:
    """A config under the name this target's config would get, with other data than the
    rendered text: never mounted, since it is not what was checked."""
    if target.proxy.mode != "rolling":
        return None
    by_name = {c.name: c for c in snapshot.configs}
    for file in config_files(prefix, target.proxy, target.rendered):
        found = by_name.get(file.name)
        if found and found.digest and found.digest != file.digest:
            return found
    return None


def rolling_problems(snapshot: Snapshot, prefix: str, target: Deployable) -> list[Problem]:
    """What stops the plan from deploying this target, said to the user (then it plans nothing
    for the proxy, which keeps serving what it serves).

    A config whose name is taken by other content; an update that failed and was rolled back,
    which is not made again until what it would mount changes or the service is updated.
    """
    proxy, problems = target.proxy, []
    label = f"{prefix}.ext.name"
    squatter = squatted_config(snapshot, prefix, target)
    if squatter:
        reason = (
            f"Docker config {squatter.name} exists with other content than the rendered file "
            f"it is named for (sha256 {squatter.digest[:12]}): it is not mounted; the proxy "
            "keeps its config until that Docker config is removed"
        )
        problems.append(Problem(proxy.name, label, reason, proxy=proxy.name))
    if is_current(snapshot, prefix, target, {}):
        return problems
    failed = failed_update(snapshot, prefix, target)
    if failed:
        config, _ = _wanted(prefix, target)
        what = f"config {config}" if config else "the TLS secrets"
        retry = (
            "it is not retried until the config or secrets change or the service is updated"
            if failed.retry_seconds is None
            else f"the proxy never ran, so it is made again {failed.retry_seconds:.0f} s after "
            "the rollback"
        )
        reason = (
            f"the update mounting {what} failed and Swarm rolled it back to the previous task "
            f"({failed.why}); {retry}"
        )
        problems.append(Problem(proxy.name, label, reason, proxy=proxy.name))
    return problems


def deploy_problems(
    snapshot: Snapshot, prefix: str, deployable: Mapping[str, Deployable]
) -> list[Problem]:
    """``rolling_problems`` of every target, in proxy order."""
    found = []
    for _name, target in sorted(deployable.items()):
        found += rolling_problems(snapshot, prefix, target)
    return list(dict.fromkeys(found))


def _rolling(snapshot, prefix, target: Deployable, existing: Mapping[str, Config]) -> list:
    proxy, rendered = target.proxy, target.rendered
    if is_current(snapshot, prefix, target, {}):
        return []
    keys = Labels(prefix)
    main, *beside = config_files(prefix, proxy, rendered)
    actions: list[Action] = []
    for file in (*beside, main):  # the files the config names exist before it is mounted
        if file.name not in existing or not existing[file.name].digest:
            # A config listed without its data is created anyway: the executor then finds it
            # on Docker's conflict and compares its data before using it.
            labels = {keys.owned: "true", keys.proxy: proxy.service_id, keys.digest: file.digest}
            actions.append(CreateConfig(proxy.name, file.name, file.text, labels))
    service = snapshot.service(proxy.service_id)
    actions.append(
        UpdateProxyService(
            proxy.name,
            proxy.service_id,
            service.version,
            main.name,
            proxy.spec.config_path,
            service.spec,
            with_ids(snapshot, target.secrets),
            main.digest,
            secret_owner(proxy.spec.kind, service.spec),
            tuple((f.path, f.name, f.digest) for f in beside),
        )
    )
    return actions


def _signal(snapshot, prefix, target: Deployable, served, owned_names) -> list[Action]:
    proxy, rendered = target.proxy, target.rendered
    if proxy.service_id and mounted_secrets(snapshot, proxy) != target.secrets:
        # Certificates come as secrets, which only a service update can mount (one restart of
        # the proxy's tasks); the new tasks then get the config pushed.
        service = snapshot.service(proxy.service_id)
        return [
            UpdateProxyService(
                proxy.name,
                proxy.service_id,
                service.version,
                None,
                proxy.spec.config_path,
                service.spec,
                with_ids(snapshot, target.secrets),
                owner=secret_owner(proxy.spec.kind, service.spec),
            )
        ]
    mounted = mounted_config(snapshot, proxy)
    if mounted and mounted in owned_names:
        # Left over from rolling mode: the read-only mount would block writes. Unmount it once.
        service = snapshot.service(proxy.service_id)
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
            dict(rendered.files),
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
                f"{away} task(s) run where neither the controller nor an agent reaches them "
                "(no agent reports from their node): they keep what they serve; run "
                "`interlock agent` on those nodes (stack.yml does), or use rolling mode",
                rejected=False,
                proxy=proxy.name,
            )
        )
    return problems


def _owned(snapshot: Snapshot, prefix: str) -> list[Config]:
    return [c for c in snapshot.configs if c.labels.get(Labels(prefix).owned) == "true"]


def owned_names(snapshot: Snapshot, prefix: str) -> set[str]:
    """Names of the configs the controller owns (the snapshot also lists others that merely
    carry its name prefix)."""
    return {c.name for c in _owned(snapshot, prefix)}


def _garbage(snapshot: Snapshot, prefix: str, keep: int, protect: set[str]) -> list[Action]:
    """Owned configs no service mounts, beyond the newest ``keep`` per proxy (for rollback)."""
    used = {r.config_name for s in snapshot.services for r in s.config_refs}
    used |= {r.config_id for s in snapshot.services for r in s.config_refs}
    proxies = {s.id for s in snapshot.services}
    by_proxy: dict[str, list[Config]] = {}
    for config in _owned(snapshot, prefix):
        if config.name in used or config.id in used or config.name in protect:
            continue
        if config.labels.get(Labels(prefix).check) == "true":
            continue  # the certificate check's own config: it reuses it on every check
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
    existing = {c.name: c for c in snapshot.configs}
    owned = owned_names(snapshot, prefix)
    actions: list[Action] = []
    for _name, target in sorted(deployable.items()):
        if squatted_config(snapshot, prefix, target) or failed_update(snapshot, prefix, target):
            continue  # see rolling_problems: reported, and the proxy keeps what it serves
        if target.proxy.mode == "signal":
            actions += _signal(snapshot, prefix, target, served, owned)
        else:
            actions += _rolling(snapshot, prefix, target, existing)
    protect = {a.name for a in actions if isinstance(a, CreateConfig)}
    return actions + _garbage(snapshot, prefix, keep_configs, protect)
