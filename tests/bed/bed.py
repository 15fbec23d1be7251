"""The bed as a whole: bring it up (idempotently, under a lock), describe it, take it down."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from . import engine, imagebuild, swarm
from .config import BedConfig, Images

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 1200.0


@dataclass(frozen=True)
class Bed:
    """A running bed: where to reach it and which local images it offers."""

    config: BedConfig

    @property
    def docker_host(self) -> str:
        """``unix://...`` address of the bed engine (never the default socket)."""
        return self.config.docker_host

    @property
    def images(self) -> Images:
        """Local image names: ``.nginx``, ``.haproxy``, ``.backend``, ``.python``."""
        return self.config.images

    def client(self, timeout: int = 120) -> docker.DockerClient:
        """A new Docker SDK client for the bed engine; the caller closes it."""
        return engine.client_for(self.config, timeout=timeout)

    def env(self) -> dict[str, str]:
        """Environment that points the docker CLI/SDK and the image settings at this bed."""
        env = {"DOCKER_HOST": self.docker_host}
        for kind, name in self.images.as_dict().items():
            env[f"INTERLOCK_BED_{kind.upper()}_IMAGE"] = name
        return env


@contextlib.contextmanager
def locked(cfg: BedConfig) -> Iterator[None]:
    """Hold an exclusive flock so concurrent ``up``/``down`` calls run one after another."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    with cfg.lock_file.open("a") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    busy = f"bed lock {cfg.lock_file} busy for {LOCK_TIMEOUT}s"
                    raise TimeoutError(busy) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_engine(cfg: BedConfig) -> None:
    """Reuse a live engine; stop one that is ours but mute (or still shutting down); start one,
    and retry once: a first start after a crash can trip over what the old engine left."""
    if engine.answers(cfg):
        return
    if engine.our_dockerds(cfg):
        log.warning("bed dockerd runs but does not answer; stopping it")
        engine.stop_engine(cfg)
    try:
        engine.wait_for_engine(cfg, engine.start_engine(cfg))
    except RuntimeError as err:
        log.warning("dockerd did not come up (%s); trying once more", str(err).splitlines()[0])
        engine.stop_engine(cfg)
        engine.wait_for_engine(cfg, engine.start_engine(cfg))


def _check_root() -> None:
    """Starting an engine needs root; say so plainly instead of failing deep inside dockerd."""
    if os.geteuid() != 0:
        raise PermissionError("the test bed runs its own dockerd and must be started as root")


def ensure_bed(cfg: BedConfig | None = None) -> Bed:
    """Bring the bed up, reusing whatever already works; safe to call from many processes."""
    cfg = cfg or BedConfig.from_env()
    with locked(cfg):
        if not engine.answers(cfg):
            _check_root()
        _ensure_engine(cfg)
        client = engine.client_for(cfg, timeout=600)
        try:
            swarm.ensure_swarm(client, cfg)
            imagebuild.ensure_images(client, cfg)
        finally:
            client.close()
    return Bed(cfg)


def _remove_gwbridge(client: docker.DockerClient, seconds: float = 10.0) -> None:
    """Remove docker_gwbridge once Docker has released the endpoints that leaving the Swarm
    frees (asynchronously). Only tidying: `up` reuses a matching one, so give up quietly."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.networks.get(swarm.GWBRIDGE).remove()
            return
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as error:
            if time.monotonic() >= deadline:
                log.warning("leaving docker_gwbridge in place: %s", error.explanation)
                return
            time.sleep(0.5)


def _leave_swarm_and_clean(cfg: BedConfig) -> None:
    """With the engine still up: leave Swarm and remove containers and networks, keep images."""
    client = engine.client_for(cfg)
    try:
        with contextlib.suppress(docker.errors.APIError):
            client.swarm.leave(force=True)
        for container in client.containers.list(all=True):
            container.remove(force=True)
        client.networks.prune()
        _remove_gwbridge(client)
    finally:
        client.close()


def bed_down(cfg: BedConfig | None = None, keep_images: bool = False) -> None:
    """Stop the engine and remove its state (all of it, or all but the image store)."""
    cfg = cfg or BedConfig.from_env()
    _check_root()
    with locked(cfg):
        if keep_images and engine.answers(cfg):
            _leave_swarm_and_clean(cfg)
        engine.stop_engine(cfg)
        engine.unmount_below(cfg.data_root, cfg.run_dir)
        engine.delete_bridges(cfg)
        shutil.rmtree(cfg.run_dir, ignore_errors=True)
        if not keep_images:
            shutil.rmtree(cfg.data_root, ignore_errors=True)
            for name in ("key.json", "daemon.json", "dockerd.log"):
                (cfg.state_dir / name).unlink(missing_ok=True)


def bed_status(cfg: BedConfig | None = None) -> dict[str, Any]:
    """What is up and what is missing, without changing anything."""
    cfg = cfg or BedConfig.from_env()
    status: dict[str, Any] = {
        "docker_host": cfg.docker_host,
        "pid": engine.engine_pid(cfg),
        "engine": engine.answers(cfg),
    }
    if status["engine"]:
        client = engine.client_for(cfg, timeout=30)
        try:
            status["swarm"] = swarm.swarm_state(client)
            status["images_current"] = imagebuild.images_current(client, cfg)
        finally:
            client.close()
    status["up"] = bool(
        status["engine"] and status.get("swarm") == "active" and status.get("images_current")
    )
    return status
