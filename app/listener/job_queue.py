"""The arrivals waiting for a job worker: urgent ones first (``urgency.py``), each kind in the order queued.

An urgent arrival goes ahead of every routine one not yet started; a job already running is not
interrupted. Among urgent arrivals, and among routine ones, the first queued runs first.
"""

from __future__ import annotations

import itertools
import queue

from app.listener.journal import Arrival

URGENT_RANK, ROUTINE_RANK = 0, 1


class JobQueue:
    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Arrival]] = queue.PriorityQueue()
        self._order = itertools.count()  # FIFO within a rank; never compares two arrivals

    def put(self, arrival: Arrival) -> None:
        self._queue.put((URGENT_RANK if arrival.urgent else ROUTINE_RANK, next(self._order), arrival))

    def get(self, timeout: float) -> Arrival:
        """The next arrival to run; raises ``queue.Empty`` after ``timeout`` seconds without one."""
        return self._queue.get(timeout=timeout)[2]
