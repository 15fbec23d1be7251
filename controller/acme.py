"""Automatic HTTPS, the decisions (pure): which hosts need a certificate, what the Swarm holds,
what the proxies serve, and the next step of each order.

Everything is read from the Swarm each pass (level-triggered), nothing from a local disk:

- **Certificates** are pairs of Docker secrets, ``<prefix>-acme-<host tag>-<version>.crt`` and
  ``.key`` (``version`` the UTC time the order started: names are immutable, each renewal is a
  new pair), labelled ``<prefix>.ext.acme=cert|key``, ``ext.acme_host``, ``ext.acme_version``
  and, on the certificate, ``ext.acme_expires`` (Unix time). The newest complete pair of a host
  is served, mounted like a user's ``ssl_cert``/``ssl_cert_key``.
- **An order in flight** is a Docker config ``<prefix>-acme-order-<tag>-<version>``
  (``ext.acme=order``) holding the order's URL, its HTTP-01 challenge (token and key
  authorization: public, they are served to anyone), the CSR and the names of the key secret
  (stored before the order is finalized) and of the certificate secret to come. A controller
  that restarts resumes the order from its URL: it never orders twice.
- **A failed attempt** is a config ``<prefix>-acme-failed-<tag>-<version>`` (``ext.acme=failed``)
  with the attempt number, when it failed and the CA's words: the back-off survives restarts.

The proxies answer ``/.well-known/acme-challenge/<token>`` of a pending order's host from their
own configuration (rendered like any route), so the CA is told to validate only once every
proxy serving the host serves the answer: no network path from the proxies to the controller.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from . import grammar
from .desired import Certificate, Challenge, Desired, DesiredProxy, HostTls, certificate
from .labels import Problem
from .snapshot import Config, Secret, Snapshot
from .vocabulary import Vocabulary

if TYPE_CHECKING:  # the pass's result holds an AcmeState: no import at run time
    from .result import PassResult

CHALLENGE_PATH = "/.well-known/acme-challenge/"
_B64URL = re.compile(r"[A-Za-z0-9_-]{16,128}", re.ASCII)
_KEYAUTH = re.compile(r"[A-Za-z0-9_-]{16,128}\.[A-Za-z0-9_-]{16,128}", re.ASCII)
BACKOFF_FACTOR = 5
BACKOFF_CAP = 86_400.0  # a host that keeps failing is tried once a day
ROLLING = ("updating", "rollback_started")


@dataclass(frozen=True)
class Issued:
    """A certificate and its key in Docker secrets."""

    host: str
    version: str
    cert_secret: str
    key_secret: str
    expires: float  # Unix time of the certificate's notAfter


@dataclass(frozen=True)
class Order:
    """An order in flight, as its Docker config records it."""

    host: str
    version: str
    config_id: str
    config_name: str
    url: str
    challenge_url: str
    token: str
    keyauth: str
    csr: str  # base64url DER: finalize needs no private key, so a restart can finalize
    key_secret: str
    cert_secret: str
    attempt: int = 1
    key_box: str = field(default="", repr=False)  # the key, sealed (``acmekeys``); "" if older


@dataclass(frozen=True)
class Pair:
    """An issued certificate's chain and its sealed key, as its ``pair`` config records them:
    what a pass writes beside a signal-mode proxy's config (``with_acme``)."""

    host: str
    version: str
    config_id: str
    cert_secret: str
    key_secret: str
    chain: str = field(repr=False)
    key_box: str = field(repr=False)


@dataclass(frozen=True)
class Failure:
    """The last failed attempt of a host."""

    host: str
    config_id: str
    config_name: str
    attempt: int
    failed_at: float
    error: str

    def retry_at(self, base: float) -> float:
        return self.failed_at + backoff(self.attempt, base)


@dataclass(frozen=True)
class AcmeState:
    """What the Swarm holds for ACME, by host; ``wanted``: host -> the service asking."""

    wanted: Mapping[str, str] = field(default_factory=dict)
    issued: Mapping[str, Issued] = field(default_factory=dict)
    orders: Mapping[str, Order] = field(default_factory=dict)
    failures: Mapping[str, Failure] = field(default_factory=dict)
    records: tuple[Config, ...] = ()  # every order and failure config (for clean-up)
    secrets: tuple[Secret, ...] = ()  # every ACME secret
    enabled: bool = True  # False: the label prefix is too long for our Docker names
    pairs: Mapping[str, Pair] = field(default_factory=dict)  # cert secret name -> its pair
    pair_records: tuple[Config, ...] = ()  # every pair config (for clean-up)


def backoff(attempt: int, base: float) -> float:
    """Seconds to wait after the ``attempt``-th failure in a row: base, x5, x25 ... one day.
    With the default 60 s: 1 min, 5 min, 25 min, ~2 h, ~10 h, then daily, so a host never
    meets Let's Encrypt's limit of 5 failed validations per host and hour."""
    return min(base * BACKOFF_FACTOR ** max(attempt - 1, 0), BACKOFF_CAP)


def host_tag(host: str) -> str:
    """Docker names are at most 64 characters and hosts up to 253: a digest names the host."""
    return hashlib.sha256(host.encode()).hexdigest()[:12]


def version_of(now: float) -> str:
    """The UTC time to the millisecond: sorts as it ages, and two attempts never share it."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}"


MAX_PREFIX = 21  # Docker names hold 64 characters; the longest of ours is a failure record


def _short(prefix: str) -> str:
    """The names start with the whole prefix (the observer lists configs by it): a longer
    prefix turns ACME off, reported (``problems``)."""
    return prefix


def secret_names(prefix: str, host: str, version: str) -> tuple[str, str]:
    """(certificate, key) secret names of one version of a host's certificate."""
    base = f"{_short(prefix)}-acme-{host_tag(host)}-{version}"
    return f"{base}.crt", f"{base}.key"


def record_name(prefix: str, kind: str, host: str, version: str) -> str:
    return f"{_short(prefix)}-acme-{kind}-{host_tag(host)}-{version}"


def labels_for(prefix: str, kind: str, host: str, version: str, **extra: str) -> dict[str, str]:
    words = Vocabulary(prefix)
    found = {
        words.key("ext.acme"): kind,
        words.key("ext.acme_host"): host,
        words.key("ext.acme_version"): version,
    }
    found.update({words.key(f"ext.acme_{name}"): value for name, value in extra.items()})
    return found


# -- reading the Swarm ---------------------------------------------------------------------------


def wants(labels: Mapping[str, str], prefix: str) -> bool:
    """The service asks for ACME certificates (a bad value is reported by labels.parse_app)."""
    raw = labels.get(Vocabulary(prefix).key("acme"))
    try:
        return raw is not None and bool(grammar.boolean(raw))
    except grammar.LabelError:
        return False


def wanted_hosts(snapshot: Snapshot, desired: Desired, prefix: str) -> dict[str, str]:
    """host -> owning service, for every host whose owner asks for ACME and that no user
    certificate (``ssl_cert``), redirect or TLS passthrough already serves on some proxy."""
    asking = {s.name for s in snapshot.services if wants(s.labels, prefix)}
    found: dict[str, str] = {}
    taken: set[str] = set()
    for one in desired.proxies:
        taken |= {t.host for t in one.tls} | {r.host for r in one.redirects}
        taken |= {r.host for r in one.routes if r.passthrough}
        found.update({host: owner for host, owner in one.owners if owner in asking})
    return {host: owner for host, owner in sorted(found.items()) if host not in taken}


def _number(text: str, default: float = 0.0) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return default


def issued_certificates(secrets: Iterable[Secret], prefix: str) -> dict[str, Issued]:
    """The newest complete pair of each host."""
    words = Vocabulary(prefix)
    kind, host_key = words.key("ext.acme"), words.key("ext.acme_host")
    names = {s.name for s in secrets}
    found: dict[str, Issued] = {}
    for secret in sorted(secrets, key=lambda s: s.name):
        if secret.labels.get(kind) != "cert" or not secret.name.endswith(".crt"):
            continue
        host = secret.labels.get(host_key, "")
        version = secret.labels.get(words.key("ext.acme_version"), "")
        key = secret.name[: -len(".crt")] + ".key"
        if not host or key not in names or secret.name != secret_names(prefix, host, version)[0]:
            continue
        expires = _number(secret.labels.get(words.key("ext.acme_expires"), ""))
        if host not in found or version > found[host].version:
            found[host] = Issued(host, version, secret.name, key, expires)
    return found


def _order(config: Config, data: dict) -> Order | None:
    try:
        order = Order(
            host=str(data["host"]),
            version=str(data["version"]),
            config_id=config.id,
            config_name=config.name,
            url=str(data["url"]),
            challenge_url=str(data["challenge_url"]),
            token=str(data["token"]),
            keyauth=str(data["keyauth"]),
            csr=str(data["csr"]),
            key_secret=str(data["key_secret"]),
            cert_secret=str(data["cert_secret"]),
            attempt=int(data.get("attempt", 1)),
            key_box=str(data.get("key_box", "")),
        )
    except (KeyError, TypeError, ValueError):
        return None
    # The token and key authorization go into the proxies' configuration: only base64url.
    if not (_B64URL.fullmatch(order.token) and _KEYAUTH.fullmatch(order.keyauth)):
        return None
    return order if order.keyauth.startswith(order.token + ".") else None


def _failure(config: Config, data: dict) -> Failure | None:
    try:
        return Failure(
            str(data["host"]),
            config.id,
            config.name,
            int(data["attempt"]),
            float(data["failed_at"]),
            str(data.get("error", ""))[:300],
        )
    except (KeyError, TypeError, ValueError):
        return None


def _pair(config: Config, data: dict, prefix: str) -> Pair | None:
    """A pair record whose secrets' names are the ones its host and version give."""
    try:
        pair = Pair(
            str(data["host"]),
            str(data["version"]),
            config.id,
            str(data["cert_secret"]),
            str(data["key_secret"]),
            str(data["chain"]),
            str(data["key_box"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    names = secret_names(prefix, pair.host, pair.version)
    return pair if (pair.cert_secret, pair.key_secret) == names else None


def _records(
    snapshot: Snapshot, prefix: str, roles: tuple[str, ...]
) -> Iterator[tuple[str, Config, dict | None]]:
    """Each of our records with one of ``roles``: its role, the config, and its data when it
    reads as an object under the name its host and version give (else None: a squatted or
    broken config, kept for clean-up only)."""
    kind = Vocabulary(prefix).key("ext.acme")
    for config in snapshot.configs:
        role = config.labels.get(kind)
        if role not in roles:
            continue
        try:
            data = json.loads(config.data)
        except ValueError:
            data = None
        named = isinstance(data, dict) and config.name == record_name(
            prefix, role, str(data.get("host")), str(data.get("version"))
        )
        yield role, config, data if named else None


def _pairs(snapshot: Snapshot, prefix: str) -> tuple[dict[str, Pair], tuple[Config, ...]]:
    found, records = {}, []
    for _, config, data in _records(snapshot, prefix, ("pair",)):
        records.append(config)
        if data is not None and (pair := _pair(config, data, prefix)):
            found[pair.cert_secret] = pair
    return found, tuple(records)


def state(snapshot: Snapshot, desired: Desired, prefix: str) -> AcmeState:
    """The ACME view of one snapshot. Only records named and labelled as ours count, and an
    order's name must be the one its host and version give (a squatted config is ignored)."""
    kind = Vocabulary(prefix).key("ext.acme")
    orders: dict[str, Order] = {}
    failures: dict[str, Failure] = {}
    records = []
    for role, config, data in _records(snapshot, prefix, ("order", "failed")):
        records.append(config)
        if data is None:
            continue
        if role == "order" and (order := _order(config, data)):
            if order.host not in orders or order.version > orders[order.host].version:
                orders[order.host] = order
        elif role == "failed" and (failure := _failure(config, data)):
            known = failures.get(failure.host)
            if known is None or failure.attempt > known.attempt:
                failures[failure.host] = failure
    secrets = tuple(s for s in snapshot.secrets if s.labels.get(kind) in ("cert", "key"))
    pairs, pair_records = _pairs(snapshot, prefix)
    return AcmeState(
        wanted_hosts(snapshot, desired, prefix),
        issued_certificates(secrets, prefix),
        orders,
        failures,
        tuple(records),
        secrets,
        len(prefix) <= MAX_PREFIX,
        pairs,
        pair_records,
    )


# -- what the proxies serve ----------------------------------------------------------------------


def challenges(acme: AcmeState) -> tuple[Challenge, ...]:
    return tuple(
        Challenge(o.host, o.token, o.keyauth)
        for host, o in sorted(acme.orders.items())
        if host in acme.wanted
    )


def with_acme(
    desired: Desired,
    acme: AcmeState,
    prefix: str,
    now: float,
    retry_base: float,
    opened: Mapping[str, tuple[str, str]] | None = None,
) -> Desired:
    """Each wanted host served with its newest unexpired certificate and every pending
    challenge answered; failures reported on the service.

    ``opened`` (cert secret name -> chain and key, ``acmekeys.open_pairs``): a signal-mode
    proxy gets those as files beside its config, so a new certificate is an in-place reload;
    a rolling-mode proxy, or a certificate without its pair, mounts the secrets (as if its
    service named them), which a service update does."""
    if not acme.wanted:
        return desired  # the common case: nothing to add, nothing rebuilt
    answers = challenges(acme)
    proxies = tuple(_with_acme(one, acme, answers, now, opened or {}) for one in desired.proxies)
    return Desired(proxies, desired.problems + tuple(problems(acme, prefix, retry_base)))


def served_certificate(
    one: DesiredProxy, issued: Issued, opened: Mapping[str, tuple[str, str]]
) -> Certificate:
    """In place beside the config (signal mode, pair opened) or mounted from the secrets."""
    if one.proxy.mode != "signal" or issued.cert_secret not in opened:
        return certificate(issued.cert_secret, issued.key_secret)
    chain, key = opened[issued.cert_secret]
    return inline_certificate(one.proxy.spec.config_path, issued, chain, key)


def inline_certificate(config_path: str, issued: Issued, chain: str, key: str) -> Certificate:
    """Beside the config, named by the chain's digest (public): a new certificate is a new
    file, never a rewrite of one a running proxy loaded, and no name says anything of the key."""
    tag = hashlib.sha256(chain.encode()).hexdigest()[:12]
    file = f"{config_path}.acme-{tag}.pem"
    return Certificate(file, issued.cert_secret, issued.key_secret, chain, key)


def _with_acme(
    one: DesiredProxy,
    acme: AcmeState,
    answers: tuple[Challenge, ...],
    now: float,
    opened: Mapping[str, tuple[str, str]],
) -> DesiredProxy:
    hosts = {host for host, _ in one.owners}
    certificates: dict[str, Certificate] = {c.file: c for c in one.certificates}
    tls = {t.host: t for t in one.tls}
    for host in sorted(hosts & set(acme.wanted)):
        issued = acme.issued.get(host)
        if issued is None or issued.expires <= now:
            continue  # served on plain HTTP until its certificate is ready
        cert = served_certificate(one, issued, opened)
        certificates[cert.file] = cert
        tls[host] = HostTls(host, cert.file, False)
    return replace(
        one,
        tls=tuple(tls[h] for h in sorted(tls)),
        certificates=tuple(certificates[f] for f in sorted(certificates)),
        challenges=tuple(c for c in answers if c.host in hosts),
    )


def problems(acme: AcmeState, prefix: str, retry_base: float) -> list[Problem]:
    """A host whose last attempt failed, reported on the service that asks for it (not a
    rejection: its routes are served, on HTTP or with its previous certificate)."""
    found = []
    if not acme.enabled:
        why = f"ACME needs a label prefix of at most {MAX_PREFIX} characters (Docker names)"
        key = Vocabulary(prefix).key("acme")
        return [Problem(s, key, why, rejected=False) for s in sorted(set(acme.wanted.values()))]
    for host, failure in sorted(acme.failures.items()):
        service = acme.wanted.get(host)
        if service is None or host in acme.orders:
            continue
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(failure.retry_at(retry_base)))
        why = (
            f"no certificate for {host} yet: attempt {failure.attempt} failed: "
            f"{failure.error}; next attempt at {at}"
        )
        found.append(Problem(service, Vocabulary(prefix).key("acme"), why, rejected=False))
    return found


# -- the next steps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Order a certificate for ``host`` (attempt ``attempt``)."""

    host: str
    attempt: int


@dataclass(frozen=True)
class Advance:
    """Walk an order one step (answer, finalize, download), as the CA says where it stands.
    ``served``: every proxy serving the host answers the challenge now."""

    order: Order
    served: bool


@dataclass(frozen=True)
class Drop:
    """Remove a record or a secret nobody needs any more."""

    kind: str  # "config" or "secret"
    id: str
    name: str


Step = Start | Advance | Drop


def due(issued: Issued | None, now: float, renew_days: float) -> bool:
    """Missing, or within the renewal window of its expiry; never before half its lifetime,
    so a window longer than the CA's validity cannot order again and again."""
    if issued is None:
        return True
    lifetime = issued.expires - _issued_at(issued.version)
    window = min(renew_days * 86_400, max(lifetime, 0) / 2)
    return issued.expires - now <= window


def _issued_at(version: str) -> float:
    try:
        return calendar.timegm(time.strptime(version[:14], "%Y%m%d%H%M%S"))
    except ValueError:
        return 0.0  # unreadable: the window alone decides


def steps(
    acme: AcmeState, result: PassResult, now: float, renew_days: float, retry_base: float
) -> list[Step]:
    """What to do next, from the Swarm alone: order what is missing or due (unless backing
    off), walk orders in flight, and drop what no host and no proxy needs."""
    if not acme.enabled:
        return []
    found: list[Step] = []
    for host in acme.wanted:
        order, failure = acme.orders.get(host), acme.failures.get(host)
        if order is not None:
            found.append(Advance(order, challenge_served(result, order)))
        elif due(acme.issued.get(host), now, renew_days) and (
            failure is None or now >= failure.retry_at(retry_base)
        ):
            found.append(Start(host, failure.attempt + 1 if failure else 1))
    return found + garbage(acme, result.snapshot)


def challenge_served(result: PassResult, order: Order) -> bool:
    """Every proxy that routes the host has the challenge in the configuration it serves:
    the pass wanted it, had nothing left to do for that proxy and no proxy update is rolling."""
    holders = [
        d for d in result.desired.proxies if any(c.token == order.token for c in d.challenges)
    ]
    if not holders:
        return False
    busy = {a.proxy for a in result.actions} | set(result.refused)
    busy |= {o.action.proxy for o in result.outcomes if not o.ok}
    rolling = {
        s.id for s in result.snapshot.services if s.update is not None and s.update.state in ROLLING
    }
    return all(d.proxy.name not in busy and d.proxy.service_id not in rolling for d in holders)


def garbage(acme: AcmeState, snapshot: Snapshot) -> list[Step]:
    """Old certificate versions no service mounts, keys of orders that are gone, and records
    of hosts that were served since (or are no longer wanted)."""
    mounted = {r.secret_name for s in snapshot.services for r in s.secret_refs}
    keep = {n for i in acme.issued.values() for n in (i.cert_secret, i.key_secret)}
    keep |= {o.key_secret for o in acme.orders.values()}
    found: list[Step] = [
        Drop("secret", s.id, s.name)
        for s in acme.secrets
        if s.name not in keep and s.name not in mounted
    ]
    live_orders = {o.config_id for o in acme.orders.values() if o.host in acme.wanted}
    live_failures = {
        f.config_id
        for f in acme.failures.values()
        if f.host in acme.wanted and not _served_since(acme, f)
    }
    found += [
        Drop("config", c.id, c.name)
        for c in acme.records
        if c.id not in live_orders | live_failures
    ]
    dropped = {step.name for step in found}
    live_pairs = {p.config_id for n, p in acme.pairs.items() if n not in dropped}
    found += [Drop("config", c.id, c.name) for c in acme.pair_records if c.id not in live_pairs]
    return found


def _served_since(acme: AcmeState, failure: Failure) -> bool:
    """The host got a certificate after this failure: the back-off is over."""
    issued = acme.issued.get(failure.host)
    return issued is not None and issued.version > version_of(failure.failed_at)


# -- what `interlock status` shows ---------------------------------------------------------------


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def certificate_rows(
    acme: AcmeState, now: float, renew_days: float, retry_base: float
) -> list[dict]:
    """One row per host asking for a certificate: where it stands, in the Swarm's words."""
    rows = []
    for host, service in sorted(acme.wanted.items()):
        issued, failure = acme.issued.get(host), acme.failures.get(host)
        if host in acme.orders:
            state = f"ordering (attempt {acme.orders[host].attempt})"
        elif failure is not None and due(issued, now, renew_days):
            state = f"backing off until {_utc(failure.retry_at(retry_base))}"
        elif issued is None:
            state = "to order"
        else:
            state = "renewal due" if due(issued, now, renew_days) else "valid"
        rows.append(
            {
                "host": host,
                "service": service,
                "state": state,
                "expires": _utc(issued.expires) if issued else "-",
                "secret": issued.cert_secret if issued else "-",
                "last_error": failure.error if failure else "",
            }
        )
    return rows
