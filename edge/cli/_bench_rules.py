"""Rule-table figures for `edgectl bench`: activation pause, memory per rule, evaluation cost.

The activation pause is measured on a live edged (the bench's own, agents connected): a
10,000-rule table is pushed and edged reports how long its loop was paused for the swap (the
evaluators are prepared off the loop). Memory and evaluation cost are measured in this process
with the same engine, each with a baseline from the same run.
"""

from __future__ import annotations

import gc
import random
import time
import tracemalloc
from typing import Any

from ..rules import CompiledTable, Rule, RuleSet, Timers, encode_rule_table
from ..rules._ir import threshold
from ..wire import Action

ACTIVATION_RULES = 10_000
MEMORY_RULES = 10_000
EVAL_RULES = 1_000
EVAL_METRICS = 100


def synthetic_rules(n: int, metrics: list[str], *, version: int = 0) -> RuleSet:
    """``n`` threshold rules spread over ``metrics``, a third of them held-for."""
    return RuleSet(
        tuple(
            Rule(
                f"syn_{i}",
                threshold(
                    metrics[i % len(metrics)], ">", 1e12 + i, hold_ns=(i % 3) * 1_000_000_000
                ),
                Action.ALERT,
                i % 256,
                10.0,
            )
            for i in range(n)
        ),
        version=version,
    )


def activation_table(metric: str, n: int = ACTIVATION_RULES) -> bytes:
    """A RuleTable that binds ``n`` rules to every series named ``metric`` (never firing)."""
    return encode_rule_table(synthetic_rules(n, [metric]))


def memory_per_rule(n: int = MEMORY_RULES, series: int = EVAL_METRICS) -> dict[str, Any]:
    """Bytes per loaded rule: the rule model, its compiled form, and its state on one agent
    that declares every metric the rules use."""
    metrics = [f"m{i}" for i in range(series)]
    decls = [(i, m, ()) for i, m in enumerate(metrics)]
    gc.collect()
    tracemalloc.start()
    table = CompiledTable(synthetic_rules(n, metrics))
    ev, _ = table.bind(object(), "a", decls, first_seen_ns=0)
    used, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del table, ev
    return {"rules": n, "agents": 1, "bytes_per_rule": round(used / n), "goal_bytes": 2048}


def eval_cost(
    n_rules: int = EVAL_RULES, metrics: int = EVAL_METRICS, samples: int = 200_000
) -> dict[str, Any]:
    """ns per sample through AgentEval.on_sample with ``n_rules`` loaded (spread over
    ``metrics`` series), against the same with no rules (the ingest floor)."""
    names = [f"m{i}" for i in range(metrics)]
    decls = [(i, m, ()) for i, m in enumerate(names)]
    rng = random.Random(7)
    mids = [rng.randrange(metrics) for _ in range(samples)]
    values = [rng.random() for _ in range(samples)]
    out: dict[str, Any] = {"rules": n_rules, "series": metrics, "samples": samples}
    for label, n in (("no_rules", 0), ("loaded", n_rules)):
        table = CompiledTable(synthetic_rules(n, names))
        ev, _ = table.bind(object(), "a", decls, first_seen_ns=0)
        ev.make_current()
        timers = Timers()
        on = ev.on_sample
        t0 = time.perf_counter_ns()
        for k in range(samples):
            on(mids[k], values[k], k * 1000, timers)
        out[f"ns_per_sample_{label}"] = round((time.perf_counter_ns() - t0) / samples)
    out["ratio"] = round(out["ns_per_sample_loaded"] / max(1, out["ns_per_sample_no_rules"]), 2)
    out["rules_per_series"] = n_rules / metrics
    return out
