"""Assertions judged on a run's recording, each PASS or FAIL with a MARGINAL flag.

    within X after EVENT   every rising edge of EVENT (a condition, or a fault's start) is
                           followed within X by EXPECT (an instruction, or a condition true)
    always / never COND    over the window, on every recorded value of the signal
    count                  instructions (by action, rule, agent, ack status) in the window -> validator
    e2e_p99 RULE           p99 of sample -> instruction handled, ms, of RULE -> validator
    final / max / min SIG  the signal's last / largest / smallest value in the window -> validator

Validators: ``in_range: [lo, hi]`` (null for an open side), ``equals: x``, ``within_percent:
{target, percent}``; ``marginal: P%`` flags a pass within P % of the band from a limit.
"""

from __future__ import annotations

import math
from typing import Any

from ._runner import Recording
from ._scenario import Assertion, Cond, Scenario, Validator


def validate(v: Validator, x: float) -> tuple[bool, bool]:
    """(passed, marginal) of ``x`` against ``v``."""
    ok = v.lo <= x <= v.hi
    if not ok or not v.marginal:
        return ok, False
    finite = [b for b in (v.lo, v.hi) if math.isfinite(b)]
    span = (v.hi - v.lo) if len(finite) == 2 and v.hi > v.lo else max(abs(finite[0]) if finite else 1.0, 1e-12)
    band = span * v.marginal
    near = (math.isfinite(v.lo) and x - v.lo < band) or (math.isfinite(v.hi) and v.hi - x < band)
    return True, bool(near)


def _in(window: tuple[int, int], end_ms: float, t_ms: float) -> bool:
    hi = end_ms if window[1] < 0 else window[1] / 1e6
    return window[0] / 1e6 <= t_ms <= hi


def _edges(series: list[tuple[float, float]], cond: Cond) -> list[float]:
    out, was = [], False
    for t, v in series:
        now = cond.holds(v)
        if now and not was:
            out.append(t)
        was = now
    return out


def _one(sc: Scenario, rec: Recording, a: Assertion) -> tuple[bool, bool, Any, str]:
    step_ms = sc.step_ns / 1e6
    if a.check == "within":
        if a.after_fault:
            events = [f["start_ms"] for f in rec.faults if f["id"] == a.after_fault]
        else:
            assert a.after is not None
            events = [t for t in _edges(rec.series(a.after.signal), a.after) if _in(a.window, rec.end_ms, t)]
        if not events:
            return False, False, None, f"the event ({a.after.text if a.after else a.after_fault}) never happened"
        limit = a.within_ns / 1e6
        worst = 0.0
        for ev in events:
            if a.expect is not None:
                ser = rec.series(a.expect.signal)
                # from the event's own sample on: a value from before it says nothing
                hit = next((t for t, v in ser if t >= ev and a.expect.holds(v)), None)
            else:
                hit = next((i["t_ms"] for i in rec.instructions
                            if i["t_ms"] >= ev - step_ms and i["action"] == a.expect_instruction
                            and (not a.expect_agent or i["agent_id"] == a.expect_agent)), None)
            what = a.expect.text if a.expect else f"instruction {a.expect_instruction}"
            if hit is None or hit - ev > limit:
                late = "never" if hit is None else f"{hit - ev:.1f} ms after"
                return False, False, None if hit is None else round(hit - ev, 3), \
                    f"{what} came {late} the event at {ev / 1000:.3f} s (limit {limit:g} ms)"
            worst = max(worst, hit - ev)
        marginal = bool(a.validator is None and worst > limit * 0.9)
        return True, marginal, round(worst, 3), f"{len(events)} event(s), worst {worst:.1f} ms (limit {limit:g} ms)"
    if a.check in ("always", "never"):
        assert a.cond is not None
        ser = [(t, v) for t, v in rec.series(a.cond.signal) if _in(a.window, rec.end_ms, t)]
        if not ser:
            return False, False, None, f"no values of {a.cond.signal} in the window"
        bad = [(t, v) for t, v in ser if a.cond.holds(v) != (a.check == "always")]
        if a.cond.op in ("<", "<="):
            worst = max(v for _, v in ser) if a.check == "always" else min(v for _, v in ser)
        else:
            worst = min(v for _, v in ser) if a.check == "always" else max(v for _, v in ser)
        if bad:
            t, v = bad[0]
            return False, False, worst, f"{a.cond.signal}={v:g} at {t / 1000:.3f} s ({a.check} {a.cond.text})"
        marginal = False
        if a.validator is not None and a.validator.marginal:
            marginal = abs(worst - a.cond.value) < abs(a.cond.value) * a.validator.marginal
        return True, marginal, worst, f"{len(ser)} values, closest {worst:g}"
    if a.check in ("final", "max", "min"):
        assert a.cond is not None and a.validator is not None
        vals = [v for t, v in rec.series(a.cond.signal) if _in(a.window, rec.end_ms, t)]
        if not vals:
            return False, False, None, f"no values of {a.cond.signal} in the window"
        x = vals[-1] if a.check == "final" else max(vals) if a.check == "max" else min(vals)
    elif a.check == "count":
        assert a.validator is not None
        x = float(sum(1 for i in rec.instructions if _in(a.window, rec.end_ms, i["t_ms"])
                      and (not a.expect_instruction or i["action"] == a.expect_instruction)
                      and (not a.rule or i["rule_id"] == a.rule)
                      and (not a.expect_agent or i["agent_id"] == a.expect_agent)
                      and (not a.expect_ack or i["ack"] == a.expect_ack)))
    else:  # e2e_p99
        assert a.validator is not None
        e2e = sorted(i["e2e_ms"] for i in rec.instructions
                     if i["rule_id"] == a.rule and i["e2e_ms"] is not None)
        if not e2e:
            return False, False, None, f"rule {a.rule} never fired"
        x = e2e[min(len(e2e) - 1, math.ceil(0.99 * len(e2e)) - 1)]
    ok, marginal = validate(a.validator, x)
    lo, hi = a.validator.lo, a.validator.hi
    return ok, marginal, round(x, 3), f"{x:g} vs [{lo:g}, {hi:g}]"


def judge(sc: Scenario, rec: Recording) -> list[dict[str, Any]]:
    out = []
    for a in sc.assertions:
        ok, marginal, measured, detail = _one(sc, rec, a)
        v = a.validator
        out.append({"id": a.id, "requirement": a.requirement, "check": a.check,
                    "verdict": "PASS" if ok else "FAIL", "marginal": marginal and ok,
                    "measured": measured, "detail": detail, "line": a.line,
                    "limits": None if v is None else {"kind": v.kind, "lo": v.lo if math.isfinite(v.lo) else None,
                                                      "hi": v.hi if math.isfinite(v.hi) else None,
                                                      "marginal": v.marginal}})
    return out
