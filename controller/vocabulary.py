"""Every label the controller reads or writes, declared once, and their keys built in one place.

A label is declared with its name after the prefix, its grammar, whom it is for (an app service
or a proxy) and whether it is supported; parsing, the unknown-label report, metrics and the
README's table all read these declarations. Keys are ``<prefix>.<name>``: ``Vocabulary(prefix)``
builds every one of them, the controller's own marks on what it creates included, so the
prefix setting applies to every key and two controllers with different prefixes never meet.

Two families of app labels are read: ours (``<prefix>.*``, "interlock") and Interlock 2's
(``com.docker.lb.*``, Docker EE / MKE). Each ``LB_LABELS`` declaration says which of our labels
it ``means``, so both families fill one ``AppSpec`` through the same grammars. A service read
by one family only: when it carries labels of both, ours win and its ``com.docker.lb.*`` labels
are reported as ignored. Which families are read is a setting (both by default).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from . import grammar as g
from .kinds import NAMES as PROXY_KINDS

MODES = ("rolling", "signal")
STACK_LABEL = "com.docker.stack.namespace"  # Docker's own: `docker stack deploy` sets it
_ALIAS_NUMBERED = re.compile(r"alias_domain\.[0-9]{1,3}", re.ASCII)


@dataclass(frozen=True)
class Declared:
    """One label: its name after the prefix, how its value reads, what it does."""

    name: str
    grammar: Callable[[str], object]
    doc: str
    supported: bool = True  # False: known from Interlock, reported as ignored, never applied
    means: str = ""  # in Interlock 2's family: the label of ours it stands for ("" same name)

    @property
    def meaning(self) -> str:
        return self.means or self.name


APP_LABELS: tuple[Declared, ...] = (
    Declared("hostname", g.host, "host name (with `domain`: hostname.domain)"),
    Declared("domain", g.host, "domain appended to `hostname`"),
    Declared("alias_domain", g.host, "another host name; `alias_domain.N` for more (N 0-999)"),
    Declared("port", g.port, "port the tasks listen on (default: the one published port)"),
    Declared("network", g.name, "network on which the proxy reaches the tasks"),
    Declared("context_root", g.path, "path prefix routed to this service"),
    Declared("context_root_rewrite", g.boolean, "strip the path prefix before forwarding"),
    Declared("balance_algorithm", g.one_of(g.BALANCE_ALGORITHMS), "how tasks share requests"),
    Declared("ext.service_cluster", g.name, "which proxies (of that cluster) route it"),
    Declared("ssl", g.boolean, "false turns TLS off while the secrets stay named"),
    Declared("ssl_only", g.boolean, "redirect plain HTTP to HTTPS"),
    Declared("ssl_cert", g.name, "Docker secret with the certificate (PEM)"),
    Declared("ssl_cert_key", g.name, "Docker secret with the key (PEM)"),
    Declared("websocket_endpoint", g.path, "accepted; upgrades pass on every route"),
    Declared("health_check", g.path, "HAProxy checks GET <path> on every task"),
    Declared("health_check_interval", g.interval_ms, "milliseconds between health checks"),
    Declared("share_host", g.boolean, "other services may serve paths under this host"),
    Declared("access_log", g.boolean, "false: the proxies do not log this service's requests"),
    Declared("ssl_backend", g.boolean, "TLS to the tasks (`proxy_pass https`, `server ... ssl`)"),
    Declared("ssl_backend_tls_verify", g.boolean, "verify the tasks' certificates (system CAs)"),
    Declared("ssl_passthrough", g.boolean, "TLS passed through by SNI to the tasks (HAProxy)"),
    Declared("weight", g.weight, "share a host and path with other weighted services, by weight"),
    Declared("sticky_session_cookie", g.cookie_name, "one cookie value keeps reaching one task"),
    Declared("redirects", g.redirects, "`source,target[,code]` pairs, `;`-separated"),
    Declared("default_backend", g.boolean, "answer the hosts that no route serves"),
    Declared("connect_timeout", g.duration_ms, "proxy to task connect timeout (`5s`, `500ms`)"),
    Declared("read_timeout", g.duration_ms, "proxy to task read timeout (`60s`, `2m`)"),
    Declared("max_body_size", g.byte_size, "largest request body (`10m`); larger gets 413"),
    Declared("ip_allow", g.cidr_list, "client addresses allowed (CIDRs); others get 403"),
    Declared("response_header", g.header_value, "`response_header.<Name>`: set that header"),
    Declared("basic_auth_secret", g.name, "Docker secret with an htpasswd file (nginx)"),
    Declared("acme", g.boolean, "certificates for the service's hosts from the ACME CA"),
)
# Interlock 2's labels (``com.docker.lb.<name>``), each standing for one of ours.
LB_LABELS: tuple[Declared, ...] = (
    Declared("hosts", g.host_list, "comma-separated host names", means="hostname"),
    Declared("port", g.port, "port the tasks listen on"),
    Declared("network", g.name, "network on which the proxy reaches the tasks"),
    Declared("context_root", g.path, "path prefix routed to this service"),
    Declared("context_root_rewrite", g.boolean, "strip the path prefix before forwarding"),
    Declared("ssl_cert", g.name, "Docker secret with the certificate"),
    Declared("ssl_key", g.name, "Docker secret with the key", means="ssl_cert_key"),
    Declared("ssl_only", g.boolean, "redirect plain HTTP to HTTPS"),
    Declared("ssl_backend", g.boolean, "TLS to the tasks"),
    Declared("ssl_backend_tls_verify", g.tls_verify, "`none` or `required`"),
    Declared("ssl_passthrough", g.boolean, "TLS passed through by SNI"),
    Declared("sticky_session_cookie", g.cookie_name, "sticky sessions by this cookie"),
    Declared("redirects", g.redirects, "`;`-separated `source,target`"),
    Declared("websocket_endpoints", g.path_list, "accepted", means="websocket_endpoint"),
    Declared("service_cluster", g.name, "which proxies route it", means="ext.service_cluster"),
    Declared("ip_hash", g.boolean, "balance by client address", means="balance_algorithm"),
    Declared("default_backend", g.boolean, "answer the hosts that no route serves"),
    Declared("backend_mode", g.one_of(g.BACKEND_MODES), "`task`; `vip` is not supported"),
)
NATIVE = "interlock"  # our family: the keys under INTERLOCK_LABEL_PREFIX
LB = "com.docker.lb"  # Interlock 2's family, under this fixed prefix
FAMILIES = (NATIVE, LB)
PROXY_LABELS: tuple[Declared, ...] = (
    Declared("ext.name", g.one_of(PROXY_KINDS), "marks a proxy: nginx or haproxy"),
    Declared("ext.service_cluster", g.name, "the cluster of app services it routes"),
    Declared("ext.config_path", g.file_path, "where its config goes (default: the image's)"),
    Declared("ext.mode", g.one_of(MODES), "rolling (Docker config + update) or signal"),
)
APP = {label.name: label for label in APP_LABELS}
PROXY = {label.name: label for label in PROXY_LABELS}
LB_BY_NAME = {label.name: label for label in LB_LABELS}
LB_BY_MEANING = {label.meaning: label for label in LB_LABELS}
# Marks the controller puts on what it creates (configs, check containers and services).
OWN_MARKS = ("ext.owned", "ext.proxy", "ext.digest", "ext.check", "ext.controller")
# On the ACME certificates, keys and order records (``acme.py``): what it is, for which host.
ACME_MARKS = ("ext.acme", "ext.acme_host", "ext.acme_version", "ext.acme_expires")


def is_alias(name: str) -> bool:
    return name.startswith("alias_domain") and (
        name == "alias_domain" or bool(_ALIAS_NUMBERED.fullmatch(name))
    )


def is_header(name: str) -> bool:
    """``response_header.<Name>``: the header's name is checked by its own grammar."""
    return name.startswith("response_header.")


def declared_name(name: str) -> str:
    """The declaration a label name falls under (``alias_domain.3`` -> ``alias_domain``,
    ``response_header.X-Frame-Options`` -> ``response_header``)."""
    if is_header(name):
        return "response_header"
    return "alias_domain" if is_alias(name) else name


def lb_key(meaning: str) -> str:
    """The ``com.docker.lb.*`` key that stands for our label ``meaning`` (``ssl_cert_key`` ->
    ``com.docker.lb.ssl_key``); ``com.docker.lb.*`` for one Interlock 2 has no label for."""
    label = LB_BY_MEANING.get(meaning)
    return f"{LB}.{label.name if label else '*'}"


def lb_name_of(key: str) -> str | None:
    return key[len(LB) + 1 :] if key.startswith(LB + ".") else None


def names_under(prefix: str, keys: Iterable[str]) -> list[tuple[str, str]]:
    """(key, name after ``prefix.``) of each key under ``prefix``, sorted by key: what
    ``Vocabulary.name_of`` or ``lb_name_of`` says of each, for all of a service's labels at once
    (a first pass reads every routed service's)."""
    start = prefix + "."
    return [(key, key[len(start) :]) for key in sorted(keys) if key.startswith(start)]


@dataclass(frozen=True)
class Vocabulary:
    """The label keys of one controller, all under ``prefix``."""

    prefix: str

    def key(self, name: str) -> str:
        """``<prefix>.<name>`` for a declared label (a typo fails at once, in every test)."""
        return _key(self.prefix, name)

    def name_of(self, key: str) -> str | None:
        """The name after the prefix of one of our keys; None for another tool's label."""
        return key[len(self.prefix) + 1 :] if key.startswith(self.prefix + ".") else None

    def is_routed(self, labels: Mapping[str, str], families: Iterable[str] = FAMILIES) -> bool:
        """An app is routed when it names a host or is a default backend, in a family read;
        other services are none of our business."""
        read = set(families)
        if NATIVE in read and any(
            self.key(name) in labels for name in ("hostname", "domain", "default_backend")
        ):
            return True
        return LB in read and (f"{LB}.hosts" in labels or f"{LB}.default_backend" in labels)

    def family_key(self, family: str, meaning: str) -> str:
        """The key a user of ``family`` writes for our label ``meaning`` (for Problems)."""
        return family_key(self.prefix, family, meaning)

    def is_proxy(self, labels: Mapping[str, str]) -> bool:
        return self.key("ext.name") in labels

    @property
    def owned(self) -> str:
        return self.key("ext.owned")

    @property
    def proxy(self) -> str:
        return self.key("ext.proxy")

    @property
    def digest(self) -> str:
        return self.key("ext.digest")

    @property
    def check(self) -> str:
        """On the check containers and services (never routed, never collected as garbage)."""
        return self.key("ext.check")


@functools.lru_cache(maxsize=4096)
def _key(prefix: str, name: str) -> str:
    """Cached: keys are built for every label of every service in every pass."""
    known = declared_name(name) in APP or name in PROXY or name in OWN_MARKS + ACME_MARKS
    known = known or name == "*"
    if not known:
        raise KeyError(f"label {name!r} is not declared in controller.vocabulary")
    return f"{prefix}.{name}"


@functools.lru_cache(maxsize=4096)
def family_key(prefix: str, family: str, meaning: str) -> str:
    """The key a user of ``family`` writes for our label ``meaning``. Cached: readers and
    Problems name keys for every service in every pass."""
    return lb_key(meaning) if family == LB else _key(prefix, meaning)


def label_kind(key: str, prefix: str) -> str:
    """A bounded name for metrics: ``interlock.alias_domain.3`` -> ``alias_domain``; a label
    nobody declared -> ``other`` (label keys are anyone's input; series must stay few)."""
    lb = lb_name_of(key)
    if lb is not None:
        return key if lb in LB_BY_NAME else "other"
    name = Vocabulary(prefix).name_of(key) or key
    if name.startswith("backend_option"):
        return "backend_option"
    name = declared_name(name)
    return name if name in APP or name in PROXY else "other"
