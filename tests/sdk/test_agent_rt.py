"""The SDK's real-time profile (``Agent(..., rt="CPU[:PRIO]")``) and its lean instruction path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge._rt import DEFAULT_RT_PRIORITY, parse_rt
from edge.runtime import Edged
from edge.sdk import Agent
from edge.wire import Action, Instruction, Param, encode_instruction

from ..support import wait_for

pytestmark = pytest.mark.integration


def test_parse_rt() -> None:
    assert parse_rt("1") == ("1", DEFAULT_RT_PRIORITY)
    assert parse_rt("2-3:80") == ("2-3", 80)
    for bad, why in [("", "CPU"), ("x:5", "CPU"), ("1:0", "1 to 99"), ("1:100", "1 to 99"),
                     ("1:fast", "1 to 99")]:  # fmt: skip
        with pytest.raises(ValueError, match=why):
            parse_rt(bad)


def test_a_malformed_profile_is_refused_when_the_agent_is_made(run_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"expected CPU\[:PRIO\]"):
        Agent("rt-bad", ["cpu"], run_dir=run_dir, rt="one")


_CHILD = """
import json, os, sys
from edge.sdk import Agent
with Agent("rt-1", ["cpu"], run_dir=sys.argv[1], rt=sys.argv[2]) as a:
    got = dict(a.rt_applied)
    got["affinity"] = {str(t): sorted(os.sched_getaffinity(t))
                       for t in [got["thread"], *got["zmq_io"]["threads"]]}
    got["policy"] = {str(t): os.sched_getscheduler(t)
                     for t in [got["thread"], *got["zmq_io"]["threads"]]}
    got["caller"] = a.pin_current_thread()
    got["caller_affinity"] = sorted(os.sched_getaffinity(0))
    got["caller_prio"] = os.sched_getparam(0).sched_priority
print(json.dumps(got))
"""


def test_the_profile_pins_the_io_thread_and_libzmqs(edged: Edged, run_dir: Path) -> None:
    """In its own process: the profile pins every libzmq I/O thread of the process."""
    cpu = max(os.sched_getaffinity(0))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(run_dir), f"{cpu}:5"],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "EDGE_CONFIG": ""},
    )  # fmt: skip
    got: dict[str, Any] = json.loads(out.stdout)
    assert got["cpu_affinity"] == [cpu]
    assert got["zmq_io"]["threads"], "no libzmq I/O thread found"
    assert all(cpus == [cpu] for cpus in got["affinity"].values()), got
    if got["sched_fifo"] is None:  # no CAP_SYS_NICE here: said so, and not applied
        assert "SCHED_FIFO priority 5 not applied" in out.stderr
    else:
        assert set(got["policy"].values()) == {os.SCHED_FIFO}
    # the caller's thread (it reports, and holds the GIL meanwhile): same CPU, one below
    assert got["caller"]["cpu_affinity"] == got["caller_affinity"] == [cpu]
    if got["sched_fifo"] is not None:
        assert got["caller"]["sched_fifo"] == got["caller_prio"] == 4


def test_lean_and_full_paths_run_the_same_handler(tmp_path: Path) -> None:
    """An Instruction in our encoder's layout takes the lean path; the same instruction in
    another valid layout (flatbuffers.Builder, other field order) and one that no path may
    take are sent by a ZeroMQ ROUTER standing in for edged: the first two reach the handler
    equal and are acknowledged, the third is dropped."""
    import random

    import zmq

    from edge.wire import (
        AckStatus,
        MessageType,
        Welcome,
        decode_ack,
        decode_instruction,
        encode_welcome,
        message_type,
    )
    from tests.wire.wire_builders import builder_encode

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    ep = f"ipc://{tmp_path}/a.sock"
    router.bind(ep)
    seen: list[Instruction] = []
    after: list[tuple[int, AckStatus]] = []
    agent = Agent("lean-1", ["cpu"], endpoint=ep, handler=seen.append, context=ctx,
                  after_ack=lambda i, st: after.append((i.instruction_id, st))).start()
    try:
        assert router.poll(10_000), "no Hello"
        rid, _ = router.recv_multipart()
        router.send_multipart([rid, encode_welcome(Welcome(5, (1,), 1000, 3, 100, 65536))])
        wait_for(lambda: agent.connected, what="welcomed")
        ins = Instruction(77, "r", Action.SET_PARAM, params=(Param("gain", 0.25), Param("on", True)))
        lean = encode_instruction(ins)
        other = builder_encode(ins, random.Random(3))
        assert other != lean and decode_instruction(other) == decode_instruction(lean)
        bad = bytearray(lean)
        bad[42] = 200  # the action: not an Action value, so both paths must refuse it
        for buf in (lean, bytes(bad), other):
            router.send_multipart([rid, buf])
        acks = []
        while len(acks) < 2:
            assert router.poll(10_000), "no Ack"
            _, buf = router.recv_multipart()
            if message_type(buf) is MessageType.ACK:
                acks.append(decode_ack(buf))
        assert [a.status for a in acks] == [AckStatus.OK, AckStatus.OK]
        assert seen == [decode_instruction(lean)] * 2
        assert agent.counters["instructions"] == 2
        wait_for(lambda: len(after) == 2, what="after_ack twice")
        assert after == [(77, AckStatus.OK)] * 2  # called once each Ack had left
    finally:
        agent.close()
        router.close(0)
        ctx.term()
