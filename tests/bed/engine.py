"""Start, find and stop the bed's private dockerd.

The engine gets its own data root, exec root, socket, pidfile, config file, trust key, cgroup
parent, default bridge and address pools, so it can run beside (and never disturb) an engine
the user runs.
It runs with ``--iptables=false``: host-mode published ports work through docker-proxy and overlay
traffic between tasks on this node needs no NAT, so the host's firewall tables are never written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from .config import BedConfig

log = logging.getLogger(__name__)

DEFAULT_SOCKET = Path("/var/run/docker.sock")
START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0


def client_for(cfg: BedConfig, timeout: int = 120) -> docker.DockerClient:
    """A client bound to the bed socket (never ``from_env``: DOCKER_HOST may be the user's)."""
    return docker.DockerClient(base_url=cfg.docker_host, timeout=timeout)


def answers(cfg: BedConfig) -> bool:
    """True when the bed engine answers a ping on its socket."""
    if not cfg.socket.exists():
        return False
    try:
        client = client_for(cfg, timeout=5)  # connects at once (API version negotiation)
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        return False
    finally:
        client.close()


def socket_fingerprint(path: Path) -> tuple[int, int, float] | None:
    """Inode, device and change time of a socket (None if absent): proof it was left alone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_dev, st.st_ctime


def _cmdline(pid: int) -> list[str]:
    """argv of a live process, or [] when it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_our_dockerd(pid: int, cfg: BedConfig) -> bool:
    """True if ``pid`` is a live dockerd with our exec root (so never a user's engine)."""
    argv = _cmdline(pid)
    return bool(argv) and argv[0].endswith("dockerd") and f"--exec-root={cfg.run_dir}" in argv


def engine_pid(cfg: BedConfig) -> int | None:
    """The pid from our pidfile, but only if that process really is *our* dockerd."""
    try:
        pid = int(cfg.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_our_dockerd(pid, cfg) else None


def our_dockerds(cfg: BedConfig) -> list[int]:
    """Every live dockerd of this bed, pidfile or not (e.g. one still shutting down)."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [pid for pid in pids if _is_our_dockerd(pid, cfg)]


def _run(*argv: str) -> None:
    """Run a host command (ip) and fail loudly with its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def ensure_bridge(cfg: BedConfig) -> None:
    """Create our own default bridge: with ``--bridge=none`` plain containers and tasks on no
    network would get no network at all, and docker0 may belong to the user's engine."""
    if Path(f"/sys/class/net/{cfg.bridge}").exists():
        return
    _run("ip", "link", "add", "name", cfg.bridge, "type", "bridge")
    _run("ip", "addr", "add", cfg.bridge_cidr, "dev", cfg.bridge)
    _run("ip", "link", "set", cfg.bridge, "up")


def delete_bridges(cfg: BedConfig) -> None:
    """Remove the Linux bridges that only the bed uses (dockerd leaves them behind on exit)."""
    for name in (cfg.bridge, cfg.gwbridge):
        if Path(f"/sys/class/net/{name}").exists():
            _run("ip", "link", "del", name)


def dockerd_argv(cfg: BedConfig) -> list[str]:
    """The dockerd command line; ``engine_pid`` recognises our engine by ``--exec-root=...``."""
    return [
        shutil.which("dockerd") or "/usr/sbin/dockerd",
        f"--config-file={cfg.daemon_json}",
        f"--data-root={cfg.data_root}",
        f"--exec-root={cfg.run_dir}",
        f"--host={cfg.docker_host}",
        f"--pidfile={cfg.pidfile}",
        f"--bridge={cfg.bridge}",
        "--iptables=false",
        "--ip-masq=false",
        "--ip-forward=false",
        "--ip=127.0.0.1",
        f"--default-address-pool=base={cfg.local_pool},size=24",
        f"--cgroup-parent={cfg.run_dir.name}",
        "--log-opt=max-size=10m",
        "--log-opt=max-file=2",
    ]


def _write_daemon_json(cfg: BedConfig) -> None:
    """Keep the engine's trust key (which fixes its engine ID) out of the shared /etc/docker."""
    settings = {"deprecated-key-path": str(cfg.state_dir / "key.json")}
    cfg.daemon_json.write_text(json.dumps(settings, indent=2) + "\n")


def _engine_env() -> dict[str, str]:
    """dockerd's environment: offline-image preference on, client variables of the caller off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_SERVICE_PREFER_OFFLINE_IMAGE"] = "1"
    path = env.get("PATH", "")
    env["PATH"] = ":".join(p for p in (path, "/usr/sbin", "/usr/bin", "/sbin", "/bin") if p)
    return env


def _drop_stale_containerd_pidfile(cfg: BedConfig) -> None:
    """dockerd reuses the containerd named in this pidfile while that pid exists, and then waits
    forever for a socket that a dead (or zombie) containerd never opens: forget such a pid."""
    pidfile = cfg.run_dir / "containerd" / "containerd.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    argv = _cmdline(pid)
    if not (argv and "containerd" in argv[0] and any(f"{cfg.run_dir}/" in a for a in argv)):
        pidfile.unlink(missing_ok=True)


def start_engine(cfg: BedConfig) -> subprocess.Popen[bytes]:
    """Launch dockerd in its own session, logging to ``dockerd.log``; returns at once."""
    for path in (cfg.state_dir, cfg.data_root, cfg.run_dir):
        path.mkdir(parents=True, exist_ok=True)
    cfg.pidfile.unlink(missing_ok=True)  # a stale pidfile makes dockerd refuse to start
    _drop_stale_containerd_pidfile(cfg)
    _write_daemon_json(cfg)
    ensure_bridge(cfg)
    log.info("starting dockerd on %s (log: %s)", cfg.docker_host, cfg.log_file)
    with cfg.log_file.open("ab") as out:
        return subprocess.Popen(
            dockerd_argv(cfg),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_engine_env(),
            start_new_session=True,
        )


def log_tail(cfg: BedConfig, lines: int = 30) -> str:
    """Last lines of dockerd's log, to put into error messages."""
    try:
        text = cfg.log_file.read_text(errors="replace")
    except OSError:
        return "(no dockerd log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_for_engine(cfg: BedConfig, proc: subprocess.Popen[bytes]) -> None:
    """Poll the socket until the engine answers; fail early if dockerd exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if answers(cfg):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"dockerd exited with {proc.returncode}:\n{log_tail(cfg)}")
        time.sleep(0.2)
    raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT}s:\n{log_tail(cfg)}")


def _wait_gone(pid: int, timeout: float) -> bool:
    """True once ``pid`` has exited (or is a zombie nobody reaped yet) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _cmdline(pid):
            return True
        time.sleep(0.2)
    return False


def _signal(pid: int, sig: int) -> None:
    """Send ``sig`` to one process we started; it may already be gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _leftover_shims(cfg: BedConfig) -> list[int]:
    """containerd shims that belong to the bed's containerd (their argv names its socket)."""
    marker = f"{cfg.run_dir}/"
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = _cmdline(int(entry.name))
            if argv and "containerd-shim" in argv[0] and any(marker in a for a in argv):
                pids.append(int(entry.name))
    return pids


def stop_engine(cfg: BedConfig) -> None:
    """SIGTERM our dockerd (it stops its containers and containerd), SIGKILL if it hangs."""
    for pid in our_dockerds(cfg):
        log.info("stopping dockerd pid %d", pid)
        _signal(pid, signal.SIGTERM)
        if not _wait_gone(pid, STOP_TIMEOUT):
            log.warning("dockerd pid %d ignored SIGTERM; killing it", pid)
            _signal(pid, signal.SIGKILL)
            _wait_gone(pid, 10)
    for shim in _leftover_shims(cfg):
        _signal(shim, signal.SIGKILL)
    cfg.pidfile.unlink(missing_ok=True)


def unmount_below(*roots: Path) -> None:
    """Lazily unmount what the engine left mounted on or under our own directories (dockerd
    bind-mounts its data root onto itself and leaves that behind even after a clean exit)."""
    prefixes = tuple(str(root) + "/" for root in roots)
    exact = {str(root) for root in roots}
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point in exact or point.startswith(prefixes):
            mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
