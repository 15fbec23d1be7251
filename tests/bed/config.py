"""Where the test bed lives and how it is wired, from ``INTERLOCK_BED_*`` environment variables.

Every default is chosen so the bed never meets an engine the user already runs: its own data root,
exec root and socket, its own Linux bridges, its own address ranges and its own Swarm ports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    """One ``INTERLOCK_BED_<name>`` setting, falling back to ``default`` when unset or empty."""
    return os.environ.get(f"INTERLOCK_BED_{name}") or default


@dataclass(frozen=True)
class Images:
    """The local image names; tests and the controller get them from here, never hard-coded.

    ``*_binonly``: the proxy's binary and its libraries alone (no shell), like a distroless image.
    """

    nginx: str
    haproxy: str
    backend: str
    python: str
    nginx_binonly: str
    haproxy_binonly: str

    def as_dict(self) -> dict[str, str]:
        """Build-directory name (under ``tests/bed/images``) -> image name."""
        return {
            "nginx": self.nginx,
            "haproxy": self.haproxy,
            "backend": self.backend,
            "python": self.python,
            "nginx_binonly": self.nginx_binonly,
            "haproxy_binonly": self.haproxy_binonly,
        }


@dataclass(frozen=True)
class BedConfig:
    """All knobs of the bed. Build one with :meth:`from_env`."""

    state_dir: Path
    run_dir: Path
    bridge: str
    bridge_cidr: str
    gwbridge: str
    gwbridge_subnet: str
    local_pool: str
    swarm_pool: str
    swarm_port: int
    data_path_port: int
    suite: str
    images: Images = field(compare=False)

    @classmethod
    def from_env(cls) -> BedConfig:
        """Read the environment now (not at import), so tests can point the bed elsewhere."""
        return cls(
            state_dir=Path(_env("DIR", "/var/lib/interlock-bed")),
            # The exec root holds the API socket and containerd's socket: a unix socket path must
            # stay under 108 bytes, so this lives in /run rather than under state_dir.
            run_dir=Path(_env("RUN_DIR", "/run/interlock-bed")),
            bridge=_env("BRIDGE", "ibed0"),
            bridge_cidr=_env("BRIDGE_CIDR", "10.218.0.1/24"),
            gwbridge=_env("GWBRIDGE", "ibed_gwbridge"),
            gwbridge_subnet=_env("GWBRIDGE_SUBNET", "10.218.1.0/24"),
            local_pool=_env("LOCAL_POOL", "10.218.128.0/17"),
            swarm_pool=_env("SWARM_POOL", "10.219.0.0/16"),
            swarm_port=int(_env("SWARM_PORT", "2477")),
            data_path_port=int(_env("DATA_PATH_PORT", "4799")),
            suite=_env("SUITE", "bookworm"),
            images=Images(
                nginx=_env("NGINX_IMAGE", "interlock-bed/nginx:1"),
                haproxy=_env("HAPROXY_IMAGE", "interlock-bed/haproxy:1"),
                backend=_env("BACKEND_IMAGE", "interlock-bed/backend:1"),
                python=_env("PYTHON_IMAGE", "interlock-bed/python:1"),
                nginx_binonly=_env("NGINX_BINONLY_IMAGE", "interlock-bed/nginx-binonly:1"),
                haproxy_binonly=_env("HAPROXY_BINONLY_IMAGE", "interlock-bed/haproxy-binonly:1"),
            ),
        )

    @property
    def socket(self) -> Path:
        """The bed engine's API socket."""
        return self.run_dir / "docker.sock"

    @property
    def docker_host(self) -> str:
        """``DOCKER_HOST`` value for the bed engine."""
        return f"unix://{self.socket}"

    @property
    def data_root(self) -> Path:
        """dockerd ``--data-root``: images, containers, Swarm state."""
        return self.state_dir / "engine"

    @property
    def pidfile(self) -> Path:
        """dockerd ``--pidfile``; a stale one stops dockerd from starting."""
        return self.state_dir / "dockerd.pid"

    @property
    def log_file(self) -> Path:
        """dockerd's stdout and stderr, for post-mortems."""
        return self.state_dir / "dockerd.log"

    @property
    def daemon_json(self) -> Path:
        """Our own ``--config-file``, so /etc/docker/daemon.json of a user engine never applies."""
        return self.state_dir / "daemon.json"

    @property
    def lock_file(self) -> Path:
        """flock target serialising ``up`` and ``down`` across processes."""
        return self.state_dir / "lock"
