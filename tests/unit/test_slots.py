"""HAProxy server slots: which changes go through the runtime API, and what the file then says.

Configs are rendered from plain snapshots by the real renderer; every text the planner says to
write is checked by the real `haproxy -c`.
"""

from __future__ import annotations

from controller import slots
from controller.desired import desired_state
from controller.render import RenderOptions, render
from controller.snapshot import snapshot_from_api
from tests import builders as b
from tests.unit.test_render import real_check

P = "interlock"
OPTIONS = RenderOptions()
RUNTIME_MOUNT = {"Target": "/var/lib/haproxy", "Type": "volume", "Source": "runtime"}


def config(addresses: list[str], host: str = "app.example.com", runtime: bool = True, **labels):
    """The HAProxy config for an app whose tasks have these addresses."""
    proxy = b.service("p1", "hap", {f"{P}.ext.name": "haproxy", f"{P}.ext.mode": "signal"})
    if runtime:
        proxy["Spec"]["TaskTemplate"]["ContainerSpec"]["Mounts"] = [RUNTIME_MOUNT]
    app_labels = {f"{P}.hostname": host, f"{P}.port": "8080", **labels}
    app = b.service("a1", "app", app_labels)
    tasks = [b.task(f"x{i}", "a1", address) for i, address in enumerate(addresses)]
    snapshot = snapshot_from_api([proxy, app], tasks, [b.network("net1")], [], [])
    (one,) = desired_state(snapshot, P).proxies
    return render(one, OPTIONS).text


def servers(text: str) -> dict[str, str]:
    """Enabled slot -> its task address."""
    layout = slots.parse(text)
    return {s.name: s.target for one in layout.slots.values() for s in one if s.enabled}


def test_a_rendered_config_has_the_runtime_socket_and_free_slots_the_binary_accepts(tmp_path):
    text = config(["10.0.0.2", "10.0.0.3"])
    assert 'stats socket "/var/lib/haproxy/interlock-${HOSTNAME}.sock" mode 666 level admin' in text
    assert "server t1 10.0.0.2:8080\n" in text and "server t3 127.0.0.1:1 disabled\n" in text
    assert text.count("    server t") == slots.MIN_SLOTS
    assert real_check("haproxy", text, tmp_path).returncode == 0
    assert "interlock-${HOSTNAME}" not in config(["10.0.0.2"], runtime=False)


def test_a_rolling_update_keeps_every_staying_task_in_its_slot_through_the_runtime_api(tmp_path):
    served = config(["10.0.0.2", "10.0.0.3", "10.0.0.4"])
    update = slots.plan(served, config(["10.0.0.2", "10.0.0.4", "10.0.0.9"]))
    assert update.runtime, update.reason
    assert servers(update.text) == {"t1": "10.0.0.2:8080", "t3": "10.0.0.4:8080",
                                    "t4": "10.0.0.9:8080"}  # fmt: skip
    backend = update.commands[0].split()[2].split("/")[0]
    assert update.commands == (
        f"set server {backend}/t4 addr 10.0.0.9 port 8080",
        f"set server {backend}/t4 weight 1",
        f"set server {backend}/t4 state ready",
        f"set server {backend}/t2 state drain",
    )
    assert "server t2 10.0.0.3:8080 disabled" in update.text  # drained: out of a reload too
    assert real_check("haproxy", update.text, tmp_path).returncode == 0


def test_a_drained_slot_goes_to_maintenance_with_the_next_change_and_is_reused_last():
    first = slots.plan(config(["10.0.0.2", "10.0.0.3"]), config(["10.0.0.2"]))
    second = slots.plan(first.text, config(["10.0.0.2", "10.0.0.7"]))
    assert second.runtime
    assert servers(second.text) == {"t1": "10.0.0.2:8080", "t3": "10.0.0.7:8080"}
    assert second.commands[-1].endswith("/t2 state maint")
    assert "server t2 127.0.0.1:1 disabled" in second.text


def test_a_task_address_that_comes_back_gets_its_old_slot():
    first = slots.plan(config(["10.0.0.2", "10.0.0.3"]), config(["10.0.0.2"]))
    again = slots.plan(first.text, config(["10.0.0.2", "10.0.0.3"]))
    assert servers(again.text) == {"t1": "10.0.0.2:8080", "t2": "10.0.0.3:8080"}


def test_scale_to_zero_and_back_is_runtime_and_planning_twice_changes_nothing():
    texts = [config(a) for a in (["10.0.0.2"], [], ["10.0.0.5", "10.0.0.6"])]
    one = slots.plan(texts[0], texts[1])
    two = slots.plan(one.text, texts[2])
    assert one.runtime and two.runtime and servers(two.text) == {
        "t2": "10.0.0.5:8080", "t3": "10.0.0.6:8080"}  # fmt: skip
    assert slots.plan(two.text, texts[2]) == slots.Update(two.text, "endpoints")


def test_more_tasks_than_slots_a_new_host_or_a_proxy_config_not_ours_reload():
    served = config([f"10.0.0.{i}" for i in range(2, 10)])
    many = slots.plan(served, config([f"10.0.1.{i}" for i in range(2, 2 + slots.MIN_SLOTS + 1)]))
    assert many.reason == "structural"
    moved = slots.plan(served, config([f"10.0.0.{i}" for i in range(2, 10)], host="b.example.com"))
    assert moved.reason == "structural" and not moved.commands
    assert slots.plan("global\n    daemon\n", served).reason == "restart"


def test_a_structural_reload_still_keeps_the_tasks_in_their_slots():
    served = slots.plan(config(["10.0.0.2", "10.0.0.3"]), config(["10.0.0.3"])).text
    update = slots.plan(served, config(["10.0.0.3"], host="b.example.com"))
    assert update.reason == "structural" and servers(update.text) == {"t2": "10.0.0.3:8080"}


def test_what_the_runtime_api_shows_is_compared_with_every_command():
    shown = (
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
        "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
        "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
        "srv_fqdn srv_port srvrecord\n"
        "3 b 1 t1 10.0.0.9 2 4 1 1 0 1 0 0 8 0 0 0 - 8080 - 0 0 - - 0\n"
        "3 b 2 t2 10.0.0.3 2 8 1 1 0 1 0 2 0 0 0 0 - 8080 - 0 0 - - 0\n"
    )
    states = slots.read_states(shown)
    done = ["set server b/t1 addr 10.0.0.9 port 8080", "set server b/t1 state ready",
            "set server b/t2 state drain"]  # fmt: skip
    assert slots.unmet(done, states) == []
    missed = [
        "set server b/t2 state ready",
        "set server b/t1 weight 5",
        "set server b/t9 state maint",
    ]
    assert slots.unmet(missed, states) == missed


def test_an_nginx_reload_is_told_apart_by_its_upstream_server_lines():
    from controller.kinds import KINDS

    line = KINDS["nginx"].endpoint_line
    server = "        server 10.0.0.2:80 max_fails=1 fail_timeout=2s;"
    served = f"# Generated by interlock\nupstream a {{\n{server}\n}}\n"
    moved = served.replace("10.0.0.2", "10.0.0.3")
    assert slots.reload_reason(served, moved, line) == "endpoints"
    assert (
        slots.reload_reason(served, moved.replace("upstream a", "upstream b"), line) == "structural"
    )
    assert slots.reload_reason("user nginx;\n", moved, line) == "restart"


def test_an_address_the_commands_cannot_say_reloads_instead_of_failing():
    served = config(["10.0.0.2"])
    ipv6 = served.replace("10.0.0.2:8080", "fd00::5:8080")
    assert slots.plan(served, ipv6).reason == "structural"


def test_initial_text_is_every_initial_slot_line_its_free_ones_made_once():
    """What the template prints of a backend's slots (free slots' text remembered by their
    shape) is ``server_line`` of each of ``initial``'s slots, whichever shape came first."""
    shapes = [
        ([], [], ""),
        (["10.0.0.1:80"], [], " check"),
        (["10.0.0.1:80", "10.0.0.2:80"], [3, 1], " ssl verify none"),
        ([f"10.0.0.{i}:80" for i in range(1, 18)], [], ""),  # past MIN_SLOTS: 32 slots
        (["10.0.0.9:80"], [], ""),
    ]
    for targets, weights, options in shapes * 2:
        lines = [slots.server_line(s, options) for s in slots.initial(targets, weights)]
        expected = "".join(f"\n    {line}" for line in lines)
        assert slots.initial_text(targets, weights, options, "    ") == expected
