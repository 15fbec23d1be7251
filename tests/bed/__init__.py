"""A private Docker Engine + single-node Swarm for the Swarm tests (``python -m tests.bed up``).

Use from Python::

    from tests.bed import ensure_bed
    bed = ensure_bed()            # starts or reuses the bed; safe from many processes at once
    client = bed.client()         # docker.DockerClient bound to bed.docker_host
    bed.images.nginx              # local image names (no registry here)

Settings come from ``INTERLOCK_BED_*`` environment variables (see :mod:`tests.bed.config`).
"""

from .bed import Bed, bed_down, bed_status, ensure_bed
from .config import BedConfig, Images

__all__ = ["Bed", "BedConfig", "Images", "bed_down", "bed_status", "ensure_bed"]
