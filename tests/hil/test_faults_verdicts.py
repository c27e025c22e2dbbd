"""Signal faults (seeded: the same seed gives the same values) and the validators' bands."""

from __future__ import annotations

import math

from hil._faults import SignalFaults
from hil._scenario import Fault, Validator
from hil._verdict import validate

MS = 1_000_000


def _f(kind: str, start_ms: int = 100, dur_ms: int = 100, **params: float) -> Fault:
    return Fault(kind, kind, "a.m", start_ms * MS, dur_ms * MS, params)


def _run(faults: list[Fault], seed: int = 1) -> list[float | None]:
    sf = SignalFaults(faults, seed)
    return [sf.apply(t * 10 * MS, float(t)) for t in range(30)]


def test_each_signal_fault_only_in_its_window() -> None:
    assert _run([_f("offset", value=5)])[9:21] == [9, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 20]
    assert _run([_f("stuck")])[9:21] == [9, *[10.0] * 10, 20]
    assert _run([_f("dropout")])[9:21] == [9, *[None] * 10, 20]
    assert _run([_f("drift", rate=100)])[10:13] == [10, 12, 14]
    assert _run([_f("spike", amplitude=50)])[9:12] == [9, 60, 11]
    assert _run([_f("quantise", step=4)])[9:13] == [9, 12, 12, 12]
    assert _run([_f("delay", ms=30)])[9:14] == [9, 7, 8, 9, 10]


def test_noise_is_repeatable_per_seed() -> None:
    a, b, c = _run([_f("noise", sigma=1)], 7), _run([_f("noise", sigma=1)], 7), _run([_f("noise", sigma=1)], 8)
    assert a == b and a != c
    assert a[:10] == list(map(float, range(10)))


def test_validators_and_marginal_bands() -> None:
    v = Validator("in_range", 0, 100, 0.1)
    assert validate(v, 50) == (True, False)
    assert validate(v, 95) == (True, True)
    assert validate(v, 101) == (False, False)
    open_low = Validator("in_range", -math.inf, 20, 0.25)
    assert validate(open_low, 1) == (True, False)
    assert validate(open_low, 16) == (True, True)
    eq = Validator("equals", 3, 3, 0)
    assert validate(eq, 3) == (True, False) and validate(eq, 4)[0] is False
