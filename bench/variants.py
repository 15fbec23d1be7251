"""The baseline controllers of part 2, as real processes: ``python -m bench.variants NAME``.

Each is the real controller (``interlock run``: same settings, loop, events, check, render and
plan) with one part swapped, in this process only; the controller's own code is not changed.

- ``restart``: "restart the proxy on every change" (what the seed Interlock does for HAProxy):
  the new config is written into the proxy container and checked as in signal mode, then the
  container is restarted (``docker restart``) instead of signalled.
- ``until-gone``: "route to tasks until they are gone" (what polling peers do): every task of a
  routed service is listed, whatever its desired state, and a task is a target while its state
  is ``running``, even after Swarm has decided to stop it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import docker

from controller import cli, desired
from controller.app import Controller
from controller.gateway import Gateway
from controller.inplace import SignalPusher
from controller.logs import setup
from controller.observe import Observer
from controller.settings import load_settings
from controller.snapshot import RUNNING, Task

VARIANTS = ("restart", "until-gone")
RESTART_TIMEOUT = 10  # seconds docker restart waits for the proxy to stop before killing it


class RestartInsteadOfSignal:
    """The Engine API client, except that a reload signal restarts the container."""

    def __init__(self, api: docker.APIClient) -> None:
        self._api = api

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def kill(self, container: str, signal: str | None = None) -> None:
        self._api.restart(container, timeout=RESTART_TIMEOUT)


class EveryTaskObserver(Observer):
    """Lists the tasks of routed services in every desired state, not only ``running``."""

    def _tasks(self, service_ids: list[str]) -> list[dict]:
        if not service_ids:
            return []
        return self.api.tasks(filters={"service": service_ids})


def targets_until_gone(tasks: Iterable[Task], network_id: str, port: int) -> tuple[str, ...]:
    """``controller.desired.targets`` with the filter ``state == running`` only."""
    found = {
        t.addresses[network_id] for t in tasks if t.state == RUNNING and network_id in t.addresses
    }
    return tuple(f"{address}:{port}" for address in sorted(found))


def apply(variant: str, controller: Controller) -> None:
    settings, reconciler = controller.settings, controller.reconciler
    if variant == "restart":
        restarts = Gateway(RestartInsteadOfSignal(controller.api.api))
        pusher = SignalPusher(restarts, settings.check_timeout)
        reconciler.executor.push = pusher.push
        reconciler.served = pusher.served
    elif variant == "until-gone":
        reconciler.observer = EveryTaskObserver(controller.api, settings.label_prefix)
        desired.targets = targets_until_gone
    else:
        raise SystemExit(f"unknown variant {variant!r} (have: {', '.join(VARIANTS)})")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit(f"usage: python -m bench.variants {{{','.join(VARIANTS)}}}")
    settings = load_settings()
    setup(settings.log_level, settings.log_format)
    controller = Controller.from_settings(settings)
    apply(argv[0], controller)
    return cli.cmd_run(controller)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
