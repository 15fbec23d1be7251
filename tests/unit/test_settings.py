"""Settings: a bad value stops the program at start, naming the variable."""

import subprocess
import sys

import pytest

from controller.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INTERLOCK_POLL_INTERVAL", "0"),
        ("INTERLOCK_POLL_INTERVAL", "soon"),
        ("INTERLOCK_MODE", "restart"),
        ("INTERLOCK_LABEL_PREFIX", "Inter Lock"),
        ("INTERLOCK_PROXY_HTTP_PORT", "70000"),
        ("INTERLOCK_KEEP_CONFIGS", "-1"),
        ("INTERLOCK_PROXY_HTTPS_PORT", "80"),
        ("INTERLOCK_PROXY_STATUS_PORT", "443"),
        ("INTERLOCK_TEMPLATE_DIR", "/nonexistent/templates"),
        ("INTERLOCK_ACME_DIRECTORY", "acme-v02.api.letsencrypt.org/directory"),
        ("INTERLOCK_ACME_EMAIL", "ops@example.com, root@example.com"),
        ("INTERLOCK_ACME_EMAIL", "ops\n@example.com"),
        ("INTERLOCK_ACME_KEY_TYPE", "dsa"),
        ("INTERLOCK_RUNTIME_DIR", "var/run/interlock"),
        ("INTERLOCK_NGINX_WORKER_SHUTDOWN_TIMEOUT", "-1"),
    ],
)
def test_a_bad_setting_names_its_variable(variable, value, monkeypatch):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_the_defaults_are_usable(monkeypatch):
    settings = load_settings()
    assert (settings.poll_interval, settings.label_prefix, settings.mode) == (
        1.0,
        "interlock",
        "rolling",
    )


def test_the_command_exits_2_before_touching_docker():
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "once"],
        capture_output=True,
        text=True,
        env={
            "INTERLOCK_MODE": "restart",
            "DOCKER_HOST": "unix:///nonexistent.sock",
            "PATH": "/usr/bin:/bin",
        },
        timeout=60,
    )
    assert result.returncode == 2
    assert "INTERLOCK_MODE" in result.stderr and "Traceback" not in result.stderr
