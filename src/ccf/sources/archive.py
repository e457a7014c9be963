"""Binance's public data archive and plain candle files, into records.

Archive files (data.binance.vision) are CSV without a header, usually zipped:
``<SYMBOL>-<interval>-<date>.zip`` holds 12-column klines,
``<SYMBOL>-aggTrades-<date>.zip`` 8-column aggregate trades. Spot
timestamps switched from milliseconds to microseconds on 2025-01-01, so each
timestamp is read by its size, not by the file's date. A ``.CHECKSUM`` file
beside the archive (``<sha256>  <name>``) is verified when present.

Plain candle files such as ``../shared/data/klines/*.csv.gz`` have a header
``open_time_ms,open,high,low,close,volume`` and nothing else: the fields they
lack (quote volume, trade count, taker volume) are stored as NULL.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ccf.records import NS_PER_MS, AggTrade, Candle, Record
from ccf.sources.binance.history import interval_ms, kline_to_candle

EXCHANGE = "binance"
ALWAYS_CLOSED = 2**62  # a "now" after every archived candle
MICROS_FROM = 10**14  # ms timestamps are ~1.7e12 today, µs ~1.7e15
NAN = float("nan")
FileKind = Literal["klines", "aggTrades", "ohlcv"]
_NAME = re.compile(r"(?P<symbol>[A-Z0-9]+)-(?P<kind>aggTrades|\d+[smhdw]|1mo)-")
_OHLCV_HEADER = ["open_time_ms", "open", "high", "low", "close", "volume"]


class ArchiveError(ValueError):
    """A file that is not what it claims to be; the message says which and why."""


@dataclass(frozen=True)
class FileInfo:
    kind: FileKind
    symbol: str
    interval: str | None


def to_ms(ts: int) -> int:
    """Archive timestamp (ms before 2025, µs after) -> ms."""
    return ts // 1000 if ts >= MICROS_FROM else ts


def describe(
    name: str,
    *,
    symbol: str | None = None,
    interval: str | None = None,
    header: list[str] | None = None,
) -> FileInfo:
    """What a file holds, from its header and name; ``symbol``/``interval`` override."""
    m = _NAME.search(Path(name).name)
    sym = (symbol or (m.group("symbol") if m else "")).lower()
    if header == _OHLCV_HEADER:
        iv = interval or (m.group("kind") if m and m.group("kind")[0].isdigit() else None)
        if not sym or not iv:
            raise ArchiveError(f"{name}: plain OHLCV file: give --symbol and --interval")
        return FileInfo("ohlcv", sym, iv)
    if not m and not (symbol and interval):
        raise ArchiveError(
            f"{name}: not an archive name like BTCUSDT-1m-2024-08-08.zip or "
            "BTCUSDT-aggTrades-2024-08-08.zip; give --symbol (and --interval)"
        )
    kind = m.group("kind") if m else interval
    if kind == "aggTrades" and not interval:
        return FileInfo("aggTrades", sym, None)
    if kind == "1mo":
        raise ArchiveError(f"{name}: monthly-interval candles (1mo) are not supported")
    return FileInfo("klines", sym, interval or kind)


def verify_checksum(data: bytes, checksum_text: str, name: str) -> None:
    expected = checksum_text.split()[0].lower()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ArchiveError(f"{name}: sha256 {actual} does not match its .CHECKSUM {expected}")


def csv_text(data: bytes, name: str) -> str:
    """The CSV inside a .zip (one member), a .gz, or plain bytes."""
    if name.endswith(".zip"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                members = [n for n in z.namelist() if n.endswith(".csv")]
                if len(members) != 1:
                    raise ArchiveError(f"{name}: expected one .csv inside, found {members}")
                data = z.read(members[0])
        except zipfile.BadZipFile as e:
            raise ArchiveError(f"{name}: not a zip file ({e})") from e
    elif name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ArchiveError(f"{name}: not a gzip file ({e})") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ArchiveError(f"{name}: not UTF-8 text ({e})") from e


def parse(
    text: str, name: str, *, symbol: str | None = None, interval: str | None = None, ts_recv: int
) -> tuple[FileInfo, Iterator[Record]]:
    """Records from one file's CSV text; rows that do not fit raise with their line number."""
    rows = csv.reader(io.StringIO(text))
    first = next(rows, None)
    if first is None:
        raise ArchiveError(f"{name}: empty file")
    header = [c.strip() for c in first] if not first[0].strip().isdigit() else None
    info = describe(name, symbol=symbol, interval=interval, header=header)
    body = rows if header else _chain(first, rows)
    return info, _records(info, body, name, ts_recv)


def _chain(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest


def _records(
    info: FileInfo, rows: Iterator[list[str]], name: str, ts_recv: int
) -> Iterator[Record]:
    sym = info.symbol
    step = interval_ms(info.interval) if info.interval else 0
    for n, row in enumerate(rows, 1):
        if not row:
            continue
        try:
            if info.kind == "aggTrades":
                a, p, q, f, last, t, maker = row[:7]
                ts = to_ms(int(t)) * NS_PER_MS
                yield AggTrade(
                    EXCHANGE,
                    sym,
                    int(a),
                    float(p),
                    float(q),
                    int(f),
                    int(last),
                    "sell" if maker.strip().lower() == "true" else "buy",
                    ts,
                    ts_recv,
                )
            elif info.kind == "klines":
                o_t, o, h, low, c, v, c_t, qv, cnt, tb, tq = row[:11]
                kline = (
                    to_ms(int(o_t)),
                    o,
                    h,
                    low,
                    c,
                    v,
                    to_ms(int(c_t)),
                    qv,
                    int(cnt),
                    tb,
                    tq,
                    "",
                )
                # archived candles are all closed: "now" is after every one of them
                yield kline_to_candle(sym, info.interval or "", kline, ALWAYS_CLOSED, ts_recv)
            else:
                o_t, o, h, low, c, v = row[:6]
                open_ms = int(o_t)
                close = open_ms + step - 1
                yield Candle(
                    EXCHANGE,
                    sym,
                    info.interval or "",
                    open_ms * NS_PER_MS,
                    close * NS_PER_MS,
                    float(o),
                    float(h),
                    float(low),
                    float(c),
                    float(v),
                    NAN,
                    None,
                    NAN,
                    NAN,
                    True,
                    close * NS_PER_MS,
                    ts_recv,
                )
        except ValueError as e:
            raise ArchiveError(f"{name}: line {n}: {e} in {row!r}") from e
