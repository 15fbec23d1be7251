"""The shell kept in a proxy container (``controller/shell.py``), on the bed's engine with the
bed's full proxy images, nginx and HAProxy: after the first apply, an apply (write, check,
rename, signal, record) costs no Engine API call and the proxy serves the new config; a refusal
comes back in the binary's words through the same shell, which still works after it; a
restarted container (its kept shell gone with it) converges through a new shell; and ``forget``
ends the shell of a container that is no longer tracked."""

from __future__ import annotations

import hashlib

import pytest

from controller.gateway import Gateway
from controller.kinds import KINDS
from controller.reload import CheckFailed, InPlace
from tests.bed.probes import free_port, wait_until

CONFIGS = {  # a whole config each, answering "kept <n>" on port 80
    "nginx": 'events {}\nhttp { server { listen 80; return 200 "kept %d\\n"; } }\n',
    "haproxy": (
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n"
        "  timeout server 30s\nfrontend kept\n  bind :80\n"
        '  http-request return status 200 content-type text/plain string "kept %d\\n"\n'
    ),
}
REFUSED = {"nginx": "unknown directive", "haproxy": "unknown keyword"}


def shells(client, container: str) -> int:
    """How many ``sh`` processes the container runs (``docker top``)."""
    top = client.api.top(container, ps_args="-o pid,comm")
    return sum(1 for row in top["Processes"] if row[-1] == "sh")


def applier(inplace: InPlace, container: str, kind: str):
    """apply(n): config n into the container; the Engine API calls it made."""
    path = KINDS[kind].config_path

    def apply(n: int) -> int:
        text = CONFIGS[kind] % n
        before = inplace.api.calls
        inplace.apply(container, kind, path, text, hashlib.sha256(text.encode()).hexdigest())
        return inplace.api.calls - before

    return apply


def test_a_kept_shell_applies_with_no_engine_call_and_is_replaced_after_a_restart(swarm, bed):
    inplace = InPlace(Gateway(swarm.client.api))
    images = {"nginx": bed.images.nginx, "haproxy": bed.images.haproxy}
    for kind in CONFIGS:
        port = free_port()
        container = swarm.container(
            f"{kind}-kept", images[kind], ports={"80/tcp": ("127.0.0.1", port)}
        ).id
        swarm.wait_http(port, contains="default" if kind == "haproxy" else "")
        apply = applier(inplace, container, kind)

        assert apply(1) > 0  # the first opens the shell
        swarm.wait_http(port, contains="kept 1")
        assert apply(2) == 0, "an apply through the kept shell called the engine"
        swarm.wait_http(port, contains="kept 2")
        assert shells(swarm.client, container) == 1

        with pytest.raises(CheckFailed, match=REFUSED[kind]):
            inplace.apply(container, kind, KINDS[kind].config_path, "no such;\n", "f" * 64)
        assert apply(3) == 0  # the same shell, after a refusal
        swarm.wait_http(port, contains="kept 3")

        swarm.client.api.restart(container, timeout=5)  # the kept shell ends with it
        swarm.wait_http(port, contains="kept 3")  # the live file outlived the restart
        assert apply(4) > 0  # the old shell is gone: a new one
        swarm.wait_http(port, contains="kept 4")
        assert apply(5) == 0
        swarm.wait_http(port, contains="kept 5")
        print(f"{kind}: served every config; refusal and restart handled")

        inplace.forget(set())
        wait_until(lambda c=container: shells(swarm.client, c) == 0, 10, 0.2, f"{kind}: no sh")
