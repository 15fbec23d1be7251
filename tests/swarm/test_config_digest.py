"""What the controller mounts is what it rendered: a config squatting the name is refused.

Config names are predictable (``<prefix>-<proxy>-<digest of the text>``) and anyone who may create
configs may create one first, with other content. On the real Swarm, through nginx and HAProxy:
a squatter seen in the listing is reported and never mounted, one created between the listing and
the write is caught by the executor (Docker's conflict, then the data compared), and in both cases
the proxy keeps serving its old config.
"""

from __future__ import annotations

import pytest

from controller import plan as planning
from controller.desired import desired_state
from controller.reconcile import render_options
from controller.render import render
from tests.bed.probes import http_get
from tests.swarm.controlled import routed

SQUAT = "# not what the controller rendered\n"


def next_target(lab) -> planning.Deployable:
    """What the next pass will want to deploy on the test's one proxy."""
    snapshot = lab.controller.reconciler.observer.snapshot()
    (one,) = desired_state(snapshot, lab.prefix).proxies
    rendered = render(one, render_options(lab.settings))
    return planning.Deployable(one.proxy, rendered, planning.secret_mounts(one))


def mounted(lab) -> str:
    snapshot = lab.controller.reconciler.observer.snapshot()
    return planning.mounted_config(snapshot, next_target(lab).proxy)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_a_squatted_config_name_is_refused_and_the_proxy_keeps_its_config(kind, swarm, bed):
    lab = routed(swarm, bed.docker_host)
    proxy = lab.proxy_service(kind)
    lab.app("plain", hostname="plain.example.com", port="8080")
    lab.converge()
    before = mounted(lab)

    # 1. The squatter is there before the pass lists the configs.
    lab.app("more", hostname="more.example.com", port="8080")
    target = next_target(lab)
    name = planning.config_name(lab.prefix, target.proxy, target.rendered)
    squatter = swarm.config(name, SQUAT)  # no label: anyone's config
    assert squatter.name == name
    result = lab.controller.reconciler.run_pass()
    written = [a for a in result.actions if not isinstance(a, planning.RemoveConfig)]
    assert written == [], written
    (problem,) = planning.rolling_problems(result.snapshot, lab.prefix, target)
    print(f"{kind}: listed squatter -> {problem}")
    assert name in problem.reason and problem.proxy == proxy.name
    assert "not mounted" in problem.reason
    assert mounted(lab) == before
    assert http_get(lab.port, "plain.example.com")[0] == 200
    assert http_get(lab.port, "more.example.com")[0] == 404  # its config was never mounted

    # 2. The squatter arrives between the listing and the write: Docker says 409, the executor
    #    compares the data and refuses.
    swarm.client.api.remove_service(swarm.name("more"))
    lab.app("third", hostname="third.example.com", port="8080")
    reconciler = lab.controller.reconciler
    snapshot = reconciler.observer.snapshot()
    target = next_target(lab)
    actions = planning.plan(snapshot, lab.prefix, {target.proxy.name: target}, {}, 3)
    name = planning.config_name(lab.prefix, target.proxy, target.rendered)
    assert [a.name for a in actions if isinstance(a, planning.CreateConfig)] == [name]
    swarm.config(name, SQUAT)
    outcomes = reconciler.executor.run(actions, snapshot)
    failed = [o for o in outcomes if not o.ok]
    print(f"{kind}: racing squatter -> {[o.error for o in failed]}")
    (outcome,) = failed
    assert isinstance(outcome.action, planning.CreateConfig) and name in outcome.error
    assert "other content" in outcome.error and outcome.action.proxy == proxy.name
    assert not any(isinstance(o.action, planning.UpdateProxyService) for o in outcomes)
    assert mounted(lab) == before
    assert http_get(lab.port, "plain.example.com")[0] == 200
    proxy.reload()
    configs = proxy.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Configs"]
    assert {c["ConfigName"] for c in configs} == {before}
    print(f"{kind}: still mounts {before}; plain answers 200")
