"""The reconcile loop on the real Swarm, through real nginx and real HAProxy (rolling mode)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.app import Controller
from tests.swarm.controlled import routed, run_cli

KINDS = ["nginx", "haproxy"]
HOST = "app.example.com"


def owned_configs(swarm, prefix: str) -> list[str]:
    return sorted(
        c.name for c in swarm.client.configs.list(filters={"label": f"{prefix}.ext.owned=true"})
    )


@pytest.mark.parametrize("kind", KINDS)
def test_deploy_scale_and_remove_an_app(kind, swarm, bed):
    lab = routed(swarm, bed.docker_host)
    lab.proxy_service(kind)
    app = lab.app("app", hostname="app", domain="example.com", port="8080")
    lab.converge()
    status, body = lab.get(HOST)
    assert status == 200 and body.startswith(f"task={app.name}.1."), body
    assert lab.get("unknown.example.com")[0] == 404

    lab.scale(app, 3)
    lab.converge()
    seen = lab.tasks_seen(HOST, requests=30)
    print(f"{kind}: 30 requests over 3 replicas -> {dict(seen)}")
    assert len(seen) == 3, seen

    lab.scale(app, 0)
    lab.converge()
    assert lab.get(HOST)[0] == 503

    app.remove()
    lab.converge()
    assert lab.get(HOST)[0] == 404


@pytest.mark.parametrize("kind", KINDS)
def test_path_prefixes_with_and_without_rewrite(kind, swarm, bed):
    lab = routed(swarm, bed.docker_host)
    lab.proxy_service(kind)
    lab.app("site", hostname=HOST, port="8080", share_host="true")  # the owner lets paths in
    lab.app("api", hostname=HOST, port="8080", context_root="/api", context_root_rewrite="true")
    lab.app("raw", hostname=HOST, port="8080", context_root="/raw/v1.0")
    lab.converge()
    cases = {
        "/api/users?id=7": ("-api.1.", "path=/users?id=7 "),
        "/api": ("-api.1.", "path=/ "),
        "/raw/v1.0/x": ("-raw.1.", "path=/raw/v1.0/x "),
        "/raw/v1.0": ("-raw.1.", "path=/raw/v1.0 "),
        "/apix": ("-site.1.", "path=/apix "),  # a longer word is not under the prefix
        "/raw/v1x0/x": ("-site.1.", "path=/raw/v1x0/x "),  # '.' is literal, not any character
        "/": ("-site.1.", "path=/ "),
    }
    for path, (task, seen_path) in cases.items():
        status, body = lab.get(HOST, path)
        assert status == 200 and task in body and seen_path in body, (path, body)


def test_once_twice_writes_nothing_the_second_time(swarm, bed):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service("nginx")
    lab.app("app", hostname=HOST, port="8080")
    first = run_cli(bed.docker_host, lab.prefix, "once")
    assert first.returncode == 0, first.stderr
    assert "2 action(s)" in first.stdout, first.stdout  # create the config, update the proxy
    swarm.wait_updated(proxy)
    proxy.reload()
    version, configs = proxy.version, owned_configs(swarm, lab.prefix)

    second = run_cli(bed.docker_host, lab.prefix, "once")
    assert second.returncode == 0, second.stderr
    assert "0 action(s)" in second.stdout, second.stdout
    proxy.reload()
    assert (proxy.version, owned_configs(swarm, lab.prefix)) == (version, configs)
    assert lab.get(HOST)[0] == 200

    rendered = run_cli(bed.docker_host, lab.prefix, "render", "--proxy", proxy.name)
    assert rendered.returncode == 0 and f"server_name {HOST};" in rendered.stdout
    assert run_cli(bed.docker_host, lab.prefix, "render", "--proxy", "nosuch").returncode == 1

    diff = run_cli(bed.docker_host, lab.prefix, "diff")
    assert diff.returncode == 0 and diff.stdout == "", diff.stdout

    status = json.loads(run_cli(bed.docker_host, lab.prefix, "status", "--json").stdout)
    (row,) = status["proxies"]
    assert (row["mode"], row["tasks_in_sync"], row["deployed"]) == (
        "rolling",
        "1/1",
        row["desired"],
    )
    assert status["routes"] == [
        {
            "proxy": proxy.name,
            "host": HOST,
            "path": "/",
            "service": f"{swarm.prefix}app",
            "backends": 1,
        }
    ]


def test_a_stack_redeploy_that_resets_the_proxy_is_undone(swarm, bed):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service("haproxy")
    lab.app("app", hostname=HOST, port="8080")
    lab.converge()

    def drop_configs(spec):  # what `docker stack deploy` of the original stack file does
        spec["TaskTemplate"]["ContainerSpec"]["Configs"] = []

    swarm.update_service(proxy, drop_configs)
    swarm.wait_updated(proxy)
    swarm.wait_http(lab.port, HOST, status=200, contains="default")  # the image's own config
    lab.converge()
    assert lab.get(HOST)[0] == 200


@pytest.mark.parametrize("kind", KINDS)
def test_injection_attempts_are_rejected_and_the_rest_is_served(kind, swarm, bed):
    lab = routed(swarm, bed.docker_host)
    lab.proxy_service(kind)
    lab.app("good", hostname=HOST, port="8080")
    lab.app("hostinject", replicas=0, hostname="a.example;}server{listen 81;}", port="8080")
    lab.app("newline", replicas=0, hostname="b.example.com\n    return 200", port="8080")
    lab.app("portinject", replicas=0, hostname="c.example.com", port="80;")
    lab.app("pathinject", replicas=0, hostname="d.example.com", context_root="/x { return 200; }")
    result = lab.converge()

    rejected = {
        (p.service.split("-", 1)[1], p.label.split(".", 1)[1])
        for p in result.problems
        if p.rejected
    }
    assert rejected == {
        ("hostinject", "hostname"),
        ("newline", "hostname"),
        ("portinject", "port"),
        ("pathinject", "context_root"),
    }
    text = result.rendered[lab.proxy.name].text
    for injected in ("listen 81", "return 200", ":80;", "a.example", "{ return"):
        assert injected not in text, injected
    assert lab.get(HOST)[0] == 200
    for host in ("a.example", "b.example.com", "c.example.com", "d.example.com"):
        assert lab.get(host)[0] == 404

    report = run_cli(bed.docker_host, lab.prefix, "validate")
    assert report.returncode == 1
    assert f"ok       {swarm.prefix}good: {HOST}/" in report.stdout
    assert f"service {swarm.prefix}portinject: rejected: {lab.prefix}.port:" in report.stdout


def test_killed_after_creating_the_config_the_next_pass_converges(swarm, bed):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service("nginx")
    lab.app("app", hostname=HOST, port="8080")
    reconciler = lab.controller.reconciler
    planned = reconciler.run_pass(dry_run=True)
    assert [type(a).__name__ for a in planned.actions] == ["CreateConfig", "UpdateProxyService"]
    # The controller dies right after its first write: only the config exists.
    reconciler.executor.run(planned.actions[:1], planned.snapshot)
    assert len(owned_configs(swarm, lab.prefix)) == 1
    proxy.reload()
    assert proxy.attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Configs") in (None, [])

    result = lab.converge()  # a new controller (no memory) would plan the same from the state
    assert result.converged
    assert len(owned_configs(swarm, lab.prefix)) == 1  # reused, not created twice
    assert lab.get(HOST)[0] == 200


def test_a_config_the_proxy_binary_refuses_is_never_deployed(swarm, bed, tmp_path):
    """A user's own template with a mistake in it: nginx -t refuses it, the old config serves."""
    good = routed(swarm, bed.docker_host)
    proxy = good.proxy_service("nginx")
    good.app("app", hostname=HOST, port="8080")
    good.converge()
    proxy.reload()
    before, configs = proxy.version, owned_configs(swarm, good.prefix)

    template = (Path(__file__).parents[2] / "templates" / "nginx.conf.j2").read_text()
    (tmp_path / "nginx.conf.j2").write_text(
        template.replace("server_tokens off;", "server_tokns off;")
    )
    settings = good.settings.model_copy(update={"template_dir": str(tmp_path)})
    broken = Controller.from_settings(settings, swarm.client.api)
    result = broken.reconciler.run_pass()
    assert 'unknown directive "server_tokns"' in result.refused[proxy.name]
    assert not result.actions and not result.converged
    proxy.reload()
    assert (proxy.version, owned_configs(swarm, good.prefix)) == (before, configs)
    assert good.get(HOST)[0] == 200

    plain = run_cli(bed.docker_host, good.prefix, "validate", INTERLOCK_TEMPLATE_DIR=str(tmp_path))
    assert plain.returncode == 0 and "server_tokns" not in plain.stdout  # no check unless asked
    report = run_cli(
        bed.docker_host, good.prefix, "validate", "--check", INTERLOCK_TEMPLATE_DIR=str(tmp_path)
    )
    assert report.returncode == 1 and "server_tokns" in report.stdout


def test_render_diff_status_and_validate_write_nothing_and_start_nothing(swarm, bed):
    """The looking verbs start no container (no check), create no config, update no service;
    their answer is on stdout and stderr stays quiet (no JSON info lines of their passes)."""
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service("nginx")
    lab.app("app", hostname=HOST, port="8080")  # not converged: every config would be checked
    proxy.reload()
    version, configs = proxy.version, owned_configs(swarm, lab.prefix)
    since = swarm.client.api.info()["SystemTime"]
    outputs = {
        verb: run_cli(bed.docker_host, lab.prefix, *verb.split())
        for verb in ("render", "diff", "status", "validate")
    }
    until = swarm.client.api.info()["SystemTime"]
    created = [
        e
        for e in swarm.client.api.events(
            since=_epoch(since),
            until=_epoch(until) + 1,
            decode=True,
            filters={"type": "container", "event": "create"},
        )
        if f"{lab.prefix}.ext.check" in (e.get("Actor") or {}).get("Attributes", {})
    ]
    proxy.reload()
    print(f"verbs ran; check containers created: {len(created)}, version {version}")
    assert created == []
    assert (proxy.version, owned_configs(swarm, lab.prefix)) == (version, configs)
    for verb, done in outputs.items():
        assert done.returncode == 0, (verb, done.stderr)
        assert done.stdout.strip() and done.stderr.strip() in ("", "# 1 proxy config(s) differ"), (
            verb,
            done.stderr,
        )
    assert "server_name app.example.com;" in outputs["render"].stdout
    assert f"ok       {swarm.prefix}app: {HOST}/" in outputs["validate"].stdout


def _epoch(docker_time: str) -> int:
    from controller.timestamps import nanoseconds

    return nanoseconds(docker_time) // 1_000_000_000
