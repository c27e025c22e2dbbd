"""Reads on other threads and in other processes while the writer commits and grows the map."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from edge.store import Store, StoreWriter

SMALL = 256 << 10  # bytes: the map has to grow several times during these tests


def _write(w: StoreWriter, n: int) -> None:
    for i in range(n):
        w.audit("tick", i=i, pad="x" * 400)
        if i % 100 == 99:
            w.put_stats({"i": i})
            assert w.flush()
    assert w.flush()


def test_reads_and_rule_tables_on_other_threads_while_the_map_grows(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", map_size=SMALL, max_map_size=64 << 20) as s:
        stop = threading.Event()
        errors: list[BaseException] = []
        reads = 0

        def reader() -> None:
            nonlocal reads
            try:
                while not stop.is_set():
                    seqs = [r["seq"] for r in s.iter_audit()]
                    assert seqs == list(range(1, len(seqs) + 1))
                    assert s.last_audit_seq() >= len(seqs)
                    s.latest_stats()
                    s.info()
                    reads += 1
            except BaseException as e:  # noqa: BLE001 - reported by the test thread
                errors.append(e)

        def rule_tables() -> None:
            try:
                for v in range(1, 31):
                    s.put_rule_table(v, bytes([v]) * (20 << 10))
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=reader), threading.Thread(target=rule_tables)]
        for t in threads:
            t.start()
        try:
            with StoreWriter(s, max_batch=128) as w:
                w.start()
                _write(w, 3000)
                c = w.counters
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors
        assert reads > 0
        assert c["dropped_store_full"] == 0
        assert s.info()["map_size"] >= 8 * SMALL  # grown (by the writer or the rules thread)
        assert s.active_rule_table() == (30, bytes([30]) * (20 << 10))
        assert s.last_audit_seq() == 3000


_READER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from edge.store import Store

    path, target = Path(sys.argv[1]), int(sys.argv[2])
    deadline = time.monotonic() + 60
    # A small map on purpose: the writer's growth reaches this process as MapResizedError.
    with Store.open(path, readonly=True, map_size=256 << 10) as s:
        reads, seen = 0, 0
        print("reading", flush=True)
        while seen < target:
            seqs = [r["seq"] for r in s.iter_audit()]
            assert seqs == list(range(1, len(seqs) + 1)), "gap in audit sequences"
            assert len(seqs) >= seen, "audit log went backwards"
            seen = len(seqs)
            reads += 1
            if time.monotonic() > deadline:
                sys.exit(f"timed out at {seen} records")
        print(reads, s.info()["map_size"])
    """
)


def test_another_process_reads_while_the_writer_commits_and_grows(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Store.open(path, map_size=SMALL, max_map_size=64 << 20) as s:
        child = subprocess.Popen(
            [sys.executable, "-c", _READER, str(path), "2000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "reading\n"  # it reads while we write
            with StoreWriter(s, max_batch=128) as w:
                w.start()
                _write(w, 2000)
                assert w.counters["map_grows"] >= 2
            out, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    assert child.returncode == 0, err
    reads, child_map = (int(x) for x in out.split())
    assert reads > 0
    assert child_map > SMALL  # the reader adopted the grown map
