"""A runnable agent: reports CPU, a drive temperature and inference latency to edged, and
obeys the instructions that examples/demo_rules.yaml sends back.

    edged --rules examples/demo_rules.yaml &
    python examples/agent.py              # --duration 30 (s), --agent-id perception-1

Its simulated workload heats up as it runs: the CPU climbs past 0.9 (rule_001_demo restarts
it after 2 s there), the drive zone passes 80 °C (rule_002 throttles it to half rate) and
inference slows past 45 ms (rule_003 raises an alert). Each instruction is printed with its
id and the sample that fired it; at the end the agent prints what it sent and dropped.
"""

from __future__ import annotations

import argparse
import threading
import time

from edge.sdk import Agent, InstructionRejected


class Workload:
    """The state the instructions act on. The handler runs on the SDK's I/O thread, the loop
    on the main thread: a lock keeps them apart."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rate = 1.0  # work per tick; throttle lowers it
        self.heat = 0.0  # grows with work, drops on restart
        self.restarts = 0

    def tick(self) -> tuple[float, float, float]:
        """One step of work: (cpu_usage 0-1, drive temperature °C, inference latency ms)."""
        with self.lock:
            self.heat = min(self.heat + 0.02 * self.rate, 1.2)
            cpu = min(0.5 + 0.45 * self.heat, 1.0)
            temperature = 60.0 + 25.0 * self.heat * self.rate
            latency = 30.0 + 20.0 * self.heat
        return cpu, temperature, latency

    def restart(self) -> None:
        with self.lock:
            self.heat = 0.0
            self.restarts += 1

    def throttle(self, rate: float) -> None:
        with self.lock:
            self.rate = rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agent-id", default="perception-1")
    p.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
    p.add_argument("--interval", type=float, default=0.1, help="seconds between reports")
    args = p.parse_args()
    work = Workload()

    def on_instruction(ins):  # runs on the SDK's I/O thread: keep it short
        params = {q.key: q.value for q in ins.params}
        print(
            f"instruction #{ins.instruction_id} {ins.action_name} {params or ''} "
            f"(rule {ins.rule_id}, value {ins.value:g})",
            flush=True,
        )
        if ins.action_name == "restart_agent":
            work.restart()
        elif ins.action_name == "throttle":
            work.throttle(float(params["rate"]))
        elif ins.action_name == "alert":
            pass  # a real agent would page someone; printing it is this one's alert
        else:
            raise InstructionRejected(f"{ins.action_name} not supported here")
        # returning None acknowledges Ok; False -> Failed; an exception -> Failed with its text

    metrics = ["cpu_usage", ("temperature_c", {"zone": "drive"}), "inference_latency_ms"]
    # wait_for_edged: start before or after edged, in any order
    with Agent(args.agent_id, metrics, handler=on_instruction, wait_for_edged=True) as agent:
        print(f"{args.agent_id} connected to edged; reporting for {args.duration:g} s", flush=True)
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            cpu, temperature, latency = work.tick()
            agent.report_many(
                [
                    ("cpu_usage", cpu),
                    ("temperature_c", temperature, {"zone": "drive"}),
                    ("inference_latency_ms", latency),
                ]
            )
            time.sleep(args.interval)  # the agent's own reporting cadence
        c = agent.counters
        print(
            f"done: {c['reported']} samples sent, {c['dropped']} dropped (edged away), "
            f"{c['instructions']} instructions, {work.restarts} restarts",
            flush=True,
        )


if __name__ == "__main__":
    main()
