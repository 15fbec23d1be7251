"""Planning: nothing to do when converged, the right writes when not, any prefix resumable."""

from controller import plan as planning
from controller.desired import desired_state
from controller.plan import CreateConfig, PushConfig, RemoveConfig, UpdateProxyService
from controller.render import RenderOptions, render
from controller.snapshot import snapshot_from_api
from tests import builders as b

P = "interlock"
PATH = "/etc/nginx/nginx.conf"
APP = b.service("a1", "web", {f"{P}.hostname": "web.example.com", f"{P}.port": "80"})
TASKS = [b.task("t1", "a1", "10.0.0.2")]
OWNED = {f"{P}.ext.owned": "true", f"{P}.ext.proxy": "p1"}


def proxy_service(configs=(), labels=None):
    return b.service("p1", "proxy", labels or {f"{P}.ext.name": "nginx"}, configs=list(configs))


def deployable(snapshot):
    desired = desired_state(snapshot, P)
    return {
        d.proxy.name: planning.Deployable(
            d.proxy, render(d, RenderOptions()), planning.secret_mounts(d)
        )
        for d in desired.proxies
    }


def _pr(target):
    return target.proxy, target.rendered


def make(services, configs=(), containers=()):
    return snapshot_from_api(services, TASKS, [b.network("net1")], configs, containers)


def test_a_fresh_proxy_gets_a_config_created_and_mounted():
    snapshot = make([proxy_service(), APP])
    actions = planning.plan(snapshot, P, deployable(snapshot), {}, keep_configs=3)
    create, update = actions
    assert isinstance(create, CreateConfig) and isinstance(update, UpdateProxyService)
    assert create.name == update.config_name and create.name.startswith("interlock-proxy-")
    assert create.name.endswith(create.labels[f"{P}.ext.digest"][:12])
    assert "10.0.0.2:80" in create.data
    assert (update.service_id, update.version, update.path) == ("p1", 10, PATH)


def converged_snapshot(extra_configs=()):
    first = make([proxy_service(), APP])
    name = planning.config_name(P, *_pr(deployable(first)["proxy"]))
    proxy = proxy_service([b.config_ref("cfg1", name, PATH)])
    configs = [b.config("cfg1", name, OWNED, "2026-01-01T00:00:00Z"), *extra_configs]
    return make([proxy, APP], configs), name


def test_a_converged_swarm_plans_nothing():
    snapshot, _ = converged_snapshot()
    assert planning.plan(snapshot, P, deployable(snapshot), {}, keep_configs=3) == []


def test_a_killed_pass_that_created_the_config_resumes_with_the_update_only():
    snapshot = make([proxy_service(), APP])
    name = planning.config_name(P, *_pr(deployable(snapshot)["proxy"]))
    after_kill = make(
        [proxy_service(), APP], [b.config("cfgN", name, OWNED, "2026-01-02T00:00:00Z")]
    )
    actions = planning.plan(after_kill, P, deployable(after_kill), {}, keep_configs=3)
    assert [type(a) for a in actions] == [UpdateProxyService]
    assert actions[0].config_name == name


def test_a_stack_redeploy_that_dropped_the_mount_is_undone():
    _, name = converged_snapshot()
    redeployed = proxy_service([b.config_ref("u1", "users-own", PATH)])
    reset = make([redeployed, APP], [b.config("cfg1", name, OWNED, "2026-01-01T00:00:00Z")])
    actions = planning.plan(reset, P, deployable(reset), {}, keep_configs=3)
    assert [type(a) for a in actions] == [UpdateProxyService]


def test_unused_owned_configs_beyond_the_newest_few_are_removed():
    old = [
        b.config(f"old{i}", f"interlock-proxy-old{i}", OWNED, f"2025-0{i}-01T00:00:00Z")
        for i in range(1, 6)
    ]
    foreign = b.config("f1", "someone-elses", {}, "2020-01-01T00:00:00Z")
    orphan = b.config("o1", "interlock-gone-x", {**OWNED, f"{P}.ext.proxy": "gone"}, "2025-01-01Z")
    snapshot, _ = converged_snapshot([*old, foreign, orphan])
    actions = planning.plan(snapshot, P, deployable(snapshot), {}, keep_configs=2)
    assert all(isinstance(a, RemoveConfig) for a in actions)
    assert sorted(a.name for a in actions) == [
        "interlock-gone-x",
        "interlock-proxy-old1",
        "interlock-proxy-old2",
        "interlock-proxy-old3",
    ]


def test_with_mounts_replaces_only_the_mount_at_the_path_and_sets_an_update_config():
    spec = proxy_service(
        [b.config_ref("x", "other", "/etc/other"), b.config_ref("y", "old", PATH)]
    )["Spec"]
    new = planning.with_mounts(spec, PATH, ("z", "new"))
    refs = {
        r["File"]["Name"]: r["ConfigName"] for r in new["TaskTemplate"]["ContainerSpec"]["Configs"]
    }
    assert refs == {"/etc/other": "other", PATH: "new"}
    assert new["UpdateConfig"]["Order"] == "stop-first"
    assert spec["TaskTemplate"]["ContainerSpec"]["Configs"][1]["ConfigName"] == "old"  # untouched


def test_signal_mode_pushes_only_to_containers_serving_another_digest():
    labels = {f"{P}.ext.name": "nginx", f"{P}.ext.mode": "signal"}
    containers = [
        b.container(c, f"proxy.{c}", {"com.docker.swarm.service.id": "p1"})
        for c in ("c1", "c2", "c3")
    ]
    snapshot = make([proxy_service(labels=labels), APP], containers=containers)
    ready = deployable(snapshot)
    digest = ready["proxy"].rendered.digest
    served = {"c1": digest, "c2": "stale", "c3": ""}
    actions = planning.plan(snapshot, P, ready, served, keep_configs=3)
    assert [(type(a), a.container_id) for a in actions] == [(PushConfig, "c2"), (PushConfig, "c3")]
    assert planning.plan(snapshot, P, ready, dict.fromkeys(served, digest), 3) == []


def test_config_names_fit_dockers_limit():
    long = b.service("p1", "p" * 63, {f"{P}.ext.name": "nginx"})
    snapshot = make([long, APP])
    proxy, rendered = _pr(deployable(snapshot)["p" * 63])
    assert len(planning.config_name(P, proxy, rendered)) == 64


def test_tls_certificates_are_mounted_with_the_config_and_count_for_convergence():
    labels = {
        f"{P}.hostname": "s.example.com",
        f"{P}.port": "80",
        f"{P}.ssl_cert": "crt",
        f"{P}.ssl_cert_key": "key",
    }
    secrets = [{"ID": "s1", "Spec": {"Name": "crt"}}, {"ID": "s2", "Spec": {"Name": "key"}}]
    app = b.service("a1", "secure", labels)
    snapshot = snapshot_from_api(
        [proxy_service(), app], TASKS, [b.network("net1")], [], [], secrets
    )
    ready = deployable(snapshot)
    (file,) = {f for f, _ in ready["proxy"].secrets if not f.endswith(".key")}
    assert ready["proxy"].secrets == ((file, "crt"), (f"{file}.key", "key"))
    _, update = planning.plan(snapshot, P, ready, {}, keep_configs=3)
    assert update.secrets == ((file, "s1", "crt"), (f"{file}.key", "s2", "key"))

    name = planning.config_name(P, *_pr(ready["proxy"]))
    refs = {
        "Secrets": [
            {"File": {"Name": f}, "SecretID": "x", "SecretName": n}
            for f, n in ready["proxy"].secrets
        ]
    }
    mounted = b.service(
        "p1", "proxy", {f"{P}.ext.name": "nginx"}, configs=[b.config_ref("cfg1", name, PATH)]
    )
    mounted["Spec"]["TaskTemplate"]["ContainerSpec"].update(refs)
    configs = [b.config("cfg1", name, OWNED, "2026-01-01T00:00:00Z")]
    done = snapshot_from_api([mounted, app], TASKS, [b.network("net1")], configs, [], secrets)
    assert planning.plan(done, P, deployable(done), {}, keep_configs=3) == []
