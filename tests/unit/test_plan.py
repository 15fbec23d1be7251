"""Planning: nothing to do when converged, the right writes when not, any prefix resumable."""

import base64
import hashlib
from dataclasses import replace

import pytest

from controller import plan as planning
from controller.desired import desired_state
from controller.plan import CreateConfig, PushConfig, RemoveConfig, UpdateProxyService
from controller.render import RenderOptions, render
from controller.snapshot import snapshot_from_api
from controller.timestamps import nanoseconds
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


def with_data(config: dict, text: str) -> dict:
    """A config as `GET /configs` lists it on Engine 20.10: with its data, base64."""
    config["Spec"]["Data"] = base64.b64encode(text.encode()).decode()
    return config


def test_a_killed_pass_that_created_the_config_resumes_with_the_update_only():
    snapshot = make([proxy_service(), APP])
    target = deployable(snapshot)["proxy"]
    name = planning.config_name(P, *_pr(target))
    created = b.config("cfgN", name, OWNED, "2026-01-02T00:00:00Z")
    after_kill = make([proxy_service(), APP], [with_data(created, target.rendered.text)])
    actions = planning.plan(after_kill, P, deployable(after_kill), {}, keep_configs=3)
    assert [type(a) for a in actions] == [UpdateProxyService]
    assert actions[0].config_name == name


def test_a_stack_redeploy_that_dropped_the_mount_is_undone():
    first = make([proxy_service(), APP])
    target = deployable(first)["proxy"]
    name = planning.config_name(P, *_pr(target))
    redeployed = proxy_service([b.config_ref("u1", "users-own", PATH)])
    ours = with_data(b.config("cfg1", name, OWNED, "2026-01-01T00:00:00Z"), target.rendered.text)
    reset = make([redeployed, APP], [ours])
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


# -- updates roll back, and a rolled-back config is not retried forever (issue 11, item 3) ------

CLI_UPDATE = {  # what `docker service create` and `docker stack deploy` set when told nothing
    "Parallelism": 1,
    "FailureAction": "pause",
    "Monitor": 5_000_000_000,
    "MaxFailureRatio": 0,
    "Order": "stop-first",
}


def test_an_update_that_fails_rolls_back_whatever_the_service_said():
    spec = proxy_service()["Spec"]
    spec["UpdateConfig"] = {**CLI_UPDATE, "Order": "start-first", "MaxFailureRatio": 0.5}
    spec["UpdateConfig"]["Monitor"] = 1_000_000_000
    new = planning.with_mounts(spec, PATH, ("z", "new"))
    update, rollback = new["UpdateConfig"], new["RollbackConfig"]
    assert update["FailureAction"] == "rollback" and update["MaxFailureRatio"] == 0
    assert update["Monitor"] >= 5_000_000_000  # long enough to see a proxy exit at start
    assert update["Order"] == rollback["Order"] == "start-first"  # the operator's ports, kept
    assert rollback["FailureAction"] == "pause"
    bare = planning.with_mounts(proxy_service()["Spec"], PATH, ("z", "new"))
    assert bare["UpdateConfig"]["Order"] == bare["RollbackConfig"]["Order"] == "stop-first"
    assert bare["UpdateConfig"]["FailureAction"] == "rollback"


@pytest.mark.parametrize(
    "kind, user, owner",
    [
        ("nginx", None, "0"),
        ("haproxy", None, "99"),
        ("haproxy", "101:102", "101"),
        ("nginx", "x", "0"),
    ],
)
def test_tls_keys_are_readable_by_the_proxys_user_only(kind, user, owner):
    spec = proxy_service()["Spec"]
    if user:
        spec["TaskTemplate"]["ContainerSpec"]["User"] = user
    secrets = [("tls-a.pem", "s1", "crt"), ("tls-a.pem.key", "s2", "key")]
    new = planning.with_mounts(spec, PATH, None, secrets, planning.secret_owner(kind, spec))
    files = {r["File"]["Name"]: r["File"] for r in new["TaskTemplate"]["ContainerSpec"]["Secrets"]}
    assert files["tls-a.pem.key"]["Mode"] == 0o400 and files["tls-a.pem.key"]["UID"] == owner
    assert files["tls-a.pem"]["Mode"] == 0o444  # a certificate is public


STARTED = "2026-02-01T10:00:00.5Z"


COMPLETED = "2026-02-01T10:00:08.5Z"
# What the engine said when it could not start a proxy task (a CI run of this project, 2026-11-27).
ENGINE_SAID = (
    "starting container failed: unable to remount dir as readonly: mount tmpfs:/var/lib/docker/"
    "containers/f802dd3f650d/mounts/secrets, flags: 0x21, data: uid=0,gid=0: "
    "device or resource busy"
)


def rolled_back(
    attempted: str,
    created: str = "2026-02-01T10:00:01.25Z",
    engine: bool = False,
    taken_at: float = 0.0,
    earlier: int = 0,
    **service_extra,
):
    """The proxy after Swarm rolled back an update to ``attempted``: the old spec is back, the
    failed task is in the history (as the observer lists it), PreviousSpec is gone.

    ``engine``: the engine could not start the task (the proxy never ran), as it failed
    ``earlier`` more times before; ``taken_at``: when the listing was taken."""
    proxy = proxy_service([b.config_ref("old", "interlock-proxy-old", PATH)])
    proxy["UpdateStatus"] = {
        "State": "rollback_completed",
        "StartedAt": STARTED,
        "CompletedAt": COMPLETED,
        "Message": "rollback completed",
    }
    proxy.update(service_extra)
    history = []
    for n in range(earlier + 1):
        failed = b.task(f"f{n}", "p1", "10.0.9.9", desired="shutdown", state="failed")
        failed["CreatedAt"] = created if n == earlier else f"2026-02-01T09:0{n}:00Z"
        failed["Status"]["Err"] = ENGINE_SAID if engine else "task: non-zero exit (1)"
        failed["Status"]["ContainerStatus"]["ExitCode"] = 128 if engine else 1
        failed["Spec"] = {"ContainerSpec": {"Configs": [b.config_ref("new", attempted, PATH)]}}
        history.append(failed)
    said = (
        {}
        if engine
        else {f"f{earlier}": '[emerg] cannot load certificate "/run/secrets/tls-x.pem"'}
    )
    return snapshot_from_api(
        [proxy, APP], TASKS, [b.network("net1")], [], [], [], history, said, taken_at=taken_at
    )


def wanted_name() -> str:
    first = make([proxy_service(), APP])
    return planning.config_name(P, *_pr(deployable(first)["proxy"]))


def test_a_rolled_back_update_is_not_made_again_and_says_why():
    snapshot = rolled_back(wanted_name())
    ready = deployable(snapshot)
    assert planning.plan(snapshot, P, ready, {}, keep_configs=3) == []
    (problem,) = planning.rolling_problems(snapshot, P, ready["proxy"])
    assert (problem.service, problem.proxy, problem.label) == ("proxy", "proxy", f"{P}.ext.name")
    assert wanted_name() in problem.reason and "rolled it back" in problem.reason
    assert "exit code 1" in problem.reason and "cannot load certificate" in problem.reason


def test_an_update_the_proxy_failed_is_held_however_long_ago():
    later = nanoseconds(COMPLETED) / 1e9 + 86_400
    snapshot = rolled_back(wanted_name(), taken_at=later)
    assert planning.plan(snapshot, P, deployable(snapshot), {}, keep_configs=3) == []


def test_an_update_the_engine_could_not_start_is_made_again_after_a_back_off():
    """The proxy never ran (the engine's mount failed), so the config is not to blame: held for
    10 s after the rollback, then made again; after each such failure the wait doubles."""
    completed = nanoseconds(COMPLETED) / 1e9
    for earlier, wait in ((0, 10), (1, 20), (2, 40), (9, 300)):
        soon = rolled_back(
            wanted_name(), engine=True, earlier=earlier, taken_at=completed + wait - 1
        )
        ready = deployable(soon)
        assert planning.plan(soon, P, ready, {}, keep_configs=3) == []
        (problem,) = planning.rolling_problems(soon, P, ready["proxy"])
        assert "device or resource busy" in problem.reason
        assert f"made again {wait} s after the rollback" in problem.reason
        due = rolled_back(wanted_name(), engine=True, earlier=earlier, taken_at=completed + wait)
        actions = planning.plan(due, P, deployable(due), {}, keep_configs=3)
        assert [type(a) for a in actions] == [CreateConfig, UpdateProxyService]
        assert planning.rolling_problems(due, P, deployable(due)["proxy"]) == []


def test_an_engine_failure_waits_while_the_rollback_runs_or_when_the_time_is_unknown():
    later = nanoseconds(COMPLETED) / 1e9 + 3600
    running = rolled_back(wanted_name(), engine=True, taken_at=later)
    running = replace(
        running,
        services=tuple(
            replace(s, update=replace(s.update, state="rollback_started")) if s.update else s
            for s in running.services
        ),
    )
    unknown = rolled_back(wanted_name(), engine=True)  # taken_at 0: a listing of no known time
    for snapshot in (running, unknown):
        assert planning.plan(snapshot, P, deployable(snapshot), {}, keep_configs=3) == []


def test_after_a_rollback_another_config_is_a_new_attempt():
    snapshot = rolled_back("interlock-proxy-somethingelse")
    ready = deployable(snapshot)
    actions = planning.plan(snapshot, P, ready, {}, keep_configs=3)
    assert [type(a) for a in actions] == [CreateConfig, UpdateProxyService]
    assert planning.rolling_problems(snapshot, P, ready["proxy"]) == []


def test_a_failure_from_before_the_last_update_does_not_count():
    snapshot = rolled_back(wanted_name(), created="2026-02-01T10:00:00.25Z")  # .25 < .5
    actions = planning.plan(snapshot, P, deployable(snapshot), {}, keep_configs=3)
    assert [type(a) for a in actions] == [CreateConfig, UpdateProxyService]


def test_a_manual_rollback_is_recognised_by_the_previous_spec():
    previous = proxy_service([b.config_ref("new", wanted_name(), PATH)])["Spec"]
    snapshot = rolled_back("unrelated", PreviousSpec=previous)
    ready = deployable(snapshot)
    assert planning.plan(snapshot, P, ready, {}, keep_configs=3) == []
    assert len(planning.rolling_problems(snapshot, P, ready["proxy"])) == 1


def test_snapshot_reads_update_status_previous_spec_and_failed_tasks():
    snapshot = rolled_back("x", PreviousSpec={"Name": "proxy"})
    proxy = next(s for s in snapshot.services if s.id == "p1")
    assert proxy.update.state == "rollback_completed" and proxy.update.rolled_back
    assert proxy.previous_spec == {"Name": "proxy"}
    (task,) = snapshot.history
    assert (task.state, task.exit_code, task.error) == ("failed", 1, "task: non-zero exit (1)")
    assert task.config_refs[0].config_name == "x" and "cannot load" in task.output


def test_times_within_one_second_sort_by_time_not_by_text():
    from controller.snapshot import sortable_time

    assert "2026-01-01T00:00:00.1234Z" > "2026-01-01T00:00:00.12345Z"  # the raw trap
    assert sortable_time("2026-01-01T00:00:00.1234Z") < sortable_time("2026-01-01T00:00:00.12345Z")
    assert sortable_time("2026-01-01T00:00:01Z") > sortable_time("2026-01-01T00:00:00.999999999Z")
    assert sortable_time("yesterday") == ""


# -- what is mounted is what was rendered (issue 11, item 4) ------------------------------------


def test_a_config_squatting_the_name_is_never_mounted_and_is_reported():
    first = make([proxy_service(), APP])
    target = deployable(first)["proxy"]
    name = planning.config_name(P, *_pr(target))
    squatter = with_data(b.config("sq", name, {}, "2026-01-01T00:00:00Z"), "events {}\n")
    snapshot = make([proxy_service(), APP], [squatter])
    ready = deployable(snapshot)
    assert planning.plan(snapshot, P, ready, {}, keep_configs=3) == []
    (problem,) = planning.rolling_problems(snapshot, P, ready["proxy"])
    assert name in problem.reason and problem.proxy == "proxy" and "not mounted" in problem.reason


def test_a_config_of_the_rendered_content_is_used_even_when_not_ours():
    first = make([proxy_service(), APP])
    target = deployable(first)["proxy"]
    name = planning.config_name(P, *_pr(target))
    same = with_data(b.config("same", name, {}, "2026-01-01T00:00:00Z"), target.rendered.text)
    snapshot = make([proxy_service(), APP], [same])
    actions = planning.plan(snapshot, P, deployable(snapshot), {}, keep_configs=3)
    assert [type(a) for a in actions] == [UpdateProxyService]
    assert actions[0].digest == target.rendered.digest


def test_a_config_listed_without_its_data_is_created_so_the_executor_compares_it():
    first = make([proxy_service(), APP])
    name = planning.config_name(P, *_pr(deployable(first)["proxy"]))
    unknown = b.config("u", name, OWNED, "2026-01-01T00:00:00Z")  # no Spec.Data
    snapshot = make([proxy_service(), APP], [unknown])
    actions = planning.plan(snapshot, P, deployable(snapshot), {}, keep_configs=3)
    assert [type(a) for a in actions] == [CreateConfig, UpdateProxyService]


def test_a_mounted_config_whose_data_differs_is_not_current():
    first = make([proxy_service(), APP])
    target = deployable(first)["proxy"]
    name = planning.config_name(P, *_pr(target))
    mounted = proxy_service([b.config_ref("sq", name, PATH)])
    squatter = with_data(b.config("sq", name, OWNED, "2026-01-01T00:00:00Z"), "other\n")
    snapshot = make([mounted, APP], [squatter])
    assert not planning.is_current(snapshot, P, deployable(snapshot)["proxy"], {})
    honest = with_data(b.config("sq", name, OWNED, "2026-01-01Z"), target.rendered.text)
    assert planning.is_current(make([mounted, APP], [honest]), P, target, {})


def test_snapshot_configs_carry_the_digest_of_their_data():
    listed = with_data(b.config("c", "n", {}, "2026-01-01Z"), "hello")
    (config,) = snapshot_from_api([], [], [], [listed]).configs
    assert config.digest == hashlib.sha256(b"hello").hexdigest()
    (bare,) = snapshot_from_api([], [], [], [b.config("c", "n", {}, "2026-01-01Z")]).configs
    assert bare.digest == ""


def test_the_certificate_checks_config_is_never_collected():
    check = {**OWNED, f"{P}.ext.check": "true", f"{P}.ext.proxy": ""}
    snapshot, _ = converged_snapshot([b.config("chk", "interlock-check-nginx-x", check, "2025Z")])
    assert planning.plan(snapshot, P, deployable(snapshot), {}, keep_configs=0) == []


# -- files beside the config (HAProxy's crt-list) -----------------------------------------------

SECURE = {
    f"{P}.hostname": "s.example.com",
    f"{P}.port": "80",
    f"{P}.ssl_cert": "crt",
    f"{P}.ssl_cert_key": "key",
}
SECRETS = [{"ID": "s1", "Spec": {"Name": "crt"}}, {"ID": "s2", "Spec": {"Name": "key"}}]
HAPROXY_PATH = "/usr/local/etc/haproxy/haproxy.cfg"


def test_files_beside_the_config_are_created_verified_and_mounted_with_it():
    proxy = proxy_service(labels={f"{P}.ext.name": "haproxy"})
    app = b.service("a1", "secure", SECURE)
    snapshot = snapshot_from_api([proxy, app], TASKS, [b.network("net1")], [], [], SECRETS)
    ready = deployable(snapshot)
    (crt_list,) = ready["proxy"].rendered.files
    *creates, update = planning.plan(snapshot, P, ready, {}, keep_configs=3)
    assert [c.name for c in creates][-1] == update.config_name  # the config last
    ((path, name, sha),) = update.files
    assert path == crt_list and path.startswith(HAPROXY_PATH + ".")
    assert name in {c.name for c in creates}
    stale = b.config_ref("o", "old-list", f"{HAPROXY_PATH}.0123456789ab.crt-list")
    spec = proxy_service([stale, b.config_ref("x", "users", "/etc/other")])["Spec"]
    new = planning.with_mounts(
        spec, HAPROXY_PATH, ("m", update.config_name), None, files=[(path, "l", name)]
    )
    mounted = {
        r["File"]["Name"]: r["ConfigName"] for r in new["TaskTemplate"]["ContainerSpec"]["Configs"]
    }
    assert mounted == {HAPROXY_PATH: update.config_name, path: name, "/etc/other": "users"}

    refs = [b.config_ref("m", update.config_name, HAPROXY_PATH), b.config_ref("l", name, path)]
    done = proxy_service(refs, labels={f"{P}.ext.name": "haproxy"})
    done["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"] = [
        {"File": {"Name": f}, "SecretID": "x", "SecretName": n} for f, n in ready["proxy"].secrets
    ]
    configs = [
        with_data(b.config("m", update.config_name, OWNED, "2026Z"), ready["proxy"].rendered.text),
        with_data(b.config("l", name, OWNED, "2026Z"), ready["proxy"].rendered.files[path]),
    ]
    converged = snapshot_from_api([done, app], TASKS, [b.network("net1")], configs, [], SECRETS)
    assert planning.plan(converged, P, deployable(converged), {}, keep_configs=3) == []
    assert sha == hashlib.sha256(ready["proxy"].rendered.files[path].encode()).hexdigest()


def test_signal_mode_pushes_carry_the_files_beside_the_config():
    labels = {f"{P}.ext.name": "haproxy", f"{P}.ext.mode": "signal"}
    app = b.service("a1", "secure", SECURE)
    first = snapshot_from_api([proxy_service(labels=labels), app], TASKS, [b.network("net1")],
                              [], [], SECRETS)  # fmt: skip
    proxy = proxy_service(labels=labels)  # with its TLS secrets mounted already
    proxy["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"] = [
        {"File": {"Name": f}, "SecretID": "x", "SecretName": n}
        for f, n in deployable(first)["proxy"].secrets
    ]
    container = b.container("c1", "proxy.1", {"com.docker.swarm.service.id": "p1"})
    snapshot = snapshot_from_api([proxy, app], TASKS, [b.network("net1")], [], [container],
                                 SECRETS)  # fmt: skip
    ready = deployable(snapshot)
    (push,) = planning.plan(snapshot, P, ready, {}, keep_configs=3)
    assert isinstance(push, PushConfig) and push.files == ready["proxy"].rendered.files
    assert next(iter(push.files)).endswith(".crt-list")


def test_a_snapshot_finds_each_service_by_id_and_none_for_an_unlisted_one():
    snapshot = make([proxy_service(), APP])
    assert snapshot.service("p1").name == "proxy"
    assert snapshot.service("a1").name == "web"
    assert snapshot.service("gone") is None
