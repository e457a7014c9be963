"""Event-time alignment of several topics that share partition numbers.

A feature worker reads books, trades and gaps from separate topics. Kafka interleaves
what it fetches from them as it likes: while catching up, it may hand over a minute of
trades before the first book of that minute, and the books would then be *late* for the
engine's watermark (dropped, and the rows would differ from a batch run). The aligner
holds what was fetched per input and releases it in event-time order, and only while
every input of the lane is non-empty or at its end: the next record of an empty input
could be older than anything held.

A *lane* is one partition number: the inputs ``(topic, p)`` of every topic read, plus
inputs every lane shares (news, read whole by each worker). Records of one input leave in
the order they came (their offsets), merged with the other inputs by event time.

>>> a = Aligner()
>>> a.reset({0: [("book", 0), ("trade", 0)]})
>>> a.add(0, ("trade", 0), 0, 5, "t5"); a.add(0, ("trade", 0), 1, 9, "t9")
>>> a.release(0)                      # the book input is empty and not at its end
[]
>>> a.add(0, ("book", 0), 0, 7, "b7"); a.end(0, ("book", 0))
>>> [item for _, _, item in a.release(0)]
['t5', 'b7', 't9']
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from typing import Any


class _Input:
    __slots__ = ("buf", "ended")

    def __init__(self) -> None:
        self.buf: deque[tuple[int, int, Any]] = deque()  # (event time, offset, item)
        self.ended = False


class Aligner:
    """Per lane, a buffer per input; :meth:`release` merges them by event time."""

    def __init__(self) -> None:
        self._lanes: dict[int, dict[Hashable, _Input]] = {}

    def reset(self, lanes: Mapping[int, Iterable[Hashable]]) -> None:
        """Start over with these lanes and inputs (after an assignment): nothing held."""
        self._lanes = {lane: {i: _Input() for i in inputs} for lane, inputs in lanes.items()}

    @property
    def lanes(self) -> list[int]:
        return sorted(self._lanes)

    def add(self, lane: int, input: Hashable, offset: int, ts: int, item: Any) -> None:
        """Hold ``item`` (event time ``ts``) of ``input``; the input is no longer at its end."""
        inp = self._lanes[lane][input]
        inp.buf.append((ts, offset, item))
        inp.ended = False

    def end(self, lane: int, input: Hashable) -> None:
        """``input`` has nothing more for now: it no longer holds the lane back."""
        self._lanes[lane][input].ended = True

    def held(self, lane: int, input: Hashable) -> int:
        return len(self._lanes[lane][input].buf)

    def caught_up(self) -> bool:
        """Every input at its end with nothing held."""
        return all(
            inp.ended and not inp.buf for lane in self._lanes.values() for inp in lane.values()
        )

    def release(self, lane: int) -> list[tuple[Hashable, int, Any]]:
        """The lane's records that can go, oldest event time first: (input, offset, item)."""
        inputs = self._lanes[lane]
        if any(not inp.buf and not inp.ended for inp in inputs.values()):
            return []
        heap = [(inp.buf[0][0], n, key) for n, (key, inp) in enumerate(inputs.items()) if inp.buf]
        heapq.heapify(heap)
        out: list[tuple[Hashable, int, Any]] = []
        while heap:
            _, n, key = heap[0]
            inp = inputs[key]
            _, offset, item = inp.buf.popleft()
            out.append((key, offset, item))
            if inp.buf:
                heapq.heapreplace(heap, (inp.buf[0][0], n, key))
            elif inp.ended:
                heapq.heappop(heap)
            else:
                break  # its next record could be older than anything else held
        return out
