"""A multi-node Swarm on the bed: ``python -m tests.bed up --nodes 3``.

Each node is a container on the bed engine running Debian's own dockerd (the same 20.10 as the
bed), from an image made like the bed's root filesystem (mmdebstrap, lists in ``images/node/``).
What this relies on is in ../shared/testbed.md, "Several nodes on one machine":

- ``--privileged`` fails here, so each node gets every capability but CAP_SYS_RESOURCE, no
  seccomp, AppArmor, masked or read-only /proc paths, /dev/net/tun, and the host's /sys/fs/cgroup
  read-write (its tasks' cgroups go under ``interlock-bed-nodes/node<i>``);
- a named volume ``interlock-bed-node<i>-data`` at /var/lib/docker (overlay2 cannot run on the
  container's own overlay root), and ``DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1``;
- the nodes sit on one bridge network, ``interlock-bed-nodes`` (10.218.2.0/24, node i at .10+i);
  node 1 inits the Swarm (overlay subnets from 10.220.0.0/16), the others join as workers, and the
  routing-mesh ``ingress`` network is removed (no IPVS in this kernel);
- node i's engine also listens on ``/run/interlock-bed/nodes/node<i>/docker.sock``, a host folder
  bind-mounted into the node, so the host's docker CLI and SDK reach each node directly;
- node i publishes its ports 8000..8000+slots-1 on 127.0.0.1:<port base + 100*i + slot>: a service
  that publishes port 8000+s in host mode answers on every node's own host port;
- the bed's images reach the nodes by ``docker save`` on the bed and ``docker load`` on each node,
  and are reloaded when the bed's image IDs change.

``up`` reuses whatever already works; ``down`` removes the nodes, their volumes, the network, the
socket folders and the nodes' cgroups. Nothing here talks to any engine but the bed's and the
nodes' own sockets.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import IPAMConfig, IPAMPool

from . import imagebuild
from .bed import ensure_bed
from .config import BedConfig, Images
from .engine import client_for

log = logging.getLogger(__name__)

T = TypeVar("T")

NODE_IMAGE = "interlock-bed/node:1"
NODE_IMAGE_DIR = imagebuild.IMAGES_DIR / "node"
NODE_LABEL = "org.interlock-bed.node"  # the node's index, on its container and volume
SPEC_LABEL = "org.interlock-bed.node-spec"  # hash of what the container was created with
NETWORK = "interlock-bed-nodes"
BRIDGE = "ibed_nodes"
SOCKET_DIR_IN_NODE = "/run/interlock-node"
NODE_PORT_BASE = 8000
SWARM_PORT = 2377
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "interlock-bed-nodes"
MAX_NODES = 9
START_TIMEOUT = 120.0
JOIN_TIMEOUT = 120.0
LOCK_TIMEOUT = 1800.0
DOCKERD_FLAGS = (
    "--host=unix:///var/run/docker.sock",
    f"--host=unix://{SOCKET_DIR_IN_NODE}/docker.sock",
    "--group=root",  # the node's `docker` group id means something else on the host
    "--log-opt=max-size=10m",
    "--log-opt=max-file=2",
)


def _env(name: str, default: str) -> str:
    """One ``INTERLOCK_BED_<name>`` setting, falling back to ``default`` when unset or empty."""
    return os.environ.get(f"INTERLOCK_BED_{name}") or default


@dataclass(frozen=True)
class ClusterConfig:
    """Where the nodes live and how they are wired. Build one with :meth:`from_env`."""

    bed: BedConfig
    nodes: int
    subnet: str
    swarm_pool: str
    port_base: int
    slots: int

    @classmethod
    def from_env(cls, nodes: int | None = None) -> ClusterConfig:
        """``INTERLOCK_BED_NODES`` (3), ``_NODES_SUBNET``, ``_NODES_POOL``, ``_NODES_PORT_BASE``
        and ``_NODES_SLOTS``; ``nodes`` overrides the first."""
        cfg = cls(
            bed=BedConfig.from_env(),
            nodes=int(nodes if nodes is not None else _env("NODES", "3")),
            subnet=_env("NODES_SUBNET", "10.218.2.0/24"),
            swarm_pool=_env("NODES_POOL", "10.220.0.0/16"),
            port_base=int(_env("NODES_PORT_BASE", "28000")),
            slots=int(_env("NODES_SLOTS", "8")),
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Refuse settings that would make ports or addresses collide, naming the variable."""
        if not 1 <= self.nodes <= MAX_NODES:
            raise ValueError(f"INTERLOCK_BED_NODES: {self.nodes} is not within 1..{MAX_NODES}")
        if not 1 <= self.slots <= 99:
            raise ValueError(f"INTERLOCK_BED_NODES_SLOTS: {self.slots} is not within 1..99")
        if not (self.port_base >= 1024 and self.host_port(MAX_NODES, self.slots) < 65536):
            raise ValueError(f"INTERLOCK_BED_NODES_PORT_BASE: {self.port_base} is out of range")
        if ipaddress.ip_network(self.subnet).num_addresses < 16 + MAX_NODES:
            raise ValueError(f"INTERLOCK_BED_NODES_SUBNET: {self.subnet} is too small")

    @property
    def indexes(self) -> range:
        """Node numbers, from 1 (the manager)."""
        return range(1, self.nodes + 1)

    def container_name(self, i: int) -> str:
        return f"interlock-bed-node{i}"

    def hostname(self, i: int) -> str:
        """The node's hostname, which is also its Swarm node name (``node.hostname``)."""
        return f"node{i}"

    def volume(self, i: int) -> str:
        return f"interlock-bed-node{i}-data"

    def address(self, i: int) -> str:
        """Node i's fixed address on the nodes' bridge network (what Swarm advertises)."""
        return str(ipaddress.ip_network(self.subnet)[10 + i])

    def gateway(self) -> str:
        return str(ipaddress.ip_network(self.subnet)[1])

    def socket_dir(self, i: int) -> Path:
        """Host folder bind-mounted into node i; its engine's socket appears in it."""
        return self.bed.run_dir / "nodes" / self.hostname(i)

    def docker_host(self, i: int) -> str:
        """``DOCKER_HOST`` of node i's engine, from the host."""
        return f"unix://{self.socket_dir(i) / 'docker.sock'}"

    def node_port(self, slot: int) -> int:
        """The port a service publishes in host mode to use ``slot`` (the same on every node)."""
        return NODE_PORT_BASE + slot

    def host_port(self, i: int, slot: int) -> int:
        """The port on the host's 127.0.0.1 where node i's ``node_port(slot)`` answers."""
        return self.port_base + 100 * i + slot

    @property
    def lock_file(self) -> Path:
        """flock target serialising ``up`` and ``down`` of the nodes across processes."""
        return self.bed.state_dir / "cluster.lock"

    def cgroup_parent(self, i: int) -> str:
        return f"{CGROUP_PARENT}/{self.hostname(i)}"


def _client(docker_host: str, timeout: int = 120) -> docker.DockerClient:
    """A client on one socket (never ``from_env``: DOCKER_HOST may be the user's)."""
    return docker.DockerClient(base_url=docker_host, timeout=timeout)


def answers(docker_host: str) -> bool:
    """True when the engine at ``docker_host`` answers a ping."""
    try:
        client = _client(docker_host, timeout=5)
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        return False
    finally:
        client.close()


@dataclass(frozen=True)
class Node:
    """One node as the tests see it."""

    index: int
    hostname: str
    docker_host: str
    address: str


@dataclass
class Cluster:
    """A running multi-node bed: per-node engines and published ports. Close it when done."""

    config: ClusterConfig
    images: Images
    _clients: dict[int, docker.DockerClient] = field(default_factory=dict, repr=False)

    @property
    def nodes(self) -> list[Node]:
        cfg = self.config
        return [Node(i, cfg.hostname(i), cfg.docker_host(i), cfg.address(i)) for i in cfg.indexes]

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def client(self, i: int) -> docker.DockerClient:
        """A client on node i's engine, made once and kept until :meth:`close`."""
        if i not in self._clients:
            self._clients[i] = _client(self.config.docker_host(i))
        return self._clients[i]

    @property
    def manager_client(self) -> docker.DockerClient:
        return self.client(1)

    def host_ports(self, slot: int) -> dict[int, int]:
        """Node index -> the host port on 127.0.0.1 where that node's ``node_port(slot)`` is."""
        return {i: self.config.host_port(i, slot) for i in self.config.indexes}

    def env(self, i: int = 1) -> dict[str, str]:
        """Environment that points the docker CLI/SDK at node i and names the bed's images."""
        env = {"DOCKER_HOST": self.config.docker_host(i)}
        for kind, name in self.images.as_dict().items():
            env[f"INTERLOCK_BED_{kind.upper()}_IMAGE"] = name
        return env

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


# -- locking -------------------------------------------------------------------------------


@contextlib.contextmanager
def locked(path: Path, shared: bool = False, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an flock on ``path`` (exclusive, or shared) for the block; fail after ``timeout``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        while True:
            try:
                fcntl.flock(handle, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"lock {path} busy for {timeout}s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- the node image and the network --------------------------------------------------------


def ensure_node_image(client: docker.DockerClient, cfg: ClusterConfig) -> str:
    """Build the node image if missing or stale (a minute cold); returns its image ID."""
    return imagebuild.ensure_rootfs(client, cfg.bed, NODE_IMAGE_DIR, NODE_IMAGE)


def ensure_network(client: docker.DockerClient, cfg: ClusterConfig) -> None:
    """The nodes' bridge network with a fixed subnet and our own Linux bridge name."""
    try:
        network = client.networks.get(NETWORK)
    except docker.errors.NotFound:
        network = None
    if network is not None:
        subnets = [c.get("Subnet") for c in network.attrs["IPAM"].get("Config") or []]
        if subnets == [cfg.subnet]:
            return
        log.info("replacing network %s (subnets %s)", NETWORK, subnets)
        network.remove()
    ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=cfg.subnet, gateway=cfg.gateway())])
    options = {"com.docker.network.bridge.name": BRIDGE}
    client.networks.create(NETWORK, driver="bridge", ipam=ipam, options=options)


# -- node containers -----------------------------------------------------------------------


def _entrypoint(cfg: ClusterConfig, i: int) -> list[str]:
    """dockerd as the node's main process; pidfiles left by an earlier run of the same container
    would stop it (or make it wait for a containerd that is gone)."""
    flags = " ".join((*DOCKERD_FLAGS, f"--cgroup-parent={cfg.cgroup_parent(i)}"))
    script = (
        f"rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid; exec dockerd {flags}"
    )
    return ["sh", "-c", script]


def node_spec(cfg: ClusterConfig, i: int, image_id: str) -> dict[str, Any]:
    """Everything node i's container is created with (its hash goes into SPEC_LABEL): the
    container's settings, its host settings, and its address on the nodes' network."""
    ports = [cfg.node_port(s) for s in range(cfg.slots)]
    return {
        "container": {
            "image": image_id,
            "name": cfg.container_name(i),
            "hostname": cfg.hostname(i),
            "entrypoint": _entrypoint(cfg, i),
            "environment": {"DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"},
            "ports": ports,
        },
        "host": {
            "cap_add": ["ALL"],
            "cap_drop": ["SYS_RESOURCE"],  # --privileged fails: the sandbox lacks it
            "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
            "devices": ["/dev/net/tun:/dev/net/tun:rwm"],
            "binds": {
                str(CGROUP_ROOT): {"bind": str(CGROUP_ROOT), "mode": "rw"},
                cfg.volume(i): {"bind": "/var/lib/docker", "mode": "rw"},
                str(cfg.socket_dir(i)): {"bind": SOCKET_DIR_IN_NODE, "mode": "rw"},
            },
            "port_bindings": {p: ("127.0.0.1", cfg.host_port(i, s)) for s, p in enumerate(ports)},
            "network_mode": NETWORK,
            "init": True,
            "log_config": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "2"}},
        },
        "address": cfg.address(i),
    }


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _create_node(client: docker.DockerClient, cfg: ClusterConfig, i: int, image_id: str) -> None:
    """Create and start node i's container (and its labelled volume).

    The low-level API, because ``--security-opt systempaths=unconfined`` is only the docker CLI's
    name for empty ``MaskedPaths`` and ``ReadonlyPaths`` (the engine refuses it as a security
    option), and docker-py has no argument for those: nested dockerd writes to /proc/sys."""
    spec = node_spec(cfg, i, image_id)
    with contextlib.suppress(docker.errors.APIError):
        client.volumes.create(cfg.volume(i), labels={NODE_LABEL: str(i)})
    cfg.socket_dir(i).mkdir(parents=True, exist_ok=True)
    host_config = client.api.create_host_config(**spec["host"])
    host_config["MaskedPaths"], host_config["ReadonlyPaths"] = [], []
    endpoint = client.api.create_endpoint_config(ipv4_address=spec["address"])
    log.info("starting node %d (%s at %s)", i, cfg.container_name(i), spec["address"])
    created = client.api.create_container(
        **spec["container"],
        labels={NODE_LABEL: str(i), SPEC_LABEL: spec_hash(spec)},
        host_config=host_config,
        networking_config=client.api.create_networking_config({NETWORK: endpoint}),
    )
    client.api.start(created["Id"])


def _node_container(client: docker.DockerClient, cfg: ClusterConfig, i: int) -> Container | None:
    try:
        return client.containers.get(cfg.container_name(i))
    except docker.errors.NotFound:
        return None


def _remove_node(client: docker.DockerClient, cfg: ClusterConfig, i: int) -> None:
    """Remove node i's container, volume and socket folder (all that makes it a node)."""
    container = _node_container(client, cfg, i)
    if container is not None:
        log.info("removing node %d", i)
        container.remove(force=True)
    with contextlib.suppress(docker.errors.NotFound):
        client.volumes.get(cfg.volume(i)).remove(force=True)
    shutil.rmtree(cfg.socket_dir(i), ignore_errors=True)


def ensure_node(client: docker.DockerClient, cfg: ClusterConfig, i: int, image_id: str) -> None:
    """Reuse node i when it was made from the same spec, start it if stopped; else make it anew
    (from a fresh volume: a node with another image or address could not rejoin anyway)."""
    wanted = spec_hash(node_spec(cfg, i, image_id))
    container = _node_container(client, cfg, i)
    if container is not None and container.labels.get(SPEC_LABEL) != wanted:
        log.info("node %d was created from another spec; replacing it", i)
        _remove_node(client, cfg, i)
        container = None
    if container is None:
        _create_node(client, cfg, i, image_id)
    elif container.status != "running":
        log.info("starting stopped node %d", i)
        cfg.socket_dir(i).mkdir(parents=True, exist_ok=True)
        container.start()


def wait_engine(client: docker.DockerClient, cfg: ClusterConfig, i: int) -> None:
    """Wait until node i's engine answers on its host socket; fail with its log if it exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while not answers(cfg.docker_host(i)):
        container = _node_container(client, cfg, i)
        if container is None or container.status == "exited" or time.monotonic() > deadline:
            logs = container.logs(tail=30).decode(errors="replace") if container else "(gone)"
            raise RuntimeError(f"node {i}'s dockerd does not answer:\n{logs}")
        time.sleep(0.3)


# -- images --------------------------------------------------------------------------------


def _image_ids(client: docker.DockerClient, names: list[str]) -> dict[str, str | None]:
    ids: dict[str, str | None] = {}
    for name in names:
        try:
            ids[name] = str(client.images.get(name).id)
        except docker.errors.ImageNotFound:
            ids[name] = None
    return ids


def _docker_cli(docker_host: str, *args: str) -> None:
    """Run the host's docker CLI against one of our sockets (never the environment's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_HOST"] = docker_host
    done = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} on {docker_host}: {done.stderr.strip()}")


def ensure_node_images(bed_client: docker.DockerClient, cfg: ClusterConfig) -> None:
    """Load the bed's images into every node whose copies differ (``docker save | load``: image
    IDs survive it, so equal IDs mean equal images)."""
    names = list(cfg.bed.images.as_dict().values())
    wanted = _image_ids(bed_client, names)
    stale = []
    for i in cfg.indexes:
        with contextlib.closing(_client(cfg.docker_host(i))) as node:
            if _image_ids(node, names) != wanted:
                stale.append(i)
    if not stale:
        return
    started = time.monotonic()
    tarball = cfg.bed.state_dir / "cluster-images.tar"
    try:
        _docker_cli(cfg.bed.docker_host, "save", "-o", str(tarball), *names)
        _parallel([lambda i=i: _load(cfg, i, tarball) for i in stale])
    finally:
        tarball.unlink(missing_ok=True)
    log.info("images loaded into node(s) %s in %.1fs", stale, time.monotonic() - started)


def _load(cfg: ClusterConfig, i: int, tarball: Path) -> None:
    """Load the image archive into node i, then drop the images the new ones replaced."""
    _docker_cli(cfg.docker_host(i), "load", "-q", "-i", str(tarball))
    with contextlib.closing(_client(cfg.docker_host(i))) as node:
        node.images.prune(filters={"dangling": True})


def _parallel(jobs: list[Callable[[], T]]) -> list[T]:
    """Run independent per-node jobs at once; the first error is raised."""
    if len(jobs) <= 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return [f.result() for f in [pool.submit(job) for job in jobs]]


# -- the Swarm -----------------------------------------------------------------------------


def _swarm_info(client: docker.DockerClient) -> dict[str, Any]:
    return dict(client.info()["Swarm"])


def _ensure_manager(cfg: ClusterConfig) -> str:
    """Make node 1 an active manager of its own Swarm; returns the Swarm's cluster ID."""
    with contextlib.closing(_client(cfg.docker_host(1))) as manager:
        info = _swarm_info(manager)
        if info["LocalNodeState"] == "active" and info.get("ControlAvailable"):
            return str(info["Cluster"]["ID"])
        if info["LocalNodeState"] != "inactive":
            log.info("node 1's Swarm state is %s; leaving it", info["LocalNodeState"])
            manager.swarm.leave(force=True)
        log.info("swarm init on node 1 (%s)", cfg.address(1))
        manager.swarm.init(
            advertise_addr=cfg.address(1),
            listen_addr=f"0.0.0.0:{SWARM_PORT}",
            default_addr_pool=[cfg.swarm_pool],
            subnet_size=24,
        )
        for network in manager.networks.list(filters={"name": "ingress"}):
            if network.attrs.get("Ingress"):
                network.remove()  # the routing mesh needs IPVS, which this kernel lacks
        return str(_swarm_info(manager)["Cluster"]["ID"])


def _ready_node_ids(manager: docker.DockerClient) -> dict[str, str]:
    """Node ID -> hostname of every node the manager sees as ready."""
    return {
        n.id: n.attrs["Description"]["Hostname"]
        for n in manager.nodes.list()
        if n.attrs["Status"]["State"] == "ready"
    }


def _ensure_worker(cfg: ClusterConfig, i: int, cluster_id: str, token: str) -> str:
    """Make node i a worker of the manager's Swarm (leaving any other); returns its node ID."""
    with contextlib.closing(_client(cfg.docker_host(i))) as worker:
        info = _swarm_info(worker)
        joined = (info.get("Cluster") or {}).get("ID")
        if info["LocalNodeState"] == "active" and joined == cluster_id:
            return str(info["NodeID"])
        if info["LocalNodeState"] == "active" and not joined:
            # A worker cannot see the cluster ID; trust it if the manager lists it as ready.
            with contextlib.closing(_client(cfg.docker_host(1))) as manager:
                if info["NodeID"] in _ready_node_ids(manager):
                    return str(info["NodeID"])
        if info["LocalNodeState"] != "inactive":
            log.info("node %d's Swarm state is %s; leaving it", i, info["LocalNodeState"])
            worker.swarm.leave(force=True)
        log.info("node %d joins the Swarm", i)
        worker.swarm.join(
            remote_addrs=[f"{cfg.address(1)}:{SWARM_PORT}"],
            join_token=token,
            advertise_addr=cfg.address(i),
            listen_addr=f"0.0.0.0:{SWARM_PORT}",
        )
        return str(_swarm_info(worker)["NodeID"])


def ensure_swarm(cfg: ClusterConfig) -> None:
    """Node 1 manages, every other node is a ready worker, and no other node is listed."""
    cluster_id = _ensure_manager(cfg)
    with contextlib.closing(_client(cfg.docker_host(1))) as manager:
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        mine = {str(_swarm_info(manager)["NodeID"])}
        mine |= {_ensure_worker(cfg, i, cluster_id, token) for i in cfg.indexes if i > 1}
        for node in manager.nodes.list():
            if node.id not in mine:
                log.info("removing stale Swarm node %s", node.attrs["Description"]["Hostname"])
                manager.api.remove_node(node.id, force=True)
        _wait_ready(manager, mine)


def _wait_ready(manager: docker.DockerClient, ids: set[str]) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT
    while not ids <= set(_ready_node_ids(manager)):
        if time.monotonic() > deadline:
            seen = {n.id[:12]: n.attrs["Status"] for n in manager.nodes.list()}
            raise RuntimeError(f"Swarm nodes not ready within {JOIN_TIMEOUT}s: {seen}")
        time.sleep(0.5)


# -- up, down, status ----------------------------------------------------------------------


def _extra_nodes(client: docker.DockerClient, cfg: ClusterConfig) -> list[int]:
    """Indexes of node containers beyond ``cfg.nodes`` (an earlier, larger cluster)."""
    found = client.containers.list(all=True, filters={"label": NODE_LABEL})
    return sorted(int(c.labels[NODE_LABEL]) for c in found if int(c.labels[NODE_LABEL]) > cfg.nodes)


def node_count(cfg: BedConfig) -> int:
    """How many nodes the bed runs now (the highest node index; 0 when none or no engine)."""
    if not answers(cfg.docker_host):
        return 0
    with contextlib.closing(client_for(cfg, timeout=30)) as bed:
        found = bed.containers.list(all=True, filters={"label": NODE_LABEL})
    return max((int(c.labels[NODE_LABEL]) for c in found), default=0)


def ensure_cluster(cfg: ClusterConfig | None = None) -> Cluster:
    """Bring up the bed and the nodes, reusing whatever already works; safe from many processes."""
    cfg = cfg or ClusterConfig.from_env()
    ensure_bed(cfg.bed)
    started = time.monotonic()
    with locked(cfg.lock_file), contextlib.closing(client_for(cfg.bed, timeout=600)) as bed:
        image_id = ensure_node_image(bed, cfg)
        ensure_network(bed, cfg)
        for i in _extra_nodes(bed, cfg):
            _remove_node(bed, cfg, i)
        for i in cfg.indexes:
            ensure_node(bed, cfg, i, image_id)
        _parallel([lambda i=i: wait_engine(bed, cfg, i) for i in cfg.indexes])
        ensure_node_images(bed, cfg)
        ensure_swarm(cfg)
    log.info("%d-node Swarm up in %.1fs", cfg.nodes, time.monotonic() - started)
    return Cluster(cfg, cfg.bed.images)


def _remove_cgroups(cfg: ClusterConfig) -> None:
    """rmdir the nodes' (now empty) cgroups under every controller, deepest first."""
    for controller in CGROUP_ROOT.iterdir():
        top = controller / CGROUP_PARENT
        if not top.is_dir():
            continue
        folders = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for folder in [*folders, top]:
            with contextlib.suppress(OSError):
                folder.rmdir()


def cluster_down(cfg: ClusterConfig | None = None) -> None:
    """Remove every node (whatever their number), their volumes, the network and socket folders;
    a bed engine that is not up has nothing of ours to remove but folders."""
    cfg = cfg or ClusterConfig.from_env()
    with locked(cfg.lock_file):
        if answers(cfg.bed.docker_host):
            with contextlib.closing(client_for(cfg.bed)) as bed:
                for container in bed.containers.list(all=True, filters={"label": NODE_LABEL}):
                    _remove_node(bed, cfg, int(container.labels[NODE_LABEL]))
                for volume in bed.volumes.list(filters={"label": NODE_LABEL}):
                    volume.remove(force=True)
                with contextlib.suppress(docker.errors.NotFound):
                    bed.networks.get(NETWORK).remove()
        shutil.rmtree(cfg.bed.run_dir / "nodes", ignore_errors=True)
        time.sleep(0.5)  # the nodes' processes leave their cgroups as they die
        _remove_cgroups(cfg)


def _node_status(bed: docker.DockerClient, cfg: ClusterConfig, i: int) -> dict[str, Any]:
    """Container and engine state of node i, as seen from the bed and from its own socket."""
    container = _node_container(bed, cfg, i)
    row: dict[str, Any] = {
        "node": cfg.hostname(i),
        "container": container.status if container else "missing",
        "docker_host": cfg.docker_host(i),
        "address": cfg.address(i),
        "ports": f"127.0.0.1:{cfg.host_port(i, 0)}-{cfg.host_port(i, cfg.slots - 1)}"
        f" -> {cfg.node_port(0)}-{cfg.node_port(cfg.slots - 1)}",
        "engine": answers(cfg.docker_host(i)),
    }
    if row["engine"]:
        names = list(cfg.bed.images.as_dict().values())
        with contextlib.closing(_client(cfg.docker_host(i), timeout=30)) as node:
            row["swarm"] = _swarm_info(node)["LocalNodeState"]
            row["images_current"] = _image_ids(node, names) == _image_ids(bed, names)
    return row


def _swarm_nodes(cfg: ClusterConfig) -> list[dict[str, str]]:
    """The manager's node list: hostname, role, availability, state."""
    with contextlib.closing(_client(cfg.docker_host(1), timeout=30)) as manager:
        if not _swarm_info(manager).get("ControlAvailable"):
            return []
        return sorted(
            (
                {
                    "hostname": n.attrs["Description"]["Hostname"],
                    "role": n.attrs["Spec"]["Role"],
                    "availability": n.attrs["Spec"]["Availability"],
                    "state": n.attrs["Status"]["State"],
                }
                for n in manager.nodes.list()
            ),
            key=lambda row: row["hostname"],
        )


def cluster_status(cfg: ClusterConfig | None = None) -> dict[str, Any]:
    """What is up and what is missing, without changing anything."""
    cfg = cfg or ClusterConfig.from_env()
    status: dict[str, Any] = {"nodes": [], "swarm_nodes": [], "up": False}
    if not answers(cfg.bed.docker_host):
        return status
    with contextlib.closing(client_for(cfg.bed, timeout=30)) as bed:
        status["nodes"] = [_node_status(bed, cfg, i) for i in cfg.indexes]
        extra = _extra_nodes(bed, cfg)
    if extra:
        status["extra_nodes"] = [cfg.hostname(i) for i in extra]
    if status["nodes"][0]["engine"]:
        status["swarm_nodes"] = _swarm_nodes(cfg)
    ready = [n for n in status["swarm_nodes"] if n["state"] == "ready"]
    status["up"] = (
        all(n["engine"] and n["swarm"] == "active" and n["images_current"] for n in status["nodes"])
        and len(ready) == len(status["swarm_nodes"]) == cfg.nodes
    )
    return status
