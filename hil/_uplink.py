"""The upstream link of a rig: a local nats-server with JetStream, a fault proxy in front of
it (edge.sim.FaultProxy, the sync tests' proxy), and a real edge-sync beside edged.

::

    edged --outbox (LMDB)--> edge-sync ==TCP==> FaultProxy ==> nats-server (JetStream)
                                              ^ uplink_blackhole / uplink_reset

After the run (still inside its timeout) the rig heals the proxy, waits until edge-sync's
outbox is empty, then reads the device's aggregates back from the stream: ``uplink.produced``
(edged's outbox sequence), ``uplink.delivered`` (distinct Edge-Seq in the stream),
``uplink.duplicates`` (extra copies of one Edge-Seq), ``uplink.dropped`` (the outbox's
policy drops), ``uplink.lost`` (produced - delivered - dropped), ``uplink.outbox_left``,
``uplink.drain_s``, ``uplink.wall_span_s`` (last minus first aggregate window start, edged's
wall clock: shows a clock step); during the run ``uplink.link_up`` (1/0) and ``uplink.outbox`` (depth)
from edge-sync's status file.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ._errors import HilError


class Uplink:
    def __init__(self, rig: Any, device_id: str, agg_window_s: float):
        self.rig = rig
        self.device_id = device_id
        self.agg_window_s = agg_window_s
        self.server: Any = None
        self.proxy: Any = None
        self.sync: Any = None
        self.config = rig.root / "edge.toml"

    def start_server(self) -> Path:
        """The server and the proxy; returns the config file edged and edge-sync share."""
        from edge.sim import FaultProxy
        from edge.sync import LocalNatsServer, NatsServerError

        try:
            self.server = LocalNatsServer(self.rig.root / "nats").start()
        except NatsServerError as exc:
            raise HilError(f"the uplink's nats-server would not start: {exc}") from exc
        self.proxy = FaultProxy(self.server.port)
        self.config.write_text(
            f'device_id = "{self.device_id}"\n'
            f"agg_window_s = {self.agg_window_s}\n"
            f'upstream_url = "{self.proxy.url}"\n'
            "sync_status_interval_s = 0.2\n", encoding="utf-8")
        return self.config

    def start_sync(self, timeout: float) -> None:
        argv = [sys.executable, "-c", "from edge.sync import main; main()",
                "--config", str(self.config), "--run-dir", str(self.rig.run_dir),
                "--data-dir", str(self.rig.data_dir), "--log-level", "warning"]
        from edge.sync import STATUS_FILE

        with contextlib.suppress(FileNotFoundError):  # a killed one's last word is not "up"
            (self.rig.run_dir / STATUS_FILE).unlink()
        self.sync = self.rig.spawn_command("edge-sync", argv)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.sync.alive():
                raise HilError(f"edge-sync exited with code {self.sync.proc.returncode}; "
                               f"{self.sync.log_tail()}")
            if (self.status() or {}).get("link_state") == "up":
                return
            time.sleep(0.05)  # polling a starting child process
        raise HilError(f"edge-sync's link was not up within {timeout:g} s; {self.sync.log_tail()}")

    def status(self) -> dict[str, Any] | None:
        from edge.sync import read_status

        with contextlib.suppress(ValueError, OSError):  # a write in progress is renamed over
            return read_status(self.rig.run_dir)
        return None

    def sample(self) -> tuple[float, float] | None:
        """(link up 1/0, outbox depth) from edge-sync's status file, None if unreadable."""
        st = self.status()
        if not st:
            return None
        return (1.0 if st.get("link_state") == "up" else 0.0,
                float((st.get("outbox") or {}).get("depth", 0)))

    def fault_start(self, kind: str) -> None:
        if kind == "uplink_blackhole":
            self.proxy.blackhole(True)
        elif kind == "uplink_reset":
            self.proxy.reset_all()
        elif kind == "uplink_refuse":
            self.proxy.drop_new(True)
            self.proxy.reset_all()

    def fault_end(self, kind: str) -> None:
        if kind == "uplink_blackhole":
            self.proxy.blackhole(False)
        elif kind == "uplink_refuse":
            self.proxy.drop_new(False)

    def drain(self, timeout: float) -> dict[str, float]:
        """Wait for the outbox to empty (the link healed), then read the stream back."""
        self.proxy.heal()
        t0 = time.monotonic()
        left = -1.0
        while time.monotonic() - t0 < timeout:
            st = self.status() or {}
            left = float((st.get("outbox") or {}).get("depth", -1))
            if left == 0 and st.get("link_state") == "up":
                break
            time.sleep(0.1)  # polling edge-sync's status file
        drain_s = time.monotonic() - t0
        ob = (self.status() or {}).get("outbox") or {}
        produced = float(ob.get("next_seq", 1)) - 1
        lines = self.stored()
        seqs = [ln["seq"] for ln in lines]
        starts = [ln["aggregate"]["window_start_unix_ns"] / 1e9 for ln in lines
                  if isinstance(ln.get("aggregate"), dict) and "window_start_unix_ns" in ln["aggregate"]]
        # edged goes on aggregating while the stream is read: count what it had made by then
        delivered = float(len({q for q in seqs if q <= produced}))
        return {"produced": produced, "delivered": delivered,
                "duplicates": float(len(seqs) - len(set(seqs))),
                "dropped": float(ob.get("dropped", 0)),
                "lost": produced - delivered - float(ob.get("dropped", 0)),
                "outbox_left": left, "drain_s": round(drain_s, 3),
                "wall_span_s": round(max(starts) - min(starts), 3) if starts else 0.0}

    def stored(self) -> list[dict[str, Any]]:
        """Every aggregate of this device in the stream (``edgectl fleet aggregates``): its
        Edge-Seq (``seq``) and the decoded Aggregate."""
        r = subprocess.run([sys.executable, "-c", "from edge.cli import main; main()", "fleet",
                            "--url", self.server.url, "aggregates", "--device", self.device_id],
                           capture_output=True, text=True, timeout=60, check=False)
        if r.returncode != 0:
            raise HilError(f"reading the uplink's stream failed: {r.stderr.strip()[-300:]}")
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def close(self) -> list[str]:
        problems = []
        if self.sync is not None:
            try:
                self.sync.stop()
            except Exception as exc:
                problems.append(f"edge-sync: {exc}")
        for what, obj, stop in (("fault proxy", self.proxy, "close"), ("nats-server", self.server, "stop")):
            if obj is not None:
                try:
                    getattr(obj, stop)()
                except Exception as exc:
                    problems.append(f"{what}: {exc}")
        return problems
