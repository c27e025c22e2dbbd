"""A runnable agent for examples/demo_rules.yaml: `python examples/agent.py [SECONDS [TICK_S]]`."""

import sys
import threading
import time

from edge.sdk import Agent, InstructionRejected

heat, rate, lock = 0.0, 1.0, threading.Lock()  # the simulated workload the rules act on


def on_instruction(ins):  # runs on the SDK's I/O thread: keep it short
    global heat, rate
    params = {p.key: p.value for p in ins.params}
    print(f"instruction #{ins.instruction_id} {ins.action_name} {params} (rule {ins.rule_id}, "
          f"value {ins.value:g})", flush=True)
    with lock:
        if ins.action_name == "restart_agent":
            heat = 0.0  # a restart cools the workload down
        elif ins.action_name == "throttle":
            rate = float(params["rate"])
        elif ins.action_name != "alert":
            raise InstructionRejected(f"{ins.action_name} not supported here")
    # returning None acknowledges Ok; False -> Failed; an exception -> Failed with its message


metrics = ["cpu_usage", ("temperature_c", {"zone": "drive"}), "inference_latency_ms"]
# wait_for_edged: start the agent before or after edged, in any order
with Agent("perception-1", metrics, handler=on_instruction, wait_for_edged=True) as agent:
    given = [float(a) for a in sys.argv[1:3]]
    seconds, tick = given + [30.0, 0.1][len(given):]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        with lock:  # the workload heats up as it runs: CPU, drive temperature, latency climb
            heat = min(heat + 0.02 * rate, 1.2)
            cpu, temp, latency = 0.5 + 0.45 * heat, 60 + 25 * heat * rate, 30 + 20 * heat
        agent.report_many([("cpu_usage", min(cpu, 1.0)),
                           ("temperature_c", temp, {"zone": "drive"}),
                           ("inference_latency_ms", latency)])
        time.sleep(tick)  # the agent's reporting cadence
    print(f"done: {agent.counters['reported']} samples sent, {agent.dropped} dropped while "
          f"edged was away, {agent.counters['instructions']} instructions", flush=True)
