"""The check cache: keyed by a config's shape, so new task addresses need no new check."""

from dataclasses import replace

from controller.bounded import MEMORY, remember
from controller.check import check_files
from controller.desired import desired_state
from controller.render import Rendered, RenderOptions
from controller.snapshot import snapshot_from_api
from controller.verify import shape
from tests import builders as b

P = "interlock"


def one_proxy(tasks, hostname="web.example.com"):
    services = [
        b.service("p1", "proxy", {f"{P}.ext.name": "nginx"}),
        b.service("a1", "web", {f"{P}.hostname": hostname, f"{P}.port": "80"}),
    ]
    (desired,) = desired_state(
        snapshot_from_api(services, tasks, [b.network("net1")], []), P
    ).proxies
    return desired


def test_the_same_routes_with_other_addresses_have_the_same_shape():
    options = RenderOptions()
    before = one_proxy([b.task("t1", "a1", "10.0.0.2")])
    scaled = one_proxy([b.task("t2", "a1", "10.0.0.9"), b.task("t3", "a1", "10.0.0.10")])
    assert shape(before, options) == shape(scaled, options)
    assert shape(one_proxy([]), options) != shape(before, options)  # 503 instead of proxy_pass
    moved = one_proxy([b.task("t1", "a1", "10.0.0.2")], hostname="other.example.com")
    assert shape(moved, options) != shape(before, options)


def test_the_check_gets_stand_in_certificates_where_the_config_names_them():
    desired = one_proxy([b.task("t1", "a1", "10.0.0.2")])
    text = Rendered("text", "d")
    assert set(check_files(desired, text, "/run/secrets")) == {"tmp/interlock-check.conf"}
    from controller.desired import certificate

    tls = replace(desired, certificates=(certificate("crt", "key"),))
    beside = Rendered("text", "d", {"/etc/haproxy/haproxy.cfg.ab.crt-list": "list"})
    files = check_files(tls, beside, "/run/secrets")
    assert files["etc/haproxy/haproxy.cfg.ab.crt-list"] == "list"  # the files beside it too
    cert_file = certificate("crt", "key").file
    assert {f"run/secrets/{cert_file}", f"run/secrets/{cert_file}.key"} < set(files)
    assert "BEGIN CERTIFICATE" in files[f"run/secrets/{cert_file}"]


def test_caches_of_a_long_running_controller_stay_bounded():
    memory: dict = {}
    for n in range(MEMORY + 50):
        remember(memory, n, n)
    assert len(memory) == MEMORY and min(memory) == 50  # the oldest went first
