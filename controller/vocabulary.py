"""Every label the controller reads or writes, declared once, and their keys built in one place.

A label is declared with its name after the prefix, its grammar, whom it is for (an app service
or a proxy) and whether it is supported; parsing, the unknown-label report, metrics and the
README's table all read these declarations. Keys are ``<prefix>.<name>``: ``Vocabulary(prefix)``
builds every one of them, the controller's own marks on what it creates included, so the
prefix setting applies to every key and two controllers with different prefixes never meet.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
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
    Declared("ssl_backend", g.boolean, "TLS to the tasks", supported=False),
    Declared("ssl_backend_tls_verify", g.boolean, "verify the tasks' TLS", supported=False),
)
PROXY_LABELS: tuple[Declared, ...] = (
    Declared("ext.name", g.one_of(PROXY_KINDS), "marks a proxy: nginx or haproxy"),
    Declared("ext.service_cluster", g.name, "the cluster of app services it routes"),
    Declared("ext.config_path", g.file_path, "where its config goes (default: the image's)"),
    Declared("ext.mode", g.one_of(MODES), "rolling (Docker config + update) or signal"),
)
APP = {label.name: label for label in APP_LABELS}
PROXY = {label.name: label for label in PROXY_LABELS}
# Marks the controller puts on what it creates (configs, check containers and services).
OWN_MARKS = ("ext.owned", "ext.proxy", "ext.digest", "ext.check", "ext.controller")


def is_alias(name: str) -> bool:
    return name.startswith("alias_domain") and (
        name == "alias_domain" or bool(_ALIAS_NUMBERED.fullmatch(name))
    )


def declared_name(name: str) -> str:
    """The declaration a label name falls under (``alias_domain.3`` -> ``alias_domain``)."""
    return "alias_domain" if is_alias(name) else name


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

    def is_routed(self, labels: Mapping[str, str]) -> bool:
        """An app is routed when it names a host; other services are none of our business."""
        return self.key("hostname") in labels or self.key("domain") in labels

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
    known = declared_name(name) in APP or name in PROXY or name in OWN_MARKS or name == "*"
    if not known:
        raise KeyError(f"label {name!r} is not declared in controller.vocabulary")
    return f"{prefix}.{name}"


def label_kind(key: str, prefix: str) -> str:
    """A bounded name for metrics: ``interlock.alias_domain.3`` -> ``alias_domain``; a label
    nobody declared -> ``other`` (label keys are anyone's input; series must stay few)."""
    name = Vocabulary(prefix).name_of(key) or key
    if name.startswith("backend_option"):
        return "backend_option"
    name = declared_name(name)
    return name if name in APP or name in PROXY else "other"
