"""The arrivals waiting for a job worker: urgent ones first (``urgency.py``), each kind in the order queued.

An urgent arrival goes ahead of every routine one not yet started; a job already running is not
interrupted. Among urgent arrivals, and among routine ones, the first queued runs first. A worker may take
urgent arrivals only (the listener's urgent lane, ``service.py``).
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading

from app.listener.journal import Arrival

URGENT_RANK, ROUTINE_RANK = 0, 1


class JobQueue:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Arrival]] = []
        self._order = itertools.count()  # FIFO within a rank; never compares two arrivals
        self._changed = threading.Condition()

    def put(self, arrival: Arrival) -> None:
        with self._changed:
            heapq.heappush(self._heap, (URGENT_RANK if arrival.urgent else ROUTINE_RANK, next(self._order), arrival))
            self._changed.notify_all()

    def get(self, timeout: float, urgent_only: bool = False) -> Arrival:
        """The next arrival to run (``urgent_only``: the next urgent one); raises ``queue.Empty`` after ``timeout``
        seconds without one."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._heap and (not urgent_only or self._heap[0][0] == URGENT_RANK), timeout):
                raise queue.Empty
            return heapq.heappop(self._heap)[2]
