"""The gateway's pure helpers: the Engine's log framing, read without the SDK's stream."""

import struct

from controller.gateway import demultiplexed


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def test_frames_of_stdout_and_stderr_come_back_in_order_without_their_headers():
    buffer = frame(1, b"hello-out\n") + frame(2, b"hello-err\n") + frame(1, b"")
    assert demultiplexed(buffer) == [b"hello-out\n", b"hello-err\n", b""]


def test_a_truncated_header_at_the_end_is_left_out():
    assert demultiplexed(frame(1, b"whole\n") + b"\x01\x00\x00") == [b"whole\n"]
