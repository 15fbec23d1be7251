"""Suite-wide hooks: print the load figures every load test saw, passed or failed."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter) -> None:
    from tests.swarm.load import REPORTS

    if REPORTS:
        terminalreporter.section("requests seen under load")
        for line in REPORTS:
            terminalreporter.write_line(line)
