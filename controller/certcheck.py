"""Load every TLS certificate and key with the proxy's own binary before a proxy depends on them.

The config check (``check``) runs the proxy's binary on the rendered config with a stand-in pair,
since a plain container cannot mount Docker secrets; it cannot see a secret that does not hold a
certificate and key the proxy can load (text that is no PEM, a key of another certificate, a key
under a passphrase). Deployed, such a pair makes the proxy exit at start, which in rolling mode
with stop-first takes it down. So each pair a pass needs is loaded once, by a one-off Swarm task
of the proxy's own image with the two secrets mounted as the proxy will mount them (same file
names, owner and mode), and a minimal config that loads exactly that pair: ``nginx -t`` or
``haproxy -c``, no shell needed in the image. Secrets are immutable, so the verdict on a pair
(kind, image, user, secret ids) holds for the life of the process.

A check that cannot run (Docker refused, the task did not finish in time) refuses the pair with
the reason, never raises, and is not remembered: the next pass tries again. A pair the proxy
already serves is kept when its check could not run (see ``screen``), so a slow engine never
takes a working certificate away.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from secrets import token_hex

import docker
import docker.errors

from .check import Verdict, remember
from .desired import Desired, DesiredProxy
from .labels import Problem
from .logs import event
from .plan import Labels, name_prefix, secret_owner
from .render import digest
from .retry import docker_call
from .snapshot import Snapshot, config_from_api, sortable_time

log = logging.getLogger(__name__)

CONFIG_PATH = "/interlock-cert-check.conf"
CERT_FILE = "interlock-check.pem"  # under /run/secrets; the key beside it, plus ".key"

CONFIGS = {
    "nginx": f"""# interlock: loads one certificate and its key, and nothing else.
error_log stderr warn;
pid /tmp/interlock-cert-check.pid;
events {{}}
http {{
    server {{
        listen 8443 ssl;
        ssl_certificate /run/secrets/{CERT_FILE};
        ssl_certificate_key /run/secrets/{CERT_FILE}.key;
    }}
}}
""",
    "haproxy": f"""# interlock: loads one certificate and its key (name plus .key), nothing else.
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s

frontend interlock_cert_check
    bind :8443 ssl crt /run/secrets/{CERT_FILE}
    http-request deny
""",
}
COMMANDS = {
    "nginx": ["nginx", "-t", "-q", "-c", CONFIG_PATH],
    "haproxy": ["haproxy", "-c", "-f", CONFIG_PATH],
}
_DONE = ("complete", "failed", "rejected", "shutdown", "orphaned", "remove")
_STAMP = re.compile(r"^[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2} ", re.MULTILINE)
_NOTICE = re.compile(r"^\[NOTICE\].*\n?", re.MULTILINE)  # HAProxy's version banner
_OUTPUT_CHARS = 1500
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

    def describe(self) -> str:
        return f"certificate {self.cert_secret_name} and key {self.key_secret_name}"


@dataclass
class CertificateChecker:
    """Runs the checks: creates, waits for, reads and removes one-off check services.

    Every Docker call is counted in ``calls`` and retried like the observer's and executor's.
    """

    api: docker.APIClient
    prefix: str
    timeout: float = 30.0  # seconds a batch of checks may take, from creation to exit
    parallel: int = 8  # checks run at once
    poll: float = 0.2
    verdicts: dict[CertPair, Verdict] = field(default_factory=dict)  # the proxy's own verdicts
    calls: int = field(default=0, init=False)
    _configs: dict[str, tuple[str, str]] = field(default_factory=dict, init=False, repr=False)
    _swept: float = field(default=float("-inf"), init=False, repr=False)

    @docker_call
    def _call(self, method, *args, **kwargs):
        self.calls += 1
        return method(*args, **kwargs)

    @property
    def keys(self) -> Labels:
        return Labels(self.prefix)

    def knows(self, pair: CertPair) -> bool:
        """Whether the verdict on this pair is the proxy's own (not "the check could not run")."""
        return pair in self.verdicts

    def check(self, pairs: Iterable[CertPair]) -> dict[CertPair, Verdict]:
        """A verdict for every pair; new pairs are checked ``parallel`` at a time."""
        wanted = list(dict.fromkeys(pairs))
        found = {pair: self.verdicts[pair] for pair in wanted if pair in self.verdicts}
        todo = [pair for pair in wanted if pair not in found]
        if todo:
            self._sweep()
        for start in range(0, len(todo), max(1, self.parallel)):
            found.update(self._batch(todo[start : start + max(1, self.parallel)]))
        return {pair: found[pair] for pair in wanted}

    # -- one batch ------------------------------------------------------------------------------

    def _batch(self, pairs: list[CertPair]) -> dict[CertPair, Verdict]:
        started_at = time.monotonic()
        found: dict[CertPair, Verdict] = {}
        services: dict[CertPair, str] = {}
        for pair in pairs:
            try:
                services[pair] = self._start(pair)
            except Exception as error:  # a check that cannot run refuses, and is tried again
                found[pair] = Verdict(False, f"{UNRUN}: {error}")
        try:
            tasks = self._wait(services, started_at + self.timeout)
            for pair, service in services.items():
                verdict, final = self._verdict(service, tasks.get(pair))
                found[pair] = verdict
                if final:
                    remember(self.verdicts, pair, verdict)
        except Exception as error:
            for pair in services:
                found.setdefault(pair, Verdict(False, f"{UNRUN}: {error}"))
        finally:
            for service in services.values():
                self._remove(service)
        seconds = round(time.monotonic() - started_at, 3)
        for pair in pairs:
            event(
                log,
                "certificate_checked",
                logging.INFO if found[pair].ok else logging.WARNING,
                kind=pair.kind,
                cert=pair.cert_secret_name,
                key=pair.key_secret_name,
                ok=found[pair].ok,
                seconds=seconds,
            )
        return found

    def _start(self, pair: CertPair) -> str:
        if pair.kind not in CONFIGS:
            raise ValueError(f"no certificate check for proxy kind {pair.kind!r}")
        config_id, config_name = self._config(pair.kind)
        uid, gid = pair.owner
        container = docker.types.ContainerSpec(
            pair.image,
            command=COMMANDS[pair.kind],
            user=pair.user or None,
            labels={self.keys.check: "true"},
            configs=[
                docker.types.ConfigReference(
                    config_id, config_name, CONFIG_PATH, uid="0", gid="0", mode=0o444
                )
            ],
            secrets=[
                docker.types.SecretReference(
                    pair.cert_secret_id, pair.cert_secret_name, CERT_FILE, uid, gid, 0o444
                ),
                docker.types.SecretReference(
                    pair.key_secret_id, pair.key_secret_name, f"{CERT_FILE}.key", uid, gid, 0o400
                ),
            ],
        )
        template = docker.types.TaskTemplate(
            container,
            restart_policy=docker.types.RestartPolicy(condition="none"),
            placement=list(pair.constraints) or None,
        )
        name = f"{self.prefix}-check"[:50] + f"-{token_hex(6)}"
        try:
            created = self._call(
                self.api.create_service,
                template,
                name=name,
                labels={self.keys.check: "true"},
                mode=docker.types.ServiceMode("replicated", 1),
            )
        except docker.errors.APIError:
            self._configs.pop(pair.kind, None)  # e.g. the check config was removed: look again
            raise
        return created["ID"]

    def _wait(self, services: Mapping[CertPair, str], deadline: float) -> dict[CertPair, dict]:
        """Each service's task once it is done, or as it was when time ran out."""
        latest: dict[CertPair, dict] = {}
        while services:
            listed = self._call(self.api.tasks, filters={"service": list(services.values())})
            by_service = {t.get("ServiceID"): t for t in listed}
            for pair, service in services.items():
                if service in by_service:
                    latest[pair] = by_service[service]
            if all(_state(latest.get(pair)) in _DONE for pair in services):
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
        raw = self._call(self._logs, service)
        text = raw.decode(errors="replace")
        return proxy_words(text)

    def _logs(self, service: str) -> bytes:
        """All a service's tasks wrote (the API streams it: read to the end, within the call)."""
        chunks = self.api.service_logs(service, stdout=True, stderr=True, is_tty=False)
        return chunks if isinstance(chunks, bytes) else b"".join(chunks)

    def _remove(self, service: str) -> None:
        try:
            self._call(self.api.remove_service, service)
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
            config_id = self._call(self.api.create_config, name, text.encode(), labels=labels)["ID"]
        except docker.errors.APIError as error:
            if error.status_code != 409:
                raise
            config_id = self._existing(name, sha)
        self._configs[kind] = (config_id, name)
        return self._configs[kind]

    def _existing(self, name: str, sha: str) -> str:
        listed = self._call(self.api.configs, filters={"name": name})
        found = next((c for c in listed if (c.get("Spec") or {}).get("Name") == name), None)
        if found is None:
            raise LookupError(f"Docker config {name} exists and then does not")
        config = config_from_api(found)
        if not config.digest:
            config = config_from_api(self._call(self.api.inspect_config, config.id))
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
            listed = self._call(self.api.services, filters={"label": f"{self.keys.check}=true"})
        except Exception as error:
            event(log, "check_sweep_failed", logging.WARNING, error=str(error))
            return
        oldest = _utc_text(time.time() - max(120.0, 4 * self.timeout))
        for service in listed:
            name = (service.get("Spec") or {}).get("Name", "")
            created = sortable_time(str(service.get("CreatedAt", "")))
            if name.startswith(name_prefix(self.prefix)) and created and created < oldest:
                self._remove(service["ID"])


def proxy_words(text: str) -> str:
    """What a proxy said, without nginx's timestamps and HAProxy's version banner."""
    return _NOTICE.sub("", _STAMP.sub("", text)).strip()[-_OUTPUT_CHARS:]


def _state(task: dict | None) -> str:
    return str(((task or {}).get("Status") or {}).get("State", "")) if task else "not scheduled"


def _utc_text(seconds: float) -> str:
    stamp = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return sortable_time(f"{stamp}Z")


# -- what a pass does with the verdicts (pure) ------------------------------------------------


def cert_pairs(snapshot: Snapshot, desired: DesiredProxy) -> dict[str, CertPair]:
    """The pair behind each of the proxy's certificate files (by ``Certificate.file``).

    A certificate whose secret is not in the snapshot is left out: ``desired`` has already
    rejected the service that names it.
    """
    ids = {secret.name: secret.id for secret in snapshot.secrets}
    proxy = desired.proxy
    service = next((s for s in snapshot.services if s.id == proxy.service_id), None)
    spec = service.spec if service and proxy.service_id else {}
    template = spec.get("TaskTemplate") or {}
    user = str((template.get("ContainerSpec") or {}).get("User") or "")
    constraints = tuple((template.get("Placement") or {}).get("Constraints") or ())
    pairs = {}
    for cert in desired.certificates:
        if cert.cert_secret in ids and cert.key_secret in ids:
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
    service = next((s for s in snapshot.services if s.id == desired.proxy.service_id), None)
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
