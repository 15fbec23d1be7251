"""Load every TLS certificate and key with the proxy's own binary before a proxy depends on them.

The config check (``check``) runs the proxy's binary on the rendered config with a stand-in pair,
since a plain container cannot mount Docker secrets; it cannot see a secret that does not hold a
certificate and key the proxy can load (text that is no PEM, a key of another certificate, a key
under a passphrase). Deployed, such a pair makes the proxy exit at start, which in rolling mode
with stop-first takes it down. So each pair a pass needs is loaded once, by a one-off Swarm task
of the proxy's own image with the two secrets mounted as the proxy will mount them (same file
names, owner and mode), and a minimal config that loads exactly those pairs: ``nginx -t`` or
``haproxy -c``, no shell needed in the image. Secrets are immutable, so the verdict on a pair
(kind, image, user, secret ids) holds for the life of the process.

Pairs are loaded ``GROUP`` at a time in one task (a short group repeats its last pair, so that
one config per kind fits every group); only when a group is refused is each of its pairs checked
alone, to say which one. Forty good pairs cost three tasks, not forty.

A check that cannot run (Docker refused, the task did not finish in time) refuses the pair with
the reason, never raises, and is not remembered: the next pass tries again. A pair the proxy
already serves is kept when its check could not run (see ``screen``), so a slow engine never
takes a working certificate away.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from secrets import token_hex

import docker
import docker.errors

from .bounded import remember
from .desired import Desired, DesiredProxy
from .gateway import Gateway
from .kinds import KINDS
from .labels import Problem
from .logs import event
from .plan import Labels, name_prefix, secret_owner
from .render import digest
from .snapshot import Snapshot, config_from_api, sortable_time
from .verify import Verdict, proxy_words

log = logging.getLogger(__name__)

CONFIG_PATH = "/interlock-cert-check.conf"
GROUP = 16  # pairs one check task loads (HAProxy: 35 words on the bind line, of 64 allowed)


def cert_file(index: int) -> str:
    """The certificate's file under /run/secrets in a check task; the key's adds ".key"."""
    return f"interlock-check-{index}.pem"


def _nginx_config() -> str:
    servers = "".join(
        f"""    server {{
        listen 8443 ssl;
        server_name c{i}.invalid;
        ssl_certificate /run/secrets/{cert_file(i)};
        ssl_certificate_key /run/secrets/{cert_file(i)}.key;
    }}
"""
        for i in range(GROUP)
    )
    return f"""# interlock: loads {GROUP} certificates and their keys, and nothing else.
error_log stderr warn;
pid /tmp/interlock-cert-check.pid;
events {{}}
http {{
{servers}}}
"""


def _haproxy_config() -> str:
    crts = "".join(f" crt /run/secrets/{cert_file(i)}" for i in range(GROUP))
    return f"""# interlock: loads {GROUP} certificates and their keys (name + .key), nothing else.
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s

frontend interlock_cert_check
    bind :8443 ssl{crts}
    http-request deny
"""


CONFIGS = {"nginx": _nginx_config(), "haproxy": _haproxy_config()}
_DONE = ("complete", "failed", "rejected", "shutdown", "orphaned", "remove")
UNRUN = "the certificate check could not run"  # how every verdict not the proxy's own begins
SWEEP_EVERY = 600.0  # seconds between looks for check services a crashed controller left


@dataclass(frozen=True)
class CertPair:
    """A certificate and key as one proxy would load them: what a verdict is about."""

    kind: str
    image: str
    cert_secret_id: str
    cert_secret_name: str
    key_secret_id: str
    key_secret_name: str
    user: str = ""  # the proxy service's ContainerSpec.User ("" the image's own)
    constraints: tuple[str, ...] = ()  # the proxy's placement: nodes that run (have) its image

    @property
    def owner(self) -> tuple[str, str]:
        return secret_owner(self.kind, {"TaskTemplate": {"ContainerSpec": {"User": self.user}}})

    @property
    def runner(self) -> tuple[str, str, str, tuple[str, ...]]:
        """Pairs with the same runner can be loaded in one task."""
        return self.kind, self.image, self.user, self.constraints


@dataclass
class CertificateChecker:
    """Runs the checks: creates, waits for, reads and removes one-off check services.

    Every Docker call goes through the gateway (``api``): counted and retried.
    """

    api: Gateway
    prefix: str
    timeout: float = 30.0  # seconds a batch of check tasks may take, from creation to exit
    parallel: int = 8  # check tasks run at once
    poll: float = 0.2
    verdicts: dict[CertPair, Verdict] = field(default_factory=dict)  # the proxy's own verdicts
    _configs: dict[str, tuple[str, str]] = field(default_factory=dict, init=False, repr=False)
    _swept: float = field(default=float("-inf"), init=False, repr=False)

    @property
    def keys(self) -> Labels:
        return Labels(self.prefix)

    def knows(self, pair: CertPair) -> bool:
        """Whether the verdict on this pair is the proxy's own (not "the check could not run")."""
        return pair in self.verdicts

    def check(self, pairs: Iterable[CertPair]) -> dict[CertPair, Verdict]:
        """A verdict for every pair; pairs not checked before are loaded a group per task."""
        wanted = list(dict.fromkeys(pairs))
        found = {pair: self.verdicts[pair] for pair in wanted if pair in self.verdicts}
        todo = [pair for pair in wanted if pair not in found]
        if todo:
            self._sweep()
        alone: list[tuple[CertPair, ...]] = []
        for group, (verdict, final) in self._run(_groups(todo)).items():
            if final and not verdict.ok and len(group) > 1:
                alone += [(pair,) for pair in group]  # which of them: each on its own
                continue
            found.update(self._settle(group, verdict, final))
        for group, (verdict, final) in self._run(alone).items():
            found.update(self._settle(group, verdict, final))
        return {pair: found[pair] for pair in wanted}

    def _settle(self, group: tuple[CertPair, ...], verdict: Verdict, final: bool) -> dict:
        for pair in group:
            if final:
                remember(self.verdicts, pair, verdict)
            event(
                log,
                "certificate_checked",
                logging.INFO if verdict.ok else logging.WARNING,
                kind=pair.kind,
                cert=pair.cert_secret_name,
                key=pair.key_secret_name,
                ok=verdict.ok,
                group=len(group),
            )
        return dict.fromkeys(group, verdict)

    # -- running check tasks --------------------------------------------------------------------

    def _run(self, groups: list[tuple[CertPair, ...]]) -> dict[tuple, tuple[Verdict, bool]]:
        """Each group's verdict and whether it is the proxy's own, ``parallel`` tasks at once."""
        found: dict[tuple, tuple[Verdict, bool]] = {}
        step = max(1, self.parallel)
        for start in range(0, len(groups), step):
            found.update(self._batch(groups[start : start + step]))
        return found

    def _batch(self, groups: list[tuple[CertPair, ...]]) -> dict[tuple, tuple[Verdict, bool]]:
        deadline = time.monotonic() + self.timeout
        found: dict[tuple, tuple[Verdict, bool]] = {}
        services: dict[tuple, str] = {}
        for group in groups:
            try:
                services[group] = self._start(group)
            except Exception as error:  # a check that cannot run refuses, and is tried again
                found[group] = (Verdict(False, f"{UNRUN}: {error}"), False)
        try:
            tasks = self._wait(services, deadline)
            for group, service in services.items():
                found[group] = self._verdict(service, tasks.get(group))
        except Exception as error:
            for group in services:
                found.setdefault(group, (Verdict(False, f"{UNRUN}: {error}"), False))
        finally:
            for service in services.values():
                self._remove(service)
        return found

    def _start(self, group: tuple[CertPair, ...]) -> str:
        first = group[0]
        if first.kind not in CONFIGS:
            raise ValueError(f"no certificate check for proxy kind {first.kind!r}")
        config_id, config_name = self._config(first.kind)
        uid, gid = first.owner
        secrets = []
        for index in range(GROUP):
            pair = group[min(index, len(group) - 1)]
            secrets += [
                docker.types.SecretReference(
                    pair.cert_secret_id, pair.cert_secret_name, cert_file(index), uid, gid, 0o444
                ),
                docker.types.SecretReference(
                    pair.key_secret_id,
                    pair.key_secret_name,
                    f"{cert_file(index)}.key",
                    uid,
                    gid,
                    0o400,
                ),
            ]
        container = docker.types.ContainerSpec(
            first.image,
            command=KINDS[first.kind].check_argv(CONFIG_PATH),
            user=first.user or None,
            labels={self.keys.check: "true"},
            configs=[
                docker.types.ConfigReference(
                    config_id, config_name, CONFIG_PATH, uid="0", gid="0", mode=0o444
                )
            ],
            secrets=secrets,
        )
        template = docker.types.TaskTemplate(
            container,
            restart_policy=docker.types.RestartPolicy(condition="none"),
            placement=list(first.constraints) or None,
        )
        name = f"{self.prefix}-check"[:50] + f"-{token_hex(6)}"
        try:
            created = self.api.create_service(
                template,
                name=name,
                labels={self.keys.check: "true"},
                mode=docker.types.ServiceMode("replicated", 1),
            )
        except docker.errors.APIError:
            self._configs.pop(first.kind, None)  # e.g. the check config was removed: look again
            raise
        return created["ID"]

    def _wait(self, services: Mapping[tuple, str], deadline: float) -> dict[tuple, dict]:
        """Each service's task once it is done, or as it was when time ran out."""
        latest: dict[tuple, dict] = {}
        while services:
            listed = self.api.tasks(filters={"service": list(services.values())})
            by_service = {t.get("ServiceID"): t for t in listed}
            for group, service in services.items():
                if service in by_service:
                    latest[group] = by_service[service]
            if all(_state(latest.get(group)) in _DONE for group in services):
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(self.poll)
        return latest

    def _verdict(self, service: str, task: dict | None) -> tuple[Verdict, bool]:
        """The verdict from a task, and whether it is the proxy's own (then it is remembered)."""
        state = _state(task)
        status = (task or {}).get("Status") or {}
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        if state == "complete" and code in (0, None):
            return Verdict(True, ""), True
        if state == "failed" and isinstance(code, int) and code > 0:
            said = self._output(service)
            return Verdict(False, said or f"exit code {code}, and no output"), True
        if state in _DONE:
            why = status.get("Err") or status.get("Message") or state
            return Verdict(False, f"{UNRUN}: its task ended {state}: {why}"), False
        where = f"task {state}: {status.get('Err') or status.get('Message') or ''}".strip(": ")
        return (
            Verdict(False, f"{UNRUN}: it did not finish in {self.timeout:g}s ({where})"),
            False,
        )

    def _output(self, service: str) -> str:
        raw = self._logs(service)
        text = raw.decode(errors="replace")
        return proxy_words(text)

    def _logs(self, service: str) -> bytes:
        """All a service's tasks wrote, read within the check's timeout."""
        return self.api.service_output(service, timeout=self.timeout)

    def _remove(self, service: str) -> None:
        try:
            self.api.remove_service(service)
        except docker.errors.NotFound:
            pass
        except Exception as error:  # left behind: the next sweep takes it
            event(log, "check_service_left", logging.WARNING, service=service, error=str(error))

    # -- the check's own config, and leftovers --------------------------------------------------

    def _config(self, kind: str) -> tuple[str, str]:
        """The Docker config holding the check config for ``kind``: created once, and reused
        only when its data is that config (anyone may have created the name first)."""
        if kind in self._configs:
            return self._configs[kind]
        text = CONFIGS[kind]
        sha = digest(text)
        suffix = f"-{sha[:12]}"
        name = f"{self.prefix}-check-{kind}"[: 64 - len(suffix)] + suffix
        labels = {self.keys.owned: "true", self.keys.check: "true", self.keys.digest: sha}
        try:
            config_id = self.api.create_config(name, text.encode(), labels=labels)["ID"]
        except docker.errors.APIError as error:
            if error.status_code != 409:
                raise
            config_id = self._existing(name, sha)
        self._configs[kind] = (config_id, name)
        return self._configs[kind]

    def _existing(self, name: str, sha: str) -> str:
        listed = self.api.configs(filters={"name": name})
        found = next((c for c in listed if (c.get("Spec") or {}).get("Name") == name), None)
        if found is None:
            raise LookupError(f"Docker config {name} exists and then does not")
        config = config_from_api(found)
        if not config.digest:
            config = config_from_api(self.api.inspect_config(config.id))
        if config.digest != sha:
            raise RuntimeError(
                f"Docker config {name} exists with other content than the check config "
                f"(sha256 {config.digest[:12] or 'unknown'}): remove it"
            )
        return config.id

    def _sweep(self) -> None:
        """Remove check services older than a few timeouts: a controller killed mid-check
        leaves its finished check service behind (its tasks are done, it holds nothing)."""
        now = time.monotonic()
        if now - self._swept < SWEEP_EVERY:
            return
        self._swept = now
        try:
            listed = self.api.services(filters={"label": f"{self.keys.check}=true"})
        except Exception as error:
            event(log, "check_sweep_failed", logging.WARNING, error=str(error))
            return
        oldest = _utc_text(time.time() - max(120.0, 4 * self.timeout))
        for service in listed:
            name = (service.get("Spec") or {}).get("Name", "")
            created = sortable_time(str(service.get("CreatedAt", "")))
            if name.startswith(name_prefix(self.prefix)) and created and created < oldest:
                self._remove(service["ID"])


def _groups(pairs: list[CertPair]) -> list[tuple[CertPair, ...]]:
    """Pairs in groups of at most ``GROUP`` that one task can load (same kind, image, user,
    placement), in the order given."""
    by_runner: dict[tuple, list[CertPair]] = {}
    for pair in pairs:
        by_runner.setdefault(pair.runner, []).append(pair)
    return [
        tuple(found[start : start + GROUP])
        for found in by_runner.values()
        for start in range(0, len(found), GROUP)
    ]


def _state(task: dict | None) -> str:
    return str(((task or {}).get("Status") or {}).get("State", "")) if task else "not scheduled"


def _utc_text(seconds: float) -> str:
    stamp = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return sortable_time(f"{stamp}Z")


# -- what a pass does with the verdicts (pure) ------------------------------------------------


def cert_pairs(snapshot: Snapshot, desired: DesiredProxy) -> dict[str, CertPair]:
    """The pair behind each of the proxy's certificate files (by ``Certificate.file``).

    A certificate whose secret is not in the snapshot is left out: ``desired`` has already
    rejected the service that names it. So is one written in place (``Certificate.inline``):
    the proxy's binary checks it in the container with the config, before the swap.
    """
    ids = {secret.name: secret.id for secret in snapshot.secrets}
    proxy = desired.proxy
    service = snapshot.service(proxy.service_id)
    spec = service.spec if service and proxy.service_id else {}
    template = spec.get("TaskTemplate") or {}
    user = str((template.get("ContainerSpec") or {}).get("User") or "")
    constraints = tuple((template.get("Placement") or {}).get("Constraints") or ())
    pairs = {}
    for cert in desired.certificates:
        if not cert.inline and cert.cert_secret in ids and cert.key_secret in ids:
            pairs[cert.file] = CertPair(
                proxy.spec.kind,
                proxy.image,
                ids[cert.cert_secret],
                cert.cert_secret,
                ids[cert.key_secret],
                cert.key_secret,
                user,
                constraints,
            )
    return pairs


def served_files(snapshot: Snapshot, desired: DesiredProxy) -> set[str]:
    """Certificate files the proxy service mounts now, from the same two secrets."""
    service = snapshot.service(desired.proxy.service_id)
    if service is None or not desired.proxy.service_id:
        return set()
    mounted = {(r.path, r.secret_name) for r in service.secret_refs}
    return {
        c.file
        for c in desired.certificates
        if (c.file, c.cert_secret) in mounted and (f"{c.file}.key", c.key_secret) in mounted
    }


def without_certificates(
    desired: DesiredProxy, refused: Mapping[str, Verdict], prefix: str
) -> tuple[DesiredProxy, list[Problem]]:
    """The proxy's desired state without the certificates it cannot load, and the problems.

    The service whose TLS names a refused pair is left out of this proxy entirely, as when its
    secret is missing (serving its hosts over plain HTTP instead would undo ``ssl_only``), and
    so is every route under a host that pair was for. Every other service is served as before.
    """
    if not refused:
        return desired, []
    kind, proxy = desired.proxy.spec.kind, desired.proxy.name
    owners = dict(desired.owners)
    bad_hosts = {t.host for t in desired.tls if t.file in refused}
    certs = {c.file: c for c in desired.certificates}
    culprits: dict[str, list[str]] = {}  # owner service -> refused files
    for tls in desired.tls:
        if tls.file in refused:
            culprits.setdefault(owners.get(tls.host, ""), []).append(tls.file)
    service_of = {b.name: b.service for b in desired.backends}
    gone = set(culprits) - {""}
    routes = tuple(
        r
        for r in desired.routes
        if r.host not in bad_hosts and service_of.get(r.backend) not in gone
    )
    problems = []
    for service, files in sorted(culprits.items()):
        for file in sorted(set(files)):
            cert = certs.get(file)
            what = f"certificate {cert.cert_secret} and key {cert.key_secret}" if cert else file
            hosts = ", ".join(sorted(t.host for t in desired.tls if t.file == file))
            reason = f"{kind} cannot load the {what} (hosts {hosts}): {refused[file].output}"
            problems.append(Problem(service or proxy, f"{prefix}.ssl_cert", reason, proxy=proxy))
    for route in desired.routes:
        service = service_of.get(route.backend, "")
        if route.host in bad_hosts and service not in gone:
            owner = owners.get(route.host, "its owner")
            reason = (
                f"{route.host}{route.path or '/'} is not served: the TLS certificate of "
                f"{route.host}, set by service {owner}, cannot be loaded"
            )
            problems.append(Problem(service, f"{prefix}.hostname", reason, proxy=proxy))
    kept = {r.backend for r in routes}
    hosts = {r.host for r in routes}
    tls = tuple(t for t in desired.tls if t.host in hosts and t.file not in refused)
    files = {t.file for t in tls}
    trimmed = replace(
        desired,
        routes=routes,
        backends=tuple(b for b in desired.backends if b.name in kept),
        tls=tls,
        certificates=tuple(c for c in desired.certificates if c.file in files),
        owners=tuple(o for o in desired.owners if o[0] in hosts),
    )
    return trimmed, problems


def screen(
    checker: CertificateChecker,
    snapshot: Snapshot,
    desired: Desired,
    prefix: str,
    start: bool = True,
) -> Desired:
    """Every proxy's desired state without the certificates its proxy cannot load.

    One batch of checks for the whole pass (only pairs not checked before cost anything). A
    pair whose check could not run is kept where the proxy already serves it, and held back
    (reported, retried next pass) where it would be new. With ``start`` False nothing is
    started: only verdicts already known count (for `render`, `diff`, `status`).
    """
    pairs = {one.proxy.name: cert_pairs(snapshot, one) for one in desired.proxies}
    wanted = [p for found in pairs.values() for p in found.values()]
    if start:
        verdicts = checker.check(wanted)
    else:
        verdicts = {p: checker.verdicts.get(p, Verdict(True, "")) for p in wanted}
    proxies, problems = [], list(desired.problems)
    for one in desired.proxies:
        serving = served_files(snapshot, one)
        refused = {}
        for file, pair in pairs[one.proxy.name].items():
            verdict = verdicts[pair]
            if verdict.ok or (file in serving and not checker.knows(pair)):
                continue
            refused[file] = verdict
        trimmed, found = without_certificates(one, refused, prefix)
        proxies.append(trimmed)
        problems += found
    return Desired(tuple(proxies), tuple(problems))
