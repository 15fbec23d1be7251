"""Desired state from plain snapshots: targets, networks, ports, clusters and conflicts."""

from controller.desired import desired_state
from controller.snapshot import snapshot_from_api
from tests import builders as b

P = "interlock"
NGINX = b.service("p1", "proxy", {f"{P}.ext.name": "nginx"})


def routes_of(desired, proxy="proxy"):
    one = next(d for d in desired.proxies if d.proxy.name == proxy)
    backends = {x.name: x for x in one.backends}
    return {
        (r.host, r.path): (backends[r.backend].service, backends[r.backend].targets)
        for r in one.routes
    }


NETWORKS = (b.network("net1"),)


def snap(services, tasks=(), networks=NETWORKS, containers=()):
    return snapshot_from_api(services, tasks, networks, [], containers)


def test_only_serving_tasks_are_targets():
    web = b.service("a1", "web", {f"{P}.hostname": "web.example.com", f"{P}.port": "8080"})
    tasks = [
        b.task("t1", "a1", "10.0.0.3"),
        b.task("t2", "a1", "10.0.0.2"),
        b.task("t3", "a1", "10.0.0.4", desired="shutdown"),  # being stopped: out at once
        b.task("t4", "a1", "10.0.0.5", state="starting"),  # not running yet
        b.task("t5", "a1", "10.0.0.6", network="other"),  # not on the proxy's network
    ]
    desired = desired_state(snap([NGINX, web], tasks), P)
    assert routes_of(desired) == {
        ("web.example.com", ""): ("web", ("10.0.0.2:8080", "10.0.0.3:8080"))
    }
    assert desired.problems == ()


def test_port_defaults_to_the_single_target_port_else_the_service_is_reported():
    one = b.service("a1", "one", {f"{P}.hostname": "one.example.com"}, ports=(9000,))
    two = b.service("a2", "two", {f"{P}.hostname": "two.example.com"}, ports=(80, 443))
    desired = desired_state(snap([NGINX, one, two], [b.task("t1", "a1", "10.0.0.2")]), P)
    assert routes_of(desired) == {("one.example.com", ""): ("one", ("10.0.0.2:9000",))}
    assert [(p.service, p.label) for p in desired.problems] == [("two", f"{P}.port")]


def test_network_must_be_shared_and_unambiguous():
    nets = [b.network("n1", "front"), b.network("n2", "back"), b.network("n3", "other")]
    proxy = b.service("p1", "proxy", {f"{P}.ext.name": "nginx"}, networks=["n1", "n2"])
    both = b.service(
        "a1",
        "both",
        {f"{P}.hostname": "both.example.com", f"{P}.port": "80"},
        networks=["n1", "n2"],
    )
    chosen = b.service(
        "a2",
        "chosen",
        {f"{P}.hostname": "chosen.example.com", f"{P}.port": "80", f"{P}.network": "back"},
        networks=["n1", "n2"],
    )
    none = b.service(
        "a3", "none", {f"{P}.hostname": "none.example.com", f"{P}.port": "80"}, networks=["n3"]
    )
    tasks = [b.task("t2", "a2", "10.2.0.7", network="n2")]
    desired = desired_state(snap([proxy, both, chosen, none], tasks, nets), P)
    assert routes_of(desired) == {("chosen.example.com", ""): ("chosen", ("10.2.0.7:80",))}
    reasons = {p.service: p.reason for p in desired.problems}
    assert "set interlock.network" in reasons["both"]
    assert "shares no network with proxy proxy" in reasons["none"]


def test_clusters_split_routes_between_proxies():
    blue = b.service("p2", "blue", {f"{P}.ext.name": "haproxy", f"{P}.ext.service_cluster": "blue"})
    a = b.service("a1", "a", {f"{P}.hostname": "a.example.com", f"{P}.port": "80"})
    c = b.service(
        "a2",
        "c",
        {f"{P}.hostname": "c.example.com", f"{P}.port": "80", f"{P}.ext.service_cluster": "blue"},
    )
    desired = desired_state(snap([NGINX, blue, a, c]), P)
    assert set(routes_of(desired, "proxy")) == {("a.example.com", "")}
    assert set(routes_of(desired, "blue")) == {("c.example.com", "")}


def test_the_older_service_keeps_a_contested_route_whatever_the_names():
    old = b.service(
        "zz",
        "zzz-old",
        {f"{P}.hostname": "a.example.com", f"{P}.port": "80"},
        created="2026-01-01T00:00:00Z",
    )
    new = b.service(
        "aa",
        "aaa-new",
        {f"{P}.hostname": "a.example.com", f"{P}.port": "80", f"{P}.alias_domain": "b.example.com"},
        created="2026-02-01T00:00:00Z",
    )
    desired = desired_state(snap([NGINX, new, old]), P)
    assert routes_of(desired) == {
        ("a.example.com", ""): ("zzz-old", ()),
        ("b.example.com", ""): ("aaa-new", ()),
    }
    (problem,) = desired.problems
    assert problem.service == "aaa-new" and "zzz-old" in problem.reason


def test_same_host_different_paths_do_not_conflict():
    root = b.service("a1", "site", {f"{P}.hostname": "a.example.com", f"{P}.port": "80"})
    api = b.service(
        "a2",
        "api",
        {f"{P}.hostname": "a.example.com", f"{P}.port": "80", f"{P}.context_root": "/api"},
    )
    desired = desired_state(snap([NGINX, root, api]), P)
    assert set(routes_of(desired)) == {("a.example.com", ""), ("a.example.com", "/api")}
    assert desired.problems == ()


def test_bad_labels_leave_out_one_service_and_keep_the_rest():
    good = b.service("a1", "good", {f"{P}.hostname": "good.example.com", f"{P}.port": "80"})
    evil = b.service("a2", "evil", {f"{P}.hostname": "a.example;}server{", f"{P}.port": "80;"})
    desired = desired_state(snap([NGINX, good, evil]), P)
    assert set(routes_of(desired)) == {("good.example.com", "")}
    assert {p.label for p in desired.problems if p.service == "evil"} == {
        f"{P}.hostname",
        f"{P}.port",
    }


def test_plain_labelled_containers_are_signal_mode_proxies():
    plain = b.container("c1", "edge", {f"{P}.ext.name": "nginx"})
    task_of_service = b.container(
        "c2", "proxy.1.x", {"com.docker.swarm.service.id": "p1", f"{P}.ext.name": "nginx"}
    )
    desired = desired_state(snap([NGINX], containers=[plain, task_of_service]), P)
    modes = {d.proxy.name: d.proxy.mode for d in desired.proxies}
    assert modes == {"proxy": "rolling", "edge": "signal"}


def test_a_label_prefix_other_than_the_default_isolates_controllers():
    mine = b.service("a1", "mine", {"edge.hostname": "a.example.com", "edge.port": "80"})
    desired = desired_state(snap([NGINX, mine]), "edge")
    assert desired.proxies == ()
