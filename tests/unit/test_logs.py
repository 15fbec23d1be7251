"""Logs: one JSON object a line with the pass id, a readable text form, nothing secret."""

from __future__ import annotations

import io
import json
import logging

import pytest

from controller.act import Executor
from controller.logs import (
    MAX_VALUE_CHARS,
    JsonFormatter,
    TextFormatter,
    event,
    pass_scope,
)
from controller.plan import PushConfig
from controller.reconcile import Reconciler
from controller.settings import Settings
from controller.snapshot import snapshot_from_api
from tests import builders as b

P = "interlock"
log = logging.getLogger("controller.test")


@pytest.fixture
def captured():
    """The root logger's output, as the controller sets it up, in a string buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    old_handlers, old_level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)

    def use(formatter):
        handler.setFormatter(formatter)
        return stream

    yield use
    root.handlers[:] = old_handlers
    root.setLevel(old_level)


def test_json_lines_carry_the_pass_id_only_inside_a_pass(captured):
    stream = captured(JsonFormatter())
    event(log, "before", n=1)
    with pass_scope("p123"):
        event(log, "during", proxy="edge", ok=True)
    event(log, "after")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["before", "during", "after"]
    assert "pass_id" not in lines[0] and "pass_id" not in lines[2]
    assert lines[1]["pass_id"] == "p123"
    assert (lines[1]["proxy"], lines[1]["ok"], lines[1]["level"]) == ("edge", True, "info")
    assert lines[1]["ts"].endswith("Z") and lines[1]["logger"] == "controller.test"


def test_text_is_for_a_person(captured):
    stream = captured(TextFormatter())
    with pass_scope("p123"):
        event(log, "config_refused", logging.ERROR, proxy="edge", reason="nginx said: no")
    line = stream.getvalue().rstrip("\n")
    assert "\n" not in line
    assert " ERROR   config_refused " in line
    assert '[pass p123] proxy=edge reason="nginx said: no"' in line


def test_secret_named_fields_are_masked_and_long_values_cut(captured):
    stream = captured(JsonFormatter())
    event(log, "x", password="hunter2", api_key="k", auth_token="t", tokens_seen=3, passes=2)
    event(log, "y", error="E" * (MAX_VALUE_CHARS + 500))
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["password"] == first["api_key"] == first["auth_token"] == "<redacted>"
    assert (first["tokens_seen"], first["passes"]) == (3, 2)
    assert len(second["error"]) < MAX_VALUE_CHARS + 40 and "500 more chars" in second["error"]


class FakeObserver:
    calls = 0

    def __init__(self, snapshot):
        self.snap = snapshot

    def snapshot(self):
        return self.snap


def pass_snapshot():
    services = [
        b.service("p1", "edge", {f"{P}.ext.name": "nginx", f"{P}.ext.mode": "signal"}),
        b.service("a1", "web", {f"{P}.hostname": "web.example.com", f"{P}.port": "80"}),
        b.service("a2", "bad", {f"{P}.hostname": "bad.example.com", f"{P}.port": "80;"}),
    ]
    tasks = [b.task("t1", "a1", "10.0.0.2"), b.task("tp", "p1", "10.0.0.9", container="cp")]
    containers = [b.container("cp", "edge.1", {"com.docker.swarm.service.id": "p1"})]
    return snapshot_from_api(services, tasks, [b.network("net1")], [], containers)


def test_every_event_of_a_pass_has_its_id_and_no_config_text(captured):
    stream = captured(JsonFormatter())
    pushed = []

    def push(action: PushConfig) -> None:
        pushed.append(action)
        raise RuntimeError("check failed in container")

    reconciler = Reconciler(
        Settings(label_prefix=P),
        FakeObserver(pass_snapshot()),  # type: ignore[arg-type]
        Executor(None, push=push),  # type: ignore[arg-type]
        None,
    )
    result = reconciler.run_pass()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    events = [line["event"] for line in lines]
    assert "service_problem" in events and "action_failed" in events and "pass_done" in events
    assert {line.get("pass_id") for line in lines} == {result.pass_id}
    text = result.rendered["edge"].text
    assert pushed and pushed[0].text == text
    out = stream.getvalue()
    for line in text.splitlines():
        if line.strip() and line.strip() not in ("}", "{"):
            assert line.strip() not in out, line


def test_a_pass_that_raises_is_logged_with_its_id(captured):
    stream = captured(JsonFormatter())

    class Broken(FakeObserver):
        def snapshot(self):
            raise ConnectionError("engine unreachable")

    reconciler = Reconciler(Settings(label_prefix=P), Broken(None), Executor(None), None)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        reconciler.run_pass()
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert line["event"] == "pass_failed" and line["kind"] == "ConnectionError"
    assert len(line["pass_id"]) == 12


HOSTILE = "colour\x1b[31m\rforged\nline\x00\u2028end"


def test_text_lines_escape_control_characters_in_keys_values_and_names(captured):
    """Label keys and values are anyone's input: in a text log they cannot forge a line, move
    the cursor or colour the terminal."""
    stream = captured(TextFormatter())
    event(log, f"service_problem{HOSTILE}", label=HOSTILE, plain="a\x1bb", **{HOSTILE: "v"})
    out = stream.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")
    assert not any(c in out[:-1] for c in "\x1b\r\n\x00\u2028")
    assert "service_problemcolour\\x1b[31m\\rforged\\nline\\x00\\u2028end" in out
    assert "plain=a\\x1bb" in out and "colour\\x1b[31m\\rforged\\nline\\x00\\u2028end=v" in out


def test_json_lines_escape_control_characters_too(captured):
    stream = captured(JsonFormatter())
    event(log, "service_problem", label=HOSTILE, **{HOSTILE: "v"})
    out = stream.getvalue()
    assert out.count("\n") == 1
    assert not any(c in out[:-1] for c in "\x1b\r\x00\u2028")
    line = json.loads(out)
    assert line["label"] == HOSTILE and line[HOSTILE] == "v"


def test_a_traceback_keeps_its_lines_and_nothing_else_raw(captured):
    stream = captured(TextFormatter())
    try:
        raise ValueError("bad\x1b[2Jvalue")
    except ValueError:
        log.exception("pass_failed")
    out = stream.getvalue()
    assert "\x1b" not in out and "bad\\x1b[2Jvalue" in out and "Traceback" in out


def test_status_tables_escape_control_characters_and_json_keeps_them_exact():
    from controller.report import status_report

    rejected = [{"service": "web", "label": HOSTILE, "reason": "unknown label", "proxy": ""}]
    text = status_report([], [], rejected, as_json=False)
    assert not any(c in text for c in "\x1b\r\x00\u2028")
    assert "colour\\x1b[31m\\rforged\\nline\\x00\\u2028end  unknown label" in text
    assert len(text.splitlines()) == 6  # three headers, two blank lines, one row
    assert json.loads(status_report([], [], rejected, as_json=True))["rejected"][0]["label"] == (
        HOSTILE
    )
