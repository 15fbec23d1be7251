"""The controller and its agents as services on the 3-node bed, for the agent tests and bench.

``controller_image(cluster)`` builds the controller's image from this checkout on the bed engine
(``scripts/build-image.sh`` on the bed's own Python base, tagged by a hash of the sources, so an
unchanged checkout reuses it) and loads it into every node (``docker save | docker load``).

``AgentEdge`` deploys, in one test's namespace (its id is the label prefix): the token secret,
an overlay network only the controller and the agents join, the controller (one replica on the
manager, ``endpoint_mode: dnsrr``, node 1's socket, the agents' API on port 9180), the agents
(global, ``interlock agent``, each node's own socket), and proxies: a global nginx and a global
HAProxy in signal mode, each on its own port slot, so every node answers on its own 127.0.0.1
port for each kind. Backends go on the proxies' network. ``status()`` runs ``interlock status
--json`` inside the controller's container, as the README says to.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from docker.models.services import Service
from docker.types import EndpointSpec, RestartPolicy, SecretReference, UpdateConfig

from controller.acmeclient import key_pem
from controller.gateway import Gateway
from tests.bed.cluster import Cluster, locked
from tests.bed.clusterharness import ClusterTest, Slot
from tests.bed.probes import http_get, wait_until
from tests.swarm.load import Load, LoadResult, report

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("nginx", "haproxy")
AGENT_PORT = 9180
TOKEN_FILE = "interlock-agent-token"
ACCOUNT_FILE = "interlock-acme-account"  # the controller's default account key file
# No CA is reachable from the nodes: a test's ACME certificate is made as if issued, and the
# controller is pointed at a port where nothing listens, never at a public CA.
NO_CA = {"INTERLOCK_ACME_DIRECTORY": "http://127.0.0.1:9/directory"}
APP_PORT = "8080"
MIN_REQUESTS = 50  # per port under load: a quiet run sends 277+ in the shortest; a dead proxy ~0
ALL = (1, 2, 3)
SOURCES = ("controller", "templates", "image", "pyproject.toml", "Dockerfile")
IMAGE_REPO = "interlock-bed/controller"


def _source_hash() -> str:
    digest = hashlib.sha256()
    for top in SOURCES:
        path = ROOT / top
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts:
                continue
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:12]


def _docker(docker_host: str, *args: str, stdin: Any = None, stdout: Any = None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_HOST"] = docker_host
    done = subprocess.run(
        ["docker", *args], env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, check=False
    )
    if done.returncode:
        raise RuntimeError(f"docker {' '.join(args)} on {docker_host}: {done.stderr.decode()}")


def _image_id(docker_host: str, name: str) -> str | None:
    client = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        return str(client.images.get(name).id)
    except docker.errors.ImageNotFound:
        return None
    finally:
        client.close()


def _remove_older(docker_host: str, keep: str) -> None:
    """Drop the earlier source builds (other ``src-*`` tags of the image) on one engine."""
    client = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        for image in client.images.list(name=IMAGE_REPO):
            tags = [t for t in image.tags if t.startswith(f"{IMAGE_REPO}:src-") and t != keep]
            for tag in tags:
                with contextlib.suppress(docker.errors.APIError):
                    client.images.remove(tag)
    finally:
        client.close()


def controller_image(cluster: Cluster) -> str:
    """The controller's image of this checkout, on the bed and on every node (built, loaded
    only when missing); safe from several processes."""
    name = f"{IMAGE_REPO}:src-{_source_hash()}"
    bed = cluster.config.bed
    with locked(bed.state_dir / "controller-image.lock"):
        started = time.monotonic()
        if _image_id(bed.docker_host, name) is None:
            env = {
                **os.environ,
                "DOCKER_HOST": bed.docker_host,
                "BASE": bed.images.python,
                "IMAGE": name,
                "PYTHON": sys.executable,
            }
            done = subprocess.run(
                ["bash", "scripts/build-image.sh"], cwd=ROOT, env=env, capture_output=True
            )
            if done.returncode:
                raise RuntimeError(f"build-image.sh failed:\n{done.stderr.decode()[-3000:]}")
            _remove_older(bed.docker_host, name)
        wanted = _image_id(bed.docker_host, name)
        stale = [n for n in cluster.nodes if _image_id(n.docker_host, name) != wanted]
        if stale:
            tarball = bed.state_dir / "controller-image.tar"
            try:
                _docker(bed.docker_host, "save", "-o", str(tarball), name)
                for node in stale:
                    with tarball.open("rb") as handle:
                        _docker(
                            node.docker_host, "load", "-q", stdin=handle, stdout=subprocess.PIPE
                        )
                    _remove_older(node.docker_host, name)
            finally:
                tarball.unlink(missing_ok=True)
        took = time.monotonic() - started
        print(f"controller image {name} on the bed and {len(stale)} node(s) loaded in {took:.1f}s")
    return name


@dataclass
class AgentEdge:
    """One test's controller, agents and proxies on the nodes (see the module doc)."""

    swarm: ClusterTest
    image: str
    env: dict[str, str] = field(default_factory=dict)
    proxies: dict[str, Service] = field(default_factory=dict)
    slots: dict[str, Slot] = field(default_factory=dict)
    controller: Service | None = None
    agents: Service | None = None

    def __post_init__(self) -> None:
        self.prefix = self.swarm.id
        self.net = self.swarm.network("proxy")
        self.control_net = self.swarm.network("agents", attachable=False)
        self.token = self.swarm.secret("agent-token", secrets.token_hex(32))
        # The controller's ACME account key: ACME certificates reach the proxies in place.
        self.account_pem = key_pem(ec.generate_private_key(ec.SECP256R1())).encode()
        self.account = self.swarm.secret("acme-account", self.account_pem)
        # Each node's own volume of HAProxy runtime sockets, shared by its agent and its HAProxy
        # proxy (stack.yml's `haproxy-runtime`).
        self.runtime_volume = f"{self.prefix}-runtime"

    def label(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def _secret(self) -> list[SecretReference]:
        return [SecretReference(self.token.id, self.token.name, filename=TOKEN_FILE)]

    def _env(self, extra: dict[str, str]) -> list[str]:
        values = {
            "INTERLOCK_LABEL_PREFIX": self.prefix,
            "INTERLOCK_LOG_FORMAT": "text",
            "INTERLOCK_MODE": "signal",
            **self.env,
            **extra,
        }
        return [f"{k}={v}" for k, v in values.items()]

    # -- the parts -------------------------------------------------------------------------

    def deploy_controller(self) -> Service:
        """One replica on the manager, reachable by its name on the agents' network (dnsrr:
        there are no VIPs on this bed, nor need for one)."""
        self.controller = self.swarm.service(
            "controller",
            self.image,
            args=["run"],
            env=self._env({"INTERLOCK_AGENT_PORT": str(AGENT_PORT), **NO_CA}),
            mounts=["/var/run/docker.sock:/var/run/docker.sock:rw"],
            networks=[self.control_net.name, self.net.name],
            secrets=[
                *self._secret(),
                SecretReference(self.account.id, self.account.name, filename=ACCOUNT_FILE),
            ],
            endpoint_spec=EndpointSpec(mode="dnsrr"),
            constraints=["node.role == manager"],
            restart_policy=RestartPolicy(condition="any", delay=1_000_000_000),
            labels={self.label("ext.controller"): "true"},
        )
        self.swarm.wait_running(self.controller, timeout=90)
        return self.controller

    def deploy_agents(self) -> Service:
        """One agent on every node, with that node's socket."""
        url = f"http://{self.swarm.name('controller')}:{AGENT_PORT}"
        self.agents = self.swarm.global_service(
            "agent",
            self.image,
            args=["agent"],
            env=self._env({"INTERLOCK_AGENT_URL": url}),
            mounts=[
                "/var/run/docker.sock:/var/run/docker.sock:rw",
                f"{self.runtime_volume}:/var/run/interlock:rw",
            ],
            networks=[self.control_net.name],
            secrets=self._secret(),
            restart_policy=RestartPolicy(condition="any", delay=1_000_000_000),
        )
        return self.agents

    def deploy_proxy(
        self,
        kind: str,
        nodes: Iterable[int] | None = None,
        mode: str = "signal",
        image: str = "",
        key: str = "",
    ) -> Service:
        """A global proxy of ``kind`` (``image``, default the bed's for ``kind``) on its own
        slot (signal mode unless told), kept under ``key`` (default ``kind``); its containers
        carry the proxy label, which is what lets an agent touch them."""
        image = image or (self.swarm.images.nginx if kind == "nginx" else self.swarm.images.haproxy)
        key = key or kind
        self.slots[key] = self.swarm.slot()
        labels = {self.label("ext.name"): kind, self.label("ext.mode"): mode}
        mounts = [f"{self.runtime_volume}:/var/lib/haproxy:rw"] if kind == "haproxy" else []
        self.proxies[key] = self.swarm.global_service(
            f"{key}-proxy",
            image,
            nodes=nodes,
            slot=self.slots[key],
            labels=labels,
            container_labels={self.label("ext.name"): kind},
            networks=[self.net.name],
            mounts=mounts,
        )
        return self.proxies[key]

    def remove_volumes(self) -> None:
        """The runtime volume on every node (after cleanup: no container uses it then)."""
        for i in self.swarm.cluster.config.indexes:
            with contextlib.suppress(docker.errors.APIError):
                self.swarm.cluster.client(i).volumes.get(self.runtime_volume).remove(force=True)

    def app(self, suffix: str, host: str, replicas: int | None = None, **kwargs: Any) -> Service:
        """A backend routed to ``host``: global (a task per node) unless ``replicas`` is given
        (then spread at most one per node); each answer names its task, node and version."""
        kwargs.setdefault("env", ["TASK_NAME={{.Task.Name}}@{{.Node.Hostname}}", "VERSION=1"])
        common = {
            "networks": [self.net.name],
            "labels": {self.label("hostname"): host, self.label("port"): APP_PORT},
            "stop_grace_period": 10_000_000_000,
            **kwargs,
        }
        if replicas is None:
            return self.swarm.global_service(suffix, self.swarm.images.backend, **common)
        service = self.swarm.service(
            suffix,
            self.swarm.images.backend,
            mode={"Replicated": {"Replicas": replicas}},
            maxreplicas=1,
            **common,
        )
        self.swarm.wait_running(service, timeout=90)
        return service

    # -- looking at it ---------------------------------------------------------------------

    def ports(self, nodes: Iterable[int] | None = None) -> list[tuple[str, int, int]]:
        """(kind, node, 127.0.0.1 port) of every proxy on every node (or on ``nodes``)."""
        chosen = set(nodes) if nodes is not None else set(self.swarm.cluster.config.indexes)
        return [
            (kind, i, port)
            for kind, slot in self.slots.items()
            for i, port in slot.host_ports.items()
            if i in chosen
        ]

    def answers(self, host: str, contains: str = "", status: int = 200, nodes=None) -> bool:
        """Whether every proxy on every node answers ``host`` so."""
        for _, _, port in self.ports(nodes):
            try:
                code, body = http_get(port, host, timeout=3.0)
            except OSError:
                return False
            if code != status or contains not in body:
                return False
        return True

    def wait_everywhere(
        self, host: str, contains: str = "", status: int = 200, timeout: float = 30.0, nodes=None
    ) -> float:
        """Wait until every proxy on every node answers ``host`` so; returns the seconds."""
        started = time.monotonic()
        wait_until(
            lambda: self.answers(host, contains, status, nodes),
            timeout,
            0.05,
            f"{host} -> {status} {contains!r} through every proxy on every node",
        )
        return time.monotonic() - started

    def controller_container(self) -> Any:
        """The controller's running container (on node 1, the manager)."""
        (task,) = self.swarm.tasks(self.controller)
        container_id = task["Status"]["ContainerStatus"]["ContainerID"]
        return self.swarm.cluster.client(1).containers.get(container_id)

    def status(self) -> dict[str, Any]:
        """`interlock status --json` inside the controller's container."""
        result = self.controller_container().exec_run(["interlock", "status", "--json"])
        text = result.output.decode(errors="replace")
        assert result.exit_code == 0, text
        return json.loads(text[text.index("{") :])

    def task_rows(self) -> list[dict[str, Any]]:
        return list(self.status().get("tasks") or [])

    def proxy_containers(self, kind: str) -> dict[str, str]:
        """Node hostname -> id of the running container of ``kind``'s proxy there."""
        return {
            node: tasks[0]["Status"]["ContainerStatus"]["ContainerID"]
            for node, tasks in self.swarm.tasks_by_node(self.proxies[kind]).items()
        }

    def proxy_log(self, kind: str, node: int, since: int, exclude: str = "", tail=60) -> str:
        """What ``kind``'s proxy on ``node`` wrote since ``since`` (Unix time), lines that
        contain ``exclude`` left out; the last ``tail`` lines."""
        container = self.proxy_containers(kind).get(f"node{node}")
        if container is None:
            return "(no proxy container)"
        raw = self.swarm.cluster.client(node).api.logs(container, since=since, timestamps=True)
        lines = [
            x for x in raw.decode(errors="replace").splitlines() if not exclude or exclude not in x
        ]
        return "\n".join(lines[-tail:])

    def logs(self, service: Service | None, tail: int = 200) -> str:
        if service is None:
            return ""
        with contextlib.suppress(docker.errors.APIError, requests.RequestException):
            raw = Gateway(self.swarm.client.api).service_output(service.id, 30, str(tail))
            return raw.decode(errors="replace")
        return ""


class Loads:
    """wrk through every proxy's port on ``nodes`` at once, until ``stop()``."""

    def __init__(self, e: AgentEdge, host: str, nodes=ALL, seconds: int = 110, kinds=KINDS) -> None:
        self.edge, self.ports = e, [p for p in e.ports(nodes) if p[0] in kinds]
        self.loads = [Load(port, host, seconds=seconds, connections=2) for _, _, port in self.ports]

    def __enter__(self) -> Loads:
        self.started = int(time.time()) - 1
        for load in self.loads:
            load.__enter__()
        return self

    def stop(self) -> list[LoadResult]:
        for load in self.loads:
            if load.process.poll() is None:
                os.kill(load.process.pid, signal.SIGINT)
        return [load.wait() for load in self.loads]

    def __exit__(self, *exc: object) -> None:
        if any(load.result is None for load in self.loads):
            self.stop()

    def check(self, name: str) -> None:
        """Every port carried load and lost nothing; the counts go to the run's summary."""
        total: Counter = Counter()
        for (kind, node, _), load in zip(self.ports, self.loads, strict=True):
            result = load.result
            assert result is not None
            report(f"agents, {name}: {kind} via node{node}", result)
            total["requests"] += result.requests
            total["failed"] += result.failed
        print(f"{name}: {dict(total)} over {len(self.loads)} ports")
        for (kind, node, _), load in zip(self.ports, self.loads, strict=True):
            result = load.result
            assert result.requests >= MIN_REQUESTS, (kind, node, result.summary())
            if result.failed:
                print(f"{kind} on node{node}, answers other than 200 in its access log:")
                print(self.edge.proxy_log(kind, node, self.started, exclude='"status":200'))
            assert result.failed == 0, (kind, node, result.summary(), result.output)


def relabel(e: AgentEdge, service: Service, host: str) -> None:
    """Move a routed service to another host name."""

    def mutate(spec: dict) -> None:
        spec["Labels"][e.label("hostname")] = host

    e.swarm.update_service(service, mutate)


def versioned_update_config() -> UpdateConfig:
    """One task at a time, stop-first, 1 s apart: a rolling update of a backend."""
    return UpdateConfig(parallelism=1, delay=1_000_000_000, order="stop-first")
