"""Fixtures shared by every test: a real nats-server, free ports, services started for real."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.common.telemetry import configure_logging
from tests.support.nats import NatsServer, free_port

configure_logging("console", "warning")


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
