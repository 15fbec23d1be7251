"""The proxies' status listener in the built-in templates: there by default, accepted by the real
binaries, on its own port, and gone when INTERLOCK_PROXY_STATUS_PORT is 0."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.render import render
from tests.unit.test_render import OPTIONS, real_check, scenario

LISTENERS = {
    "ngx": "        listen 8404;\n        location = /stub_status {\n            stub_status;",
    "hap": "frontend interlock_status\n    bind :8404\n    no log\n    stats enable\n",
}


@pytest.mark.parametrize("proxy", ["ngx", "hap"])
def test_the_status_listener_is_rendered_and_accepted(proxy, tmp_path):
    desired = scenario()[proxy]
    text = render(desired, OPTIONS).text
    assert LISTENERS[proxy] in text
    result = real_check(desired.proxy.spec.kind, text, tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("proxy", ["ngx", "hap"])
def test_port_zero_renders_no_listener(proxy, tmp_path):
    desired = scenario()[proxy]
    text = render(desired, replace(OPTIONS, status_port=0)).text
    assert "8404" not in text and "stub_status" not in text and "stats uri" not in text
    assert real_check(desired.proxy.spec.kind, text, tmp_path).returncode == 0
