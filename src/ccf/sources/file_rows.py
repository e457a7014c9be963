"""One row of a candle or trade file: a checked record, or a refusal saying why.

Rules (what the exchange itself guarantees, so a row breaking one is damaged):

- numbers are plain decimals (``1.5``, ``2e-3``); ``nan``, ``inf``, ``1_0``, hex are not
- prices (open, high, low, close; a trade's price) are finite and > 0
- volumes (volume, quote volume, taker volumes, a trade's quantity) are finite and >= 0,
  a trade's quantity > 0; taker buy volume <= volume, its quote <= the quote volume
- low <= open, close <= high
- times and ids are whole numbers >= 0 that fit int64 nanoseconds / int64
- a candle of a fixed interval up to 1d opens on that interval's boundary, and an
  archive candle closes one millisecond before the next opens
- an open time (a candle file) or aggregate id (a trade file) appears once per file

A refusal names the line (as a text editor counts them), the column (the file's own
name for it) and the reason, and carries a short ``code`` for counting.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ccf.records import NS_PER_MS, AggTrade, Candle
from ccf.sources.binance.history import interval_ms

EXCHANGE = "binance"
ALWAYS_CLOSED = 2**62  # a "now" after every archived candle
MICROS_FROM = 10**14  # ms timestamps are ~1.7e12 today, µs ~1.7e15
MAX_MS = (2**63 - 1) // NS_PER_MS  # a later time overflows int64 nanoseconds
MAX_ID = 2**63 - 1
ALIGNED_UP_TO_MS = 86_400_000  # intervals up to 1d open on multiples of themselves
NAN = float("nan")

KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
)
"""Binance's names for an archive kline's columns (a 12th, ``ignore``, is not read)."""
AGG_COLUMNS = (
    "agg_trade_id",
    "price",
    "quantity",
    "first_trade_id",
    "last_trade_id",
    "transact_time",
    "is_buyer_maker",
)
OHLCV_COLUMNS = ("open_time_ms", "open", "high", "low", "close", "volume")

_INT = re.compile(r"-?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True, slots=True)
class Refused:
    """A row not stored, and why."""

    line: int
    column: str
    code: str  # not_a_number, not_finite, negative, high_below_low, ...
    reason: str

    def text(self, name: str) -> str:
        return f"{name}: line {self.line}, column {self.column}: {self.reason}"


class RowError(ValueError):
    def __init__(self, column: str, code: str, reason: str) -> None:
        super().__init__(f"column {column}: {reason}")
        self.column, self.code, self.reason = column, code, reason


def to_ms(ts: int) -> int:
    """Archive timestamp (ms before 2025, µs after) -> ms."""
    return ts // 1000 if ts >= MICROS_FROM else ts


def field(row: Sequence[str], i: int, columns: Sequence[str]) -> str:
    if i >= len(row):
        raise RowError(
            columns[i], "missing_column", f"missing (the row has {len(row)} of {len(columns)})"
        )
    return row[i].strip()


def integer(text: str, column: str, maximum: int = MAX_ID) -> int:
    if not text:
        raise RowError(column, "empty", "empty (no value)")
    if not _INT.fullmatch(text):
        raise RowError(column, "not_an_integer", f"{text[:40]!r} is not a whole number")
    value = int(text)
    if value < 0:
        raise RowError(column, "negative", f"{value} is negative")
    if value > maximum:
        raise RowError(column, "out_of_range", f"{value} is larger than {maximum}")
    return value


def number(text: str, column: str, *, positive: bool) -> float:
    if not text:  # an empty field, or a null in a Parquet file (pandas writes NaN so)
        raise RowError(column, "empty", "empty (no value)")
    if not _DECIMAL.fullmatch(text):
        what = "not finite" if text.lower().lstrip("+-") in ("nan", "inf", "infinity") else ""
        code = "not_finite" if what else "not_a_number"
        raise RowError(column, code, f"{text[:40]!r} is {what or 'not a number'}")
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise RowError(column, "not_finite", f"{text[:40]!r} is not finite")
    if value < 0 or (positive and value == 0):
        raise RowError(column, "negative", f"{text} is {'not > 0' if positive else 'negative'}")
    return value


def time_ms(text: str, column: str, archive: bool) -> int:
    raw = integer(text, column)
    ms = to_ms(raw) if archive else raw
    if ms > MAX_MS:
        raise RowError(column, "out_of_range", f"{raw} is past what int64 nanoseconds hold")
    return ms


def check_ohlc(o: float, h: float, lo: float, c: float) -> None:
    if h < lo:
        raise RowError("high", "high_below_low", f"high {h} is below low {lo}")
    for col, v in (("open", o), ("close", c)):
        if not lo <= v <= h:
            raise RowError(col, "outside_range", f"{col} {v} is outside low..high {lo}..{h}")


def check_open(open_ms: int, step_ms: int, column: str) -> None:
    if 0 < step_ms <= ALIGNED_UP_TO_MS and open_ms % step_ms:
        raise RowError(column, "misaligned", f"{open_ms} is not on a {step_ms} ms boundary")


def kline(row: Sequence[str], symbol: str, interval: str, ts_recv: int) -> tuple[int, Candle]:
    """An archive kline row (12 columns, ms or µs times) -> (open ms, closed candle)."""
    cols = KLINE_COLUMNS
    step = interval_ms(interval)
    open_ms = time_ms(field(row, 0, cols), cols[0], True)
    o, h, lo, c = (number(field(row, i, cols), cols[i], positive=True) for i in range(1, 5))
    v = number(field(row, 5, cols), cols[5], positive=False)
    close_ms = time_ms(field(row, 6, cols), cols[6], True)
    qv = number(field(row, 7, cols), cols[7], positive=False)
    n = integer(field(row, 8, cols), cols[8])
    tb = number(field(row, 9, cols), cols[9], positive=False)
    tq = number(field(row, 10, cols), cols[10], positive=False)
    check_open(open_ms, step, cols[0])
    if step <= ALIGNED_UP_TO_MS and close_ms != open_ms + step - 1:
        want = open_ms + step - 1
        raise RowError(
            cols[6], "bad_close_time", f"{close_ms} is not open_time + {step} - 1 = {want}"
        )
    if close_ms < open_ms:
        raise RowError(cols[6], "bad_close_time", f"{close_ms} is before open_time {open_ms}")
    check_ohlc(o, h, lo, c)
    if tb > v:
        raise RowError(cols[9], "above_total", f"taker buy volume {tb} exceeds volume {v}")
    if tq > qv:
        raise RowError(cols[10], "above_total", f"taker buy quote {tq} exceeds quote volume {qv}")
    close_ns = close_ms * NS_PER_MS
    candle = Candle(
        EXCHANGE, symbol, interval, open_ms * NS_PER_MS, close_ns, o, h, lo, c, v, qv, n, tb, tq,
        True, close_ns, ts_recv,
    )  # fmt: skip
    return open_ms, candle


def ohlcv(
    row: Sequence[str],
    index: Sequence[int],
    names: Sequence[str],
    symbol: str,
    interval: str,
    ts_recv: int,
) -> tuple[int, Candle]:
    """A plain candle-file row; ``index`` says where each of OHLCV_COLUMNS sits in it, and
    ``names`` (:func:`header_names`) what each position is called."""
    cols = OHLCV_COLUMNS
    at = [field(row, i, names) for i in index]
    open_ms = time_ms(at[0], cols[0], False)
    o, h, lo, c = (number(at[k], cols[k], positive=True) for k in range(1, 5))
    v = number(at[5], cols[5], positive=False)
    step = interval_ms(interval)
    check_open(open_ms, step, cols[0])
    check_ohlc(o, h, lo, c)
    close_ns = (open_ms + step - 1) * NS_PER_MS
    candle = Candle(
        EXCHANGE, symbol, interval, open_ms * NS_PER_MS, close_ns, o, h, lo, c, v, NAN, None,
        NAN, NAN, True, close_ns, ts_recv,
    )  # fmt: skip
    return open_ms, candle


def header_names(index: Sequence[int]) -> list[str]:
    """OHLCV column names by position in a row (up to the last one read), so a short
    row names the column it lacks."""
    names = ["(unused)"] * (max(index) + 1)
    for j, i in enumerate(index):
        names[i] = OHLCV_COLUMNS[j]
    return names


def agg_trade(row: Sequence[str], symbol: str, ts_recv: int) -> tuple[int, AggTrade]:
    """An archive aggTrades row (8 columns, ms or µs times) -> (aggregate id, record)."""
    cols = AGG_COLUMNS
    a = integer(field(row, 0, cols), cols[0])
    p = number(field(row, 1, cols), cols[1], positive=True)
    q = number(field(row, 2, cols), cols[2], positive=True)
    first = integer(field(row, 3, cols), cols[3])
    last = integer(field(row, 4, cols), cols[4])
    t = time_ms(field(row, 5, cols), cols[5], True)
    maker = field(row, 6, cols).lower()
    if maker not in ("true", "false"):
        raise RowError(cols[6], "not_a_bool", f"{maker[:40]!r} is neither true nor false")
    if last < first:
        raise RowError(cols[4], "ids_reversed", f"{last} is below first_trade_id {first}")
    side = "sell" if maker == "true" else "buy"
    ts = t * NS_PER_MS
    return a, AggTrade(EXCHANGE, symbol, a, p, q, first, last, side, ts, ts_recv)
