"""The in-place step's Engine API path, over a recording engine at the gateway boundary (plain
data; the real thing on the Swarm is ``tests/swarm/test_binary_only.py``): stage, check with
the binary alone, swap by a hard link, signal, then the digest; a refusal stops after the check;
a signal that cannot be sent empties the digest; a container that cannot run the shell step
takes this path, once tried."""

from __future__ import annotations

import io
import tarfile

import docker.errors
import pytest

from controller.gateway import tar_files
from controller.reload import RECORD, CheckFailed, InPlace


class ApiOnly(InPlace):
    """An InPlace whose shell step finds no shell (as in a binary-only image)."""

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
    """An InPlace over an image with a shell: its execs succeed and are recorded."""

    def _run(self, container: str, argv: list[str], data: bytes) -> tuple[int, str]:
        self.api.api.calls.append(("record", argv[-1]) if argv[2] == RECORD else ("step",))
        return 0, ""


def test_the_shell_path_records_the_digest_only_after_the_signal():
    """A controller killed between the swap and the signal must leave the old digest: the next
    pass then signals again, instead of taking a proxy that runs the old config for converged."""
    engine = Engine()
    WithShell(engine).apply("c1", "nginx", PATH, "conf", "d" * 64)
    assert engine.calls == [
        ("step",),  # write, check, rename
        ("kill", "SIGHUP"),
        ("record", PATH + ".interlock-digest"),  # then the digest
    ]
