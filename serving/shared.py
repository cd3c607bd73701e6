"""What each worker tells the master and the other workers, in memory shared across the fork: one row of
numbers per worker slot.

Every field has one writer (the worker, or its scoring thread for RUN_STARTED), so no lock is needed:
the others only read, and a value a moment old is harmless (a worker decides from it whether to accept
the next connection, and re-decides at its next change or tick; the master whether to kill a worker).
"""

from __future__ import annotations

import multiprocessing
from typing import Any

READY = 0
"""1 once init() has finished and while the worker is not being replaced."""
RETIRING = 1
"""1 once the worker has decided to exit (a stuck run()): it must get no more connections."""
RUN_STARTED = 2
"""`time.monotonic()` when the running init()/run() started (one clock for all processes); 0 if idle."""
ACTIVE = 3
"""Connections with a request in progress or not yet sent (the worker's load), idle kept-alive ones excluded."""
_FIELDS = 4


class WorkerTable:
    """One row per worker slot, created by the master before it forks."""

    def __init__(self, slots: int):
        self.slots = slots
        self._cells: Any = multiprocessing.RawArray("d", slots * _FIELDS)

    def get(self, slot: int, field: int) -> float:
        return self._cells[slot * _FIELDS + field]

    def set(self, slot: int, field: int, value: float) -> None:
        self._cells[slot * _FIELDS + field] = value

    def reset(self, slot: int) -> None:
        for field in range(_FIELDS):
            self._cells[slot * _FIELDS + field] = 0.0

    def ready(self, slot: int) -> bool:
        """Serving: init() has finished and the worker is not being replaced."""
        return bool(self._cells[slot * _FIELDS + READY]) and not self._cells[slot * _FIELDS + RETIRING]

    def load(self, slot: int) -> float:
        """Connections in progress, plus one while the scoring thread is busy (a stuck run() counts)."""
        return self.get(slot, ACTIVE) + (1 if self.get(slot, RUN_STARTED) else 0)
