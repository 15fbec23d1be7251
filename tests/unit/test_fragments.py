"""Remembered blocks (``render.Fragments``) never change a byte of a rendered config.

A config's digest decides reloads, so a render that takes blocks from the cache must give the
text a render of every block gives. Each check renders once with the process's cache (cold, or
warm from other states, other options, other templates) and once with a stand-in that renders
every block, and compares. States: the unit tests' scenarios, a synthetic Swarm before and after
task changes, the checks' blanked shapes, and the fuzz strategy's Swarms (good and hostile
labels). Options vary in every field a block reads, so a key that leaves one out serves another
options' text and fails here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given

from bench.synthetic import PREFIX, SyntheticSwarm
from controller import render as render_module
from controller.desired import DesiredProxy, desired_state
from controller.render import (
    Fragments,
    Rendered,
    RenderError,
    RenderOptions,
    forget_rendered,
    render,
)
from controller.snapshot import snapshot_from_api
from controller.verify import shape
from tests import builders as b
from tests.unit import test_fuzz as fuzz
from tests.unit.test_features import feature_swarm
from tests.unit.test_render import scenario, tls_scenario

OPTIONS = (
    RenderOptions(),
    RenderOptions(http_port=8080, https_port=8443, secrets_dir="/elsewhere"),
    RenderOptions(access_log="text", status_port=0, client_keepalive=3.0),
    RenderOptions(access_log="off", status_allow=("10.0.0.0/8",), connect_timeout=1.5),
)


class Uncached:
    """Renders every block: the reference a cached render must equal."""

    def text(self, key: object, make: Callable[..., str], *args: object) -> str:
        return make(*args)


@contextlib.contextmanager
def uncached() -> Iterator[None]:
    kept = render_module.FRAGMENTS
    render_module.FRAGMENTS = Uncached()  # type: ignore[assignment]
    try:
        yield
    finally:
        render_module.FRAGMENTS = kept


def reference(desired: DesiredProxy, options: RenderOptions) -> Rendered:
    with uncached():
        return render(desired, options)


def assert_same(desired: DesiredProxy, options: RenderOptions) -> None:
    got, want = render(desired, options), reference(desired, options)
    assert got.text == want.text, (desired.proxy.name, options)
    assert got == want and got.files == want.files


def task_changed(desired: DesiredProxy, index: int) -> DesiredProxy:
    """One backend's tasks changed (one more, or one fewer), as a rolling update does."""
    backends = list(desired.backends)
    one = backends[index % len(backends)]
    targets = one.targets[1:] if len(one.targets) > 1 else (*one.targets, "10.9.9.9:80")
    backends[index % len(backends)] = dataclasses.replace(one, targets=targets, weights=())
    return dataclasses.replace(desired, backends=tuple(backends))


def fixed_states() -> list[DesiredProxy]:
    states = [*scenario().values(), *feature_swarm().proxies, *tls_scenario().proxies]
    states += desired_state(SyntheticSwarm(60).snapshot(), PREFIX).proxies
    states += [task_changed(one, i) for i, one in enumerate(states) if one.backends]
    return states


def test_a_cold_and_a_warm_cache_give_the_bytes_of_rendering_every_block():
    forget_rendered()
    states = fixed_states()
    for desired in states:  # cold: every block rendered now, in this config
        assert_same(desired, OPTIONS[0])
    for options in OPTIONS:  # warm: blocks of other states and options are there
        for desired in reversed(states):
            assert_same(desired, options)
            assert shape(desired, options) == reference(_blanked(desired), options).digest
    assert len(render_module.FRAGMENTS) > 0


def _blanked(desired: DesiredProxy) -> DesiredProxy:
    """``verify.shape``'s state: every address the same placeholder."""
    backends = tuple(
        dataclasses.replace(x, targets=(f"192.0.2.1:{x.port}",) if x.targets else ())
        for x in desired.backends
    )
    return dataclasses.replace(desired, backends=backends)


@fuzz.swarm_settings(40)
@given(swarm=fuzz.swarms())
def test_fuzzed_swarms_render_the_same_bytes_from_a_warm_cache(swarm):
    services, tasks, _good = swarm
    secrets = [{"ID": f"id-{name}", "Spec": {"Name": name}} for name in fuzz.SECRETS]
    snapshot = snapshot_from_api(services, tasks, [b.network("net1")], [], [], secrets)
    for desired in desired_state(snapshot, fuzz.P).proxies:
        for options in OPTIONS:
            assert_same(desired, options)
            assert_same(_blanked(desired), options)


def test_another_template_folder_or_a_changed_template_is_never_served_stale(tmp_path):
    """Blocks are keyed on the template object: another folder's, or a file changed on disk
    (Jinja reloads it), has blocks of its own."""
    states = desired_state(SyntheticSwarm(20).snapshot(), PREFIX).proxies
    for desired in states:
        render(desired, RenderOptions())  # the built-in templates' blocks, warm
    builtin = Path(render_module._template_dir())
    for name in ("nginx.conf.j2", "haproxy.cfg.j2"):
        shutil.copy(builtin / name, tmp_path / name)
    _edit(tmp_path, "    }\n{%- endmacro %}", "    }  # custom\n{%- endmacro %}")  # nginx upstream
    servers = "{{- backend | server_text }}\n"  # the end of HAProxy's backend_block
    _edit(tmp_path, f"{servers}{{% endmacro %}}", f"{servers}    # custom\n{{% endmacro %}}")
    custom = RenderOptions(template_dir=str(tmp_path))
    for desired in states:
        assert_same(desired, custom)
        assert "# custom" in render(desired, custom).text
        assert "# custom" not in render(desired, RenderOptions()).text
    _edit(tmp_path, "# custom", "# changed")
    for desired in states:
        assert_same(desired, custom)
        assert "# custom" not in render(desired, custom).text


def _edit(folder: Path, old: str, new: str) -> None:
    """Replace text in whichever template has it; the file's time moves on, as an edit's does."""
    for path in folder.glob("*.j2"):
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, new))
            stamp = path.stat().st_mtime + 10
            os.utime(path, (stamp, stamp))


def test_the_cache_is_bounded_and_keeps_what_was_read_lately():
    made: list[str] = []

    def make(key: str) -> str:
        made.append(key)
        return key.upper()

    cache = Fragments(generation=4)
    for i in range(40):
        assert cache.text("hot", make, "hot") == "HOT"  # read once every step
        assert cache.text(f"k{i}", make, f"k{i}") == f"K{i}"
        assert len(cache) <= 8
    assert made.count("hot") == 1
    assert cache.text("k0", make, "k0") == "K0" and made.count("k0") == 2  # long gone


def test_a_block_that_refuses_a_value_is_not_kept():
    desired = scenario()["ngx"]
    bad = dataclasses.replace(desired.backends[0], name="bad;name")
    broken = dataclasses.replace(desired, backends=(bad, *desired.backends[1:]))
    for _ in range(2):
        with pytest.raises(RenderError):
            render(broken, RenderOptions())
