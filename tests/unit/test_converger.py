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
