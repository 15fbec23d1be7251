"""Desired state from plain snapshots: targets, networks, ports, clusters and conflicts."""

from controller.desired import Trust, desired_state, without
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


def _site_and_api(owner_labels=None, api_labels=None):
    root = b.service(
        "a1",
        "site",
        {f"{P}.hostname": "a.example.com", f"{P}.port": "80", **(owner_labels or {})},
        created="2026-01-01T00:00:00Z",
    )
    api = b.service(
        "a2",
        "api",
        {
            f"{P}.hostname": "a.example.com",
            f"{P}.port": "80",
            f"{P}.context_root": "/api",
            **(api_labels or {}),
        },
        created="2026-01-02T00:00:00Z",
    )
    return desired_state(snap([NGINX, root, api]), P)


def test_a_path_under_another_services_host_needs_the_owners_consent():
    desired = _site_and_api()
    assert set(routes_of(desired)) == {("a.example.com", "")}
    (problem,) = desired.problems
    assert problem.service == "api" and "belongs to service site" in problem.reason
    assert f"{P}.share_host=true" in problem.reason


def test_the_owner_shares_its_host_by_label_or_by_stack():
    shared = _site_and_api({f"{P}.share_host": "true"})
    stack = {"com.docker.stack.namespace": "shop"}
    same_stack = _site_and_api(stack, stack)
    other_stack = _site_and_api(stack, {"com.docker.stack.namespace": "evil"})
    for desired in (shared, same_stack):
        assert set(routes_of(desired)) == {("a.example.com", ""), ("a.example.com", "/api")}
        assert desired.problems == ()
    assert set(routes_of(other_stack)) == {("a.example.com", "")}


def test_a_newcomer_never_takes_the_owners_tls_or_redirect():
    secrets = [{"ID": "s1", "Spec": {"Name": "c"}}, {"ID": "s2", "Spec": {"Name": "k"}}]
    owner = b.service(
        "a1",
        "site",
        {f"{P}.hostname": "a.example.com", f"{P}.port": "80", f"{P}.share_host": "true"},
        created="2026-01-01T00:00:00Z",
    )
    newcomer = b.service(
        "a2",
        "api",
        {
            f"{P}.hostname": "a.example.com",
            f"{P}.port": "80",
            f"{P}.context_root": "/api",
            f"{P}.ssl_cert": "c",
            f"{P}.ssl_cert_key": "k",
            f"{P}.ssl_only": "true",
        },
        created="2026-01-02T00:00:00Z",
    )
    snapshot = snapshot_from_api([NGINX, owner, newcomer], [], NETWORKS, [], [], secrets)
    desired = desired_state(snapshot, P)
    assert desired.proxies[0].tls == () and desired.proxies[0].certificates == ()
    (problem,) = desired.problems
    assert problem.service == "api" and not problem.rejected and "owner" in problem.reason


def test_a_rejected_owner_does_not_hand_its_host_to_a_newcomer():
    broken = b.service(
        "a1",
        "site",
        {f"{P}.hostname": "a.example.com", f"{P}.port": "eighty"},
        created="2026-01-01T00:00:00Z",
    )
    newcomer = b.service(
        "a2",
        "squatter",
        {f"{P}.hostname": "a.example.com", f"{P}.port": "80"},
        created="2026-01-02T00:00:00Z",
    )
    desired = desired_state(snap([NGINX, broken, newcomer]), P)
    assert routes_of(desired) == {}
    reasons = {(p.service, p.label): p.reason for p in desired.problems}
    assert "not handed over" in reasons[("squatter", f"{P}.hostname")]
    assert ("site", f"{P}.port") in reasons


def test_age_is_compared_to_the_nanosecond_not_as_text():
    # As strings ".1234Z" sorts after ".12345Z" and "05Z" after "05.5Z": both would invert.
    for older, newer in (
        ("2026-01-01T00:00:05.1234Z", "2026-01-01T00:00:05.12345Z"),
        ("2026-01-01T00:00:05Z", "2026-01-01T00:00:05.5Z"),
        ("2026-01-01T01:00:05+01:00", "2026-01-01T00:00:05.000000001Z"),
    ):
        first = b.service(
            "zz", "first", {f"{P}.hostname": "a.example.com", f"{P}.port": "80"}, created=older
        )
        second = b.service(
            "aa", "second", {f"{P}.hostname": "a.example.com", f"{P}.port": "80"}, created=newer
        )
        desired = desired_state(snap([NGINX, second, first]), P)
        assert routes_of(desired) == {("a.example.com", ""): ("first", ())}, (older, newer)


def test_a_service_whose_cluster_no_proxy_serves_is_reported():
    lost = b.service(
        "a1",
        "lost",
        {f"{P}.hostname": "a.example.com", f"{P}.port": "80", f"{P}.ext.service_cluster": "blu"},
    )
    desired = desired_state(snap([NGINX, lost]), P)
    (problem,) = desired.problems
    assert problem.label == f"{P}.ext.service_cluster" and "'blu'" in problem.reason


def test_untrusted_proxies_get_nothing_and_are_reported():
    trusted = b.service("p1", "edge", {f"{P}.ext.name": "nginx", "ops.proxy": "yes"})
    rogue = b.service("p2", "rogue", {f"{P}.ext.name": "nginx"})
    rogue_container = b.container("c1", "rogue-box", {f"{P}.ext.name": "haproxy"})
    web = b.service("a1", "web", {f"{P}.hostname": "web.example.com", f"{P}.port": "80"})
    snapshot = snap([trusted, rogue, web], containers=[rogue_container])
    by_label = desired_state(snapshot, P, trust=Trust(label="ops.proxy=yes"))
    assert [d.proxy.name for d in by_label.proxies] == ["edge"]
    assert {p.service for p in by_label.problems} == {"rogue", "rogue-box"}
    by_name = desired_state(snapshot, P, trust=Trust(name_pattern="edge|rogue-.*"))
    assert sorted(d.proxy.name for d in by_name.proxies) == ["edge", "rogue-box"]
    everyone = [d.proxy.name for d in desired_state(snapshot, P).proxies]
    assert everyone == ["edge", "rogue", "rogue-box"]


def test_without_leaves_out_a_service_and_keeps_the_rest():
    one = b.service("a1", "one", {f"{P}.hostname": "one.example.com", f"{P}.port": "80"})
    two = b.service("a2", "two", {f"{P}.hostname": "two.example.com", f"{P}.port": "80"})
    (proxy,) = desired_state(snap([NGINX, one, two]), P).proxies
    kept = without(proxy, ["two"])
    assert [r.host for r in kept.routes] == ["one.example.com"]
    assert [x.service for x in kept.backends] == ["one"]
    assert kept.owners == (("one.example.com", "one"),)


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


def test_proxies_reaching_a_service_on_other_networks_get_its_tasks_on_their_own():
    """A lone service's backend is made once a pass for every proxy that reaches it alike
    (found by the service, its port and its targets): one on another network has its own."""
    nets = [b.network("n1"), b.network("n2")]
    first = b.service("p1", "first", {f"{P}.ext.name": "nginx"}, networks=["n1"])
    second = b.service("p2", "second", {f"{P}.ext.name": "haproxy"}, networks=["n2"])
    labels = {f"{P}.hostname": "web.example.com", f"{P}.port": "80"}
    web = b.service("a1", "web", labels, networks=["n1", "n2"])
    tasks = [b.task("t1", "a1", "10.0.1.2", network="n1"), b.task("t2", "a1", "10.0.2.2", "n2")]
    desired = desired_state(snap([first, second, web], tasks, nets), P)
    assert routes_of(desired, "first") == {("web.example.com", ""): ("web", ("10.0.1.2:80",))}
    assert routes_of(desired, "second") == {("web.example.com", ""): ("web", ("10.0.2.2:80",))}
    (one, other) = (next(iter(d.backends)) for d in desired.proxies)
    assert one.name == other.name and one is not other
