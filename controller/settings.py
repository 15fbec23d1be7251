"""Configuration from the environment (``INTERLOCK_*``), validated once at start.

A bad value stops the program before it touches the Swarm, with a message naming the variable:
a controller that starts with a half-understood configuration is worse than one that refuses.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .identity import parse_allow
from .vocabulary import FAMILIES

LABEL_PREFIX_PATTERN = re.compile(
    r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$"
)


_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", re.ASCII)


class Settings(BaseSettings):
    """Every knob of the controller. Field names map to ``INTERLOCK_<NAME>`` variables."""

    model_config = SettingsConfigDict(env_prefix="INTERLOCK_", extra="ignore")

    poll_interval: float = Field(1.0, gt=0, le=3600, description="seconds between full relists")
    label_prefix: str = Field("interlock", description="prefix of every routing label")
    mode: Literal["rolling", "signal"] = Field(
        "rolling", description="default convergence of proxies; a proxy label overrides it"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    keep_configs: int = Field(3, ge=0, le=100, description="unused rendered configs kept per proxy")
    check_configs: bool = Field(True, description="check configs with the proxy's binary")
    check_timeout: float = Field(30.0, gt=0, description="seconds a config check may take")
    proxy_http_port: int = Field(80, ge=1, le=65535, description="port the proxies listen on")
    proxy_https_port: int = Field(443, ge=1, le=65535, description="TLS port of the proxies")
    proxy_connect_timeout: float = Field(5.0, gt=0, le=600, description="seconds, to backends")
    proxy_read_timeout: float = Field(60.0, gt=0, le=86400, description="seconds, to backends")
    nginx_client_keepalive: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="nginx keepalive_timeout to clients; 0 (default) loses no request on reload",
    )
    nginx_worker_shutdown_timeout: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="seconds an nginx worker of an older config keeps its open connections "
        "after a reload before it closes them and exits; 0 = until they end (nginx's default)",
    )
    max_connections: int = Field(4096, ge=16, le=1_000_000)
    access_log: Literal["json", "text", "off"] = Field(
        "json",
        description="the proxies' access log on their stdout: json (one object a line), text "
        "(the classic line) or off; a service's label can turn its own off",
    )
    label_families: str = Field(
        "interlock,com.docker.lb",
        description="label families read: interlock (ours, under the prefix) and/or "
        "com.docker.lb (Interlock 2's), comma-separated",
    )
    proxy_trust_label: str = Field(
        "",
        description="label KEY or KEY=VALUE a service or container must carry to be a proxy "
        "('' = any labelled proxy is trusted)",
    )
    proxy_name_pattern: str = Field(
        "", description="regex a proxy's whole name must match to be trusted ('' = any)"
    )
    docker_timeout: float = Field(30.0, gt=0, description="seconds per Docker API call")
    template_dir: str = Field(
        "", description="folder with your own nginx.conf.j2 / haproxy.cfg.j2 (default: built-in)"
    )
    metrics_port: int = Field(9100, ge=0, le=65535, description="0 disables the HTTP endpoint")
    metrics_address: str = Field(
        "0.0.0.0", description="address the metrics endpoint binds to (IPv4 or IPv6, :: = both)"
    )
    metrics_timeout: float = Field(
        5.0, gt=0, le=60, description="seconds a metrics client has to send its request and read"
    )
    health_max_age: float = Field(
        0.0,
        ge=0,
        le=86400,
        description="seconds since the last successful pass before /healthz says 503; "
        "0 (default) = 3 x poll interval + 10",
    )
    proxy_status_port: int = Field(
        8404,
        ge=0,
        le=65535,
        description="unpublished port of the proxies' status listener (nginx stub_status, "
        "HAProxy stats); 0 renders none",
    )
    status_allow: str = Field(
        "",
        description="comma-separated addresses or CIDRs that may read the proxies' status pages "
        "besides 127.0.0.1 and the controller's own container",
    )
    scrape_interval: float = Field(
        15.0, ge=0, le=3600, description="seconds between scrapes of the proxies; 0 disables"
    )
    scrape_timeout: float = Field(2.0, gt=0, le=60, description="seconds per proxy scrape")
    beacon_interval: float = Field(
        15.0, ge=0, le=3600, description="seconds between container stats rounds; 0 disables"
    )
    beacon_image_pattern: str = Field(
        "", description="regex on the image of proxy and routed task containers ('' = all)"
    )
    beacon_label: str = Field(
        "", description="label KEY or KEY=VALUE a container or its service must carry ('' = any)"
    )

    runtime_dir: str = Field(
        "/var/run/interlock",
        description="where the controller (signal mode, its own engine) or an agent sees the "
        "volume holding the HAProxy proxies' runtime sockets: task address changes go through "
        "them without a reload; '' = always reload",
    )

    agent_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="port of the agents' API on the controller (long-polls from `interlock "
        "agent`); 0 = agents off, the controller reloads only proxies on its own engine",
    )
    agent_address: str = Field("0.0.0.0", description="address the agents' API binds to")
    agent_token_file: str = Field(
        "/run/secrets/interlock-agent-token",
        description="file holding the token agents and controller share (a Docker secret)",
    )
    agent_url: str = Field(
        "http://controller:9180",
        description="where an agent reaches the controller's agents' API (http://HOST:PORT)",
    )
    agent_wait: float = Field(
        25.0, gt=0, le=300, description="seconds the controller holds an agent's request"
    )
    agent_max_connections: int = Field(
        128, ge=2, le=10_000, description="agents' API connections served at once"
    )

    acme_directory: str = Field(
        "https://acme-v02.api.letsencrypt.org/directory",
        description="ACME directory URL (Let's Encrypt production; staging: "
        "https://acme-staging-v02.api.letsencrypt.org/directory)",
    )
    acme_email: str = Field("", description="contact e-mail of the ACME account (optional)")
    acme_key_type: Literal["ec256", "ec384", "rsa2048"] = Field(
        "ec256", description="key type of the certificates' keys"
    )
    acme_renew_days: float = Field(
        30.0, gt=0, le=3650, description="renew a certificate this many days before it expires"
    )
    acme_ca_bundle: str = Field(
        "", description="PEM bundle trusted for the ACME directory's HTTPS ('' the system's)"
    )
    acme_account_key_file: str = Field(
        "/run/secrets/interlock-acme-account",
        description="the ACME account's EC P-256 key (PEM), a Docker secret mounted here",
    )
    acme_retry_seconds: float = Field(
        60.0, gt=0, le=86400, description="first back-off after a failed order (x5 each time)"
    )

    @field_validator("agent_url")
    @classmethod
    def _is_agent_url(cls, value: str) -> str:
        parsed = urllib.parse.urlsplit(value)
        if parsed.scheme != "http" or not parsed.hostname or parsed.path not in ("", "/"):
            raise ValueError(
                "must be http://HOST[:PORT] (the controller's service on the agents' network)"
            )
        try:
            parsed.port  # noqa: B018 (raises on a bad port)
        except ValueError as error:
            raise ValueError(f"bad port: {error}") from None
        return value

    @field_validator("acme_directory")
    @classmethod
    def _is_directory_url(cls, value: str) -> str:
        """The CA's directory: an http(s) URL with a host (a typo would fail at the first
        order, hours later, instead of at start)."""
        parsed = urllib.parse.urlsplit(value)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise ValueError("must be an https:// URL of an ACME directory")
        return value

    @field_validator("acme_email")
    @classmethod
    def _is_email(cls, value: str) -> str:
        """One address (it becomes the account's mailto: contact); '' for none."""
        if value and not _EMAIL.fullmatch(value):
            raise ValueError("must be one e-mail address such as ops@example.com, or empty")
        return value

    @field_validator("runtime_dir")
    @classmethod
    def _is_absolute_or_off(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError("must be an absolute path, or empty to always reload")
        return value

    @field_validator("metrics_address", "agent_address")
    @classmethod
    def _is_address(cls, value: str) -> str:
        """An IP address, IPv6 in brackets or not; a host name would bind to whatever it
        resolves to at start, so it is refused."""
        bare = value.strip()
        if bare.startswith("[") and bare.endswith("]"):
            bare = bare[1:-1]
        try:
            return str(ipaddress.ip_address(bare))
        except ValueError:
            raise ValueError(
                "must be an IP address such as 0.0.0.0, 127.0.0.1, :: or ::1"
            ) from None

    @field_validator("status_allow")
    @classmethod
    def _is_allow_list(cls, value: str) -> str:
        return ",".join(parse_allow(value))

    @field_validator("proxy_status_port")
    @classmethod
    def _status_port_is_free(cls, value: int, info: ValidationInfo) -> int:
        taken = {info.data.get("proxy_http_port"), info.data.get("proxy_https_port")}
        if value and value in taken:
            raise ValueError("must differ from INTERLOCK_PROXY_HTTP_PORT and _HTTPS_PORT")
        return value

    @field_validator("proxy_https_port")
    @classmethod
    def _https_port_is_free(cls, value: int, info: ValidationInfo) -> int:
        if value == info.data.get("proxy_http_port"):
            raise ValueError("must differ from INTERLOCK_PROXY_HTTP_PORT")
        return value

    @field_validator("template_dir")
    @classmethod
    def _is_a_folder(cls, value: str) -> str:
        """A mistyped folder would otherwise fall back to the built-in templates unnoticed."""
        if value and not Path(value).is_dir():
            raise ValueError(f"{value!r} is not a folder")
        return value

    @field_validator("beacon_image_pattern", "proxy_name_pattern")
    @classmethod
    def _is_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return value

    @field_validator("beacon_label", "proxy_trust_label")
    @classmethod
    def _is_label_rule(cls, value: str) -> str:
        key = value.split("=", 1)[0]
        if value and (not key or any(c.isspace() for c in value)):
            raise ValueError("must be a label KEY or KEY=VALUE without spaces")
        return value

    @property
    def health_max_age_seconds(self) -> float:
        return self.health_max_age or 3 * self.poll_interval + 10

    @field_validator("label_families")
    @classmethod
    def _are_families(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in FAMILIES]
        if unknown or not names:
            raise ValueError(f"must name one or both of {', '.join(FAMILIES)}")
        return ",".join(names)

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(self.label_families.split(","))

    @field_validator("label_prefix")
    @classmethod
    def _prefix_is_dns_like(cls, value: str) -> str:
        if not LABEL_PREFIX_PATTERN.match(value):
            raise ValueError("must be lower-case letters, digits, '-' and '.' (like 'interlock')")
        return value


class SettingsError(Exception):
    """Raised at start when the environment holds a value the controller cannot use."""


def load_settings() -> Settings:
    """Read the environment, turning pydantic's error into one line per bad variable."""
    try:
        return Settings()
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            name = "INTERLOCK_" + "_".join(str(part) for part in problem["loc"]).upper()
            lines.append(f"{name}: {problem['msg']}")
        raise SettingsError("bad setting: " + "; ".join(lines)) from None
