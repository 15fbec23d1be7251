"""Engine API answers as plain dicts, shaped like the real ones, for tests and benchmarks.

Only the fields the controller reads are filled in; their shapes follow `GET /services`,
`GET /tasks`, `GET /networks`, `GET /configs` and `GET /containers/json` of Engine API 1.41.
"""

from __future__ import annotations

from typing import Any


def service(
    sid: str,
    name: str,
    labels: dict[str, str],
    networks: list[str] = ("net1",),
    created: str = "2026-01-01T00:00:00.000000000Z",
    ports: tuple[int, ...] = (),
    configs: list[dict] = (),
    version: int = 10,
    image: str = "example/app:1",
) -> dict[str, Any]:
    return {
        "ID": sid,
        "Version": {"Index": version},
        "CreatedAt": created,
        "Spec": {
            "Name": name,
            "Labels": dict(labels),
            "TaskTemplate": {
                "ContainerSpec": {"Image": image, "Configs": list(configs)},
                "Networks": [{"Target": n} for n in networks],
            },
            "Mode": {"Replicated": {"Replicas": 1}},
            "EndpointSpec": {"Mode": "vip", "Ports": [{"TargetPort": p} for p in ports]},
        },
    }


def config_ref(config_id: str, name: str, path: str) -> dict[str, Any]:
    return {
        "File": {"Name": path, "UID": "0", "GID": "0", "Mode": 292},
        "ConfigID": config_id,
        "ConfigName": name,
    }


def task(
    tid: str,
    sid: str,
    address: str,
    network: str = "net1",
    desired: str = "running",
    state: str = "running",
    container: str = "",
) -> dict[str, Any]:
    return {
        "ID": tid,
        "ServiceID": sid,
        "NodeID": "node1",
        "Slot": 1,
        "DesiredState": desired,
        "Status": {"State": state, "ContainerStatus": {"ContainerID": container or f"c-{tid}"}},
        "NetworksAttachments": [{"Network": {"ID": network}, "Addresses": [f"{address}/24"]}],
    }


def network(nid: str, name: str = "") -> dict[str, Any]:
    return {"Id": nid, "Name": name or nid, "Driver": "overlay", "Scope": "swarm"}


def config(cid: str, name: str, labels: dict[str, str], created: str) -> dict[str, Any]:
    return {"ID": cid, "CreatedAt": created, "Spec": {"Name": name, "Labels": labels}}


def container(cid: str, name: str, labels: dict[str, str], networks: list[str] = ("net1",)):
    return {
        "Id": cid,
        "Names": [f"/{name}"],
        "Image": "example/proxy:1",
        "Labels": dict(labels),
        "State": "running",
        "NetworkSettings": {"Networks": {n: {"NetworkID": n} for n in networks}},
    }
