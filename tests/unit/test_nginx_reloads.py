"""nginx's worker_shutdown_timeout: the setting reaches the rendered config, which the real
nginx accepts, and 0 leaves nginx's own behaviour (old workers wait for their connections)."""

import pytest

from controller.reconcile import render_options
from controller.render import RenderOptions, render
from controller.settings import Settings
from tests.unit.test_render import real_check, scenario


def test_the_default_bounds_old_workers_and_nginx_accepts_it(tmp_path):
    text = render(scenario()["ngx"], RenderOptions()).text
    assert "\nworker_shutdown_timeout 60000ms;\n" in text
    result = real_check("nginx", text, tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_setting_is_rendered_and_zero_renders_none(monkeypatch):
    monkeypatch.setenv("INTERLOCK_NGINX_WORKER_SHUTDOWN_TIMEOUT", "2.5")
    text = render(scenario()["ngx"], render_options(Settings())).text
    assert "\nworker_shutdown_timeout 2500ms;\n" in text
    off = render(scenario()["ngx"], RenderOptions(worker_shutdown_timeout=0)).text
    assert "worker_shutdown_timeout" not in off


def test_a_negative_timeout_is_refused(monkeypatch):
    monkeypatch.setenv("INTERLOCK_NGINX_WORKER_SHUTDOWN_TIMEOUT", "-1")
    with pytest.raises(ValueError, match="nginx_worker_shutdown_timeout"):
        Settings()
