"""Where a connection flood's memory goes: edged's RSS, open fds and anonymous RSS sampled
every 20 ms while N DEALERs connect against ``max_connections`` 256, are held, then closed.

    .venv/bin/python -m tests.chaos.flood_anatomy [N] [HOLD_S]

Environment reaches edged unchanged (``EDGE_*`` settings, or glibc's ``MALLOC_*`` tunables to
compare allocators). Prints the peak, the level held while the refused peers stay open, and
the level after they close. A diagnostic, not a test: the goal is checked by
tests/chaos/test_regressions.py::test_connection_flood.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import zmq

from tests.chaos import tools

CAP = 256


def _anon_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) // 1024
    return 0


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 5000
    hold_s = float(argv[1]) if len(argv) > 1 else 3.0
    tmp = Path(tempfile.mkdtemp(prefix="flood-"))
    run, data = tmp / "run", tmp / "data"
    run.mkdir(mode=0o750)
    data.mkdir()
    rules = tmp / "rules.yaml"
    rules.write_text(tools.RULES)
    edged = tools.EdgedProcess(run, data, rules, tmp / "edged.log", max_connections=CAP).start()
    proc = psutil.Process(edged.pid)
    series: list[tuple[float, int, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                series.append((time.monotonic(), proc.memory_info().rss >> 20, proc.num_fds(),
                               _anon_mb(edged.pid)))
            except (psutil.Error, OSError):
                return
            stop.wait(0.02)

    fresh = proc.memory_info().rss >> 20
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, n + 64)
    socks = []
    try:
        t0 = time.monotonic()
        for _ in range(n):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RECONNECT_IVL, 50)
            s.connect(tools.endpoint(run, tools.AGENTS_SOCK))
            socks.append(s)
        stop.wait(hold_s)
        held = proc.memory_info().rss >> 20
        counters, conns = edged.counters(), edged.status()["connections"]
        t_close = time.monotonic()
        for s in socks:
            s.close(0)
        socks = []
        stop.wait(8.0)  # edged's settle trim waits 5 s of quiet
        after = proc.memory_info().rss >> 20
    finally:
        for s in socks:
            s.close(0)
        stop.set()
        sampler.join(5)
        ctx.term()
        edged.stop()
    peak = max(series, key=lambda r: r[1])
    print(f"flood of {n} against max_connections {CAP}: refused {counters['connections_refused']}, "
          f"live {conns['live']}")
    print(f"RSS MB: fresh {fresh}, peak {peak[1]} ({peak[2]} fds open then, anon {peak[3]}), "
          f"held {held} with the peers open, after they closed {after}; "
          f"most fds open {max(r[2] for r in series)}")
    for t, rss, fds, anon in series[::25]:
        mark = " (peers closed)" if t >= t_close else ""
        print(f"  {t - t0:6.2f} s  RSS {rss:4d} MB  fds {fds:5d}  anon {anon:4d} MB{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
