"""Beacon: which containers are watched, their figures from stats answers, and a round."""

from __future__ import annotations

import json
from pathlib import Path

import docker.errors
import pytest

from controller.beacon import Beacon, figures, image_name, watched
from controller.metrics import BeaconCollector
from controller.snapshot import snapshot_from_api
from tests import builders as b

P = "interlock"
DATA = Path(__file__).parent / "data"
SERVICE_LABEL = "com.docker.swarm.service.id"


def stats_v1():
    """A real one-shot answer of Engine 20.10 on cgroup v1 (the bed's engine)."""
    return json.loads((DATA / "engine-20.10-stats-cgroup1.json").read_text())


def stats_v2():
    return {
        "cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}},
        "memory_stats": {"usage": 300, "limit": 1000, "stats": {"inactive_file": 100}},
        "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20}, "eth1": {"rx_dropped": 3}},
    }


def test_figures_of_a_real_cgroup_v1_answer():
    raw = stats_v1()
    found = figures(raw)
    memory = raw["memory_stats"]
    used = memory["usage"] - memory["stats"]["total_inactive_file"]
    assert found.cpu_seconds == raw["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9
    assert found.memory_used == used
    assert found.memory_peak == memory["max_usage"]
    assert found.memory_percent == pytest.approx(100 * used / memory["limit"])
    assert found.networks["eth0"]["rx_bytes"] == raw["networks"]["eth0"]["rx_bytes"]
    assert found.networks["eth0"]["rx_packets"] == raw["networks"]["eth0"]["rx_packets"]


def test_figures_of_a_cgroup_v2_answer():
    found = figures(stats_v2())
    assert found.cpu_seconds == 2.5
    assert (found.memory_used, found.memory_percent, found.memory_peak) == (200, 20.0, None)
    assert found.networks["eth1"] == {
        "rx_bytes": 0,
        "tx_bytes": 0,
        "rx_packets": 0,
        "tx_packets": 0,
        "rx_errors": 0,
        "tx_errors": 0,
        "rx_dropped": 3,
        "tx_dropped": 0,
    }


def container(cid, name, service_id="", labels=None, image="example/app:1"):
    raw = b.container(
        cid, name, {**(labels or {}), **({SERVICE_LABEL: service_id} if service_id else {})}
    )
    raw["Image"] = image
    return raw


def snapshot():
    services = [
        b.service("p1", "ngx", {f"{P}.ext.name": "nginx"}, image="nginx:1.25"),
        b.service(
            "a1",
            "web",
            {f"{P}.hostname": "web.example.com", f"{P}.port": "80", "team": "blue"},
        ),
        b.service("o1", "other", {"unrelated": "yes"}),
    ]
    containers = [
        container("c-proxy", "ngx.1.x", "p1", image="nginx:1.25@sha256:abc"),
        container("c-web1", "web.1.x", "a1", image="example/web:2"),
        container("c-web2", "web.2.x", "a1", {"beacon": "on"}, image="example/web:2"),
        container("c-other", "other.1.x", "o1"),
        container("c-plain", "edge", labels={f"{P}.ext.name": "haproxy"}, image="haproxy:2.6"),
        container("c-random", "random", image="example/web:2"),
    ]
    return snapshot_from_api(services, [], [b.network("net1")], [], containers)


def names(found):
    return sorted((w.name, w.role) for w in found)


def test_proxies_and_routed_tasks_on_this_engine_are_watched():
    found = watched(snapshot(), P, "", "")
    assert names(found) == [
        ("edge", "proxy"),
        ("ngx.1.x", "proxy"),
        ("web.1.x", "app"),
        ("web.2.x", "app"),
    ]
    proxy = next(w for w in found if w.name == "ngx.1.x")
    assert (proxy.image, proxy.service) == ("nginx:1.25", "ngx")


def test_the_rule_chooses_by_image_and_by_label_of_container_or_service():
    assert names(watched(snapshot(), P, r"^example/web:", "")) == [
        ("web.1.x", "app"),
        ("web.2.x", "app"),
    ]
    assert names(watched(snapshot(), P, "", "beacon=on")) == [("web.2.x", "app")]
    assert names(watched(snapshot(), P, "", "team")) == [("web.1.x", "app"), ("web.2.x", "app")]
    assert names(watched(snapshot(), P, "", "team=red")) == []
    assert names(watched(snapshot(), P, "haproxy|nginx", "")) == [
        ("edge", "proxy"),
        ("ngx.1.x", "proxy"),
    ]


def test_image_name_drops_the_digest():
    assert image_name("nginx:1.25@sha256:abc") == "nginx:1.25"


class FakeApi:
    def __init__(self):
        self.calls = []

    def stats(self, container_id, stream=True, one_shot=None):
        self.calls.append((container_id, stream, one_shot))
        if container_id == "c-web2":
            raise docker.errors.NotFound("gone")
        if container_id == "c-plain":
            raise docker.errors.APIError("engine hiccup")
        return stats_v2()


def test_a_round_reads_each_container_once_and_exports_beacon_figures():
    api = FakeApi()
    snap = snapshot()
    beacon = Beacon(api, lambda: snap, P, 1)
    beacon.round()
    assert sorted(c for c, _, _ in api.calls) == ["c-plain", "c-proxy", "c-web1", "c-web2"]
    assert all(stream is False and one_shot is True for _, stream, one_shot in api.calls)
    assert sorted(beacon.latest) == ["c-proxy", "c-web1"]  # gone: skipped; failed: counted
    assert beacon.errors == 1
    families = {f.name: f for f in BeaconCollector(beacon).collect()}
    cpu = {s.labels["name"]: s.value for s in families["interlock_container_cpu_seconds"].samples}
    assert cpu == {"ngx.1.x": 2.5, "web.1.x": 2.5}
    web = next(s for s in families["interlock_container_memory_percent"].samples
               if s.labels["name"] == "web.1.x")  # fmt: skip
    assert web.labels == {
        "container_id": "c-web1",
        "name": "web.1.x",
        "image": "example/web:2",
        "service": "web",
        "role": "app",
    }
    assert web.value == 20.0
    rx = families["interlock_container_network_receive_dropped"].samples
    assert {(s.labels["name"], s.labels["interface"], s.value) for s in rx if s.value} == {
        ("ngx.1.x", "eth1", 3),
        ("web.1.x", "eth1", 3),
    }
    assert families["interlock_beacon_containers"].samples[0].value == 2
