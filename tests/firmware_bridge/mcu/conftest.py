"""Fixtures for the MCU link: the firmware on real MicroPython behind a pty, and McuLink on it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from firmware_bridge.mcu_link import Event, McuLink, SimulatedMcu, SimulatorError


@pytest.fixture
def sim() -> Iterator[SimulatedMcu]:
    try:
        board = SimulatedMcu()
    except SimulatorError as e:
        pytest.fail(f"{e} (make test installs it)", pytrace=False)
    with board:
        yield board


@pytest.fixture
def link(sim: SimulatedMcu) -> Iterator[McuLink]:
    with McuLink(sim.port) as mcu:
        yield mcu


class Pump:
    """Runs the host side: polls the link, sends heartbeats every period while ``beating``."""

    def __init__(self, link: McuLink):
        self.link = link
        self.beating = True
        self.events: list[Event] = []
        self.last_beat_ns = 0
        assert link.hello is not None
        self.period_ns = link.hello.heartbeat_ms * 1_000_000

    def turn(self) -> list[Event]:
        now = time.monotonic_ns()
        if self.beating and now - self.last_beat_ns >= self.period_ns:
            self.link.send_heartbeat()
            self.last_beat_ns = now
        got = self.link.poll(0.01)
        self.events.extend(got)
        return got

    def until(self, pred: Callable[[Event], bool], timeout_s: float = 5.0) -> Any:
        """Pump until an event matches (returned); fails the test on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for ev in self.turn():
                if pred(ev):
                    return ev
        pytest.fail(f"no matching event within {timeout_s} s; last {self.events[-5:]}")

    def run(self, seconds: float) -> list[Event]:
        """Pump for a while (the firmware runs on real time); returns the events seen."""
        start = len(self.events)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.turn()
        return self.events[start:]


@pytest.fixture
def pump(link: McuLink) -> Pump:
    return Pump(link)
