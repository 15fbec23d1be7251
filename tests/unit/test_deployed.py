"""The CLI takes the deployed controller's settings, and says where they came from."""

from controller.deployed import with_deployed
from controller.settings import Settings
from controller.snapshot import snapshot_from_api
from tests import builders as b

P = "interlock"


def _controller(env, labels=None):
    mark = {f"{P}.ext.controller": "true"}
    service = b.service("c1", "interlock_controller", mark if labels is None else labels)
    service["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"] = env
    return service


def test_the_deployed_controllers_environment_wins_over_the_shells():
    snapshot = snapshot_from_api(
        [_controller(["INTERLOCK_MODE=signal", "INTERLOCK_POLL_INTERVAL=2", "PATH=/bin"])],
        [], [], [],
    )  # fmt: skip
    settings, source = with_deployed(Settings(mode="rolling"), snapshot)
    assert (settings.mode, settings.poll_interval) == ("signal", 2.0)
    assert source == (
        "settings: from service interlock_controller "
        "(INTERLOCK_MODE=signal, INTERLOCK_POLL_INTERVAL=2)"
    )


def test_without_a_labelled_controller_the_shells_settings_stay_and_it_says_so():
    unlabelled = _controller(["INTERLOCK_MODE=signal"], labels={})
    settings, source = with_deployed(Settings(), snapshot_from_api([unlabelled], [], [], []))
    assert settings.mode == "rolling"
    assert "no service labelled interlock.ext.controller=true" in source


def test_an_invalid_deployed_setting_keeps_the_shells_and_says_why():
    snapshot = snapshot_from_api([_controller(["INTERLOCK_MODE=sideways"])], [], [], [])
    settings, source = with_deployed(Settings(), snapshot)
    assert settings.mode == "rolling" and "invalid" in source
