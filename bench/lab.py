"""The test bed for the benchmark: one namespaced SwarmTest per scenario, always cleaned up."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from datetime import datetime

import docker

from bench import progress
from tests.bed import Bed, ensure_bed
from tests.bed.harness import SwarmTest


@functools.cache
def bed() -> Bed:
    progress("test bed: ensuring it is up (python -m tests.bed up)")
    return ensure_bed()


@functools.cache
def client() -> docker.DockerClient:
    return bed().client()


@contextlib.contextmanager
def namespace(what: str) -> Iterator[SwarmTest]:
    """A fresh namespace on the bed; everything made in it is removed afterwards."""
    swarm = SwarmTest(client(), bed().images)
    progress(f"{what}: namespace {swarm.id}")
    try:
        yield swarm
    finally:
        swarm.cleanup()


def swarm_time(stamp: str) -> float:
    """Epoch seconds of an Engine API timestamp (``2026-01-01T00:00:00.123456789Z``)."""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(fraction + '000000')[:6]}+00:00").timestamp()


def engine_version() -> str:
    return str(client().version().get("Version", "?"))
