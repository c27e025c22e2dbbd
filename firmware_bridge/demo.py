"""The demo's devices: a tank PLC (pymodbus server on loopback TCP) and a drive ECU (cantools
on python-can's virtual bus, Tesla powertrain DBC from opendbc) with simple plant dynamics,
behind a :class:`Bridge` whose devices are agents of the demo's edged.

``python -m firmware_bridge.demo --run-dir RUN --root DIR`` (started by ``edgectl demo
--devices``); JSON lines on stdout (``ready``, ``status``, ``stopped``), ``quit`` on stdin or
SIGTERM stops it (the bridge writes the PLC's safe values on the way out). The ECU shares the
bridge's process only because python-can's virtual bus is in-process; on a board it is a
socketcan interface and the ECU is a real node.

Plant: the MCU (the firmware on MicroPython's WebAssembly port over a pty, when Node.js and
the package are installed) sees its load input rise until ``load_high`` runs its fan; the tank heats up until the ``tank_hot`` rule opens the coolant valve (the PLC closes
it again below 50 degC); the motor revs up until ``overspeed`` sets the cruise speed, which
the ECU confirms in DI_state.DI_cruiseSet and answers by dropping the revs.
"""

from __future__ import annotations

import argparse
import json
import signal
import struct
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "bridge"


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m firmware_bridge.demo")
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--root", required=True, type=Path)
    args = ap.parse_args(argv)

    import can

    from . import Bridge, load_bridge_config, load_profile
    from .sim import CanEcu, ModbusSim

    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "quit":
                break
        stop.set()

    threading.Thread(target=read_stdin, name="demo-stdin", daemon=True).start()
    channel = f"demo-{uuid.uuid4().hex[:8]}"
    root = args.root
    for name in ("plc.yaml", "ecu.yaml", "mcu.yaml"):
        (root / name).write_text((EXAMPLES / name).read_text())
    board: Any = None
    try:
        from .mcu_link import SimulatedMcu, SimulatorError

        board = SimulatedMcu().start()
    except (ImportError, SimulatorError) as exc:
        _emit("note", message=f"no MCU in this demo: {exc}")
    plc = ModbusSim(units=(1,)).start()
    toml = root / "bridge.toml"
    text = (EXAMPLES / "bridge.toml").read_text()
    if board is not None:
        text += (
            f'\n[[link]]\nname = "uart0"\nkind = "mcu"\nport = "{board.port}"\n'
            '\n[[device]]\nname = "mcu-fan"\nlink = "uart0"\nprofile = "mcu.yaml"\n'
        )
    toml.write_text(text.replace("{port}", str(plc.port)).replace("{channel}", channel))
    cfg = load_bridge_config({"run_dir": args.run_dir}, env={}, file=toml)
    db = load_profile(root / "ecu.yaml").db
    ecu_bus = can.Bus(interface="virtual", channel=channel)
    plant = {"temp": 60.0, "rpm": 4000.0, "commands": 0, "load_v": 1.0}

    def on_ecu_command(name: str, decoded: dict[str, Any]) -> None:
        if name == "DAS_control" and decoded.get("DAS_setSpeed", 0) > 0:
            plant["rpm"] = 3000.0
            plant["commands"] += 1

    ecu = CanEcu(
        ecu_bus,
        db,
        ["DI_torque1", "DI_torque2", "DI_state"],
        period_s=0.01,
        echo={("DAS_control", "DAS_setSpeed"): ("DI_state", "DI_cruiseSet")},
        on_receive=on_ecu_command,
    ).start()
    bridge = Bridge(cfg).start()
    tick = threading.Thread(target=bridge.run, args=(stop,), name="bridge-tick")
    tick.start()
    try:
        deadline = time.monotonic() + 20
        while not all(d.agent.connected for d in bridge.devices):
            if time.monotonic() > deadline or stop.is_set():
                _emit("error", message="the bridge's devices were not welcomed by edged")
                return 1
            time.sleep(0.05)
        _emit("ready", agents=[d.name for d in bridge.devices])
        next_status = time.monotonic() + 1
        while not stop.wait(0.05):
            valve = plc.registers(1, 0)[0]
            plant["temp"] += 0.35 - 0.012 * valve
            if plant["temp"] < 50 and valve:
                plc.set_registers(1, 0, [0])  # the PLC's own logic closes the valve when cool
            hi, lo = struct.unpack(">HH", struct.pack(">f", 12.0 + valve / 10))
            plc.set_registers(1, 0, [round(plant["temp"] * 10), lo, hi], area="ir")
            plc.set_bits(1, 0, [True])
            plant["rpm"] = min(12000.0, plant["rpm"] + 120)
            ecu.set(
                "DI_torque1", DI_motorRPM=plant["rpm"], DI_pedalPos=min(100, plant["rpm"] / 120)
            )
            ecu.set("DI_torque2", DI_vehicleSpeed=min(179, plant["rpm"] / 100))
            if board is not None:
                mcu = next(d for d in bridge.devices if d.name == "mcu-fan")
                if mcu.counters["confirmed"] > plant.get("mcu_confirmed", 0):
                    plant["mcu_confirmed"] = mcu.counters["confirmed"]
                    plant["load_v"] = 1.0  # the fan took the load off
                plant["load_v"] = min(3.3, plant["load_v"] + 0.04)
                board.set_adc(0, round(plant["load_v"] / 3.3 * 65535))
            if time.monotonic() >= next_status:
                next_status += 1
                _emit(
                    "status",
                    plant={k: round(v, 1) for k, v in plant.items()},
                    devices=[
                        {"name": d.name, "counters": d.counters, "health": d.health()}
                        for d in bridge.devices
                    ],
                )
    finally:
        stop.set()
        tick.join(5)
        bridge.close()
        ecu.stop()
        ecu_bus.shutdown()
        safe = {"pump": plc.bits(1, 0)[0], "coolant_valve": plc.registers(1, 0)[0]}
        plc.stop()
        if board is not None:
            board.close()
        _emit(
            "stopped",
            safe_values=safe,
            devices=[{"name": d.name, "counters": d.counters} for d in bridge.devices],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
