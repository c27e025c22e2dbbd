"""Child processes for the ``edgectl bench`` scenarios beyond latency (``_bench_scenarios``).

Each role runs as ``python -m edge.sim._bench_sims ROLE ...`` and speaks the rig's line
protocol (``_sim``: words on stdin, one JSON event per line on stdout)::

    blast   one agent on a raw DEALER (Hello -> Welcome, heartbeats, Acks) sending
            MetricBatches as fast as edged takes them (--rate 0: blocking sends, so a full
            queue slows the sender instead of dropping) or paced at --rate samples/s
            (non-blocking sends: what edged's queue cannot hold is dropped and counted);
            --raw skips Hello, for the bare ROUTER baseline
    sink    the transport ceiling: a ROUTER made like edged's that only receives and counts
    swarm   many cheap agents from one process: a raw DEALER each, Hello + heartbeats

Samples are re-encoded with the current time in every batch (~40 µs per 500 samples), so
the e2e of any instruction they trigger is real.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, cast

import click
import zmq

from ._sim import Commands, _reported_errors, emit

_HB_DEFAULT_MS = 1000


def _hello(agent_id: str, metrics: list[str], kind: str) -> bytes:
    from ..wire import Hello, MetricDecl, encode_hello

    return encode_hello(Hello(agent_id, tuple(MetricDecl(m) for m in metrics), agent_kind=kind,
                              pid=os.getpid()))


def _await_welcome(sock: zmq.Socket[bytes], timeout: float) -> Any:
    """Wait for the Welcome on ``sock``; raises TimeoutError if none comes."""
    from ..wire import MessageType, decode_notice, decode_welcome, verify

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.poll(100):
            buf = sock.recv()
            mtype = verify(buf)
            if mtype is MessageType.WELCOME:
                return decode_welcome(buf)
            if mtype is MessageType.NOTICE:
                n = decode_notice(buf)
                raise TimeoutError(f"edged refused the Hello: {n.code.name}: {n.detail}")
    raise TimeoutError(f"no Welcome within {timeout:g} s")


@click.group(hidden=True)
def bench_sims() -> None:
    """Simulated agents for the edgectl bench scenarios (children of the rig)."""


@bench_sims.command()
@click.option("--endpoint", required=True, help="ipc://... of edged's agents socket or a sink.")
@click.option("--agent-id", default="bench-blast")
@click.option("--series", type=int, default=100, help="Never-firing series (metric m<i>).")
@click.option("--prefix", default="ingest_m", help="Metric name prefix of those series.")
@click.option("--fire-series", type=int, default=0,
              help="Extra series (fire_<i>) whose values alternate 1/0 batch by batch.")
@click.option("--batch", type=int, default=500, help="Samples per MetricBatch.")
@click.option("--rate", type=float, default=0.0, help="Samples/s; 0 = as fast as taken.")
@click.option("--raw", is_flag=True, help="No Hello (the peer is a bare sink).")
@click.option("--vary", is_flag=True,
              help="Every sample of the plain series a new value in [0, 1) (else all 0.5).")
def blast(endpoint: str, agent_id: str, series: int, prefix: str, fire_series: int, batch: int,
          rate: float, raw: bool, vary: bool) -> None:
    """Send batches until ``pause``; ``mark`` zeroes the counts, ``report`` sends them."""
    from ..transport import make_dealer
    from ..wire import (
        Ack,
        AckStatus,
        Heartbeat,
        MessageType,
        decode_instruction,
        encode_ack,
        encode_heartbeat,
        encode_metric_batch,
        verify,
    )

    cmds = Commands()
    metrics = [f"{prefix}{i}" for i in range(series)] + [f"fire_{j}" for j in range(fire_series)]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = make_dealer(ctx, endpoint, identity=f"{agent_id}#{os.getpid()}".encode())
    now = time.monotonic_ns
    try:
        with _reported_errors():
            if raw:
                session, ids, hb_ns = 1, list(range(len(metrics))), 0
            else:
                sock.send(_hello(agent_id, metrics, "bench-blast"))
                w = _await_welcome(sock, 10.0)
                session, ids = w.session, list(w.metric_ids)
                hb_ns = (w.heartbeat_ms or _HB_DEFAULT_MS) * 1_000_000 // 2
                batch = min(batch, w.max_batch)
            n_plain = series
            fire_ids = ids[n_plain:]
            plain_ids = ids[:n_plain]
            # every batch: the fire series first (one sample each), then plain series round-robin
            n_fill = max(0, batch - len(fire_ids))
            plain_cycle = [plain_ids[k % n_plain] for k in range(n_fill)] if n_plain else []
            # --vary: a few precomputed phases, so a series' value changes at every sample
            # (within and across batches) without costing the sender a random() per sample
            phases = [[((k * 7919 + p * 104729) % 9973) / 9973.0 for k in range(n_fill)]
                      for p in range(7 if vary else 1)]
            if not vary:
                phases = [[0.5] * n_fill]
            counts = {"sent": 0, "batches": 0, "dropped": 0, "blocked_s": 0.0,
                      "instructions": 0, "acks": 0}
            t_mark = time.monotonic()
            cpu_mark = time.process_time()
            seq = beat_seq = 0
            next_beat = now()
            period = batch / rate if rate > 0 else 0.0
            next_t = time.monotonic()
            running = False
            emit("ready", pid=os.getpid(), series=len(ids))
            while True:
                word = cmds.poll() if running else cmds.wait(0.05)
                if word == "quit":
                    break
                if word == "run":
                    running, next_t = True, time.monotonic()
                elif word == "pause":
                    running = False
                    emit("paused")
                elif word == "mark":
                    counts = dict.fromkeys(counts, 0)
                    counts["blocked_s"] = 0.0
                    t_mark, cpu_mark = time.monotonic(), time.process_time()
                    emit("marked")
                elif word == "report":
                    elapsed = time.monotonic() - t_mark
                    emit("report", elapsed_s=elapsed, cpu_s=time.process_time() - cpu_mark,
                         sent_per_s=counts["sent"] / elapsed if elapsed > 0 else 0.0, **counts)
                t = now()
                if hb_ns and t >= next_beat:
                    beat_seq += 1
                    try:
                        sock.send(encode_heartbeat(Heartbeat(session, t, beat_seq)), zmq.NOBLOCK)
                    except zmq.Again:
                        pass
                    next_beat = t + hb_ns
                # instructions from firing rules: acknowledge them (the closed loop)
                while cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                    buf = sock.recv()
                    if verify(buf) is MessageType.INSTRUCTION:
                        ins = decode_instruction(buf)
                        counts["instructions"] += 1
                        td = now()
                        ack = Ack(session, ins.instruction_id, AckStatus.OK, td, td)
                        try:
                            sock.send(encode_ack(ack), zmq.NOBLOCK)
                            counts["acks"] += 1
                        except zmq.Again:
                            pass
                if not running:
                    continue
                if period:
                    gap = next_t - time.monotonic()
                    if gap > 0:
                        time.sleep(min(gap, 0.01))  # pacing to the schedule
                        continue
                    next_t += period
                    if next_t < time.monotonic() - 0.1:  # far behind: no catch-up burst
                        next_t = time.monotonic()
                seq += 1
                t = now()
                hi = 1.0 if seq % 2 else 0.0
                samples = [(fid, hi, t) for fid in fire_ids]
                samples += [(mid, v, t)
                            for mid, v in zip(plain_cycle, phases[seq % len(phases)],
                                              strict=True)]
                buf = encode_metric_batch(session, seq, t, samples)
                if period:
                    try:
                        sock.send(buf, zmq.NOBLOCK)
                    except zmq.Again:
                        counts["dropped"] += len(samples)
                        continue
                else:
                    t0 = time.monotonic()
                    while not sock.poll(50, zmq.POLLOUT):  # backpressure: wait, don't drop
                        if cmds.quit:
                            break
                    counts["blocked_s"] += time.monotonic() - t0
                    try:
                        sock.send(buf, zmq.NOBLOCK)
                    except zmq.Again:
                        counts["dropped"] += len(samples)
                        continue
                counts["sent"] += len(samples)
                counts["batches"] += 1
    finally:
        sock.close(linger=0)
        ctx.term()


@bench_sims.command()
@click.option("--endpoint", required=True, help="ipc://... to bind.")
def sink(endpoint: str) -> None:
    """Receive and count MetricBatch frames (samples from the frame length, no decoding)."""
    from ..transport import make_router
    from ..wire import SAMPLE_SIZE

    cmds = Commands()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = make_router(ctx, endpoint, max_msg_bytes=1 << 20)
    try:
        with _reported_errors():
            frames = samples = 0
            t_mark, cpu_mark = time.monotonic(), time.process_time()
            emit("ready", pid=os.getpid())
            recv = sock.recv_multipart
            while True:
                word = cmds.poll()
                if word == "quit":
                    break
                if word == "mark":
                    frames = samples = 0
                    t_mark, cpu_mark = time.monotonic(), time.process_time()
                    emit("marked")
                elif word == "report":
                    elapsed = time.monotonic() - t_mark
                    emit("report", frames=frames, samples=samples, elapsed_s=elapsed,
                         cpu_s=time.process_time() - cpu_mark,
                         samples_per_s=samples / elapsed if elapsed > 0 else 0.0)
                if not sock.poll(20):
                    continue
                for _ in range(1000):  # the same drain shape as edged's loop
                    if not cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                        break
                    _rid, buf = recv(zmq.NOBLOCK)
                    frames += 1
                    samples += (len(buf) - 64) // SAMPLE_SIZE
    finally:
        sock.close(linger=0)
        ctx.term()


@bench_sims.command()
@click.option("--run-dir", type=click.Path(path_type=Path), required=True)
@click.option("--agents", type=int, default=100)
@click.option("--metrics", type=int, default=4, help="Metrics each agent declares.")
def swarm(run_dir: Path, agents: int, metrics: int) -> None:
    """``agents`` agents, each a raw DEALER: Hello, Welcome, then heartbeats until ``quit``."""
    from ..transport import AGENTS_SOCK, endpoint, make_dealer
    from ..wire import Heartbeat, MessageType, decode_welcome, encode_heartbeat, verify

    cmds = Commands()
    ep = endpoint(run_dir, AGENTS_SOCK)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socks: list[zmq.Socket[bytes]] = []
    try:
        with _reported_errors():
            sessions: dict[int, tuple[int, int]] = {}  # index -> (session, beat period ns)
            poller = zmq.Poller()
            for i in range(agents):
                s = make_dealer(ctx, ep, identity=f"swarm-{i}#{os.getpid()}".encode())
                socks.append(s)
                poller.register(s, zmq.POLLIN)
                names = [f"swarm_m{k}" for k in range(metrics)]
                s.send(_hello(f"swarm-{i}", names, "bench-swarm"))
            index = {s: i for i, s in enumerate(socks)}
            deadline = time.monotonic() + 20.0
            while len(sessions) < agents and time.monotonic() < deadline:
                for s, _ in poller.poll(100):
                    buf = s.recv()
                    if verify(buf) is MessageType.WELCOME:
                        w = decode_welcome(buf)
                        hb = (w.heartbeat_ms or _HB_DEFAULT_MS) * 1_000_000 // 2
                        sessions[index[s]] = (w.session, hb)
            if len(sessions) < agents:
                raise TimeoutError(f"only {len(sessions)} of {agents} agents were welcomed")
            emit("ready", pid=os.getpid(), agents=len(sessions))
            now = time.monotonic_ns
            next_beat = [now()] * agents
            seq = 0
            while cmds.poll() != "quit":
                t = now()
                for i, s in enumerate(socks):
                    if t >= next_beat[i]:
                        session, hb = sessions[i]
                        seq += 1
                        try:
                            s.send(encode_heartbeat(Heartbeat(session, t, seq)), zmq.NOBLOCK)
                        except zmq.Again:
                            pass
                        next_beat[i] = t + hb
                for s, _ in poller.poll(20):
                    s.recv()  # notices; nothing to act on
    finally:
        for s in socks:
            s.close(linger=0)
        ctx.term()


def main(argv: list[str] | None = None) -> None:
    bench_sims(args=argv, prog_name="python -m edge.sim._bench_sims")


if __name__ == "__main__":
    main()
