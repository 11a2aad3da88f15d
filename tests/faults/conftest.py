"""The fault runs' figures, printed at the end of the run whatever the output capture (`-q` in CI)."""

from __future__ import annotations

import pytest

from tests.faults.replay import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("fault runs")
        for line in FIGURES:
            terminalreporter.write_line(line)
