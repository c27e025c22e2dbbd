"""Defects 1-4 of issue 9 as attacks, each measuring edged's RSS (psutil on its pid):

1. a connection that never said Hello acknowledges another agent's instruction;
2. 1,030 Hellos with distinct ids and no Bye, all lost, then a new agent;
3. 20,000 (campaign: 100,000) agents saying Hello and Bye;
4. frames of 2 MiB (over max_msg_bytes, under libzmq's cap) flooded for 3 s;

and a connection flood (600, campaign 5,000 DEALERs held open against max_connections 256).

Goals: the Ack is refused and the instruction stays open for its agent; the new agent is
welcomed; edged's RSS never above 64 MB, and (campaign) back within 10 % of its steady state a
minute after. ``agent_forget_s`` is passed as EDGE_AGENT_FORGET_S: an edged without that setting
ignores it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import zmq

from edge.wire import (
    Ack,
    AckStatus,
    Hello,
    MessageType,
    MetricDecl,
    decode_instruction,
    encode_ack,
    encode_hello,
    encode_metric_batch,
    verify,
)

from ..support import wait_for
from . import tools

pytestmark = pytest.mark.integration


def _instruction(sock: zmq.Socket[bytes], timeout_ms: int = 5000) -> Any:
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        if sock.poll(100) and verify(buf := sock.recv()) is MessageType.INSTRUCTION:
            return decode_instruction(buf)
    raise AssertionError("no instruction came")


def _frames_in_after(edged: tools.EdgedProcess, n: int) -> None:
    wait_for(lambda: edged.counters()["frames_in"] >= n, 10, "edged to take the frames")


def test_defect1_a_foreign_ack_leaves_the_instruction_open(
    mode: str, edged_proc: Callable[..., tools.EdgedProcess]
) -> None:
    edged = edged_proc(ack_timeout_ms=30_000)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    victim = tools.dealer(ctx, edged.run_dir)
    stranger = tools.dealer(ctx, edged.run_dir)
    rounds = tools.scaled(3, 50, mode)
    stolen = 0
    try:
        with tools.RssSampler(edged.pid) as rss:
            w = tools.hello(victim, "victim", ("load_x",))
            assert w is not None
            mid = w.metric_ids[0]
            for i in range(rounds):
                t = time.monotonic_ns()
                victim.send(encode_metric_batch(w.session, 2 * i, t, [(mid, 0.0, t)]))
                victim.send(encode_metric_batch(w.session, 2 * i + 1, t, [(mid, 1.0, t)]))
                ins = _instruction(victim)
                before = edged.counters()
                # the stranger never said Hello: a made-up session, then the victim's own
                for session in (999, w.session):
                    stranger.send(encode_ack(Ack(session, ins.instruction_id, AckStatus.OK,
                                                 t, t, "not mine")))
                _frames_in_after(edged, before["frames_in"] + 2)
                taken = edged.counters()["acks_ok"] - before["acks_ok"]
                stolen += taken
                victim.send(encode_ack(Ack(w.session, ins.instruction_id, AckStatus.OK, t, t)))
                wait_for(lambda b=before: edged.counters()["acks"] > b["acks"] or
                         edged.counters()["acks_unknown"] > b["acks_unknown"], 10, "the ack")
        counters = edged.counters()
    finally:
        victim.close()
        stranger.close()
        ctx.term()
    tools.report("defect1_foreign_ack", mode, rounds=rounds, foreign_acks_taken=stolen,
                 acks_ok=counters["acks_ok"], acks_unknown=counters["acks_unknown"],
                 acks_foreign=counters.get("acks_foreign"),
                 rss_peak_mb=round(rss.peak / tools.MB, 1))
    assert stolen == 0, "a connection that never said Hello closed another agent's instruction"
    assert counters["acks_ok"] == rounds and counters["acks_unknown"] == 0
    assert rss.peak <= tools.RSS_LIMIT


def test_defect2_lost_agents_free_their_slots(
    mode: str, edged_proc: Callable[..., tools.EdgedProcess]
) -> None:
    edged = edged_proc(heartbeat_ms=100, missed_beats=2, agent_forget_s=1)
    n = 1030
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    welcomed = 0
    newcomer = None
    t_lost = 0.0
    try:
        with tools.RssSampler(edged.pid) as rss:
            for i in range(n):
                s = tools.dealer(ctx, edged.run_dir)
                welcomed += tools.hello(s, f"lost-{i}", ("load_x",), timeout_ms=2000) is not None
                s.close()  # gone without a Bye: lost after two missed beats
            t_lost = time.monotonic()
            s = tools.dealer(ctx, edged.run_dir)
            deadline = time.monotonic() + (15 if mode == "smoke" else 60)
            while newcomer is None and time.monotonic() < deadline:
                newcomer = tools.hello(s, "newcomer", ("load_x",), timeout_ms=1000)
                if newcomer is None:
                    time.sleep(0.2)  # refused: ask again, as a restarting agent would
            s.close()
        agents = edged.status()["agents"]
    finally:
        ctx.term()
    tools.report("defect2_lost_hellos", mode, hellos=n, welcomed=welcomed,
                 newcomer_welcomed=newcomer is not None,
                 newcomer_after_s=round(time.monotonic() - t_lost, 2) if newcomer else None,
                 agents=agents, rss_peak_mb=round(rss.peak / tools.MB, 1))
    assert newcomer is not None, "a new agent is refused once 1,030 lost agents hold the slots"
    assert rss.peak <= tools.RSS_LIMIT


_PIPELINE = 64


def test_defect3_agent_churn(mode: str, edged_proc: Callable[..., tools.EdgedProcess]) -> None:
    n = tools.scaled(20_000, 100_000, mode)
    edged = edged_proc()
    fresh, steady = tools.warm_steady_rss(edged) if mode == "campaign" else \
        (tools.steady_rss(edged, 0.5),) * 2
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    s = tools.dealer(ctx, edged.run_dir)
    done = 0
    try:
        with tools.RssSampler(edged.pid, 0.05) as rss:
            t0 = time.monotonic()
            while done < n and rss.peak <= tools.RSS_LIMIT:  # past the goal: fail now
                k = min(_PIPELINE, n - done)  # k Hellos in flight, their Welcomes, k Byes
                for i in range(done, done + k):
                    s.send(encode_hello(Hello(f"churn-{i}", (MetricDecl("load_x"),))))
                for _ in range(k):
                    w = tools.next_welcome(s)
                    assert w is not None, f"Hello refused after {done} agents"
                    tools.bye(s, w.session)
                done += k
            seconds = time.monotonic() - t0
            agents = edged.status()["agents"]
        recovered = tools.rss_recovery(edged, steady, 60.0) if mode == "campaign" else {}
    finally:
        s.close()
        ctx.term()
    tools.report("defect3_churn", mode, agents_churned=done, per_s=round(done / seconds),
                 agents=agents, rss_fresh_mb=round(fresh / tools.MB, 1), rss_steady_mb=round(steady / tools.MB, 1),
                 rss_peak_mb=round(rss.peak / tools.MB, 1),
                 rss_growth_per_agent_b=round((rss.samples[-1] - steady) / max(done, 1)),
                 rss_back_within_10pct_s=recovered.get("back_s"),
        rss_a_minute_after_mb=recovered.get("rss_mb"),
        **tools.recovery_ratios(recovered, fresh, steady))
    assert rss.peak <= tools.RSS_LIMIT, f"RSS peak {rss.peak >> 20} MB after {done} agents"
    if mode == "campaign":
        assert recovered["back_s"] is not None, "RSS not back within 10 % of steady a minute after"


def test_defect4_oversized_flood(
    mode: str, edged_proc: Callable[..., tools.EdgedProcess]
) -> None:
    edged = edged_proc()
    fresh, steady = tools.warm_steady_rss(edged) if mode == "campaign" else \
        (tools.steady_rss(edged, 0.5),) * 2
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    s = tools.dealer(ctx, edged.run_dir, sndhwm=4)  # our own queue stays small
    big = b"\x00" * (2 << 20)
    sent = 0
    try:
        with tools.Probe(edged.run_dir) as probe, tools.RssSampler(edged.pid, 0.005) as rss:
            mark = probe.mark()
            for _ in tools.until(3.0):
                if rss.over_safety.is_set():
                    break
                try:
                    s.send(big, zmq.NOBLOCK)
                    sent += 1
                except zmq.Again:
                    s.poll(1, zmq.POLLOUT)
            served = probe.mark() - mark
        recovered = tools.rss_recovery(edged, steady, 60.0) if mode == "campaign" else {}
    finally:
        s.close()
        ctx.term()
    counters = edged.counters()
    tools.report("defect4_2mib_flood", mode, frames_sent=sent, seconds=3.0,
                 bad_too_large=counters["bad_too_large"], probe_served_during=served,
                 stopped_at_safety=rss.over_safety.is_set(),
                 rss_fresh_mb=round(fresh / tools.MB, 1), rss_steady_mb=round(steady / tools.MB, 1),
                 rss_peak_mb=round(rss.peak / tools.MB, 1), rss_back_within_10pct_s=recovered.get("back_s"),
        rss_a_minute_after_mb=recovered.get("rss_mb"),
        **tools.recovery_ratios(recovered, fresh, steady))
    assert edged.alive()
    assert rss.peak <= tools.RSS_LIMIT, f"RSS peak {rss.peak >> 20} MB"
    assert served > 0, "the probe was not served during the flood"
    if mode == "campaign":
        assert recovered["back_s"] is not None, "RSS not back within 10 % of steady a minute after"


def test_connection_flood(mode: str, edged_proc: Callable[..., tools.EdgedProcess]) -> None:
    """Connections opened as fast as they go, held open, past ``max_connections``: the ones
    past the cap are refused in their handshake (counted), the probe goes on being served,
    and edged's RSS stays bounded by the cap, not by the flood."""
    cap = 256
    n = tools.scaled(600, 5000, mode)
    edged = edged_proc(max_connections=cap)
    fresh, steady = tools.warm_steady_rss(edged) if mode == "campaign" else \
        (tools.steady_rss(edged, 0.5),) * 2
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, n + 64)
    socks: list[zmq.Socket[bytes]] = []
    try:
        with tools.Probe(edged.run_dir) as probe, tools.RssSampler(edged.pid, 0.01) as rss:
            mark = probe.mark()
            t0 = time.monotonic()
            for _ in range(n):
                if rss.over_safety.is_set():
                    break
                s = ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.RECONNECT_IVL, 50)  # refused, it comes back: a flood
                s.connect(tools.endpoint(edged.run_dir, tools.AGENTS_SOCK))
                socks.append(s)
            opened_s = time.monotonic() - t0
            wait_for(lambda: edged.counters()["connections_refused"] >= n - cap, 60,
                     "the flood's connections to be refused")
            time.sleep(1.0)  # the flood held open (and reconnecting) for a second
            status = edged.status()
            served = probe.mark() - mark
        for s in socks:
            s.close(0)
        socks = []
        recovered = tools.rss_recovery(edged, steady, 60.0) if mode == "campaign" else {}
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
    counters = edged.counters()
    tools.report("connection_flood", mode, connections_opened=n, max_connections=cap,
                 opened_per_s=round(n / max(opened_s, 1e-9)),
                 connections_refused=counters["connections_refused"],
                 connections_live=status["connections"]["live"],
                 probe_served_during=served, rss_fresh_mb=round(fresh / tools.MB, 1), rss_steady_mb=round(steady / tools.MB, 1),
                 rss_peak_mb=round(rss.peak / tools.MB, 1),
                 rss_back_within_10pct_s=recovered.get("back_s"),
                 rss_a_minute_after_mb=recovered.get("rss_mb"),
        **tools.recovery_ratios(recovered, fresh, steady))
    assert edged.alive() and edged.tracebacks() == 0, edged.tail()
    assert counters["connections_refused"] >= n - cap
    assert status["connections"]["live"] <= cap + 64  # refused ones closing meanwhile
    assert served > 0, "the probe was not served during the flood"
    assert rss.peak <= tools.RSS_LIMIT, f"RSS peak {rss.peak >> 20} MB"
    if mode == "campaign":
        assert recovered["back_s"] is not None, "RSS not back within 10 % of steady a minute after"
