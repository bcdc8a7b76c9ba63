"""The fault suite's ledger: every scenario's audit, added up into one summary line at the end.

``make test-faults`` (``python -m tests.faults``) prints

    faults: submitted=N completed=N failed_with_reason=N lost=0 duplicated=0

and the session fails when anything was lost or duplicated, even if a scenario's own assertions
were weakened. The same line is printed when the suite runs as part of the whole test tree.
"""

from __future__ import annotations

import pytest

from tests.support.ledger import Ledger

LEDGER = pytest.StashKey[Ledger]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[LEDGER] = Ledger()


@pytest.fixture(scope="session")
def fault_ledger(request: pytest.FixtureRequest) -> Ledger:
    return request.config.stash[LEDGER]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    ledger = session.config.stash.get(LEDGER, None)
    if ledger is not None and ledger.audits and not ledger.total.clean:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    ledger = config.stash.get(LEDGER, None)
    if ledger is None or not ledger.audits:
        return
    terminalreporter.section("fault suite")
    for audit in ledger.audits:
        terminalreporter.write_line(f"  {audit.line()}")
        for problem in audit.problems:
            terminalreporter.write_line(f"    {problem}")
    terminalreporter.write_line(ledger.total.line())
