"""Build the bed's images locally: there is no registry to pull from.

One Debian root filesystem (mmdebstrap, packages from ``images/rootfs/packages.txt``) is imported
as ``interlock-bed/rootfs:1``; each image is then a thin classic-builder layer ``FROM`` it, built
from ``images/<name>/``. The multi-node bed's node image is a second root filesystem, made the
same way from the lists in ``images/node/`` (see :mod:`tests.bed.cluster`). Every image carries
a label with a hash of its inputs (for derived images this includes the root filesystem's image
ID), and is rebuilt only when that hash changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from .config import BedConfig

log = logging.getLogger(__name__)

IMAGES_DIR = Path(__file__).parent / "images"
ROOTFS_IMAGE = "interlock-bed/rootfs:1"
ROOTFS_DIR = IMAGES_DIR / "rootfs"
HASH_LABEL = "org.interlock-bed.inputs"
MMDEBSTRAP_TIMEOUT = 900


def _lines(path: Path) -> list[str]:
    """Non-empty, non-comment lines of an input list."""
    text = path.read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def mmdebstrap_argv(cfg: BedConfig, target: Path, folder: Path = ROOTFS_DIR) -> list[str]:
    """The mmdebstrap call for the package and exclude lists in ``folder``;
    ``INTERLOCK_BED_MIRROR`` (optional) replaces Debian's default mirror."""
    argv = ["mmdebstrap", "--variant=minbase", "--format=tar"]  # not --quiet: keep apt's errors
    argv.append("--include=" + ",".join(_lines(folder / "packages.txt")))
    argv += [f"--dpkgopt=path-exclude={pattern}" for pattern in _lines(folder / "excludes.txt")]
    argv += [cfg.suite, str(target)]
    mirror = os.environ.get("INTERLOCK_BED_MIRROR")
    if mirror:
        argv.append(mirror)
    return argv


def rootfs_hash(cfg: BedConfig, folder: Path = ROOTFS_DIR) -> str:
    """Hash of everything that shapes the root filesystem (the command line names all inputs)."""
    argv = mmdebstrap_argv(cfg, Path("TARGET"), folder)
    return hashlib.sha256("\0".join(argv).encode()).hexdigest()[:16]


def dir_hash(directory: Path, salt: str) -> str:
    """Hash of a build directory's files (names and bytes) plus ``salt`` (the base image ID)."""
    digest = hashlib.sha256(salt.encode())
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        digest.update(str(path.relative_to(directory)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def current_hash(client: docker.DockerClient, name: str) -> str | None:
    """The inputs hash an existing image was built from, or None if there is no such image."""
    try:
        image = client.images.get(name)
    except docker.errors.ImageNotFound:
        return None
    return (image.labels or {}).get(HASH_LABEL)


def build_rootfs(
    client: docker.DockerClient,
    cfg: BedConfig,
    wanted: str,
    folder: Path = ROOTFS_DIR,
    image: str = ROOTFS_IMAGE,
) -> None:
    """mmdebstrap (the lists in ``folder``) into a temporary tarball under the state dir, then
    import it as ``image``."""
    started = time.monotonic()
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cfg.state_dir, prefix="rootfs-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        argv = mmdebstrap_argv(cfg, tarball, folder)
        log.info("building root filesystem: %s", " ".join(argv))
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=MMDEBSTRAP_TIMEOUT, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed ({done.returncode}):\n{done.stderr[-3000:]}")
        repo, tag = image.rsplit(":", 1)
        changes = [f"LABEL {HASH_LABEL}={wanted}", 'CMD ["bash"]']
        client.api.import_image_from_file(str(tarball), repository=repo, tag=tag, changes=changes)
    log.info("root filesystem %s imported in %.1fs", image, time.monotonic() - started)


def ensure_rootfs(
    client: docker.DockerClient,
    cfg: BedConfig,
    folder: Path = ROOTFS_DIR,
    image: str = ROOTFS_IMAGE,
) -> str:
    """Make sure the root filesystem image (``folder``'s lists) is current; returns its ID."""
    wanted = rootfs_hash(cfg, folder)
    if current_hash(client, image) != wanted:
        build_rootfs(client, cfg, wanted, folder, image)
    return str(client.images.get(image).id)


def build_image(client: docker.DockerClient, name: str, directory: Path, wanted: str) -> None:
    """Classic-builder build of one image dir FROM the root filesystem (no pull, no network)."""
    started = time.monotonic()
    try:
        client.images.build(
            path=str(directory),
            tag=name,
            buildargs={"BASE": ROOTFS_IMAGE},
            labels={HASH_LABEL: wanted},
            rm=True,
            forcerm=True,
            pull=False,
            network_mode="none",
        )
    except docker.errors.BuildError as err:
        output = "".join(str(chunk.get("stream", chunk)) for chunk in err.build_log)
        raise RuntimeError(f"building {name} failed: {err}\n{output[-3000:]}") from err
    log.info("built %s in %.1fs", name, time.monotonic() - started)


def images_current(client: docker.DockerClient, cfg: BedConfig) -> bool:
    """True when the root filesystem and every image exist and match their inputs."""
    if current_hash(client, ROOTFS_IMAGE) != rootfs_hash(cfg):
        return False
    base_id = str(client.images.get(ROOTFS_IMAGE).id)
    return all(
        current_hash(client, name) == dir_hash(IMAGES_DIR / kind, base_id)
        for kind, name in cfg.images.as_dict().items()
    )


def ensure_images(client: docker.DockerClient, cfg: BedConfig) -> None:
    """Build whatever is missing or stale, then drop the untagged leftovers of earlier builds."""
    base_id = ensure_rootfs(client, cfg)
    rebuilt = False
    for kind, name in cfg.images.as_dict().items():
        wanted = dir_hash(IMAGES_DIR / kind, base_id)
        if current_hash(client, name) != wanted:
            build_image(client, name, IMAGES_DIR / kind, wanted)
            rebuilt = True
    if rebuilt:
        client.images.prune(filters={"dangling": True})
