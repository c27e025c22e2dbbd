"""The readings trace (``bridge_trace_file``, a setting for test rigs): every reading a device
reported to edged, appended as CSV lines ``t_ns,device,metric,value,labels`` (``t_ns`` the
sample's CLOCK_MONOTONIC stamp, as edged got it; labels ``k=v;k=v``, sorted). A rig reads it to
record what edged received through the bridge; a restarted bridge appends to the same file."""

from __future__ import annotations

import csv
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path


class ReadingTrace:
    def __init__(self, path: Path):
        self._fh = open(path, "a", newline="", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed by close()
        self._w = csv.writer(self._fh)
        self._lock = threading.Lock()  # the links' threads report concurrently

    def write(self, t_ns: int, device: str, items: Iterable[tuple[str, float, Mapping[str, str]]]) -> None:
        rows = [(t_ns, device, name, repr(float(v)), ";".join(f"{k}={x}" for k, x in sorted(lab.items())))
                for name, v, lab in items]
        with self._lock:
            if not self._fh.closed:
                self._w.writerows(rows)

    def close(self) -> None:
        with self._lock:
            self._fh.close()
