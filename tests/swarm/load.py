"""Steady HTTP load through a proxy with wrk (Debian's), to 127.0.0.1 only, bounded in time.

wrk keeps its connections alive and, unlike browsers and curl, never retries a request that failed:
every lost request shows up in its counts, which is what a zero-failure claim must be judged by.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Self

from tests.bed.probes import LOOPBACK

_REQUESTS = re.compile(r"(\d+) requests in ([\d.]+)(m?s|m)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_STATUS = re.compile(r"^status (\d{3}): (\d+)$", re.MULTILINE)
MAX_SECONDS = 120
# wrk counts responses that are not 2xx/3xx but does not say which: this script tallies them by
# status in each thread and prints the sums at the end, so a failure names 502 or 503.
STATUS_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  if status >= 400 then statuses[status] = (statuses[status] or 0) + 1 end
end
function done(summary, latency, requests)
  local sums = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      sums[status] = (sums[status] or 0) + count
    end
  end
  for status, count in pairs(sums) do io.write(string.format("status %d: %d\\n", status, count)) end
end
"""


@dataclass
class LoadResult:
    requests: int
    non_2xx: int
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    output: str
    statuses: dict[int, int] = field(default_factory=dict)  # 4xx/5xx answers by status

    @property
    def failed(self) -> int:
        return (
            self.non_2xx
            + self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.timeouts
        )

    def summary(self) -> str:
        return (
            f"requests={self.requests} failed={self.failed} (non-2xx={self.non_2xx} "
            f"connect={self.connect_errors} read={self.read_errors} "
            f"write={self.write_errors} timeout={self.timeouts}"
            + "".join(f" {status}={count}" for status, count in sorted(self.statuses.items()))
            + ")"
        )


def parse(output: str) -> LoadResult:
    sent = _REQUESTS.search(output)
    if not sent:
        raise AssertionError(f"wrk printed no request count:\n{output}")
    errors = _SOCKET.search(output)
    connect, read, write, timeout = (int(x) for x in errors.groups()) if errors else (0, 0, 0, 0)
    non_2xx = _NON_2XX.search(output)
    return LoadResult(
        int(sent.group(1)),
        int(non_2xx.group(1)) if non_2xx else 0,
        connect,
        read,
        write,
        timeout,
        output,
        {int(status): int(count) for status, count in _STATUS.findall(output)},
    )


def _status_script() -> str:
    """The tally script in a file wrk can read (one a process, rewritten only when it is gone)."""
    path = os.path.join(tempfile.gettempdir(), f"interlock-wrk-statuses-{os.getpid()}.lua")
    if not os.path.exists(path):
        with open(path, "w") as handle:
            handle.write(STATUS_SCRIPT)
    return path


class Load:
    """``with Load(port, host, seconds) as load: ...`` then ``load.result``."""

    def __init__(
        self, port: int, host: str, seconds: int = 25, connections: int = 4, path: str = "/"
    ) -> None:
        if not 0 < seconds <= MAX_SECONDS:
            raise ValueError(f"load runs 1..{MAX_SECONDS} s")
        wrk = shutil.which("wrk")
        if not wrk:
            raise AssertionError("wrk is not installed (scripts/test.sh installs it)")
        self.command = [
            wrk,
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            _status_script(),
            "-H",
            f"Host: {host}",
            f"http://{LOOPBACK}:{port}{path}",
        ]
        self.seconds = seconds
        self.result: LoadResult | None = None

    def __enter__(self) -> Self:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        return self

    def wait(self) -> LoadResult:
        output, _ = self.process.communicate(timeout=self.seconds + 30)
        self.result = parse(output)
        print(f"wrk {' '.join(self.command[1:])}: {self.result.summary()}", file=sys.stderr)
        return self.result

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None and exc[0] is not None:
            os.kill(self.process.pid, signal.SIGINT)
        if self.result is None:
            self.wait()


REPORTS: list[str] = []  # printed at the end of the test run by tests/conftest.py


def report(name: str, result: LoadResult) -> None:
    REPORTS.append(f"{name}: {result.summary()}")
