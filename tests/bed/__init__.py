"""A private Docker Engine + single-node Swarm for the Swarm tests (``python -m tests.bed up``).

Use from Python::

    from tests.bed import ensure_bed
    bed = ensure_bed()            # starts or reuses the bed; safe from many processes at once
    client = bed.client()         # docker.DockerClient bound to bed.docker_host
    bed.images.nginx              # local image names (no registry here)

Settings come from ``INTERLOCK_BED_*`` environment variables (see :mod:`tests.bed.config`).

A multi-node Swarm on the bed (``python -m tests.bed up --nodes 3``)::

    from tests.bed.cluster import ensure_cluster
    cluster = ensure_cluster()    # node containers running dockerd; node 1 manages
    cluster.client(2)             # docker.DockerClient on node 2's own engine
    cluster.host_ports(0)         # {1: 28100, 2: 28200, 3: 28300}: 127.0.0.1 ports of port 8000

Per-test namespaces on it: :class:`tests.bed.clusterharness.ClusterTest`.
"""

from .bed import Bed, bed_down, bed_status, ensure_bed
from .config import BedConfig, Images

__all__ = ["Bed", "BedConfig", "Images", "bed_down", "bed_status", "ensure_bed"]
