"""The storage interface every backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ccf.records import Record


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """What the store holds for one record kind and symbol."""

    kind: str
    exchange: str
    symbol: str
    rows: int
    first_ts: int | None  # event time, ns
    last_ts: int | None
    last_recv: int | None  # receive time of the newest row, ns
    open_gaps: int
    gaps: int


class RawStore(Protocol):
    """Raw records in, summaries and rows out.

    ``write`` is idempotent: rows are keyed by exchange, symbol and event id
    (trade id, update id, candle open time, gap start), so replaying a batch
    after a crash changes nothing. It commits the whole batch or nothing.
    """

    def write(self, records: Sequence[Record]) -> int:
        """Store a batch in one transaction; returns the rows it changed."""
        ...

    def summaries(self) -> list[StreamSummary]: ...

    def dead_letter_counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...
