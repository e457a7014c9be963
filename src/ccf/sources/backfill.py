"""``ccf backfill``: market history into the same tables as the live stream.

REST walks (klines, aggregate trades) write page by page and resume from what
the store already holds, so an interrupted run is finished by running it
again, and a second complete run changes nothing (keys make every write
idempotent; closed candles are final). Archive and plain CSV files import
through :mod:`ccf.sources.archive`. Every run ends with a summary: rows, time
span, and the holes it found in the exchange's own history, which are also
written as gap records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from ccf.config import Settings
from ccf.records import NS_PER_MS, Gap, Record
from ccf.sources import archive
from ccf.sources.binance import history
from ccf.sources.binance.rest import BinanceRest
from ccf.storage.backends import open_raw_store

if TYPE_CHECKING:
    from ccf.storage.postgres.raw import PgRawStore
    from ccf.storage.sqlite import SqliteStore

log = logging.getLogger(__name__)
WRITE_ROWS = 5000
SHOW_REFUSED = 10  # refused rows listed one by one in a summary

Progress = Callable[[int, int], None]  # (position in ms, rows so far)


@dataclass
class Summary:
    kind: str
    symbol: str
    rows: int = 0
    new_rows: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    resumed_from_ms: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (first missing, last missing) ms
    seconds: float = 0.0
    source: str = ""  # the file imported
    refused: list[archive.Refused] = field(default_factory=list)  # rows not stored, and why

    def add(self, first_ms: int, last_ms: int, rows: int, new_rows: int) -> None:
        self.rows += rows
        self.new_rows += new_rows
        self.first_ms = first_ms if self.first_ms is None else min(self.first_ms, first_ms)
        self.last_ms = last_ms if self.last_ms is None else max(self.last_ms, last_ms)

    def text(self) -> str:
        def iso(ms: int | None) -> str:
            if ms is None:
                return "-"
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))

        lines = [
            f"{self.kind} {self.symbol}: {self.rows:,} rows ({self.new_rows:,} new), "
            f"{iso(self.first_ms)} .. {iso(self.last_ms)} in {self.seconds:.1f} s"
        ]
        if self.resumed_from_ms is not None:
            lines.append(
                f"  resumed after what the store already held (up to {iso(self.resumed_from_ms)})"
            )
        if self.refused:
            codes = Counter(r.code for r in self.refused)
            lines.append(
                f"  refused {len(self.refused):,} bad rows (not stored): "
                + ", ".join(f"{code} {n:,}" for code, n in codes.most_common())
            )
            lines += [f"    {r.text(self.source)}" for r in self.refused[:SHOW_REFUSED]]
            if len(self.refused) > SHOW_REFUSED:
                lines.append(f"    ... and {len(self.refused) - SHOW_REFUSED:,} more")
        lines.append(f"  gaps found: {len(self.gaps)}")
        lines += [f"    missing {iso(a)} .. {iso(b)}" for a, b in self.gaps[:20]]
        return "\n".join(lines)


def missing_runs(times_ms: Sequence[int], step_ms: int) -> list[tuple[int, int]]:
    """Holes in a sorted series expected every ``step_ms``: [(first missing, last missing)]."""
    return [
        (a + step_ms, b - step_ms)
        for a, b in zip(times_ms, times_ms[1:], strict=False)
        if b - a > step_ms
    ]


class Backfill:
    """Runs one backfill against a store; REST calls go through ``BinanceRest``."""

    def __init__(self, store: SqliteStore | PgRawStore, progress: Progress | None = None) -> None:
        self.store = store
        self.progress = progress or (lambda pos, rows: None)

    async def _write_pages(
        self,
        pages: AsyncIterator[Sequence[Record]],
        summary: Summary,
        ts_of: Callable[[Record], int],
    ) -> None:
        async for page in pages:
            new = self.store.write(page)
            summary.add(ts_of(page[0]) // NS_PER_MS, ts_of(page[-1]) // NS_PER_MS, len(page), new)
            self.progress(ts_of(page[-1]) // NS_PER_MS, summary.rows)

    async def klines(
        self, rest: BinanceRest, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> Summary:
        summary = Summary(f"klines {interval}", symbol)
        began = time.monotonic()
        step = history.interval_ms(interval)
        (last_closed,) = self.store.query(
            "SELECT max(open_time) FROM candle WHERE exchange='binance' AND symbol=? AND "
            "interval=? AND closed=1 AND open_time >= ? AND open_time < ?",
            (symbol, interval, start_ms * NS_PER_MS, end_ms * NS_PER_MS),
        )[0]
        cursor = start_ms
        if last_closed is not None:
            # resume only over a contiguous stored prefix: a hole before it is fetched again
            (n,) = self.store.query(
                "SELECT count(*) FROM candle WHERE exchange='binance' AND symbol=? AND "
                "interval=? AND closed=1 AND open_time >= ? AND open_time <= ?",
                (symbol, interval, start_ms * NS_PER_MS, last_closed),
            )[0]
            if n == (last_closed // NS_PER_MS - start_ms) // step + 1:
                cursor = last_closed // NS_PER_MS + step
                summary.resumed_from_ms = cursor - step
        now_ms = await history.server_time_ms(rest)
        pages = history.klines(rest, symbol, interval, cursor, end_ms, now_ms=now_ms)
        await self._write_pages(pages, summary, lambda r: r.open_time)  # type: ignore[attr-defined]
        opens = [
            t // NS_PER_MS
            for (t,) in self.store.query(
                "SELECT open_time FROM candle WHERE exchange='binance' AND symbol=? AND interval=? "
                "AND open_time >= ? AND open_time < ? ORDER BY open_time",
                (symbol, interval, start_ms * NS_PER_MS, end_ms * NS_PER_MS),
            )
        ]
        summary.gaps = missing_runs(opens, step)
        self._write_gaps(symbol, "candle", summary.gaps, f"no {interval} klines")
        summary.seconds = time.monotonic() - began
        return summary

    async def agg_trades(
        self, rest: BinanceRest, symbol: str, start_ms: int, end_ms: int
    ) -> Summary:
        summary = Summary("aggTrades", symbol)
        began = time.monotonic()
        (last_id, last_t) = self.store.query(
            "SELECT max(agg_id), max(ts_event) FROM agg_trade WHERE exchange='binance' AND "
            "symbol=? AND ts_event >= ? AND ts_event < ?",
            (symbol, start_ms * NS_PER_MS, end_ms * NS_PER_MS),
        )[0]
        from_id = None if last_id is None else last_id + 1
        if last_t is not None:
            summary.resumed_from_ms = last_t // NS_PER_MS
        pages = history.agg_trades(rest, symbol, start_ms, end_ms, from_id)
        await self._write_pages(pages, summary, lambda r: r.ts_event)
        ids = self.store.query(
            "SELECT agg_id, first_trade_id, last_trade_id, ts_event FROM agg_trade WHERE "
            "exchange='binance' AND symbol=? AND ts_event >= ? AND ts_event < ? "
            "ORDER BY agg_id",
            (symbol, start_ms * NS_PER_MS, end_ms * NS_PER_MS),
        )
        summary.gaps = [
            (a[3] // NS_PER_MS, b[3] // NS_PER_MS)
            for a, b in zip(ids, ids[1:], strict=False)
            if b[0] != a[0] + 1 or b[1] != a[2] + 1
        ]
        self._write_gaps(symbol, "agg_trade", summary.gaps, "aggregate trade ids not continuous")
        summary.seconds = time.monotonic() - began
        return summary

    def import_file(
        self, data: bytes, name: str, *, symbol: str | None = None, interval: str | None = None
    ) -> Summary:
        """Store the file's valid rows; the refused ones are listed in the summary. A file
        with no valid row raises an ArchiveError naming its first problem."""
        began = time.monotonic()
        refused: list[archive.Refused] = []
        info, records = archive.parse(
            archive.csv_text(data, name),
            name,
            symbol=symbol,
            interval=interval,
            ts_recv=time.time_ns(),
            refused=refused,
        )
        summary = Summary(
            f"import {info.kind}" + (f" {info.interval}" if info.interval else ""),
            info.symbol,
            source=name,
            refused=refused,
        )
        batch: list[Record] = []
        times: list[int] = []
        for rec in records:
            batch.append(rec)
            times.append(rec.ts_event if info.kind == "aggTrades" else rec.open_time)  # type: ignore[union-attr]
            if len(batch) >= WRITE_ROWS:
                self._flush_import(batch, times, summary)
                batch, times = [], []
        self._flush_import(batch, times, summary)
        for r in refused[:SHOW_REFUSED]:
            log.warning("part=backfill symbol=%s refused %s", info.symbol, r.text(name))
        if not summary.rows:
            first = f"; first: {refused[0].text(name)}" if refused else ""
            raise archive.ArchiveError(f"{name}: no valid rows ({len(refused):,} refused){first}")
        if info.interval:
            opens = [
                t // NS_PER_MS
                for (t,) in self.store.query(
                    "SELECT open_time FROM candle WHERE symbol=? AND interval=? AND open_time >= ? "
                    "AND open_time <= ? ORDER BY 1",
                    (
                        info.symbol,
                        info.interval,
                        (summary.first_ms or 0) * NS_PER_MS,
                        (summary.last_ms or 0) * NS_PER_MS,
                    ),
                )
            ]
            summary.gaps = missing_runs(opens, history.interval_ms(info.interval))
            self._write_gaps(info.symbol, "candle", summary.gaps, f"no {info.interval} candles")
        summary.seconds = time.monotonic() - began
        return summary

    def _flush_import(self, batch: list[Record], times: list[int], summary: Summary) -> None:
        if batch:
            new = self.store.write(batch)
            summary.add(times[0] // NS_PER_MS, times[-1] // NS_PER_MS, len(batch), new)
            self.progress(times[-1] // NS_PER_MS, summary.rows)

    def _write_gaps(
        self, symbol: str, stream: str, gaps: list[tuple[int, int]], detail: str
    ) -> None:
        now = time.time_ns()
        self.store.write(
            [
                Gap(
                    "binance",
                    symbol,
                    stream,
                    a * NS_PER_MS,
                    b * NS_PER_MS,
                    "missing_history",
                    detail,
                    now,
                )
                for a, b in gaps
            ]
        )


async def fetch_url(url: str) -> tuple[bytes, str | None]:
    """A file's bytes and the ``.CHECKSUM`` published beside it, if any."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
        async with s.get(url) as resp:
            if resp.status != 200:
                raise archive.ArchiveError(f"{url}: HTTP {resp.status}")
            data = await resp.read()
        async with s.get(url + ".CHECKSUM") as resp:
            checksum = (await resp.text()) if resp.status == 200 else None
    return data, checksum


def read_source(source: str) -> tuple[bytes, str | None]:
    """Bytes and checksum text of a path or an http(s) URL."""
    if source.startswith(("http://", "https://")):
        return asyncio.run(fetch_url(source))
    path = Path(source)
    if not path.exists():
        raise archive.ArchiveError(f"{path}: no such file")
    if path.is_dir():
        raise archive.ArchiveError(
            f"{path}: is a folder; import one file at a time, e.g. "
            f'for f in {path}/*; do ccf backfill import "$f"; done'
        )
    check = path.with_name(path.name + ".CHECKSUM")
    try:
        return path.read_bytes(), check.read_text() if check.exists() else None
    except (OSError, UnicodeDecodeError) as e:
        raise archive.ArchiveError(f"{path}: cannot read it ({e})") from None


async def run_rest_backfill(
    settings: Settings,
    what: str,
    symbol: str,
    start_ms: int,
    end_ms: int,
    interval: str = "1m",
    progress: Progress | None = None,
) -> Summary:
    store = open_raw_store(settings)
    try:
        async with aiohttp.ClientSession() as session:
            rest = BinanceRest(
                session,
                settings.rest_url(),
                weight_limit=settings.collect.rest_weight_limit,
                timeout_s=settings.collect.rest_timeout_s,
            )
            job = Backfill(store, progress)
            if what == "klines":
                return await job.klines(rest, symbol, interval, start_ms, end_ms)
            return await job.agg_trades(rest, symbol, start_ms, end_ms)
    finally:
        store.close()


def run_import(
    settings: Settings,
    source: str,
    *,
    symbol: str | None = None,
    interval: str | None = None,
    progress: Progress | None = None,
) -> Summary:
    data, checksum = read_source(source)
    if checksum is not None:
        archive.verify_checksum(data, checksum, source)
    store = open_raw_store(settings)
    try:
        return Backfill(store, progress).import_file(
            data, source.rsplit("/", 1)[-1], symbol=symbol, interval=interval
        )
    finally:
        store.close()
