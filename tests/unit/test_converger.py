"""The converger reads back what a container serves only when it does not know it: a change
to a container it wrote costs no read (one engine round trip less a change, on every node)."""

from __future__ import annotations

import pytest

from controller.runtime import Converger


class Engine:
    """What the converger asks of the engine (through the in-place step): reads counted."""

    def __init__(self) -> None:
        self.reads = 0
        self.files: dict[str, str] = {}

    def read_file(self, container: str, path: str) -> str:
        self.reads += 1
        return self.files.get(container, "")

    def inspect_container(self, container: str) -> dict:
        return {"Config": {"Hostname": container}}


class Writer:
    """The in-place step as the converger uses it: writes the file (a refusal raises)."""

    def __init__(self) -> None:
        self.api = Engine()

    def apply(self, container, kind, path, text, digest, files, signal=True) -> None:
        if "refuse me" in text:
            raise RuntimeError("refused")
        self.api.files[container] = text


def test_a_container_written_here_is_not_read_back_while_it_serves_that_digest():
    writer = Writer()
    converger = Converger(writer)
    converger.apply("c1", "nginx", "/etc/nginx/nginx.conf", "one", "d1")
    assert writer.api.reads == 1  # nothing known of it yet
    converger.apply("c1", "nginx", "/etc/nginx/nginx.conf", "two", "d2", serving="d1")
    assert writer.api.reads == 1
    # Another digest served (someone else wrote, or the container was replaced): read it.
    converger.apply("c1", "nginx", "/etc/nginx/nginx.conf", "three", "d3", serving="dX")
    assert writer.api.reads == 2


def test_a_failed_write_is_not_taken_for_what_the_container_serves():
    writer = Writer()
    converger = Converger(writer)
    converger.apply("c1", "nginx", "/etc/nginx/nginx.conf", "one", "d1")
    with pytest.raises(RuntimeError):
        converger.apply("c1", "nginx", "/etc/nginx/nginx.conf", "refuse me", "d2", serving="d1")
    converger.apply("c1", "nginx", "/etc/nginx/nginx.conf", "two", "d3", serving="d1")
    assert writer.api.reads == 2  # the cache was dropped before the failed write: read again


def test_the_hold_comes_between_a_runtime_update_and_its_file_and_never_before_a_reload(
    monkeypatch,
):
    """The agent lets a round's reloads go first by this hold: it must come after the runtime
    API has applied the change (clients already get it) and before the file is written."""
    from tests.unit.test_slots import config

    said: list[str] = []
    writer = Writer()
    original = writer.apply

    def write(*args, **kwargs) -> None:
        said.append("file written")
        original(*args, **kwargs)

    writer.apply = write
    converger = Converger(writer, folder="/run/interlock")
    monkeypatch.setattr(converger, "_runtime", lambda *args: said.append("runtime") or True)
    path = "/usr/local/etc/haproxy/haproxy.cfg"
    converger.apply("c1", "haproxy", path, config(["10.0.0.2"]), "d1")
    said.clear()
    how = converger.apply(
        "c1", "haproxy", path, config(["10.0.0.2", "10.0.0.3"]), "d2", serving="d1",
        hold=lambda: said.append("hold"),
    )  # fmt: skip
    assert (how, said) == ("runtime", ["runtime", "hold", "file written"])
    said.clear()
    how = converger.apply(
        "c1", "haproxy", path, config(["10.0.0.3"], host="other.example.com"), "d3",
        serving="d2", hold=lambda: said.append("hold"),
    )  # fmt: skip
    assert (how, said) == ("structural", ["file written"])


def test_after_a_reload_not_seen_to_finish_the_next_change_reloads(monkeypatch, tmp_path):
    """A reload whose new process never answered on the runtime socket: a runtime update could
    reach the old process, so the next change reloads instead, and the one after is runtime."""
    from controller import runtime
    from tests.unit.test_runtime_socket import running_haproxy
    from tests.unit.test_slots import config

    monkeypatch.setattr(runtime, "RELOAD_WAIT", 0.2)
    converger = Converger(Writer(), folder="/run/interlock")
    with running_haproxy(tmp_path) as (sock, _):  # no reload: the same process answers
        converger._await_reload("c1", sock, runtime.worker_pid(runtime.ask(sock, "show info", 2)))
    used = []
    monkeypatch.setattr(converger, "_runtime", lambda *args: used.append(1) or True)
    monkeypatch.setattr(converger, "_worker", lambda *args: None)
    path = "/usr/local/etc/haproxy/haproxy.cfg"
    converger.apply("c1", "haproxy", path, config(["10.0.0.2"]), "d1")
    assert converger.apply("c1", "haproxy", path, config(["10.0.0.2", "10.0.0.3"]), "d2",
                           serving="d1") == "endpoints"  # fmt: skip
    assert not used
    converger._unsure.discard("c1")  # what a reload seen to finish does
    assert converger.apply("c1", "haproxy", path, config(["10.0.0.3"]), "d3", serving="d2") == (
        "runtime"
    )
