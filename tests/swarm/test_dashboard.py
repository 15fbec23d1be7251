"""The Grafana dashboard (manifests/grafana-dashboard.json) against a real Prometheus.

The real `interlock run` runs in a container on the proxies' network, as stack.yml runs it (the
bed's Python image with this work tree and the venv's packages mounted read-only, the bed's
Docker socket mounted), so it scrapes both proxies' own figures and reads container stats; its
/metrics is published on 127.0.0.1. The scenario gives every panel something to show: nginx and
HAProxy proxies, a routed service (with an unknown label: ignored), a routed service with no
task (503), a service with a bad port (rejected) and a "proxy" that runs no HAProxy (its status
page fails to scrape). Debian's `prometheus` scrapes the controller every second on 127.0.0.1;
then every query of the dashboard (its variables too) must be valid PromQL and name only metrics
the controller exposes, and every panel and variable must return data; a query may come back
empty only when all it reads are counters of events a healthy Swarm does not have (errors,
failed reloads), which have no series before their first event. The example scrape
configuration beside the dashboard must pass `promtool check config`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sysconfig
import time
import urllib.parse
import urllib.request
from pathlib import Path

from controller.vocabulary import Vocabulary
from tests.bed.probes import free_port, http_get, wait_until
from tests.swarm.controlled import routed

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "manifests" / "grafana-dashboard.json"
SCRAPE_EXAMPLE = REPO / "manifests" / "prometheus.yml"
HOST, EMPTY = "dash.example.com", "empty.example.com"
RATE_INTERVAL = "15s"  # Grafana's $__rate_interval for a 1 s scrape interval, with room
# Counters that have no series until their event happens; a healthy scenario cannot show them.
# A query on these alone may come back empty (its panel must still show data from another), but
# the metric must be exposed.
EVENT_ONLY = {"interlock_proxy_reload_failures_total", "interlock_reconcile_errors_total"}
_METRIC = re.compile(r"\b((?:interlock|process)_[a-z0-9_]+)\b")
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*([a-z_]+)\)$")


def dashboard_queries() -> dict[str, str]:
    """Every PromQL expression in the dashboard (panel targets and variable queries), keyed by
    where it is, with Grafana's variables replaced as Grafana would for "All"."""
    board = json.loads(DASHBOARD.read_text())
    found: dict[str, str] = {}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            metric, label = _LABEL_VALUES.match(variable["definition"]).groups()
            found[f"variable {variable['name']} A"] = f"count by ({label}) ({metric})"
    return {where: _as_grafana_would(expr) for where, expr in found.items()}


def blanks(queries: dict[str, str], got: dict[str, dict]) -> list[str]:
    """Where data is missing: a variable or panel none of whose queries returns any, or a query
    without data that reads more than event-only counters. Invalid queries are not blanks."""
    empty = {
        where
        for where, answer in got.items()
        if answer.get("status") == "success" and not answer["data"]["result"]
    }
    panels: dict[str, list[str]] = {}
    for where in queries:
        panels.setdefault(where.rsplit(" ", 1)[0], []).append(where)
    missing = [group for group, members in panels.items() if set(members) <= empty]
    missing += [w for w in empty if not set(_METRIC.findall(queries[w])) <= EVENT_ONLY]
    return sorted(set(missing))


def _as_grafana_would(expr: str) -> str:
    expr = expr.replace("$__rate_interval", RATE_INTERVAL)
    for name in ("job", "proxy"):
        expr = expr.replace(f"${{{name}}}", ".*").replace(f"${name}", ".*")
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


class Prometheus:
    """Debian's prometheus on 127.0.0.1, scraping one target every second."""

    def __init__(self, folder: Path, target: str) -> None:
        self.folder = folder
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "interlock",
                    "scrape_timeout": "1s",
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        self.config = folder / "prometheus.yml"
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.log = folder / "prometheus.log"

    def __enter__(self) -> Prometheus:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, 60, 0.25, "prometheus ready")
        return self

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-2000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
            return r.status == 200

    def query(self, expr: str) -> dict:
        """The API's answer to an instant query; an invalid query is a 400 with its error."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return json.loads(error.read())

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        if exc[0] is not None:
            print(f"--- prometheus log ---\n{self.log.read_text()[-3000:]}")


def controller_container(swarm, bed, network, port: int):
    """`interlock run` in a container on the proxies' network, /metrics on 127.0.0.1:port."""
    socket_path = bed.docker_host.removeprefix("unix://")
    return swarm.container(
        "controller",
        swarm.images.python,
        ["python3", "-m", "controller.cli", "run"],
        network=network.name,
        ports={"9100/tcp": ("127.0.0.1", port)},
        working_dir="/src",
        volumes={
            str(REPO): {"bind": "/src", "mode": "ro"},
            sysconfig.get_path("purelib"): {"bind": "/site", "mode": "ro"},
            socket_path: {"bind": "/var/run/docker.sock", "mode": "rw"},
        },
        environment={
            "PYTHONPATH": "/src:/site",
            "PYTHONDONTWRITEBYTECODE": "1",
            "DOCKER_HOST": "unix:///var/run/docker.sock",
            "INTERLOCK_LABEL_PREFIX": swarm.id,
            "INTERLOCK_POLL_INTERVAL": "1",
            "INTERLOCK_METRICS_PORT": "9100",
            "INTERLOCK_SCRAPE_INTERVAL": "1",
            "INTERLOCK_BEACON_INTERVAL": "1",
            "INTERLOCK_LOG_FORMAT": "json",
        },
    )


def exposition(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return answer.read().decode()


def exposed_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def is_exposed(metric: str, names: set[str]) -> bool:
    bases = {metric, *(metric.removesuffix(s) for s in ("_total", "_bucket", "_count", "_sum"))}
    return any(base in names or f"{base}_total" in names for base in bases)


def test_every_dashboard_query_is_valid_and_returns_data(swarm, bed, tmp_path):
    started = time.monotonic()
    check = subprocess.run(
        [shutil.which("promtool") or "/usr/bin/promtool", "check", "config", str(SCRAPE_EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    lab = routed(swarm, bed.docker_host)
    ports = {}
    for kind in ("nginx", "haproxy"):
        lab.proxy_service(kind)
        ports[kind] = lab.port
    app = lab.app("web", hostname=HOST, port="8080", nonsense="1")  # an unknown label: ignored
    lab.app("empty", replicas=0, hostname=EMPTY, port="8080")  # routed, no task: 503
    lab.app("bad", hostname="bad.example.com", port="0")  # rejected
    words = Vocabulary(swarm.id)
    swarm.service(  # a "proxy" that runs no HAProxy: its status page does not answer
        "noproxy",
        swarm.images.backend,
        labels={words.key("ext.name"): "haproxy"},
        networks=[lab.network.name],
    )
    metrics_port = free_port()
    controller = controller_container(swarm, bed, lab.network, metrics_port)
    try:
        for port in ports.values():
            swarm.wait_http(port, HOST, contains=f"task={app.name}.", timeout=120)
        for _ in range(20):
            for port in ports.values():
                assert http_get(port, HOST)[0] == 200
                assert http_get(port, "unknown.example.com")[0] == 404
                assert http_get(port, EMPTY)[0] == 503

        def scraped_both() -> str | None:
            text = exposition(metrics_port)
            up = re.findall(
                r'^interlock_proxy_scrape_up\{[^}]*kind="(\w+)"[^}]*\} 1\.0$', text, re.M
            )
            return text if {"nginx", "haproxy"} <= set(up) else None

        text = wait_until(scraped_both, 60, 0.5, "the controller scraped both proxies")
        names = exposed_names(text)
        queries = dashboard_queries()
        with Prometheus(tmp_path, f"127.0.0.1:{metrics_port}") as prometheus:
            for port in ports.values():  # traffic Prometheus sees move
                for _ in range(10):
                    http_get(port, HOST)

            def answers() -> dict[str, dict] | None:
                got = {where: prometheus.query(expr) for where, expr in queries.items()}
                return got if not blanks(queries, got) else None

            try:
                got = wait_until(answers, 90, 1.0, "every dashboard query returns data")
            except AssertionError:
                got = {where: prometheus.query(expr) for where, expr in queries.items()}
    finally:
        controller.stop(timeout=10)
        controller_log = controller.logs().decode(errors="replace")

    invalid = {w: a.get("error") for w, a in got.items() if a.get("status") != "success"}
    assert not invalid, f"not valid PromQL: {invalid}"
    unknown = {
        where: metric
        for where, expr in queries.items()
        for metric in _METRIC.findall(expr)
        if not is_exposed(metric, names)
    }
    assert not unknown, f"metrics the controller does not expose: {unknown}"
    assert not blanks(queries, got), f"without data: {blanks(queries, got)}"
    empty = [w for w, a in got.items() if not a["data"]["result"]]
    assert "Traceback" not in controller_log, controller_log[-3000:]
    print(
        f"dashboard: {len(queries)} queries valid, {len(queries) - len(empty)} with data, "
        f"{len(empty)} on event-only counters without ({'; '.join(empty)}); "
        f"{len(names)} metric names exposed; {time.monotonic() - started:.1f}s"
    )
