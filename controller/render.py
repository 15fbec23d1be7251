"""Render a proxy's desired routes into its configuration text, and hash it (pure).

Templates live in ``templates/`` (packaged as ``controller.templates``). Every value a template
prints goes through a filter that refuses anything outside a small safe alphabet: label values are
validated in ``labels``, and this is the second wall, so that no label, however it got here, can
add a directive, a block or a line to a proxy's configuration.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from itertools import groupby
from pathlib import Path

import jinja2

from .desired import DesiredProxy, Route

_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9._:/~-]+$")
TEMPLATES = {"nginx": "nginx.conf.j2", "haproxy": "haproxy.cfg.j2"}
NGINX_BALANCE = {"leastconn": "least_conn", "source": "ip_hash", "random": "random"}


class RenderError(ValueError):
    """A value that must never reach a configuration did; nothing is rendered."""


@dataclass(frozen=True)
class RenderOptions:
    """Settings that shape every rendered configuration (from ``Settings``)."""

    http_port: int = 80
    https_port: int = 443
    secrets_dir: str = "/run/secrets"  # where Docker mounts secrets (tests point it elsewhere)
    max_connections: int = 4096
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    client_keepalive: float = 0.0
    template_dir: str = ""  # "" uses the built-in templates
    status_port: int = 8404  # the proxies' unpublished status listener; 0 renders none

    @property
    def connect_timeout_ms(self) -> int:
        return int(self.connect_timeout * 1000)

    @property
    def read_timeout_ms(self) -> int:
        return int(self.read_timeout * 1000)

    @property
    def client_keepalive_ms(self) -> int:
        return int(self.client_keepalive * 1000)


@dataclass(frozen=True)
class Rendered:
    text: str
    digest: str  # sha256 of text, hex

    @property
    def short(self) -> str:
        return self.digest[:16]


def safe_token(value: object) -> str:
    text = str(value)
    if not _SAFE_TOKEN.match(text):
        raise RenderError(f"refusing to render unsafe value {text!r}")
    return text


def regex_literal(value: str) -> str:
    """A validated path as a regex that matches it literally, without backslashes.

    Backslashes have meanings of their own in HAProxy's config parser; a character class does not.
    """
    return safe_token(value).replace(".", "[.]")


def _template_dir() -> str:
    """The installed package's templates, or the checkout's when run from source."""
    try:
        return str(resources.files("controller.templates"))
    except ModuleNotFoundError:
        return str(Path(__file__).resolve().parent.parent / "templates")


@functools.lru_cache(maxsize=8)
def _environment(folder: str) -> jinja2.Environment:
    """A template environment for a folder; a user's folder falls back to the built-in one."""
    loader = jinja2.FileSystemLoader([f for f in (folder, _template_dir()) if f])
    env = jinja2.Environment(
        loader=loader,
        autoescape=False,  # not HTML: safety comes from safe_token, which raises
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["safe_token"] = safe_token
    env.filters["regex_literal"] = regex_literal
    return env


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _haproxy_order(route: Route) -> tuple[str, int, str]:
    """HAProxy takes the first matching rule: longer path prefixes of a host must come first."""
    return route.host, -len(route.path), route.path


def render(desired: DesiredProxy, options: RenderOptions) -> Rendered:
    """The whole configuration file of one proxy. Same input, same bytes, same digest."""
    backends = {backend.name: backend for backend in desired.backends}

    def upstream(route: Route) -> str:
        backend = backends[route.backend]
        if not backend.targets:
            return "return 503;"
        uri = "/" if route.rewrite and route.path else ""
        return f"proxy_pass http://{safe_token(backend.name)}{uri};"

    template = _environment(options.template_dir).get_template(TEMPLATES[desired.proxy.spec.kind])
    text = template.render(
        proxy=desired.proxy.name,
        options=options,
        backends=desired.backends,
        routes=sorted(desired.routes, key=_haproxy_order),
        hosts=[(host, list(group)) for host, group in groupby(desired.routes, lambda r: r.host)],
        upstream=upstream,
        host_tls={tls.host: tls for tls in desired.tls},
        certificates=desired.certificates,
        nginx_balance=NGINX_BALANCE,
    )
    return Rendered(text, digest(text))
