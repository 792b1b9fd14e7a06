"""Fixtures shared by every test: a real nats-server, free ports, services started for real."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from services.common import shared_memory
from services.common.telemetry import configure_logging
from tests.support.hang_report import chain_task_report
from tests.support.nats import NatsServer, free_port
from tests.support.secrets_key import export_session_key_file

configure_logging("console", "warning")
# Distribution seals outputs' secrets; every service process the tests start finds its key.
export_session_key_file()


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One nats-server with JetStream for the whole test session (tests use distinct names)."""
    server = NatsServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def own_nats_server() -> Iterator[NatsServer]:
    """A nats-server of this test's own, for tests that kill, freeze or restart it."""
    server = NatsServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(autouse=True)
def _shared_memory_on() -> Iterator[None]:
    """A service started with BAYCAST_SHARED_MEMORY off turns the path off for the process; the
    next test starts with it on again, as a process does."""
    yield
    shared_memory.configure(True)


@pytest.hookimpl(hookwrapper=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: object) -> Iterator[None]:
    """A test that times out in its event loop also reports the loop's tasks (where it waited)."""
    yield
    chain_task_report()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is a failure of the gate: every test here talks to real components that a
    machine of this kind has (`make setup` installs them), so a skip means one of them is missing.
    `BAYCAST_ALLOW_SKIPS=1` lets a developer run a part of the suite on a machine without them."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if skipped and exitstatus == 0 and os.environ.get("BAYCAST_ALLOW_SKIPS") != "1":
        if reporter is not None:
            reporter.write_line(
                f"{skipped} skipped: a skip fails the gate (BAYCAST_ALLOW_SKIPS=1 allows it)",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
