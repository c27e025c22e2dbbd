"""Queued logging: callers only enqueue; a full queue drops and counts, never blocks."""

from __future__ import annotations

import io
import logging
import threading

from edge._log import DroppingQueueHandler, configure, dropped_records


def test_queued_logging_writes_from_a_listener_and_stops_cleanly() -> None:
    out = io.StringIO()
    stop = configure("INFO", lambda: logging.StreamHandler(out), queued=True)
    try:
        (h,) = logging.getLogger("edge").handlers
        assert isinstance(h, DroppingQueueHandler)
        logging.getLogger("edge.test").warning("hello %d", 7)
    finally:
        stop()
        stop()  # idempotent
    assert "WARNING edge.test: hello 7" in out.getvalue()
    assert not isinstance(logging.getLogger("edge").handlers[0], DroppingQueueHandler)


def test_a_stalled_writer_costs_dropped_records_not_a_blocked_caller() -> None:
    release = threading.Event()

    class Stalled(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            release.wait(10)  # a full stderr pipe

    stop = configure("INFO", Stalled, queued=True, queue_size=5)
    try:
        log = logging.getLogger("edge.test")
        for i in range(50):
            log.warning("flood %d", i)  # returns at once every time
        (h,) = logging.getLogger("edge").handlers
        assert isinstance(h, DroppingQueueHandler)
        assert h.dropped >= 50 - 5 - 1  # the queue holds 5, the listener one
        assert dropped_records() == h.dropped  # what edgectl status shows as log_dropped
    finally:
        release.set()
        stop()
