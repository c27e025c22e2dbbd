"""A run's outputs in its directory:

    result.json     verdict, reason, assertions, faults, the rig's own latency, e2e per rule
    junit.xml       one testsuite per scenario, one testcase per assertion (CI)
    report.html     the same for a person, with the plots (signals.png, e2e.png; matplotlib)
    recording.csv   every reported sample in the replay format t_ms,agent_id,metric,value,labels
                    (``edgectl rules replay RULES recording.csv`` runs on it as is)
    events.csv      instructions and acks: t_ms,kind,agent_id,rule_id,action,t_sample_ms,e2e_ms
    signals.csv     the plant's inputs and outputs at every step
    recording.mf4   plant signals, reported samples and instructions as MDF4 (asammdf)

matplotlib and asammdf are the ``hil`` extra; without them the HTML has no plots and the MDF4
file is left out, and result.json says so.
"""

from __future__ import annotations

import csv
import html
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ._runner import RunResult


def _e2e(res: RunResult) -> dict[str, dict[str, Any]]:
    by: dict[str, list[float]] = {}
    for i in res.recording.instructions:
        if i["e2e_ms"] is not None:  # None: to a bridge device (seen in edged's tail)
            by.setdefault(i["rule_id"], []).append(i["e2e_ms"])
    sla = _slas(res)
    out = {}
    for rule, xs in by.items():
        xs.sort()
        p99 = xs[min(len(xs) - 1, math.ceil(0.99 * len(xs)) - 1)]
        out[rule] = {"count": len(xs), "p50": xs[len(xs) // 2], "p99": p99, "max": xs[-1],
                     "sla_ms": sla.get(rule), "within_sla": None if rule not in sla else p99 <= sla[rule]}
    return out


def _slas(res: RunResult) -> dict[str, float]:
    """Each rule's SLA (its sla_threshold, ms) in the table under test."""
    from edge.errors import EdgeError
    from edge.rules import load_rule_file

    try:
        return {r.rule_id: r.sla_ms for r in load_rule_file(res.scenario.rules_file).rules}
    except (EdgeError, OSError):
        return {}


def result_doc(res: RunResult) -> dict[str, Any]:
    sc = res.scenario
    return {
        "scenario": sc.id, "title": sc.title, "file": str(sc.path), "requirements": list(sc.requirements),
        "seed": sc.seed, "verdict": res.verdict, "marginal": res.marginal, "reason": res.reason,
        "started": res.started, "wall_s": round(res.wall_s, 3), "duration_s": sc.duration_ns / 1e9,
        "plant": {"model": sc.model, "fmu": str(sc.fmu) if sc.fmu else None, "step_ms": sc.step_ns / 1e6},
        "assertions": res.assertions, "faults": res.recording.faults,
        "instructions": len(res.recording.instructions), "samples": len(res.recording.samples),
        "e2e_ms": _e2e(res), "rig": res.rig, "outputs": res.outputs,
    }


def write_outputs(res: RunResult, out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    fmts = res.scenario.formats
    files: dict[str, str] = {}
    if "csv" in fmts:
        files.update(_write_csv(res, out))
    if "mdf4" in fmts:
        files["mdf4"] = _write_mdf4(res, out / "recording.mf4")
    plots = _write_plots(res, out) if "html" in fmts else {}
    files.update(plots)
    res.outputs = files
    if "junit" in fmts:
        write_junit([res], out / "junit.xml")
        files["junit"] = str(out / "junit.xml")
    if "html" in fmts:
        (out / "report.html").write_text(_html(res, plots), encoding="utf-8")
        files["html"] = str(out / "report.html")
    if "json" in fmts:
        files["json"] = str(out / "result.json")
        res.outputs = files
        (out / "result.json").write_text(json.dumps(result_doc(res), indent=2, default=str), encoding="utf-8")
    return files


def _write_csv(res: RunResult, out: Path) -> dict[str, str]:
    rec = res.recording
    with open(out / "recording.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["t_ms", "agent_id", "metric", "value", "labels"])
        for t, agent, metric, v, labels in rec.samples:
            w.writerow([f"{t:.3f}", agent, metric, repr(float(v)), labels])
    with open(out / "events.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["t_ms", "kind", "agent_id", "rule_id", "action", "t_sample_ms", "e2e_ms"])
        for i in rec.instructions:
            w.writerow([f"{i['t_ms']:.3f}", "instruction", i["agent_id"], i["rule_id"], i["action"],
                        _ms(i["t_sample_ms"]), _ms(i["e2e_ms"])])
            w.writerow([f"{i['t_ms']:.3f}", f"ack:{i['ack']}", i["agent_id"], i["rule_id"], i["action"], "", ""])
        for f in rec.faults:
            w.writerow([f"{f['start_ms']:.3f}", f"fault_start:{f['kind']}", f["target"], f["id"], "", "", ""])
            w.writerow([f"{f['end_ms']:.3f}", f"fault_end:{f['kind']}", f["target"], f["id"], "", "", ""])
    names = list(rec.signals)
    with open(out / "signals.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["t_ms", *names])
        for j in range(min((len(rec.signals[n]) for n in names), default=0)):
            w.writerow([f"{rec.signals[names[0]][j][0]:.3f}", *(repr(rec.signals[n][j][1]) for n in names)])
    return {"recording": str(out / "recording.csv"), "events": str(out / "events.csv"),
            "signals": str(out / "signals.csv")}


def _ms(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def _write_mdf4(res: RunResult, path: Path) -> str:
    try:
        import numpy as np
        from asammdf import MDF, Signal
    except ImportError:
        return "skipped: MDF4 needs asammdf (pip install 'edge-runtime[hil]')"
    rec = res.recording
    sigs = []
    for name, ser in rec.signals.items():
        if ser:
            sigs.append(Signal(np.array([v for _, v in ser]), np.array([t / 1000 for t, _ in ser]),
                               name=f"plant.{name}", unit=""))
    by: dict[str, list[tuple[float, float]]] = {}
    for t, agent, metric, v, _ in rec.samples:
        by.setdefault(f"{agent}.{metric}", []).append((t, v))
    for name, ser in by.items():
        sigs.append(Signal(np.array([v for _, v in ser]), np.array([t / 1000 for t, _ in ser]), name=name))
    mdf = MDF(version="4.10")
    if sigs:
        mdf.append(sigs, comment="hil signals")
    timed = [i for i in rec.instructions if i["e2e_ms"] is not None]
    if timed:
        ts = np.array([i["t_ms"] / 1000 for i in timed])
        mdf.append([Signal(np.array([i["e2e_ms"] for i in timed]), ts, name="instruction.e2e_ms", unit="ms")],
                   comment="instructions")
    mdf.save(str(path), overwrite=True)
    mdf.close()
    return str(path)


def _write_plots(res: RunResult, out: Path) -> dict[str, str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"plots": "skipped: plots need matplotlib (pip install 'edge-runtime[hil]')"}
    rec = res.recording
    files = {}
    names = [n for n, s in rec.signals.items() if s]
    devices = [d.id for d in res.scenario.devices]
    health = {d: {m: [(t, v) for t, a, mm, v, _ in rec.samples if a == d and mm == m]
                  for m in sorted({mm for _, a, mm, _, _ in rec.samples if a == d})}
              for d in devices}
    health = {d: {m: ser for m, ser in hs.items() if m == "health_online" or any(v for _, v in ser)}
              for d, hs in health.items() if hs}
    panels = len(names) + len(health)
    if panels:
        fig, axes = plt.subplots(panels, 1, figsize=(9, 1.7 * panels + 0.6), sharex=True, squeeze=False)
        for ax, (dev, hs) in zip(axes[len(names):, 0], health.items(), strict=True):
            for m, ser in hs.items():  # the bridge's view of the device, as edged got it
                ax.step([t / 1000 for t, _ in ser], [v for _, v in ser], where="post", lw=1.0,
                        label=m.removeprefix("health_"))
            for f in rec.faults:
                if f["target"] == dev:
                    ax.axvspan(f["start_ms"] / 1000, max(f["end_ms"], f["start_ms"] + 20) / 1000,
                               color="tab:red", alpha=0.15)
            for i in rec.instructions:
                if i["agent_id"] == dev:
                    ax.axvline(i["t_ms"] / 1000, color="tab:green", lw=0.8, alpha=0.7)
            ax.set_ylabel(f"{dev}\nhealth", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6, loc="upper right")
        for ax, name in zip(axes[: len(names), 0], names, strict=True):
            ser = rec.signals[name]
            ax.plot([t / 1000 for t, _ in ser], [v for _, v in ser], lw=1.2, label=f"plant {name}")
            for a_id in {s[1] for s in rec.samples}:
                rep = [(t, v) for t, a, m, v, _ in rec.samples if a == a_id and
                       any(sig == name and mm == m for mm, sig in _agent_report(res, a_id))]
                if rep:
                    ax.plot([t / 1000 for t, _ in rep], [v for _, v in rep], ".", ms=1.5, alpha=0.5,
                            label=f"{a_id} reported")
            for f in rec.faults:
                if f["layer"] == "signal" and _fault_signal(res, f["target"]) != name:
                    continue  # a sensor fault is shaded on its own signal only
                ax.axvspan(f["start_ms"] / 1000, max(f["end_ms"], f["start_ms"] + 20) / 1000,
                           color="tab:red", alpha=0.15)
            for i in rec.instructions:
                ax.axvline(i["t_ms"] / 1000, color="tab:green", lw=0.8, alpha=0.7)
            ax.set_ylabel(name, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=6, loc="upper right")
        axes[-1, 0].set_xlabel("time since start (s); red: faults, green: instructions (acked)")
        fig.suptitle(f"{res.scenario.id}: {res.verdict}{' (MARGINAL)' if res.marginal else ''}", fontsize=10)
        fig.tight_layout()
        fig.savefig(out / "signals.png", dpi=80)
        plt.close(fig)
        files["signals_png"] = str(out / "signals.png")
    e2e: dict[str, list[float]] = {}
    for i in rec.instructions:
        if i["e2e_ms"] is not None:
            e2e.setdefault(i["rule_id"], []).append(i["e2e_ms"])
    if e2e:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.hist(list(e2e.values()), bins=30, label=list(e2e), stacked=False)
        ax.set_xlabel("sample -> instruction handled (ms)")
        ax.set_ylabel("instructions")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "e2e.png", dpi=80)
        plt.close(fig)
        files["e2e_png"] = str(out / "e2e.png")
    return files


def _fault_signal(res: RunResult, target: str) -> str:
    agent, _, metric = target.partition(".")
    return dict(_agent_report(res, agent)).get(metric, "")


def _agent_report(res: RunResult, agent_id: str) -> tuple[tuple[str, str], ...]:
    for a in res.scenario.agents:
        if a.id == agent_id:
            return a.report
    return ()


def _html(res: RunResult, plots: dict[str, str]) -> str:
    doc = result_doc(res)
    e = html.escape
    rows = "".join(
        f"<tr class='{a['verdict']}'><td>{e(a['id'])}</td><td>{e(a['requirement'])}</td><td>{e(a['check'])}</td>"
        f"<td>{a['verdict']}{' MARGINAL' if a['marginal'] else ''}</td><td>{e(str(a['measured']))}</td>"
        f"<td>{e(a['detail'])}</td></tr>" for a in res.assertions)
    faults = "".join(f"<tr><td>{e(f['id'])}</td><td>{e(f['kind'])}</td><td>{e(f['target'])}</td>"
                     f"<td>{f['start_ms'] / 1000:.3f}</td><td>{f['end_ms'] / 1000:.3f}</td>"
                     f"<td>{e(json.dumps(f['params']))}</td></tr>" for f in res.recording.faults)
    e2e = "".join(f"<tr><td>{e(r)}</td><td>{s['count']}</td><td>{s['p50']:.3f}</td><td>{s['p99']:.3f}</td>"
                  f"<td>{s['max']:.3f}</td><td>{s['sla_ms'] if s['sla_ms'] is not None else '-'}"
                  f"{'' if s['within_sla'] is None else (' (met)' if s['within_sla'] else ' (missed)')}</td></tr>"
                  for r, s in doc["e2e_ms"].items())
    load = "".join(
        f"<p>load <code>{e(k)}</code>: edged's capacity {fl['capacity_per_s'] or 0:,.0f} samples/s "
        f"(measured in this run), offered {fl['offered_per_s']:,.0f}/s = "
        f"{fl['ratio'] if fl['ratio'] is not None else '-'}x (asked {fl['asked_ratio'] or '-'}x, "
        f"{fl['procs']} senders)</p>" for k, fl in res.rig.get("load", {}).items())
    imgs = "".join(f"<p><img src='{Path(p).name}' alt='{k}'></p>" for k, p in plots.items() if p.endswith(".png"))
    if not imgs and plots:
        imgs = f"<p>{e(next(iter(plots.values())))}</p>"
    inj, obs = res.rig.get("injection_us", {}), res.rig.get("observation_us", {})
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(res.scenario.id)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}.FAIL{{background:#fdd}}.PASS{{background:#dfd}}
.v{{font-size:22px;font-weight:bold}}</style></head><body>
<h1>{e(res.scenario.title)}</h1>
<p class="v">{res.verdict}{' (MARGINAL)' if res.marginal else ''}</p><p>{e(res.reason)}</p>
<p>scenario <code>{e(res.scenario.id)}</code> ({e(str(res.scenario.path))}), seed {res.scenario.seed},
requirements {e(', '.join(res.scenario.requirements) or '-')}, duration {res.scenario.duration_ns / 1e9:g} s,
plant {e(res.scenario.model)} at {res.scenario.step_ns / 1e6:g} ms, wall {res.wall_s:.1f} s</p>
<h2>Assertions</h2><table><tr><th>id</th><th>requirement</th><th>check</th><th>verdict</th><th>measured</th><th>detail</th></tr>{rows}</table>
<h2>Faults</h2><table><tr><th>id</th><th>kind</th><th>target</th><th>start s</th><th>end s</th><th>params</th></tr>{faults}</table>
<h2>Signals</h2>{imgs}
<h2>End to end per rule (sample -> instruction handled, ms)</h2>
<table><tr><th>rule</th><th>count</th><th>p50</th><th>p99</th><th>max</th><th>SLA ms</th></tr>{e2e}</table>
{load}
<h2>The rig itself</h2><p>injection (step lateness) p50 {inj.get('p50', 0):.0f} µs, p99 {inj.get('p99', 0):.0f} µs;
observation p50 {obs.get('p50', 0):.0f} µs, p99 {obs.get('p99', 0):.0f} µs; tolerance {res.scenario.tolerance_ms:g} ms</p>
</body></html>"""


def write_junit(results: list[RunResult], path: Path) -> None:
    suites = ET.Element("testsuites")
    for res in results:
        cases: list[dict[str, Any] | None] = list(res.assertions) or [None]
        suite = ET.SubElement(suites, "testsuite", name=res.scenario.id, tests=str(len(cases)),
                              failures=str(sum(1 for a in res.assertions if a["verdict"] == "FAIL")),
                              errors="1" if res.verdict in ("ERROR", "TIMEOUT") else "0",
                              skipped="1" if res.verdict == "SKIP" else "0", time=f"{res.wall_s:.3f}")
        for a in cases:
            name = a["id"] if a else "run"
            tc = ET.SubElement(suite, "testcase", classname=f"hil.{res.scenario.id}", name=name)
            if res.verdict in ("ERROR", "TIMEOUT"):
                ET.SubElement(tc, "error", message=f"{res.verdict}: {res.reason}")
            elif res.verdict == "SKIP":
                ET.SubElement(tc, "skipped", message=res.reason)
            elif a and a["verdict"] == "FAIL":
                ET.SubElement(tc, "failure", message=a["detail"])
            if a and a["marginal"]:
                ET.SubElement(tc, "system-out").text = f"MARGINAL: {a['detail']}"
    ET.indent(suites)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
