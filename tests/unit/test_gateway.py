"""The gateway's pure helpers: the Engine's log framing, read without the SDK's stream."""

import contextlib
import socket
import struct
import threading
import time

import docker
import requests

from controller.gateway import Gateway, demultiplexed


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_frames_of_stdout_and_stderr_come_back_in_order_without_their_headers():
    buffer = frame(1, b"hello-out\n") + frame(2, b"hello-err\n") + frame(1, b"")
    assert demultiplexed(buffer) == [b"hello-out\n", b"hello-err\n", b""]


def test_a_truncated_header_at_the_end_is_left_out():
    assert demultiplexed(frame(1, b"whole\n") + b"\x01\x00\x00") == [b"whole\n"]


def test_a_log_read_the_engine_never_answers_ends_within_its_timeout():
    """An endpoint on 127.0.0.1 that accepts and never answers (as a Swarm log read that hangs):
    the read gives up after its retries instead of holding the caller forever."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    port = listener.getsockname()[1]
    gateway = Gateway(docker.APIClient(base_url=f"tcp://127.0.0.1:{port}", version="1.41"))
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            gateway.service_output("svc", timeout=0.3)
        except BaseException as error:  # what the caller would see
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)
    started = time.monotonic()
    reader.start()
    reader.join(15)
    stop.set()
    for conn in held:
        conn.close()
    listener.close()
    assert not reader.is_alive(), "the read is still waiting for an answer"
    assert isinstance(outcome[0], requests.exceptions.ConnectionError | requests.Timeout)
    assert time.monotonic() - started < 15
