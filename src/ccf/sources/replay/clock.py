"""The replay's clock: recorded event time as it plays, rebased onto the wall clock.

The player moves the clock along the recording's own time axis (pass periods
included). What clients see is that time plus one constant, the rebase shift:
fixed when the replay starts so that its first event happens at that
wall-clock moment, in whole milliseconds so every ms field moves by an
integer. At ``speed`` != 1 the event clock then runs faster or slower than the
wall clock from that point on. With rebasing off the shift is 0 and clients
see the recorded times.
"""

from __future__ import annotations

import time

from ccf.sources.replay.wire import NS_PER_MS


def rebase_shift_ms(first_event_ns: int, wall_ns: int) -> int:
    """Whole milliseconds that move ``first_event_ns`` nearest to ``wall_ns``."""
    return (wall_ns - first_event_ns + NS_PER_MS // 2) // NS_PER_MS


class ReplayClock:
    """Exchange time for REST answers and control events, between and during frames."""

    def __init__(self, first_event_ns: int, speed: float, rebase: bool) -> None:
        self._first_ns = first_event_ns
        self._speed = speed
        self._rebase = rebase
        self._shift_ms = 0
        self._ts = first_event_ns  # recorded time of the last frame sent
        self._wall = time.monotonic()  # when it was sent
        self._cap: int | None = first_event_ns  # the next frame's time: never run past it
        self.started = False

    def start(self) -> int:
        """Start the replay now; returns the rebase shift it fixes (0 with rebasing off)."""
        if self._rebase:
            self._shift_ms = rebase_shift_ms(self._first_ns, time.time_ns())
        self.started = True
        return self._shift_ms

    @property
    def shift_ms(self) -> int:
        """Exchange time minus recorded time; before the start, what a start now would fix.

        So a client asking the time before the replay starts is told the wall
        clock, and the first event never appears to lie in the past.
        """
        if self._rebase and not self.started:
            return rebase_shift_ms(self._first_ns, time.time_ns())
        return self._shift_ms

    def sent(self, ts_ns: int) -> None:
        """A frame of recorded time ``ts_ns`` goes out now."""
        self._ts, self._wall = ts_ns, time.monotonic()

    def hold(self, ts_ns: int | None) -> None:
        """Never run past ``ts_ns`` (the next frame's time) while waiting; None: run on."""
        self._cap = ts_ns

    def recorded_ns(self) -> int:
        """Recorded event time now: the last frame's, advancing with the wall clock at speed."""
        if not self.started or not self._speed:
            return self._ts
        now = self._ts + int((time.monotonic() - self._wall) * self._speed * 1e9)
        return now if self._cap is None else max(self._ts, min(now, self._cap))

    def read_ms(self) -> tuple[int, int]:
        """``(exchange time now, shift)`` in ms, from one reading of the shift."""
        shift = self.shift_ms
        return self.recorded_ns() // NS_PER_MS + shift, shift

    def now_ms(self) -> int:
        """Exchange time now, in ms: what ``/api/v3/time`` answers."""
        return self.read_ms()[0]
