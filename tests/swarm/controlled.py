"""Helpers for Swarm tests of the controller: a controller bound to one test's namespace.

Each test gets its own label prefix (its id, e.g. ``t1a2b3c4d``), so controllers of tests that
run at the same time on the same bed never see each other's proxies or apps.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

from docker.models.services import Service
from docker.types import EndpointSpec, UpdateConfig

from controller.app import Controller
from controller.result import PassResult
from controller.settings import Settings
from tests.bed.harness import SwarmTest
from tests.bed.probes import free_port, http_get, wait_until

APP_PORT = 8080


@dataclass
class Routed:
    """A test's controller, network and proxy."""

    swarm: SwarmTest
    controller: Controller
    settings: Settings
    network: Any
    docker_host: str
    proxy: Service | None = None
    port: int = 0
    tls_port: int = 0  # published port of the proxy's 443, when asked for

    @property
    def prefix(self) -> str:
        return self.settings.label_prefix

    def label(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    def proxy_service(
        self, kind: str, mode: str = "rolling", tls: bool = False, port: int = 0, **labels: str
    ) -> Service:
        """A proxy service of the bed's image for ``kind``, published on 127.0.0.1:self.port
        (``port``, or a free one; and its port 443 on 127.0.0.1:self.tls_port with ``tls``)."""
        image = self.swarm.images.nginx if kind == "nginx" else self.swarm.images.haproxy
        self.port = port or free_port()
        ports = [{"Protocol": "tcp", "PublishedPort": self.port, "TargetPort": 80,
                  "PublishMode": "host"}]  # fmt: skip
        if tls:
            self.tls_port = free_port()
            ports.append({"Protocol": "tcp", "PublishedPort": self.tls_port, "TargetPort": 443,
                          "PublishMode": "host"})  # fmt: skip
        all_labels = {self.label("ext.name"): kind, self.label("ext.mode"): mode}
        all_labels.update({self.label(k.replace("__", ".")): v for k, v in labels.items()})
        self.proxy = self.swarm.service(
            f"{kind}-proxy",
            image,
            labels=all_labels,
            networks=[self.network.name],
            endpoint_spec=EndpointSpec(ports=ports),
        )
        self.swarm.wait_running(self.proxy)
        return self.proxy

    def proxy_container(self, kind: str, image: str = "") -> int:
        """A plain `docker run` proxy of ``image`` (default: the bed's image for ``kind``),
        always in signal mode, published on 127.0.0.1:self.port; returns the port."""
        image = image or (self.swarm.images.nginx if kind == "nginx" else self.swarm.images.haproxy)
        self.port = free_port()
        self.swarm.container(
            f"{kind}-edge",
            image,
            labels={self.label("ext.name"): kind},
            network=self.network.name,
            ports={"80/tcp": ("127.0.0.1", self.port)},
        )
        return self.port

    def app(
        self, suffix: str, replicas: int = 1, env: tuple[str, ...] = (), **labels: str
    ) -> Service:
        """A backend service routed by ``labels`` (keys without the prefix, '.' as '__'), with
        ``env`` for the backend beside its task name (see tests/bed/images/backend)."""
        service = self.swarm.service(
            suffix,
            self.swarm.images.backend,
            networks=[self.network.name],
            labels={self.label(k.replace("__", ".")): v for k, v in labels.items()},
            env=["TASK_NAME={{.Task.Name}}", *env],
            mode={"Replicated": {"Replicas": replicas}},
        )
        if replicas:
            self.swarm.wait_running(service)
        return service

    def versioned_app(self, suffix: str, host: str, replicas: int = 3) -> Service:
        """A backend answering ``version=1`` that updates one task at a time, stop-first, 1 s
        apart, with a 10 s stop grace period: what the rolling-update load scenarios update."""
        service = self.swarm.service(
            suffix,
            self.swarm.images.backend,
            networks=[self.network.name],
            labels={self.label("hostname"): host, self.label("port"): str(APP_PORT)},
            env=version_env(1),
            mode={"Replicated": {"Replicas": replicas}},
            update_config=UpdateConfig(parallelism=1, delay=1_000_000_000, order="stop-first"),
            stop_grace_period=10_000_000_000,
        )
        self.swarm.wait_running(service)
        return service

    def set_version(self, service: Service, version: int) -> None:
        """Roll ``service`` (from ``versioned_app``) to answer ``version=<version>``."""

        def mutate(spec: dict) -> None:
            spec["TaskTemplate"]["ContainerSpec"]["Env"] = version_env(version)

        self.swarm.update_service(service, mutate)

    def scale(self, service: Service, replicas: int) -> None:
        """Change only the replica count, as `docker service scale` does.

        docker-py's ``Service.scale`` posts back the spec as inspected with defaults inserted,
        which Swarm takes for a new task template: it replaces every task, the survivors too.
        """

        def mutate(spec: dict) -> None:
            spec["Mode"] = {"Replicated": {"Replicas": replicas}}

        self.swarm.update_service(service, mutate)
        if replicas:
            self.swarm.wait_running(service, replicas=replicas)
        else:
            wait_until(lambda: not self.swarm.tasks(service), 60, message="no running task")

    def converge(self, timeout: float = 90.0) -> PassResult:
        """Run passes until one finds nothing to do, waiting for each proxy update to roll out."""

        def settled() -> PassResult | None:
            result = self.controller.reconciler.run_pass()
            assert not result.errors, result.errors
            if self.proxy is not None:
                self.swarm.wait_updated(self.proxy, timeout=timeout)
            return result if not result.actions else None

        return wait_until(settled, timeout, 0.2, "a pass with nothing to do")

    def run(self, log_path: str, **env: str) -> ControllerProcess:
        """The real `interlock run` process on this test's prefix."""
        return ControllerProcess(self.docker_host, self.prefix, log_path, **env)

    def get(self, host: str, path: str = "/") -> tuple[int, str]:
        return http_get(self.port, host, path)

    def tasks_seen(self, host: str, requests: int = 30) -> Counter:
        """Which tasks answered ``requests`` fresh requests for ``host``."""
        seen = Counter()
        for _ in range(requests):
            status, body = self.get(host)
            assert status == 200, body
            seen[body.split()[0]] += 1
        return seen


def version_env(version: int) -> list[str]:
    return ["TASK_NAME={{.Task.Name}}", f"VERSION={version}"]


def routed(swarm: SwarmTest, docker_host: str, **settings: Any) -> Routed:
    # Interlock 2's labels have no prefix: only tests of that family read it, so that tests
    # running at once on one bed never route each other's com.docker.lb services.
    values = {"label_prefix": swarm.id, "poll_interval": 0.5, "log_format": "text",
              "label_families": "interlock", **settings}  # fmt: skip
    config = Settings(**values)
    controller = Controller.from_settings(config, swarm.client.api)
    return Routed(swarm, controller, config, swarm.network("net"), docker_host)


def run_cli(docker_host: str, prefix: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The real `interlock` command, as a user runs it, against the bed."""
    environment = {
        **os.environ,
        "DOCKER_HOST": docker_host,
        "INTERLOCK_LABEL_PREFIX": prefix,
        "INTERLOCK_LOG_FORMAT": "text",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


class ControllerProcess:
    """`interlock run` as a real process for one test; its logs go to a file shown on failure."""

    def __init__(
        self,
        docker_host: str,
        prefix: str,
        log_path: str,
        argv: tuple[str, ...] = ("-m", "controller.cli", "run"),
        **env: str,
    ) -> None:
        self.argv = argv  # after the Python interpreter; bench runs its baseline controllers so
        self.environment = {
            **os.environ,
            "DOCKER_HOST": docker_host,
            "INTERLOCK_LABEL_PREFIX": prefix,
            "INTERLOCK_LOG_FORMAT": "text",
            "INTERLOCK_METRICS_PORT": "0",
            **env,
        }
        self.log_path = log_path

    def __enter__(self) -> ControllerProcess:
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, *self.argv],
            env=self.environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        return self

    def logs(self) -> str:
        with open(self.log_path) as handle:
            return handle.read()

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        if exc[0] is not None:
            print(f"--- controller log ---\n{self.logs()[-6000:]}", file=sys.stderr)
