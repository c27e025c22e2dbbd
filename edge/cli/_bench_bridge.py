"""``edgectl bench`` scenario ``bridge``: the firmware bridge's figures, each beside a baseline
measured in the same run.

* ``can_decode``: frames/s through the CAN link's receive path (a real DBC, opendbc's Tesla
  powertrain: its four mapped points decoded by a cantools codec of just those signals, turned
  into (point, value, t) samples), on one core; baseline: cantools decoding every signal of
  the same frames (``Database.decode_message``).
* ``modbus_points``: points/s polled from pymodbus's server on loopback through the bridge's
  TCP link (250 registers as two merged requests); baseline: pymodbus's own synchronous client
  reading the same two blocks back to back.
* ``e2e``: a device reading -> edged -> rule -> instruction -> the device's confirmation ->
  Ack (edged's e2e histogram: Ack.t_done - the reading's t) for Modbus (write response), CAN
  (response signal) and the MCU (the firmware on MicroPython's WebAssembly port over a pty:
  its ack frame), beside a plain SDK agent's e2e in the same process and run.
* ``safe_state``: measured times to safe state: edged lost -> PLC safe values written (grace
  ``bridge_safe_after_ms`` included), edged lost -> last CAN alive frame, bridge shutdown ->
  safe values confirmed.

Everything runs in the bench's process (edged too), so the device kinds and the plain agent
share one interpreter alike; the ratios are what to read.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

CAN_GOAL_FRAMES_S = 20_000

PLC = """\
kind: modbus
poll_groups: {fast: 2ms}
points:
  - {name: bench_mb, poll: fast, area: holding_register, address: 0, type: uint16}
  - {name: out, poll: fast, area: holding_register, address: 1, type: uint16}
  - {name: pump, poll: fast, area: coil, address: 0}
actions:
  set_param:
    params: {value: {min: 0, max: 100}}
    writes: [{point: out, value: "{value}"}]
safe_state: [{point: pump, value: 0}]
"""
ECU = """\
kind: can
dbc: pkg:opendbc/dbc/tesla_powertrain.dbc
points:
  - {name: bench_can, message: DI_torque1, signal: DI_motorRPM}
  - {name: pedal, message: DI_torque1, signal: DI_pedalPos}
  - {name: speed, message: DI_torque2, signal: DI_vehicleSpeed}
  - {name: cruise, message: DI_state, signal: DI_cruiseSet}
actions:
  set_speed:
    params: {speed: {min: 0, max: 150}}
    send: {message: DAS_control, signals: {DAS_setSpeed: "{speed}"}}
    confirm: {message: DI_state, signal: DI_cruiseSet, within: 500ms}
alive: {message: DAS_control, signal: DAS_controlCounter, period: 20ms}
"""
MCU = """\
kind: mcu
points: [{name: pot, unit: V}, {name: temp_c, unit: degC}, {name: button}, {name: relay},
         {name: fan, unit: ratio}]
actions:
  throttle:
    params: {rate: {min: 0, max: 1}}
    command: {name: set_output, params: {fan: "{rate}"}}
"""
RULES = """\
version: 1
actions: [set_speed]
rules:
  - {rule_id: mcu, rule_content: pot > 3.0, action: throttle, params: {rate: 0.5},
     priority: 9, sla_threshold: 500, agents: [bench-mcu]}
  - {rule_id: plain, rule_content: bench_plain > 0.5, action: throttle, params: {rate: 0.5},
     priority: 9, sla_threshold: 50, agents: [bench-agent]}
  - {rule_id: mb, rule_content: bench_mb > 0.5, action: set_param, params: {value: 7},
     priority: 9, sla_threshold: 50, agents: [bench-plc]}
  - {rule_id: can, rule_content: bench_can > 0.5, action: set_speed, params: {speed: 30},
     priority: 9, sla_threshold: 50, agents: [bench-ecu]}
"""


def _frames(db: Any, n: int) -> list[Any]:
    import can

    rng = random.Random(7)
    msgs = [db.get_message_by_name(m) for m in ("DI_torque1", "DI_torque2", "DI_state")]
    out = []
    for i in range(n):
        m = msgs[i % len(msgs)]
        values = {}
        for s in m.signals:
            lo = s.minimum if s.minimum is not None else 0
            hi = s.maximum if s.maximum is not None else (2 ** min(s.length, 8) - 1) * s.scale
            values[s.name] = rng.uniform(lo, hi) if s.scale != 1 else int(rng.uniform(lo, hi))
        out.append(can.Message(arbitration_id=m.frame_id, data=m.encode(values, strict=False)))
    return out


def can_decode(root: Path, seconds: float) -> dict[str, Any]:
    from firmware_bridge import load_profile
    from firmware_bridge._can import CanLink

    (root / "ecu.yaml").write_text(ECU)
    prof = load_profile(root / "ecu.yaml")
    frames = _frames(prof.db, 3000)
    samples: list[Any] = []
    link = CanLink("bench", {"interface": "virtual", "channel": "unused"})
    link.add_device("ecu", prof, lambda vs, t: samples.extend((p.name, v, t) for p, v in vs))

    def ours() -> int:
        n, t_end = 0, time.perf_counter() + seconds
        now = time.monotonic_ns
        while time.perf_counter() < t_end:
            for m in frames:
                link.dispatch(m, now())
            n += len(frames)
            samples.clear()
        return n

    db = prof.db

    def baseline() -> int:
        n, t_end = 0, time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            for m in frames:
                db.decode_message(m.arbitration_id, m.data, decode_choices=False)
            n += len(frames)
        return n

    t0 = time.perf_counter()
    n_ours = ours()
    ours_s = n_ours / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    n_base = baseline()
    base_s = n_base / (time.perf_counter() - t0)
    return {
        "frames_per_s": round(ours_s),
        "baseline_cantools_full_decode_per_s": round(base_s),
        "ratio_to_baseline": round(ours_s / base_s, 3),
        "goal_frames_per_s": CAN_GOAL_FRAMES_S,
        "met": ours_s >= CAN_GOAL_FRAMES_S,
        "dbc": "opendbc/dbc/tesla_powertrain.dbc",
        "mapped_points": len(prof.points),
    }


def modbus_points(seconds: float) -> dict[str, Any]:
    import json
    import subprocess
    import sys

    from pymodbus.client import ModbusTcpClient

    from firmware_bridge._modbus import ModbusTcpLink
    from firmware_bridge._profile import Point

    points = [
        Point(f"r{i}", area="holding_register", address=i, dtype="uint16", order="AB", poll="f")
        for i in range(250)
    ]
    got = [0]
    # the server in a process of its own: in this one it would take the GIL from both sides
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge.sim", "modbus"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port = json.loads(proc.stdout.readline())["port"]
        link = ModbusTcpLink("bench", {"host": "127.0.0.1", "port": port, "timeout": "1s"})
        link.add_device(
            "plc", 1, points, {"f": 1}, lambda vs, t: got.__setitem__(0, got[0] + len(vs))
        )
        with link:
            deadline = time.monotonic() + 5
            while got[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)  # connecting
            n0, t0 = got[0], time.perf_counter()
            time.sleep(seconds)  # the link polls on its own thread meanwhile
            ours = (got[0] - n0) / (time.perf_counter() - t0)
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        client.connect()
        try:
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                client.read_holding_registers(0, count=125, device_id=1)
                client.read_holding_registers(125, count=125, device_id=1)
                n += 250
            base = n / (time.perf_counter() - t0)
        finally:
            client.close()
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "points_per_s": round(ours),
        "baseline_pymodbus_client_points_per_s": round(base),
        "ratio_to_baseline": round(ours / base, 3),
        "points": len(points),
        "requests_per_poll": 2,
        "server": "pymodbus ModbusTcpServer, own process",
    }


def _wait(pred: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.0005)  # polling another thread's progress with a deadline
    return False


def e2e_and_safe_state(root: Path, iterations: int) -> dict[str, Any]:
    import can

    from edge.config import load_config
    from edge.runtime import Edged
    from edge.sdk import Agent
    from firmware_bridge import Bridge, load_bridge_config, load_profile
    from firmware_bridge.sim import CanEcu, ModbusSim

    run_dir = Path(tempfile.mkdtemp(prefix="edge-", dir="/tmp"))
    (root / "rules.yaml").write_text(RULES)
    (root / "plc.yaml").write_text(PLC)
    (root / "ecu.yaml").write_text(ECU)
    (root / "mcu.yaml").write_text(MCU)
    channel = f"bench-{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {}
    board: Any = None
    try:
        from firmware_bridge.mcu_link import SimulatedMcu, SimulatorError

        board = SimulatedMcu().start()
    except (ImportError, SimulatorError) as exc:
        out["mcu"] = {"count": 0, "skipped": str(exc)}
    mcu_toml = (
        ""
        if board is None
        else f"""
[[link]]
name = "uart"
kind = "mcu"
port = "{board.port}"
[[device]]
name = "bench-mcu"
link = "uart"
profile = "mcu.yaml"
"""
    )
    ecfg = load_config(
        {
            "run_dir": run_dir,
            "data_dir": root / "data",
            "rules_file": root / "rules.yaml",
            "metrics_addr": "",
            "heartbeat_ms": 100,
        },
        env={},
    )
    with ModbusSim(units=(1,)) as plc:
        (root / "bridge.toml").write_text(
            f"""
[bridge]
bridge_tick_ms = 5
bridge_safe_after_ms = 200
[[link]]
name = "mb"
kind = "modbus_tcp"
port = {plc.port}
timeout = "200ms"
[[link]]
name = "can"
kind = "can"
interface = "virtual"
channel = "{channel}"
[[device]]
name = "bench-plc"
link = "mb"
profile = "plc.yaml"
[[device]]
name = "bench-ecu"
link = "can"
profile = "ecu.yaml"
"""
            + mcu_toml
        )
        cfg = load_bridge_config({"run_dir": run_dir}, env={}, file=root / "bridge.toml")
        db = load_profile(root / "ecu.yaml").db
        ecu_bus = can.Bus(interface="virtual", channel=channel)
        alive_seen = [0.0]
        ecu = CanEcu(
            ecu_bus,
            db,
            ["DI_torque1", "DI_state"],
            period_s=0.002,
            echo={("DAS_control", "DAS_setSpeed"): ("DI_state", "DI_cruiseSet")},
            on_receive=lambda n, d: (
                alive_seen.__setitem__(0, time.monotonic()) if n == "DAS_control" else None
            ),
        )
        edged = Edged(ecfg).start()
        assert edged.loop is not None and edged.stats is not None
        loop_, stats_ = edged.loop, edged.stats
        agent = Agent("bench-agent", ["bench_plain"], run_dir=run_dir, handler=lambda i: None)
        bridge = Bridge(cfg)
        stop = threading.Event()
        tick: threading.Thread | None = None
        try:
            ecu.start()
            bridge.start()
            agent.connect()
            tick = threading.Thread(target=bridge.run, args=(stop,), name="bench-bridge-tick")
            tick.start()
            if not _wait(lambda: all(d.agent.connected for d in bridge.devices), 10):
                raise RuntimeError("the bench's devices were not welcomed by edged")
            acks = lambda: loop_.counters["acks"]  # noqa: E731

            def loop(fire: Any, rearm: Any, n_iter: int = iterations) -> dict[str, Any]:
                stats_.reset()
                lost = 0
                for _ in range(n_iter):
                    n = acks()
                    fire()
                    if not _wait(lambda n=n: acks() > n, 2):
                        lost += 1
                    rearm()
                snap = stats_.snapshot()
                return {**snap["stages_us"]["e2e"], "lost": lost}

            def latest(agent_id: str, name: str) -> Any:
                rec = loop_.registry.by_id.get(agent_id)
                if rec is None:
                    return None
                return next(
                    (
                        v
                        for (_, n, _), v in zip(rec.series, rec.last_value, strict=True)
                        if n == name
                    ),
                    None,
                )

            out["plain_agent"] = loop(
                lambda: agent.report("bench_plain", 1.0),
                lambda: (
                    agent.report("bench_plain", 0.0),
                    _wait(lambda: latest("bench-agent", "bench_plain") == 0),
                ),
            )

            def mb_rearm() -> None:
                plc.set_registers(1, 0, [0])
                _wait(lambda: latest("bench-plc", "bench_mb") == 0)

            out["modbus"] = loop(lambda: plc.set_registers(1, 0, [1]), mb_rearm)

            def can_rearm() -> None:
                ecu.set("DI_torque1", DI_motorRPM=0)
                ecu.set("DI_state", DI_cruiseSet=0)
                _wait(lambda: latest("bench-ecu", "bench_can") == 0)
                _wait(lambda: latest("bench-ecu", "cruise") == 0)

            out["can"] = loop(lambda: ecu.set("DI_torque1", DI_motorRPM=1), can_rearm)
            if board is not None:  # the firmware samples every 100 ms: fewer loops
                _wait(lambda: bridge.devices[2].handle.state == "run", 5)
                out["mcu"] = loop(
                    lambda: board.set_adc(0, 65535),
                    lambda: (
                        board.set_adc(0, 0),
                        _wait(lambda: latest("bench-mcu", "pot") == 0, 2),
                    ),
                    max(5, iterations // 10),
                )
            for kind in ("modbus", "can", "mcu"):
                if "p50" not in out.get(kind, {}):
                    continue
                p50, base = out[kind].get("p50"), out["plain_agent"].get("p50")
                out[kind]["p50_ratio_to_plain_agent"] = (
                    round(p50 / base, 2) if p50 and base else None
                )
            # safe state: edged goes away
            plc.set_bits(1, 0, [True])
            mark = len(board.events) if board is not None else 0
            t0_ns = time.monotonic_ns()
            t0 = time.monotonic()
            edged.close()
            ok = _wait(lambda: plc.bits(1, 0)[0] is False, 5)
            t_safe = time.monotonic() - t0
            _wait(lambda: time.monotonic() - alive_seen[0] > 0.2, 2)
            out["safe_state"] = {
                "modbus_edged_lost_ms": round(t_safe * 1000, 1) if ok else None,
                "modbus_grace_ms": cfg.bridge_safe_after_ms,
                "can_alive_last_frame_after_edged_lost_ms": round((alive_seen[0] - t0) * 1000, 1),
            }
            if board is not None and "p50" in out.get("mcu", {}):
                try:  # the fan was left at 0.5 by the loop: safe is duty 0
                    off = board.wait_for(
                        lambda e: e["ev"] == "pwm" and e["pin"] == 17 and e["duty"] == 0,
                        5,
                        after=mark,
                    )
                    out["safe_state"]["mcu_edged_lost_ms"] = round((off["t_ns"] - t0_ns) / 1e6, 1)
                except Exception as exc:  # the simulator's own error says what it saw
                    out["safe_state"]["mcu_edged_lost_ms"] = None
                    out["safe_state"]["mcu_error"] = str(exc)[:300]
            plc.set_bits(1, 0, [True])
            stop.set()
            tick.join(5)
            t0 = time.monotonic()
            bridge.close()
            out["safe_state"]["modbus_shutdown_ms"] = (
                round((time.monotonic() - t0) * 1000, 1) if plc.bits(1, 0)[0] is False else None
            )
        finally:
            stop.set()
            if tick is not None:
                tick.join(5)
            agent.close()
            bridge.close()
            edged.close()
            ecu.stop()
            ecu_bus.shutdown()
            if board is not None:
                board.close()
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
    return out


def run_bridge(cfg: dict[str, Any], say: Any) -> dict[str, Any]:
    quick = cfg.get("quick", False)
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as d:
        root = Path(d)
        say("bridge: CAN decode throughput (opendbc tesla_powertrain.dbc) vs cantools")
        doc: dict[str, Any] = {"can_decode": can_decode(root, 0.5 if quick else 3.0)}
        say("bridge: Modbus points/s from pymodbus's server vs its own client")
        doc["modbus_points"] = modbus_points(0.5 if quick else 3.0)
        say("bridge: e2e device reading -> device-confirmed Ack, per kind, and safe state")
        doc["e2e"] = e2e_and_safe_state(root, 20 if quick else 200)
    return doc


def summary_lines(doc: dict[str, Any]) -> list[str]:
    b = doc.get("bridge")
    if not b:
        return []
    c, m, e = b["can_decode"], b["modbus_points"], b["e2e"]
    lines = [
        f"bridge CAN: {c['frames_per_s']:,} frames/s decoded into samples (goal "
        f"{c['goal_frames_per_s']:,}: {'met' if c['met'] else 'MISSED'}), "
        f"{c['ratio_to_baseline']:.2f}x cantools full decode ({c['baseline_cantools_full_decode_per_s']:,}/s)",
        f"bridge Modbus: {m['points_per_s']:,} points/s, {m['ratio_to_baseline']:.2f}x pymodbus's "
        f"client ({m['baseline_pymodbus_client_points_per_s']:,}/s)",
    ]
    for kind in ("plain_agent", "modbus", "can", "mcu"):
        s = e.get(kind, {})
        lines.append(
            f"bridge e2e {kind}: p50 {s.get('p50')} µs, p99 {s.get('p99')} µs "
            f"({s.get('count', 0)} loops, {s.get('lost', 0)} lost)"
        )
    lines.append(f"bridge safe state: {e.get('safe_state')}")
    return lines
