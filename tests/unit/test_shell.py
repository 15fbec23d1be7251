"""The kept shell's wire (``controller/shell.py``), run as one session by the two shells proxy
images have (Debian's dash, as in the official nginx and HAProxy images, and BusyBox's ash, as in
their Alpine variants): each command reads its data byte for byte from the
here-document (whatever the data holds: quotes, ``$(...)``, backslashes, a line that ends a
here-document of another word), never the commands after it, and answers its exit code on a
line of its own; the shell reads on after a command that failed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from controller.shell import DONE, END, Shell, command

NEVER = "NEVER"  # where a command hidden in the data would leave a file: the test's own folder
TRICKY = (
    b"events {}\n"
    b"# $(touch NEVER) `touch NEVER` ${HOME} \\\n"
    b"'single' \"double\" \\n \\\\\n"
    b"EOF\n" + END.encode() + b"other\n"
    b"\tlast line\n"
)


SHELLS = {"dash": ["dash"], "busybox ash": ["busybox", "sh"]}


@pytest.fixture(params=sorted(SHELLS))
def shell(request) -> list[str]:
    return SHELLS[request.param]


def session(shell: list[str], commands: list[bytes]) -> str:
    done = subprocess.run(shell, input=b"".join(commands), capture_output=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode()


def test_each_command_reads_its_data_byte_for_byte_and_answers_its_exit_code(
    shell: list[str], tmp_path: Path
):
    first, second = tmp_path / "first", tmp_path / "second"
    never = tmp_path / "never"
    tricky = TRICKY.replace(NEVER.encode(), str(never).encode())
    write = ["sh", "-c", 'cat > "$1"; exit "$2"', "sh"]
    out = session(
        shell,
        [
            command([*write, str(first), "3"], tricky, "a1"),
            command([*write, str(second), "0"], b"two\n", "b2"),
        ],
    )
    assert first.read_bytes() == tricky
    assert second.read_bytes() == b"two\n"
    assert out == f"\n{DONE}a1 3\n\n{DONE}b2 0\n"
    assert not never.exists()


def test_what_a_command_writes_comes_before_its_answer(shell: list[str]):
    out = session(
        shell, [command(["sh", "-c", 'printf "%s" "$(cat)"'], b"nginx: [emerg] x\n", "c3")]
    )
    assert out == f"nginx: [emerg] x\n{DONE}c3 0\n"


def test_only_data_a_here_document_carries_whole_fits():
    assert Shell.fits(b"a config\n")
    assert not Shell.fits(b"no final newline")
    assert not Shell.fits(b"a NUL \0 inside\n")
    assert not Shell.fits(b"")
