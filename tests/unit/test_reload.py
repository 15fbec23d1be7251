"""The in-place step's Engine API path, over a recording engine at the gateway boundary (plain
data; the real thing on the Swarm is ``tests/swarm/test_binary_only.py``): stage, check with
the binary alone, swap by a hard link, signal, then the digest; a refusal stops after the check;
a signal that cannot be sent empties the digest; a container that cannot run the shell step
takes this path, once tried. And the shell path's one step, run by the host's ``sh``."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import docker.errors
import pytest

from controller.gateway import tar_files
from controller.reload import RECORD, STEP, CheckFailed, InPlace
from controller.shell import ShellLost


class ApiOnly(InPlace):
    """An InPlace whose shell step finds no shell (as in a binary-only image)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.keep_shells = False  # every step a one-shot exec: ``_run``, answered here

    def _run(self, container: str, argv: list[str], data: bytes) -> tuple[int, str]:
        self.api.api.calls.append(("shell", argv[0]))
        return 127, 'exec: "sh": executable file not found in $PATH'


PATH = "/etc/nginx/nginx.conf"


class Engine:
    """Records every call; an exec answers ``code`` with ``words``; kill may fail."""

    def __init__(self, code: int = 0, words: str = "", kill_fails: bool = False) -> None:
        self.calls: list[tuple] = []
        self.code, self.words, self.kill_fails = code, words, kill_fails

    def put_archive(self, container: str, folder: str, data: bytes) -> bool:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            entries = [
                (m.name, m.linkname or archive.extractfile(m).read().decode())
                for m in archive.getmembers()
                if not m.isdir()
            ]
        self.calls.append(("put", entries))
        return True

    def exec_create(self, container: str, argv: list[str], **_: object) -> dict:
        self.calls.append(("exec", argv))
        return {"Id": "e1"}

    def exec_start(self, exec_id: str) -> bytes:
        return self.words.encode()

    def exec_inspect(self, exec_id: str) -> dict:
        return {"ExitCode": self.code}

    def kill(self, container: str, signal: str) -> None:
        self.calls.append(("kill", signal))
        if self.kill_fails:
            raise docker.errors.APIError("409 Conflict: container is not running")


def test_stage_check_swap_signal_in_that_order_with_the_binary_alone():
    engine = Engine()
    ApiOnly(engine).apply("c1", "nginx", PATH, "conf", "d" * 64)
    staged, digest = (
        "etc/nginx/nginx.conf.interlock-staged",
        "etc/nginx/nginx.conf.interlock-digest",
    )
    assert engine.calls == [
        ("shell", "sh"),
        ("put", [(staged, "conf")]),
        ("exec", ["nginx", "-t", "-q", "-c", "/" + staged]),
        ("put", [("etc/nginx/nginx.conf", staged)]),  # the swap: a link
        ("kill", "SIGHUP"),
        ("put", [(digest, "d" * 64)]),  # only once the proxy was told: never a false claim
    ]


def test_a_refusal_says_the_binarys_words_and_touches_nothing_live():
    engine = Engine(code=1, words="[emerg] unknown directive")
    with pytest.raises(CheckFailed, match=r"^nginx refused the config: \[emerg\] unknown"):
        ApiOnly(engine).apply("c1", "nginx", PATH, "bad", "d" * 64)
    assert [call[0] for call in engine.calls] == ["shell", "put", "exec"]


def test_a_check_that_cannot_run_is_no_refusal():
    engine = Engine(code=127, words='exec: "haproxy": executable file not found in $PATH')
    with pytest.raises(RuntimeError, match="cannot run haproxy's check") as error:
        ApiOnly(engine).apply("c1", "haproxy", "/usr/local/etc/haproxy/haproxy.cfg", "x", "d" * 64)
    assert not isinstance(error.value, CheckFailed)


def test_a_signal_that_fails_empties_the_digest_so_the_next_pass_pushes_again():
    engine = Engine(kill_fails=True)
    with pytest.raises(docker.errors.APIError):
        ApiOnly(engine).apply("c1", "nginx", PATH, "conf", "d" * 64)
    assert engine.calls[-1] == ("put", [("etc/nginx/nginx.conf.interlock-digest", "")])


def test_beside_files_go_with_the_stage_and_a_runtime_update_is_not_signalled():
    engine = Engine()
    files = {PATH + ".crt-list": "list", "/elsewhere": "never"}
    ApiOnly(engine).apply("c1", "nginx", PATH, "conf", "d" * 64, files, signal=False)
    assert engine.calls[2] == (  # after the shell step's own upload of them and its failure
        "put",
        [
            ("etc/nginx/nginx.conf.crt-list", "list"),
            ("etc/nginx/nginx.conf.interlock-staged", "conf"),
        ],
    )
    assert "kill" not in [call[0] for call in engine.calls]


def test_links_come_before_files_in_an_archive():
    data = tar_files({"a/digest": "d"}, links={"a/live": "a/staged"})
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        kinds = [(m.name, m.type) for m in archive.getmembers()]
    assert kinds == [
        ("a", tarfile.DIRTYPE),
        ("a/live", tarfile.LNKTYPE),
        ("a/digest", tarfile.REGTYPE),
    ]


def test_a_container_without_a_shell_is_tried_once_then_goes_straight_to_the_api_path():
    engine = Engine()
    inplace = ApiOnly(engine)
    inplace.apply("c1", "nginx", PATH, "one", "1" * 64)
    inplace.apply("c1", "nginx", PATH, "two", "2" * 64)
    assert [call[0] for call in engine.calls].count("shell") == 1
    assert engine.calls[-2] == ("kill", "SIGHUP")


class WithShell(InPlace):
    """An InPlace over an image with a shell: its step exits ``code``; every exec recorded."""

    code = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.keep_shells = False

    def _run(self, container: str, argv: list[str], data: bytes) -> tuple[int, str]:
        self.api.api.calls.append(("record", argv[-1]) if argv[2] == RECORD else ("step",))
        return (self.code, "") if argv[2] == STEP else (0, "")


def test_the_shell_path_signals_and_records_in_its_one_exec():
    engine = Engine()
    WithShell(engine).apply("c1", "nginx", PATH, "conf", "d" * 64)
    assert engine.calls == [("step",)]


def test_a_shell_that_cannot_signal_hands_the_signal_then_the_record_to_the_engine():
    """Swapped but not signalled (exit 99): the engine's kill, and only then the digest."""
    engine = Engine()
    inplace = WithShell(engine)
    inplace.code = 99
    inplace.apply("c1", "nginx", PATH, "conf", "d" * 64)
    assert engine.calls == [
        ("step",),
        ("kill", "SIGHUP"),
        ("record", PATH + ".interlock-digest"),
    ]


# -- the shell step itself, run by the host's sh (the proxy images run the same text) -----------


def run_step(tmp_path: Path, sig: str, pid: int, check: list[str]) -> tuple[int, str]:
    """STEP with the config "new config" on stdin, the live file holding "old config"."""
    (tmp_path / "live").write_text("old config")
    argv = ["sh", "-c", STEP, "sh", str(tmp_path / "new"), str(tmp_path / "live"), sig, str(pid),
            "d" * 64, str(tmp_path / "live.interlock-digest"), *check]  # fmt: skip
    done = subprocess.run(argv, input=b"new config", capture_output=True, timeout=10)
    return done.returncode, done.stdout.decode()


@pytest.fixture
def hangup_counter(tmp_path: Path):
    """A process that appends a line to ``hups`` on every SIGHUP (the proxy's master)."""
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGHUP, lambda *_: open(sys.argv[1], 'a').write('hup\\n'))\n"
        "open(sys.argv[1] + '.ready', 'w').close()\n"
        "time.sleep(30)\n"
    )
    hups = tmp_path / "hups"
    child = subprocess.Popen([sys.executable, "-c", code, str(hups)])
    deadline = time.monotonic() + 10
    while not Path(f"{hups}.ready").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    yield child, hups
    child.kill()
    child.wait()


def test_the_step_swaps_signals_then_records(tmp_path, hangup_counter):
    child, hups = hangup_counter
    code, _ = run_step(tmp_path, "HUP", child.pid, ["true"])
    assert code == 0
    assert (tmp_path / "live").read_text() == "new config"
    assert (tmp_path / "live.interlock-digest").read_text() == "d" * 64
    deadline = time.monotonic() + 5
    while not hups.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hups.read_text() == "hup\n"
    assert not (tmp_path / "new").exists()


def test_a_step_that_cannot_signal_swaps_but_records_nothing(tmp_path):
    """A signal that fails must leave the old digest: the next apply signals again."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    code, _ = run_step(tmp_path, "HUP", gone.pid, ["true"])
    assert code == 99
    assert (tmp_path / "live").read_text() == "new config"
    assert not (tmp_path / "live.interlock-digest").exists()


def test_a_refused_config_leaves_the_live_file_and_signals_nothing(tmp_path, hangup_counter):
    child, hups = hangup_counter
    code, output = run_step(tmp_path, "HUP", child.pid, ["sh", "-c", "echo bad line 3; exit 1"])
    assert (code, output) == (97, "bad line 3")  # the words, as $(...) keeps them
    assert (tmp_path / "live").read_text() == "old config"
    assert not (tmp_path / "new").exists()
    assert not (tmp_path / "live.interlock-digest").exists()
    time.sleep(0.2)
    assert not hups.exists()


def test_a_runtime_update_records_without_a_signal(tmp_path, hangup_counter):
    child, hups = hangup_counter
    assert run_step(tmp_path, "-", child.pid, ["true"])[0] == 0
    assert (tmp_path / "live.interlock-digest").read_text() == "d" * 64
    time.sleep(0.2)
    assert not hups.exists()


def test_a_runtime_update_is_not_checked_again_and_a_reload_is():
    """The file that only records a runtime update differs from the live config in the server
    lines the running binary already took: the step runs ``true`` in place of the check."""
    seen = []

    class Recording(InPlace):
        def _run(self, container, argv, data):
            seen.append(argv[10:])  # what follows sh -c STEP and its 7 arguments
            return 0, ""

    haproxy = "/usr/local/etc/haproxy/haproxy.cfg"
    Recording(Engine()).apply("c1", "haproxy", haproxy, "conf", "d" * 64, signal=False)
    Recording(Engine()).apply("c1", "haproxy", haproxy, "conf", "d" * 64)
    assert seen == [["true"], ["haproxy", "-c", "-f", haproxy + ".interlock-new"]]
    engine = Engine()
    ApiOnly(engine).apply("c1", "haproxy", haproxy, "conf", "d" * 64, signal=False)
    assert "exec" not in [call[0] for call in engine.calls]  # staged, swapped: no check


# -- the kept shell: which shell a step runs in (the wire itself: test_shell, test_kept_shell) --


class FakeShell:
    """A kept shell whose command answers ``code``, or raises ``failure``."""

    def __init__(self, failure: Exception | None = None, code: int = 0) -> None:
        self.failure, self.code, self.ran, self.closed = failure, code, 0, False

    def run(self, argv: list[str], data: bytes) -> tuple[int, str]:
        self.ran += 1
        if self.failure is not None:
            raise self.failure
        return self.code, ""

    def close(self) -> None:
        self.closed = True


class Kept(InPlace):
    """An InPlace whose shells come from ``waiting``, in order; one-shot execs recorded."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.waiting: list[FakeShell] = []
        self.one_shot = 0

    def _open(self, container: str) -> FakeShell:
        shell = self.shells[container] = self.waiting.pop(0)
        return shell

    def _run(self, container: str, argv: list[str], data: bytes) -> tuple[int, str]:
        self.one_shot += 1
        return 0, ""


def test_a_kept_shell_serves_every_apply_until_it_is_lost_then_a_new_one_does():
    inplace = Kept(Engine())
    first, second = FakeShell(), FakeShell()
    inplace.waiting = [first, second]
    inplace.apply("c1", "nginx", PATH, "one\n", "1" * 64)
    inplace.apply("c1", "nginx", PATH, "two\n", "2" * 64)
    assert (first.ran, inplace.one_shot) == (2, 0)
    first.failure = ShellLost("the shell ended")  # the container restarted: the step runs again
    inplace.apply("c1", "nginx", PATH, "three\n", "3" * 64)
    assert (first.closed, second.ran, inplace.one_shot) == (True, 1, 0)
    inplace.apply("c1", "nginx", PATH, "no final newline", "4" * 64)  # not a here-document
    assert (second.ran, inplace.one_shot) == (1, 1)
    inplace.forget({"c2"})
    assert second.closed and not inplace.shells


def test_a_shell_that_did_not_answer_is_dropped_and_never_asked_again():
    """No answer (a timeout, or the engine failed): the step may still run, so it is not run
    again now; the error goes up and the next apply opens a new shell."""
    inplace = Kept(Engine())
    stuck, fresh = FakeShell(RuntimeError("no answer from the shell")), FakeShell()
    inplace.waiting = [stuck, fresh]
    with pytest.raises(RuntimeError, match="no answer"):
        inplace.apply("c1", "nginx", PATH, "one\n", "1" * 64)
    assert stuck.closed and inplace.one_shot == 0
    inplace.apply("c1", "nginx", PATH, "two\n", "2" * 64)
    assert fresh.ran == 1 and stuck.ran == 1
