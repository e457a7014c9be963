"""Event-time alignment of several topics that share partition numbers.

A feature worker reads books, trades and gaps from separate topics. Kafka interleaves
what it fetches from them as it likes: while catching up, it may hand over a minute of
trades before the first book of that minute, and the books would then be *late* for the
engine's watermark (dropped, and the rows would differ from a batch run). The aligner
holds what was fetched per input and releases it in event-time order, and only while
every input of the lane is non-empty or at its end: the next record of an empty input
could be older than anything held.

An input at its end still holds the lane back to its newest event time for ``grace_s``
(wall clock) after it got there: an end-of-partition event only says nothing more was
fetched *yet* (Tansu even reports the end two records early), and releasing a backlog of
the other inputs past it at once would make that input's next records late. An input
that stays quiet longer (a gap topic, a market without trades) stops holding anything
back.

A *lane* is one partition number: the inputs ``(topic, p)`` of every topic read, plus
inputs every lane shares (news, read whole by each worker). Records of one input leave in
the order they came (their offsets), merged with the other inputs by event time.

>>> a = Aligner(grace_s=1.0)
>>> a.reset({0: [("book", 0), ("trade", 0)]})
>>> a.add(0, ("trade", 0), 0, 5, "t5"); a.add(0, ("trade", 0), 1, 9, "t9")
>>> a.release(0, now=0.0)             # the book input is empty and not at its end
[]
>>> a.add(0, ("book", 0), 0, 7, "b7"); a.end(0, ("book", 0), now=0.0)
>>> [item for _, _, item in a.release(0, now=0.5)]   # t9 waits: books may still come
['t5', 'b7']
>>> [item for _, _, item in a.release(0, now=1.5)]   # the book input stayed quiet
['t9']
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

_FAR = 2**63


class _Input:
    __slots__ = ("buf", "ended", "ended_at", "last_ts")

    def __init__(self) -> None:
        self.buf: deque[tuple[int, int, Any]] = deque()  # (event time, offset, item)
        self.ended = False
        self.ended_at = 0.0  # monotonic time it reached its end
        self.last_ts: int | None = None  # newest event time it brought


class Aligner:
    """Per lane, a buffer per input; :meth:`release` merges them by event time."""

    def __init__(self, grace_s: float = 0.0) -> None:
        self.grace_s = grace_s
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
        if inp.last_ts is None or ts > inp.last_ts:
            inp.last_ts = ts

    def end(self, lane: int, input: Hashable, now: float | None = None) -> None:
        """``input`` has nothing more for now: after ``grace_s`` it holds nothing back."""
        inp = self._lanes[lane][input]
        if not inp.ended:
            inp.ended = True
            inp.ended_at = time.monotonic() if now is None else now

    def held(self, lane: int, input: Hashable) -> int:
        return len(self._lanes[lane][input].buf)

    def caught_up(self) -> bool:
        """Every input at its end with nothing held."""
        return all(
            inp.ended and not inp.buf for lane in self._lanes.values() for inp in lane.values()
        )

    def release(self, lane: int, now: float | None = None) -> list[tuple[Hashable, int, Any]]:
        """The lane's records that can go, oldest event time first: (input, offset, item)."""
        inputs = self._lanes[lane]
        now = time.monotonic() if now is None else now
        bound = _FAR  # nothing newer than this goes yet
        for inp in inputs.values():
            if not inp.buf:
                if not inp.ended:
                    return []
                bound = min(bound, self._holds_to(inp, now))
        heap = [(inp.buf[0][0], n, key) for n, (key, inp) in enumerate(inputs.items()) if inp.buf]
        heapq.heapify(heap)
        out: list[tuple[Hashable, int, Any]] = []
        while heap:
            ts, n, key = heap[0]
            if ts > bound:
                break
            inp = inputs[key]
            _, offset, item = inp.buf.popleft()
            out.append((key, offset, item))
            if inp.buf:
                heapq.heapreplace(heap, (inp.buf[0][0], n, key))
            elif inp.ended:
                heapq.heappop(heap)
                bound = min(bound, self._holds_to(inp, now))
            else:
                break  # its next record could be older than anything else held
        return out

    def _holds_to(self, inp: _Input, now: float) -> int:
        """The event time an emptied input at its end holds the others back to."""
        if inp.last_ts is None or now - inp.ended_at >= self.grace_s:
            return _FAR
        return inp.last_ts
