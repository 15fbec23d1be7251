"""The README's main job on the test bed: scripts/up.sh --local, i.e. `docker stack deploy` of
stack.yml (controller image built locally) and the demo app, then routing through the proxy."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.bed.probes import free_port, http_get, wait_until

ROOT = Path(__file__).resolve().parents[2]
DOCKER = shutil.which("docker", path="/usr/bin") or shutil.which("docker")


def run_up(env: dict[str, str]) -> subprocess.CompletedProcess:
    """The README's main-job command, on the test bed, as a user runs it."""
    return subprocess.run(
        ["bash", "scripts/up.sh", "--local"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def stack_rm(env: dict[str, str], *stacks: str) -> None:
    for stack in stacks:
        subprocess.run([DOCKER, "stack", "rm", stack], env=env, capture_output=True, timeout=60)


def test_up_deploys_the_stack_and_the_demo_app_and_routes(swarm, bed):
    port = free_port()
    stack = f"{swarm.id}-up"
    env = {
        **os.environ,
        "DOCKER_HOST": bed.docker_host,
        "STACK_NAME": stack,
        "HTTP_PORT": str(port),
        "HTTPS_PORT": str(free_port()),
        "INTERLOCK_LABEL_PREFIX": swarm.id,
        "PROXY_NETWORK": f"{swarm.id}-proxy",
    }
    try:
        run = run_up(env)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        print(run.stdout[-800:])
        assert f"curl -s -H 'Host: demo.example.com' http://127.0.0.1:{port}/" in run.stdout
        assert f"task={stack}-demo_whoami." in run.stdout

        def both_replicas() -> bool:
            return len({http_get(port, "demo.example.com")[1].split()[0] for _ in range(12)}) == 2

        wait_until(both_replicas, 60, message="both demo replicas answer")
        assert http_get(port, "unknown.example.com")[0] == 404

        services = {
            s.name: s
            for s in swarm.client.services.list(
                filters={"label": f"com.docker.stack.namespace={stack}"}
            )
        }
        controller = services[f"{stack}_controller"]
        (task,) = controller.tasks(filters={"desired-state": "running"})
        container = swarm.client.containers.get(task["Status"]["ContainerStatus"]["ContainerID"])
        top = swarm.client.api.top(container.id, ps_args="-o pid,user,args")
        controller_lines = [p for p in top["Processes"] if "interlock" in " ".join(p)]
        assert controller_lines and all(p[1] != "root" for p in controller_lines), top

        # Its own /metrics (inside its container: the port is not published) shows passes and a
        # scrape of the nginx proxy over the overlay network; Docker's healthcheck says healthy.
        def metrics() -> str:
            code = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9100/metrics').read().decode())"
            return container.exec_run(["python3", "-c", code]).output.decode()

        def scraped(text: str) -> bool:
            return any(
                line.startswith("interlock_proxy_scrape_up{") and line.endswith(" 1.0")
                for line in text.splitlines()
            )

        # The first scrape may come before the node's agent has given the proxy its config
        # (and its status listener): wait for one that worked (every 15 s).
        text = wait_until(
            lambda: (m := metrics()) and scraped(m) and m,
            60,
            message="the controller scraped its proxy",
        )
        assert 'interlock_reconcile_passes_total{outcome="converged"}' in text
        wait_until(
            lambda: (
                (container.reload() or container.attrs["State"]["Health"]["Status"]) == "healthy"
            ),
            90,
            message="controller healthy",
        )

        # Redeploying the same stack changes nothing the controller does not put back.
        again = run_up(env)
        assert again.returncode == 0, again.stderr[-2000:]
        wait_until(
            lambda: http_get(port, "demo.example.com")[0] == 200,
            30,
            message="demo routed after redeploy",
        )
    finally:
        stack_rm(env, f"{stack}-demo", stack)
        wait_until(
            lambda: (
                not swarm.client.services.list(
                    filters={"label": f"com.docker.stack.namespace={stack}"}
                )
            ),
            60,
            message="stack gone",
        )
        wait_until(lambda: _network_gone(swarm, f"{swarm.id}-proxy"), 60, message="network gone")
        for name in (f"{stack}-acme-account",):  # made by up.sh, namespaced by the stack
            subprocess.run([DOCKER, "secret", "rm", name], env=env, capture_output=True, timeout=30)


def _network_gone(swarm, name: str) -> bool:
    for network in swarm.client.networks.list(names=[name]):
        try:
            network.remove()
        except Exception:
            return False
    return True
