"""A shared/exclusive gate around this process's LMDB transactions.

Growing the map (``Environment.set_mapsize``) and closing the environment need *no* transaction
open in the process: py-lmdb invalidates every open transaction, including read transactions that
other threads are in the middle of (they then fail with "Attempt to operate on closed/deleted/
dropped object"). So every transaction the store opens holds the gate shared, and map changes and
close() take it exclusive. Transactions never wait for each other here (LMDB's MVCC does the rest);
only a map change waits for the transactions in flight to end, and it goes first once it asks, so a
stream of readers cannot starve it.

The gate is not reentrant: a thread holding it shared must not ask for it again (it would
deadlock against a waiting exclusive holder). The store keeps every hold to one short transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class TxnGate:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False
        self._exclusive_waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the gate alongside other shared holders; waits while a map change is pending."""
        with self._cond:
            while self._exclusive or self._exclusive_waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the gate alone: waits for every shared holder to leave."""
        with self._cond:
            self._exclusive_waiting += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            finally:
                self._exclusive_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()
