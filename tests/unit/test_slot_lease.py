"""A slot lease of the multi-node bed is held exactly while a live process holds its flock
(``tests.bed.clusterharness.lease_held``): how the bed tells a dead test's leftovers."""

from __future__ import annotations

import subprocess
import sys

from tests.bed.clusterharness import lease_held

HOLD = (
    "import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
    "print('held', flush=True); sys.stdin.read()"
)


def test_a_lease_is_held_while_its_process_lives(tmp_path):
    lease = tmp_path / "0.lock"
    assert not lease_held(lease)  # never taken
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lease)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lease_held(lease)
        assert lease_held(lease)  # asking does not take it
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert not lease_held(lease)  # its process is gone
