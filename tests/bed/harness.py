"""Per-test namespaces on the shared bed: create Swarm objects, wait for them, clean them up.

Many tests, from many processes, share one bed. Each test gets a random id (``t`` + 8 hex);
every object it makes is named ``<id>-<suffix>`` and labelled ``interlock-test=<id>``, and its
teardown removes exactly the objects with that label or that name prefix, so concurrent tests
never touch each other. ``python -m tests.bed clean`` removes what crashed runs left behind.
"""

from __future__ import annotations

import copy
import io
import logging
import re
import secrets
import tarfile
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import docker
import docker.errors
from docker.models.configs import Config
from docker.models.containers import Container
from docker.models.networks import Network
from docker.models.secrets import Secret
from docker.models.services import Service
from docker.types import EndpointSpec

from .config import Images
from .probes import free_port, http_get, wait_until

log = logging.getLogger(__name__)

TEST_LABEL = "interlock-test"
TEST_ID_PREFIX = re.compile(r"^(t[0-9a-f]{8})-")
Labels = dict[str, str] | None
CLEANUP_TIMEOUT = 90.0


def new_test_id() -> str:
    """A short random id: unique enough across concurrent processes, short enough for names."""
    return "t" + secrets.token_hex(4)


def _short(address: str) -> str:
    """``10.0.1.5/24`` -> ``10.0.1.5``."""
    return address.split("/", 1)[0]


def _replicas(service: Service) -> int:
    """Desired task count: the replica count, or 1 for a global service on this one node."""
    mode = service.attrs["Spec"].get("Mode", {})
    return int(mode.get("Replicated", {}).get("Replicas", 1))


def describe_tasks(tasks: Iterable[dict[str, Any]]) -> str:
    """One line per task (state, desired state, error) for failure messages."""
    lines = []
    for task in tasks:
        status = task.get("Status", {})
        lines.append(
            f"{task.get('ID', '?')[:12]} {status.get('State')} (want {task.get('DesiredState')})"
            f" {status.get('Err') or status.get('Message') or ''}".rstrip()
        )
    return "; ".join(lines) or "no tasks"


class SwarmTest:
    """Everything one test does on the bed, under its own id, prefix and label.

    Attributes: ``id`` (``t1a2b3c4d``), ``prefix`` (``t1a2b3c4d-``), ``labels``
    (``{"interlock-test": id}``), ``client`` (docker.DockerClient on the bed), ``images``.
    """

    def __init__(self, client: docker.DockerClient, images: Images, test_id: str | None = None):
        self.client = client
        self.images = images
        self.id = test_id or new_test_id()
        self.prefix = f"{self.id}-"
        self.labels = {TEST_LABEL: self.id}

    # -- naming ----------------------------------------------------------------------------

    def name(self, suffix: str) -> str:
        """The object name for ``suffix`` in this test's namespace (idempotent on full names)."""
        return suffix if suffix.startswith(self.prefix) else self.prefix + suffix

    def _labels(self, extra: dict[str, str] | None) -> dict[str, str]:
        """Caller's labels plus the test label (which always wins)."""
        return {**(extra or {}), **self.labels}

    # -- creating objects ------------------------------------------------------------------

    def network(self, suffix: str = "net", **kwargs: Any) -> Network:
        """An attachable overlay network (tasks and plain containers can both join it)."""
        kwargs.setdefault("driver", "overlay")
        kwargs.setdefault("attachable", True)
        labels = self._labels(kwargs.pop("labels", None))
        return self.client.networks.create(self.name(suffix), labels=labels, **kwargs)

    def config(self, suffix: str, data: str | bytes, labels: Labels = None) -> Config:
        """A Swarm config. Configs are immutable: use a new suffix for each version."""
        return self.client.configs.create(
            name=self.name(suffix), data=data, labels=self._labels(labels)
        )

    def secret(self, suffix: str, data: str | bytes, labels: Labels = None) -> Secret:
        """A Swarm secret, labelled like everything else."""
        return self.client.secrets.create(
            name=self.name(suffix), data=data, labels=self._labels(labels)
        )

    def service(self, suffix: str, image: str, command: Any = None, **kwargs: Any) -> Service:
        """``client.services.create`` with a prefixed name and the test label on the service and
        on its containers. All other keyword arguments go to docker-py unchanged."""
        kwargs["labels"] = self._labels(kwargs.get("labels"))
        kwargs["container_labels"] = self._labels(kwargs.get("container_labels"))
        return self.client.services.create(image, command, name=self.name(suffix), **kwargs)

    def container(self, suffix: str, image: str, command: Any = None, **kwargs: Any) -> Container:
        """A plain detached container (``containers.run``), prefixed and labelled."""
        kwargs["labels"] = self._labels(kwargs.get("labels"))
        kwargs.setdefault("detach", True)
        return self.client.containers.run(image, command, name=self.name(suffix), **kwargs)

    def published_service(
        self,
        suffix: str,
        image: str,
        target_port: int = 80,
        port: int | None = None,
        timeout: float = 60.0,
        **kwargs: Any,
    ) -> tuple[Service, int]:
        """A service whose ``target_port`` is published on 127.0.0.1:``port`` in host mode (the
        only mode without IPVS); waits until its task runs. Returns (service, published port)."""
        port = port or free_port()
        ports = [{"Protocol": "tcp", "PublishedPort": port, "TargetPort": target_port,
                  "PublishMode": "host"}]  # fmt: skip
        svc = self.service(suffix, image, endpoint_spec=EndpointSpec(ports=ports), **kwargs)
        self.wait_running(svc, timeout=timeout)
        return svc, port

    # -- observing services ----------------------------------------------------------------

    def tasks(self, service: Service, running_only: bool = True) -> list[dict[str, Any]]:
        """The service's tasks; by default those Swarm wants running *and* that run."""
        tasks = service.tasks(filters={"desired-state": "running"} if running_only else None)
        if running_only:
            tasks = [t for t in tasks if t["Status"]["State"] == "running"]
        return tasks

    def wait_running(
        self, service: Service, replicas: int | None = None, timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """Wait until exactly ``replicas`` (default: the spec's) tasks run and no task that Swarm
        wants running is still elsewhere (e.g. an update finished). Returns the running tasks."""
        service.reload()
        want = _replicas(service) if replicas is None else replicas

        def settled() -> list[dict[str, Any]] | None:
            wanted = service.tasks(filters={"desired-state": "running"})
            running = [t for t in wanted if t["Status"]["State"] == "running"]
            return running if len(running) == want == len(wanted) else None

        try:
            return wait_until(settled, timeout, 0.25, f"{service.name}: {want} running tasks")
        except AssertionError as err:
            detail = describe_tasks(service.tasks())
            raise AssertionError(f"{err}\ntasks: {detail}") from None

    def task_addresses(self, service: Service, network: Network | str) -> list[str]:
        """IPv4 addresses of the service's running tasks on ``network`` (from the tasks'
        NetworksAttachments; route to these, never to a service VIP: there is no IPVS)."""
        net_name = network if isinstance(network, str) else network.name
        addresses = []
        for task in self.tasks(service):
            for attachment in task.get("NetworksAttachments", []):
                if attachment["Network"]["Spec"]["Name"] == net_name:
                    addresses += [_short(a) for a in attachment.get("Addresses", [])]
        return sorted(addresses)

    def task_containers(self, service: Service) -> list[Container]:
        """The containers of the service's running tasks (all on this one node), e.g. to exec
        into a proxy or signal it, as the controller does."""
        ids = [t["Status"]["ContainerStatus"]["ContainerID"] for t in self.tasks(service)]
        return [self.client.containers.get(cid) for cid in ids]

    def wait_http(
        self,
        port: int,
        host_header: str = "localhost",
        path: str = "/",
        status: int = 200,
        contains: str = "",
        timeout: float = 30.0,
    ) -> str:
        """Wait until 127.0.0.1:``port`` answers ``status`` with a body containing ``contains``;
        returns that body. Connection errors while the proxy starts just mean "not yet"."""

        def check() -> tuple[int, str]:
            code, body = http_get(port, host_header, path, timeout=5.0)
            if code != status or contains not in body:
                raise AssertionError(f"HTTP {code}: {body[:300]!r}")
            return code, body

        wanted = f"127.0.0.1:{port}{path} (Host {host_header}) -> {status} with {contains!r}"
        return wait_until(check, timeout, message=wanted)[1]

    # -- changing services -----------------------------------------------------------------

    def update_service(self, service: Service, mutate: Callable[[dict[str, Any]], None]) -> None:
        """Update a service by editing a copy of its *current* full spec in ``mutate`` (e.g.
        swap ``spec["TaskTemplate"]["ContainerSpec"]["Configs"]``). Avoids docker-py's
        ``Service.update``, which rebuilds the spec from keyword arguments."""
        service.reload()
        spec = copy.deepcopy(service.attrs["Spec"])
        mutate(spec)
        self.client.api.update_service(
            service.id,
            service.version,
            task_template=spec["TaskTemplate"],
            name=spec["Name"],
            labels=spec.get("Labels"),
            mode=spec.get("Mode"),
            update_config=spec.get("UpdateConfig"),
            rollback_config=spec.get("RollbackConfig"),
            endpoint_spec=spec.get("EndpointSpec"),
        )
        service.reload()

    def wait_updated(self, service: Service, timeout: float = 90.0) -> list[dict[str, Any]]:
        """Wait until the last update completed and the new tasks run; returns them."""

        def done() -> bool:
            service.reload()
            state = service.attrs.get("UpdateStatus", {}).get("State", "completed")
            if state in ("paused", "rollback_completed", "rollback_paused"):
                raise AssertionError(f"update of {service.name} ended as {state}")
            return state == "completed"

        wait_until(done, timeout, 0.25, f"update of {service.name} completed")
        return self.wait_running(service, timeout=timeout)

    # -- teardown --------------------------------------------------------------------------

    def mine(self, kind: str) -> list[Any]:
        """This test's objects of ``kind`` ("services", "containers", "configs", "secrets",
        "networks"): those labelled with its id, and those named with its prefix (which catches
        objects that code under test created from the test's names without the label)."""
        collection = getattr(self.client, kind)
        # ignore_removed: docker-py lists ids, then inspects each; a task container that Swarm
        # removes in between would otherwise raise NotFound.
        extra = {"all": True, "ignore_removed": True} if kind == "containers" else {}
        found = {
            o.id: o for o in collection.list(filters={"label": f"{TEST_LABEL}={self.id}"}, **extra)
        }
        for obj in collection.list(filters={"name": self.prefix}, **extra):
            if obj.name.startswith(self.prefix):
                found.setdefault(obj.id, obj)
        return list(found.values())

    def cleanup(self, timeout: float = CLEANUP_TIMEOUT) -> None:
        """Remove this test's services, containers, configs, secrets and networks (see
        :meth:`mine`; nothing else). Raises if something is still there after ``timeout``
        seconds, so leaks get noticed."""
        deadline = time.monotonic() + timeout
        for svc in self.mine("services"):
            _remove(svc.remove)
        _retry_until(deadline, self._remove_containers, "containers")
        for kind in ("configs", "secrets", "networks"):
            _retry_until(deadline, lambda k=kind: self._remove_all(k), kind)

    def _remove_containers(self) -> list[str]:
        """Give Swarm time to stop its tasks' containers, force out the rest; returns what is
        still there (with the last error, if any)."""
        containers = self.mine("containers")
        left = []
        for container in containers:
            swarm_task = "com.docker.swarm.task.id" in (container.labels or {})
            error = ""
            if not swarm_task or container.status != "running":
                error = _remove(lambda c=container: c.remove(force=True))
            left.append(f"{container.name} {container.status} {error}".strip())
        return left

    def _remove_all(self, kind: str) -> list[str]:
        """Try to remove every object of ``kind``; returns those left (a network stays busy until
        the tasks on it are gone)."""
        left = []
        for obj in self.mine(kind):
            error = _remove(obj.remove)
            if error:
                left.append(f"{obj.name}: {error}")
        return left


def put_file(container: Container, path: str, data: str | bytes, mode: int = 0o644) -> None:
    """Write one file into a running container through the Engine API (``put_archive``), the way
    a controller pushes a proxy config without a shared volume."""
    payload = data.encode() if isinstance(data, str) else data
    directory, _, name = path.rpartition("/")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(payload), mode, int(time.time())
        tar.addfile(info, io.BytesIO(payload))
    if not container.put_archive(directory or "/", buffer.getvalue()):
        raise RuntimeError(f"put_archive to {container.name}:{path} failed")


def exec_ok(container: Container, *argv: str) -> str:
    """Run a command in a container; return its output, raise with the output if it fails."""
    code, output = container.exec_run(list(argv))
    text = output.decode(errors="replace")
    if code != 0:
        raise AssertionError(f"{argv} in {container.name} exited {code}: {text}")
    return text


def _remove(action: Callable[[], Any]) -> str:
    """Run one removal; returns "" on success or if already gone, else the error text."""
    try:
        action()
    except docker.errors.NotFound:
        return ""
    except docker.errors.APIError as err:
        return str(err.explanation or err)
    return ""


def _retry_until(deadline: float, attempt: Callable[[], list[str]], what: str) -> None:
    """Repeat ``attempt`` until nothing is left, failing at ``deadline`` with what remains.

    docker-py lists containers by inspecting each: one that goes away in between (Swarm removes
    a stopped task's container) is a NotFound, which only means: list again."""
    while left := _attempt(attempt):
        if time.monotonic() > deadline:
            raise AssertionError(f"test cleanup: {what} still present: {'; '.join(left)}")
        time.sleep(0.3)


def _attempt(attempt: Callable[[], list[str]]) -> list[str]:
    try:
        return attempt()
    except docker.errors.NotFound as error:
        return [f"(listing raced a removal: {error.explanation})"]


def _labels_of(obj: Any) -> dict[str, str]:
    """Labels of a service/config/secret (in Spec), network (top level) or container (Config)."""
    attrs = obj.attrs
    return (
        attrs.get("Spec", {}).get("Labels")
        or attrs.get("Labels")
        or attrs.get("Config", {}).get("Labels")
        or {}
    )


def _created(obj: Any) -> float:
    """Creation time (epoch seconds) of a Docker object from its ``CreatedAt``/``Created``."""
    stamp = obj.attrs.get("CreatedAt") or obj.attrs.get("Created") or ""
    if isinstance(stamp, int | float):
        return float(stamp)
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()


def owning_test(obj: Any) -> str | None:
    """The test id an object belongs to: its label, else a ``t<8 hex>-`` name prefix."""
    labelled = _labels_of(obj).get(TEST_LABEL)
    if labelled:
        return str(labelled)
    match = TEST_ID_PREFIX.match(obj.name or "")
    return match.group(1) if match else None


def leftover_test_ids(client: docker.DockerClient, older_than: float) -> list[str]:
    """Test ids whose newest object is older than ``older_than`` seconds (crashed test runs)."""
    newest: dict[str, float] = {}
    for kind in ("services", "containers", "configs", "secrets", "networks"):
        collection = getattr(client, kind)
        # ignore_removed: docker-py lists ids, then inspects each; a task container that Swarm
        # removes in between would otherwise raise NotFound.
        extra = {"all": True, "ignore_removed": True} if kind == "containers" else {}
        for obj in collection.list(**extra):
            test_id = owning_test(obj)
            if test_id:
                newest[test_id] = max(newest.get(test_id, 0.0), _created(obj))
    cutoff = time.time() - older_than
    return sorted(tid for tid, created in newest.items() if created < cutoff)


def clean_leftovers(client: docker.DockerClient, images: Images, older_than: float) -> list[str]:
    """Remove what crashed test runs left behind; returns the test ids cleaned."""
    ids = leftover_test_ids(client, older_than)
    for test_id in ids:
        log.info("removing leftovers of test %s", test_id)
        SwarmTest(client, images, test_id).cleanup()
    return ids
