"""Metrics on the real Swarm: the real `interlock run` with its endpoint on 127.0.0.1, the beacon's
container figures of routed tasks, and real nginx stub_status and HAProxy stats scraped from a
container on the proxies' network that the controller takes for its own (the controller itself
runs on the host, off the overlay), while another container there is refused."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller import identity
from controller.app import Controller
from controller.kinds import KINDS
from tests.bed.probes import free_port, wait_until
from tests.swarm.controlled import routed

HOST = "app.example.com"
REPO = Path(__file__).resolve().parents[2]
STATUS_PORT = 8404


def scrape_metrics(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(found, metric: str, **labels: str) -> float | None:
    for have, number in found.get(metric, []):
        if all(have.get(k) == v for k, v in labels.items()):
            return number
    return None


def healthz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_metrics_of_passes_proxies_and_routed_containers(swarm, bed, tmp_path):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service("nginx")
    app = lab.app("app", replicas=2, hostname=HOST, port="8080")
    port = free_port()
    env = {
        "INTERLOCK_METRICS_PORT": str(port),
        "INTERLOCK_METRICS_ADDRESS": "127.0.0.1",
        "INTERLOCK_LOG_FORMAT": "json",
        "INTERLOCK_BEACON_INTERVAL": "1",
        "INTERLOCK_BEACON_IMAGE_PATTERN": "backend",
        "INTERLOCK_SCRAPE_INTERVAL": "1",
    }
    with lab.run(str(tmp_path / "controller.log"), **env) as process:
        swarm.wait_http(lab.port, HOST, contains=f"task={app.name}.", timeout=90)
        for _ in range(10):
            assert lab.get(HOST)[0] == 200
        containers = {c.name: c for c in swarm.task_containers(app)}
        assert len(containers) == 2

        def complete():
            found = scrape_metrics(port)
            rx = [
                value(found, "interlock_container_network_receive_bytes_total", name=name)
                for name in containers
            ]
            ready = (
                value(found, "interlock_proxy_reloads_total", proxy=proxy.name, mode="rolling")
                and value(found, "interlock_proxy_backend_servers", proxy=proxy.name) == 2
                and all(rx)
                and value(found, "interlock_proxy_scrape_errors_total", proxy=proxy.name)
            )
            return found if ready else None

        found = wait_until(complete, 60, 0.5, "metrics of the pass, beacon and scraper")
        code, health = healthz(port)
        logs = process.logs()

    for have, number in found["interlock_container_memory_usage_bytes"]:
        rx = value(found, "interlock_container_network_receive_bytes_total", name=have["name"])
        cpu = value(found, "interlock_container_cpu_seconds_total", name=have["name"])
        print(f"{have['name']}: cpu {cpu:.3f}s, memory {number / 2**20:.1f} MiB, rx {rx:g} B")
    assert value(found, "interlock_reconcile_passes_total", outcome="converged") >= 1
    assert value(found, "interlock_reconcile_pass_duration_seconds_count") >= 1
    assert value(found, "interlock_reconcile_last_success_timestamp_seconds") > 0
    assert value(found, "interlock_proxy_routes", proxy=proxy.name) == 1
    assert value(found, "interlock_proxy_backends", proxy=proxy.name) == 1
    assert value(found, "interlock_backend_servers", proxy=proxy.name, service=app.name) == 2
    assert value(found, "interlock_proxy_config_bytes", proxy=proxy.name) > 500
    assert value(found, "interlock_proxy_config_info", proxy=proxy.name, kind="nginx") == 1
    for name, container in containers.items():
        labels = {"name": name, "container_id": container.id[:12], "service": app.name}
        assert value(found, "interlock_container_cpu_seconds_total", **labels) > 0
        assert value(found, "interlock_container_memory_usage_bytes", **labels) > 0
        assert 0 < value(found, "interlock_container_memory_percent", **labels) < 100
        assert value(found, "interlock_container_network_receive_packets_total", **labels) > 0
        assert "interlock-bed/backend" in next(
            have["image"]
            for have, _ in found["interlock_container_cpu_seconds_total"]
            if have["name"] == name
        )
    # The rule (image matches "backend") leaves the nginx proxy's container out.
    names = {have["name"] for have, _ in found["interlock_container_cpu_seconds_total"]}
    assert names == set(containers)
    # On the host the controller shares no network with the proxy: counted, not hung on.
    assert value(
        found, "interlock_proxy_scrape_errors_total", proxy=proxy.name, reason="no_shared_network"
    )
    assert code == 200 and health["ok"] is True, health

    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert len(lines) == len(logs.splitlines()), logs[-3000:]  # every line is one JSON event
    during = [line for line in lines if line["event"] in ("action_done", "pass_done")]
    assert during and all(len(line.get("pass_id", "")) == 12 for line in during)
    assert "proxy_pass" not in logs and "upstream" not in logs  # no config text in the logs


SCRAPE = """
import json, sys
from controller.scrape import Target, scrape_target
from controller.statuspage import ScrapeError
address, kind, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    samples = scrape_target(Target("p", kind, "t", address, port), 3.0)
except ScrapeError as error:
    print(json.dumps({"error": error.reason, "detail": str(error)}))
else:
    print(json.dumps([[s.name, dict(s.labels), s.value] for s in samples]))
"""
HINTS = """
import json
from controller.identity import own_container_hints
ids, hostname = own_container_hints()
print(json.dumps([sorted(ids), hostname]))
"""
RAW_GET = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3) as sock:
    sock.sendall(f"GET {sys.argv[3]} HTTP/1.0\\r\\n\\r\\n".encode())
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
print(answer.split(b"\\r\\n", 1)[0].decode() or "closed")
"""


def python_in(container, script: str, *args: str):
    """Run a script of the work tree (mounted at /src) in ``container``; its last line, as JSON
    when it is JSON."""
    code, output = container.exec_run(["python3", "-c", script, *args], workdir="/src")
    text = output.decode(errors="replace")
    assert code == 0, text
    last = text.strip().splitlines()[-1]
    return json.loads(last) if last[:1] in "[{" else last


def on_the_network(swarm, network, suffix: str):
    """A long-running container of the bed's Python image on ``network``, the work tree at /src;
    returns it and its address there."""
    container = swarm.container(
        suffix,
        swarm.images.python,
        ["python3", "-c", "import time; time.sleep(900)"],
        network=network.name,
        volumes={str(REPO): {"bind": "/src", "mode": "ro"}},
        environment={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    container.reload()
    address = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
    return container, address


def as_the_controller(monkeypatch, lab, hints) -> None:
    """Make this test's controller (a process on the host) take ``hints`` for its own container,
    so ``identity.status_allow`` finds that container's addresses, as a controller running in
    it would.
    """
    monkeypatch.setattr(identity, "own_container_hints", lambda: hints)
    # Built again, so that whatever it prepares at start sees the above.
    lab.controller = Controller.from_settings(lab.settings, lab.swarm.client.api)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_status_pages_answer_the_controller_and_refuse_an_app(kind, swarm, bed, monkeypatch):
    """The controller's container scrapes the proxy's own figures; an app container on the same
    network gets 403 from the same port."""
    lab = routed(swarm, bed.docker_host)
    scraper, scraper_address = on_the_network(swarm, lab.network, "scraper")
    intruder, intruder_address = on_the_network(swarm, lab.network, "app-box")
    ids, hostname = python_in(scraper, HINTS)
    assert scraper.id in ids, (ids, hostname)  # found in its own mountinfo
    as_the_controller(monkeypatch, lab, (set(ids), hostname))
    snapshot = lab.controller.reconciler.observer.snapshot()
    assert identity.status_allow(snapshot, lab.settings) == (scraper_address,)

    lab.proxy_service(kind)
    lab.app("app", hostname=HOST, port="8080")
    first = lab.converge()
    for _ in range(7):
        assert lab.get(HOST)[0] == 200
    again = lab.controller.reconciler.run_pass()
    assert not again.actions, again.actions  # the allowed list does not churn the config
    text = first.rendered[lab.proxy.name].text
    assert scraper_address in text and intruder_address not in text

    (address,) = swarm.task_addresses(lab.proxy, lab.network)
    port = str(STATUS_PORT)
    samples = python_in(scraper, SCRAPE, address, kind, port)
    refused = python_in(intruder, SCRAPE, address, kind, port)
    path = KINDS[kind].status_path
    raw = {who: python_in(c, RAW_GET, address, port, path) for who, c in
           (("controller", scraper), ("app", intruder))}  # fmt: skip
    app_got = refused.get("error") if isinstance(refused, dict) else f"{len(refused)} samples"
    print(
        f"{kind} status {address}:{port}: controller {scraper_address} got {len(samples)} "
        f"samples ({raw['controller']}); app {intruder_address} got {app_got} ({raw['app']})"
    )
    assert app_got == "forbidden", f"an app container read the status page: {raw['app']}"
    assert raw["app"] == "HTTP/1.1 403 Forbidden" or raw["app"].endswith(" 403 Forbidden")
    assert raw["controller"].endswith(" 200 OK")
    figures = {(name, tuple(sorted(labels.items()))): number for name, labels, number in samples}
    assert figures[("http_requests_total", ())] >= 7
    assert figures[("connections_accepted_total", ())] >= 7
    assert ("connections_active", ()) in figures
    if kind == "haproxy":
        assert figures[("http_responses_total", (("code", "2xx"),))] >= 7
        backend = next(
            labels["backend"]
            for name, labels, _ in samples
            if name == "backend_sessions_total" and labels["backend"].startswith("t")
        )
        assert figures[("backend_sessions_total", (("backend", backend),))] >= 7
        assert figures[("backend_servers_up", (("backend", backend),))] == 1
    else:
        assert figures[("connections", (("state", "writing"),))] >= 1  # the scrape itself
