"""Quick measurements of the store writer on this machine (a script, not a test).

    .venv/bin/python tests/store/bench_writer.py [--dir DIR] [--records N]

Prints: the raw LMDB synced single-put commit (the floor), the cost of one enqueue call, the
writer's throughput flat out, commit latency with the writer alone, and a control-loop stand-in
(a thread waking every 1 ms) enqueueing at a steady rate: how late it wakes (the writer's Python
work competes with it for the GIL) and how long the commits take meanwhile. DIR must be on the
board's data filesystem for the fsync figures to mean anything (default: a temporary directory
in /tmp).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import lmdb

from edge.store import Store, StoreWriter


def pct(xs: list[float] | list[int], p: float) -> float:
    ys = sorted(xs)
    return ys[min(len(ys) - 1, int(p / 100 * len(ys)))]


def raw_commit(d: Path, n: int = 500) -> None:
    env = lmdb.open(str(d / "raw"), map_size=64 << 20, max_dbs=4)
    db = env.open_db(b"x")
    lat = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(8, "big"), b"v" * 200, db=db)
        lat.append((time.perf_counter_ns() - t0) / 1000)
    env.close()
    print(f"raw LMDB synced single-put commit: p50 {pct(lat, 50):.0f} us, "
          f"p99 {pct(lat, 99):.0f} us, max {max(lat):.0f} us  (n={n})")


def enqueue_cost(w: StoreWriter, n: int = 100_000) -> None:
    per_call = []
    for _ in range(10):
        t0 = time.perf_counter_ns()
        for i in range(n // 10):
            w.audit("instruction", rule="r1", agent="a1", value=1.5, i=i)
        per_call.append((time.perf_counter_ns() - t0) / (n // 10))
        w.flush(30)
    print(f"enqueue (audit with 4 fields, writer running): median "
          f"{statistics.median(per_call):.0f} ns/call, worst batch {max(per_call):.0f} ns/call")


def flat_out(w: StoreWriter, n: int) -> None:
    c0 = w.counters
    t0 = time.perf_counter()
    for i in range(n):
        w.audit("instruction", rule="r1", agent="a1", value=1.5, i=i)
    t_enq = time.perf_counter() - t0
    assert w.flush(120)
    dt = time.perf_counter() - t0
    c = w.counters
    commits = c["commits"] - c0["commits"]
    recs = c["committed_records"] - c0["committed_records"]
    avg = (c["total_commit_us"] - c0["total_commit_us"]) / max(commits, 1)
    print(f"flat out: {recs} records in {dt:.2f} s = {recs / dt:,.0f} records/s committed "
          f"(enqueue side {n / t_enq:,.0f}/s); {commits} commits, {recs / max(commits, 1):.0f} "
          f"records/commit, commit avg {avg:.0f} us, max {c['max_commit_us']} us, "
          f"dropped_queue_full {c['dropped_queue_full']}")


def alone(s: Store, batch: int, n_commits: int = 200) -> None:
    """Commit duration with no other busy thread: ``batch`` records per flush()."""
    with StoreWriter(s, max_batch=batch) as w:
        w.start()
        lat = []
        for _ in range(n_commits):
            for i in range(batch):
                w.audit("instruction", rule="r1", agent="a1", value=1.5, i=i)
            w.flush()
            lat.append(w.counters["last_commit_us"])
    print(f"writer alone, {batch} records/commit: commit (begin to synced) p50 "
          f"{pct(lat, 50):.0f} us, p99 {pct(lat, 99):.0f} us, max {max(lat)} us")


def loop_proxy(w: StoreWriter | None, rate: int, seconds: float) -> None:
    """A control-loop stand-in: wakes every 1 ms (sleeping releases the GIL, as a zmq poll
    does), enqueues ``rate`` records/s in per-tick bursts, and measures how late each wake-up
    is; meanwhile this thread samples the duration of every commit."""
    late: list[float] = []
    samples: list[int] = []
    done = threading.Event()

    def loop() -> None:
        per_tick = rate // 1000
        nxt = time.perf_counter_ns()
        end = nxt + int(seconds * 1e9)
        i = 0
        while nxt < end:
            nxt += 1_000_000
            delay = nxt - time.perf_counter_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
            late.append((time.perf_counter_ns() - nxt) / 1000)
            if w is not None:
                for _ in range(per_tick):
                    w.audit("instruction", rule="r1", agent="a1", value=1.5, i=i)
                    i += 1
        done.set()

    t = threading.Thread(target=loop)
    c0 = w.counters if w is not None else None
    seen = c0["commits"] if c0 else 0
    t.start()
    while not done.is_set():
        if w is not None:
            c = w.counters
            if c["commits"] != seen:
                seen = c["commits"]
                samples.append(c["last_commit_us"])
        time.sleep(0.001)
    t.join()
    what = "no writer" if w is None else f"{rate} records/s"
    line = (f"loop proxy, {what}: wake-up lateness p50 {pct(late, 50):.0f} us, "
            f"p99 {pct(late, 99):.0f} us, max {max(late):.0f} us")
    if w is not None and c0 is not None:
        w.flush()
        c = w.counters
        commits = c["commits"] - c0["commits"]
        recs = c["committed_records"] - c0["committed_records"]
        line += (f"; {commits / seconds:.0f} commits/s, {recs / max(commits, 1):.0f} "
                 f"records/commit, commit p50 {pct(samples, 50):.0f} us, "
                 f"p99 {pct(samples, 99):.0f} us, max {max(samples)} us")
    print(line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--records", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir or "/tmp") as tmp:
        d = Path(tmp)
        raw_commit(d)
        with Store.open(d / "state", max_map_size=4 << 30) as s:
            with StoreWriter(s, queue_cap=1_000_000) as w:
                w.start()
                enqueue_cost(w)
                flat_out(w, args.records)
            for batch in (1, 32, 1024):
                alone(s, batch)
            loop_proxy(None, 0, 3.0)
            for rate in (2_000, 20_000):
                with StoreWriter(s, queue_cap=1_000_000) as w:
                    w.start()
                    loop_proxy(w, rate, 3.0)


if __name__ == "__main__":
    main()
