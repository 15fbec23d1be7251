"""Turn the bed engine into a single-node Swarm that stays off the default ports and bridges.

Order matters: ``docker_gwbridge`` must exist (with our own Linux bridge name) *before*
``swarm init``, or Swarm creates it as a Linux bridge called ``docker_gwbridge`` that a user's
engine may own. The routing-mesh ``ingress`` network is removed afterwards: this kernel has no
IPVS, so ingress-mode ports cannot work, and without it such a service fails with a clear error
instead of starting and silently not answering.
"""

from __future__ import annotations

import logging

import docker
import docker.errors
from docker.types import IPAMConfig, IPAMPool

from .config import BedConfig

log = logging.getLogger(__name__)

GWBRIDGE = "docker_gwbridge"
BRIDGE_NAME_OPT = "com.docker.network.bridge.name"


def swarm_state(client: docker.DockerClient) -> str:
    """``LocalNodeState`` of the engine: inactive, pending, active, error or locked."""
    return str(client.info()["Swarm"]["LocalNodeState"])


def is_active_manager(client: docker.DockerClient) -> bool:
    """True when Swarm is active and this node can answer manager calls."""
    swarm = client.info()["Swarm"]
    return swarm["LocalNodeState"] == "active" and bool(swarm.get("ControlAvailable"))


def _gwbridge_options(cfg: BedConfig) -> dict[str, str]:
    """Options of our docker_gwbridge: own bridge name, ports bound to 127.0.0.1 only."""
    return {
        BRIDGE_NAME_OPT: cfg.gwbridge,
        "com.docker.network.bridge.enable_icc": "false",
        "com.docker.network.bridge.enable_ip_masquerade": "false",
        "com.docker.network.bridge.host_binding_ipv4": "127.0.0.1",
    }


def ensure_gwbridge(client: docker.DockerClient, cfg: BedConfig) -> None:
    """Create docker_gwbridge with our options, replacing one that has other options."""
    wanted = _gwbridge_options(cfg)
    try:
        current = client.networks.get(GWBRIDGE)
    except docker.errors.NotFound:
        current = None
    if current is not None:
        if current.attrs.get("Options", {}) == wanted:
            return
        log.info("replacing docker_gwbridge with options %s", current.attrs.get("Options"))
        current.remove()
    ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=cfg.gwbridge_subnet)])
    client.networks.create(GWBRIDGE, driver="bridge", options=wanted, ipam=ipam)


def _remove_ingress(client: docker.DockerClient) -> None:
    """Drop the routing-mesh network (needs IPVS, which this kernel lacks)."""
    for net in client.networks.list(filters={"name": "ingress"}):
        if net.attrs.get("Ingress"):
            log.info("removing ingress network %s", net.name)
            net.remove()


def ensure_swarm(client: docker.DockerClient, cfg: BedConfig) -> None:
    """Make the engine an active single-node manager on 127.0.0.1 with private ports and pools."""
    if is_active_manager(client):
        return
    state = swarm_state(client)
    if state != "inactive":
        log.info("swarm state is %s; leaving and starting over", state)
        client.swarm.leave(force=True)
    ensure_gwbridge(client, cfg)
    log.info("swarm init on 127.0.0.1:%d", cfg.swarm_port)
    client.swarm.init(
        advertise_addr="127.0.0.1",
        listen_addr=f"127.0.0.1:{cfg.swarm_port}",
        data_path_port=cfg.data_path_port,
        default_addr_pool=[cfg.swarm_pool],
        subnet_size=24,
    )
    _remove_ingress(client)
