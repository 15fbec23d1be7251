"""Every difference between the proxies the controller drives, in one table (pure).

A proxy kind is its template, where its config lives in the official image, how its binary
checks a config, which signal reloads it in place, which status page it keeps and how that page
reads, and what our balance names are called in its grammar. Supporting another proxy is one
entry here plus its template.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from . import statuspage
from .statuspage import Sample


@dataclass(frozen=True)
class ProxyKind:
    name: str
    template: str  # file name in the templates folder
    config_path: str  # where the official image reads its config
    check: tuple[str, ...]  # argv that checks the config at {path}; exit 0 accepts it
    reload_signal: str  # reloads the master in place, without dropping connections
    status_path: str  # the status page on the unpublished status port
    read_status: Callable[[str], list[Sample]] = field(repr=False)
    balance: Mapping[str, str] = field(default_factory=dict)  # our name -> its directive
    certificate_list: bool = False  # certificates in a list file beside the config
    cannot: Mapping[str, str] = field(default_factory=dict)  # label -> why this kind refuses it
    ca_bundle: str = ""  # the system CAs' file, for verifying tasks' certificates (ssl_backend)
    # Where a volume shared with the node's agent holds the proxy's runtime API socket (a unix
    # socket per container, named by its $HOSTNAME); "" for a kind without one. The official
    # HAProxy image owns this folder (its WORKDIR): a volume mounted there is writable by it.
    runtime_dir: str = ""
    # A config line that names a task address and nothing else (to tell an endpoints-only
    # reload from a structural one); None: such changes go through runtime slots instead.
    endpoint_line: re.Pattern[str] | None = None
    # The user (uid, gid) who alone may read a TLS key when the service names no numeric one:
    # the official nginx image runs its master (which loads certificates) as root; the official
    # HAProxy image (2.4 and later, Debian and Alpine) runs as haproxy, uid and gid 99. Root in
    # a container reads any file (CAP_DAC_OVERRIDE), so 99 suits an HAProxy running as root too.
    user: tuple[str, str] = ("0", "0")

    def runtime_socket(self, hostname: str) -> str:
        """The runtime socket's name in ``runtime_dir`` for a container with this hostname."""
        return f"interlock-{hostname}.sock"

    def check_argv(self, path: str) -> list[str]:
        """The check command for a config at ``path``."""
        return [part.replace("{path}", path) for part in self.check]


KINDS: dict[str, ProxyKind] = {
    "nginx": ProxyKind(
        name="nginx",
        template="nginx.conf.j2",
        config_path="/etc/nginx/nginx.conf",
        check=("nginx", "-t", "-q", "-c", "{path}"),
        reload_signal="SIGHUP",
        status_path="/stub_status",
        read_status=statuspage.parse_stub_status,
        balance={"leastconn": "least_conn", "source": "ip_hash", "random": "random"},
        cannot={
            "ssl_passthrough": "nginx passes TLS through only with its stream module "
            "(ssl_preread), which Debian's nginx and nginx-light do not load; use an HAProxy proxy",
        },
        ca_bundle="/etc/ssl/certs/ca-certificates.crt",  # Debian's and the official image's
        endpoint_line=re.compile(r" +server [0-9.:]+(?: weight=\d+)? max_fails=1 fail_timeout=2s;"),
    ),
    "haproxy": ProxyKind(
        name="haproxy",
        template="haproxy.cfg.j2",
        config_path="/usr/local/etc/haproxy/haproxy.cfg",
        check=("haproxy", "-c", "-f", "{path}"),
        reload_signal="SIGUSR2",  # master-worker mode (-W)
        status_path="/stats;csv;norefresh",
        read_status=statuspage.parse_haproxy_csv,
        certificate_list=True,  # a `bind` line holds at most 64 words
        runtime_dir="/var/lib/haproxy",
        user=("99", "99"),
        cannot={
            "basic_auth_secret": "HAProxy 2.6 reads users only from its own configuration "
            "(userlist), never from a file, and the controller never reads a secret; use an "
            "nginx proxy",
        },
    ),
}
NAMES = tuple(KINDS)
