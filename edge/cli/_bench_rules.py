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

from ..rules import CompiledTable, Rule, RuleSet, Timers, bind_board, encode_rule_table
from ..rules._ir import threshold
from ..wire import Action

ACTIVATION_RULES = 10_000
MEMORY_RULES = 10_000
EVAL_RULES = 1_000
EVAL_METRICS = 100
EVAL_BATCH = 500


BOARD_EVERY = 10
"""One rule in ten is a board rule (on the bench agent's series, named by ``agent=``), and
another one in ten has a ``target``: the mix issue 10 asks the figures to hold with."""


def synthetic_rules(n: int, metrics: list[str], *, version: int = 0, agent: str = "a") -> RuleSet:
    """``n`` never-firing threshold rules spread over ``metrics``, a third of them held-for;
    of every ten, one is a board rule over agent ``agent``'s series and one has a target."""
    rules = []
    for i in range(n):
        metric = metrics[i % len(metrics)]
        board = i % BOARD_EVERY == BOARD_EVERY - 1
        labels = {"agent": agent} if board else None
        cond = threshold(metric, ">", 1e12 + i, labels=labels, hold_ns=(i % 3) * 1_000_000_000)
        targeted = board or i % BOARD_EVERY == BOARD_EVERY - 2
        rules.append(
            Rule(
                f"syn_{i}",
                cond,
                Action.ALERT,
                i % 256,
                10.0,
                board=board,
                target=(f"{agent}*",) if targeted else (),
            )
        )
    return RuleSet(tuple(rules), version=version)


def activation_table(metric: str, n: int = ACTIVATION_RULES, agent: str = "bench-probe") -> bytes:
    """A RuleTable that binds ``n`` rules to every series named ``metric`` (never firing); its
    board rules read ``agent``'s."""
    return encode_rule_table(synthetic_rules(n, [metric], agent=agent))


def memory_per_rule(n: int = MEMORY_RULES, series: int = EVAL_METRICS) -> dict[str, Any]:
    """Bytes per loaded rule: the rule model, its compiled form, and its state on one agent
    that declares every metric the rules use."""
    metrics = [f"m{i}" for i in range(series)]
    decls = [(i, m, ()) for i, m in enumerate(metrics)]
    gc.collect()
    tracemalloc.start()
    table = CompiledTable(synthetic_rules(n, metrics))
    ev, _ = table.bind(object(), "a", decls, first_seen_ns=0)
    board, _ = bind_board(table, [("a", ev)], origin_ns=0)
    used, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del table, ev, board
    return {"rules": n, "agents": 1, "bytes_per_rule": round(used / n), "goal_bytes": 2048}


def eval_cost(
    n_rules: int = EVAL_RULES, metrics: int = EVAL_METRICS, samples: int = 200_000
) -> dict[str, Any]:
    """ns per sample with ``n_rules`` loaded (spread over ``metrics`` series), against the same
    with no rules (the ingest floor), in this process with the engine edged runs.

    Random values in [0, 1). ``loaded``: the synthetic rules (thresholds far above every value,
    a third held-for), so no sample crosses one: the common case. ``crossing``: the same number
    of rules with thresholds drawn from [0, 1), so a sample crosses ~3 of its series' 10
    thresholds on average and those rules are evaluated (and fire on the way up). Each through
    ``AgentEval.on_sample`` (one call per sample) and ``AgentEval.on_batch`` (what edged runs:
    one call per batch of ``EVAL_BATCH``). ``loaded`` has the board-rule and target mix of
    ``synthetic_rules``."""
    names = [f"m{i}" for i in range(metrics)]
    decls = [(i, m, ()) for i, m in enumerate(names)]
    rng = random.Random(7)
    mids = [rng.randrange(metrics) for _ in range(samples)]
    values = [rng.random() for _ in range(samples)]
    rows = [(k * 1000, values[k], mids[k], 0) for k in range(samples)]
    batches = [rows[i : i + EVAL_BATCH] for i in range(0, samples, EVAL_BATCH)]
    crossing = RuleSet(
        tuple(
            Rule(f"x_{i}", threshold(names[i % metrics], ">", rng.random()), Action.ALERT, 1, 10.0)
            for i in range(n_rules)
        )
    )
    out: dict[str, Any] = {"rules": n_rules, "series": metrics, "samples": samples,
                           "batch": EVAL_BATCH}
    for label, ruleset in (
        ("no_rules", synthetic_rules(0, names)),
        ("loaded", synthetic_rules(n_rules, names)),
        ("crossing", crossing),
    ):
        for how in ("sample", "batch"):
            table = CompiledTable(ruleset)
            ev, _ = table.bind(object(), "a", decls, first_seen_ns=0)
            ev.make_current()
            board, _ = bind_board(table, [("a", ev)], origin_ns=0)
            board.make_current()
            timers = Timers()
            fired = 0
            t0 = time.perf_counter_ns()
            if how == "sample":
                on = ev.on_sample
                for k in range(samples):
                    f = on(mids[k], values[k], k * 1000, timers)
                    if f:
                        fired += len(f)
            else:
                on_batch = ev.on_batch
                for b in batches:
                    f, early, _ = on_batch(b, timers)
                    fired += len(f or ()) + len(early)
            dt = time.perf_counter_ns() - t0
            suffix = "" if how == "sample" else "_batch"
            out[f"ns_per_sample_{label}{suffix}"] = round(dt / samples)
            if how == "batch":
                out[f"firings_{label}"] = fired
    for suffix in ("", "_batch"):
        base = max(1, out[f"ns_per_sample_no_rules{suffix}"])
        out[f"ratio{suffix}"] = round(out[f"ns_per_sample_loaded{suffix}"] / base, 2)
        out[f"ratio_crossing{suffix}"] = round(out[f"ns_per_sample_crossing{suffix}"] / base, 2)
    out["rules_per_series"] = n_rules / metrics
    return out
