"""Market history over REST: klines, aggregate trades and trades, page by page.

Each function is an async generator of pages (lists of records), so callers
write a page before asking for the next: an interrupted backfill keeps what
it fetched, and a rerun resumes from what the store holds. Paging follows
Binance's rules: klines by ``startTime`` (oldest first, up to 1000 a page),
aggregate trades and trades by ``fromId``. A page that does not move forward
(an exchange repeating itself) ends the walk with an error instead of a loop.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator

import msgspec

from ccf.records import NS_PER_MS, AggTrade, Candle, Trade
from ccf.sources.binance.rest import BinanceRest, RestError
from ccf.sources.binance.schemas import Id, Price, TimeMs, TradeQty

log = logging.getLogger(__name__)

EXCHANGE = "binance"
PAGE = 1000
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
KlineRow = tuple[int, str, str, str, str, str, int, str, int, str, str, str]


class NoProgress(RuntimeError):
    """The exchange answered a page that does not advance past the previous one."""


def interval_ms(interval: str) -> int:
    """``1m`` -> 60000. Months (``1M``) have no fixed length and are refused."""
    m = re.fullmatch(r"(\d+)([smhdw])", interval)
    if not m:
        raise ValueError(f"interval {interval!r}: use e.g. 1s, 1m, 5m, 1h, 1d, 1w (not 1M)")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def kline_to_candle(symbol: str, interval: str, row: KlineRow, now_ms: int, ts_recv: int) -> Candle:
    """A REST/archive kline row; closed once its close time is behind the exchange's clock."""
    (open_t, o, h, low, c, v, close_t, qv, n, tb, tq, _) = row
    return Candle(
        EXCHANGE,
        symbol,
        interval,
        open_t * NS_PER_MS,
        close_t * NS_PER_MS,
        float(o),
        float(h),
        float(low),
        float(c),
        float(v),
        float(qv),
        int(n),
        float(tb),
        float(tq),
        close_t < now_ms,
        close_t * NS_PER_MS,
        ts_recv,
    )


class _AggTradeRow(msgspec.Struct):
    a: int
    p: str
    q: str
    f: int
    l: int  # noqa: E741 - Binance's name
    T: int
    m: bool


class _TradeRow(msgspec.Struct):
    id: Id
    price: Price  # checked as the live stream's (schemas): finite, > 0
    qty: TradeQty
    time: TimeMs
    isBuyerMaker: bool


_decode_klines = msgspec.json.Decoder(list[KlineRow]).decode
_decode_agg = msgspec.json.Decoder(list[_AggTradeRow]).decode
_decode_trade_rows = msgspec.json.Decoder(list[_TradeRow], strict=False).decode


def _decode_trades(body: bytes) -> list[_TradeRow]:
    """A historicalTrades page; an answer that is not one (an HTML error page, bad
    values) is a RestError naming why, which the caller reports, not a crash."""
    try:
        return _decode_trade_rows(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as e:
        raise RestError(f"historicalTrades answer refused: {e}: {body[:120]!r}") from e


_decode_time = msgspec.json.Decoder(dict[str, int]).decode


async def server_time_ms(rest: BinanceRest) -> int:
    body, _ = await rest.get("/api/v3/time", {}, 1)
    return _decode_time(body)["serverTime"]


async def klines(
    rest: BinanceRest, symbol: str, interval: str, start_ms: int, end_ms: int, *, now_ms: int
) -> AsyncIterator[list[Candle]]:
    """Candles opening in ``[start_ms, end_ms)``, oldest first."""
    step = interval_ms(interval)
    cursor = start_ms
    while cursor < end_ms:
        body, ts_recv = await rest.get(
            "/api/v3/klines",
            {
                "symbol": symbol.upper(),
                "interval": interval,
                "startTime": cursor,
                "endTime": end_ms - 1,
                "limit": PAGE,
            },
            2,
        )
        raw = _decode_klines(body)
        rows = [r for r in raw if cursor <= r[0] < end_ms]  # an overlapping page repeats rows
        if not rows:
            if raw and raw[-1][0] < cursor:
                raise NoProgress(f"klines page ends at {raw[-1][0]}, before the cursor {cursor}")
            return
        yield [kline_to_candle(symbol, interval, r, now_ms, ts_recv) for r in rows]
        cursor = rows[-1][0] + step


async def _first_agg_id(rest: BinanceRest, symbol: str, start_ms: int, end_ms: int) -> int | None:
    """The id of the first aggregate trade at or after ``start_ms``, or None before ``end_ms``.

    Asks for windows small enough to come back whole (fewer than a page of rows), so
    the answer does not depend on which end of an over-full window the exchange keeps.
    """
    window, t = 60_000, start_ms
    while t < end_ms:
        hi = min(end_ms, t + window)
        body, _ = await rest.get(
            "/api/v3/aggTrades",
            {"symbol": symbol.upper(), "startTime": t, "endTime": hi - 1, "limit": PAGE},
            4,
        )
        rows = _decode_agg(body)
        if len(rows) >= PAGE and window > 1:
            window //= 2  # too busy to see all of it: look at a shorter stretch
        elif rows:
            return min(r.a for r in rows)
        else:
            t, window = hi, min(2 * window, 3_600_000)  # quiet: look further, wider
    return None


async def agg_trades(
    rest: BinanceRest, symbol: str, start_ms: int, end_ms: int, from_id: int | None = None
) -> AsyncIterator[list[AggTrade]]:
    """Aggregate trades with ``start_ms <= T < end_ms`` in id order; ``from_id`` resumes."""
    if from_id is None:
        from_id = await _first_agg_id(rest, symbol, start_ms, end_ms)
        if from_id is None:
            return
    last = from_id - 1
    while True:
        body, ts_recv = await rest.get(
            "/api/v3/aggTrades", {"symbol": symbol.upper(), "fromId": last + 1, "limit": PAGE}, 4
        )
        raw = _decode_agg(body)
        rows = [r for r in raw if r.a > last]  # an overlapping page repeats rows
        if not rows:
            if raw:
                raise NoProgress(f"aggTrades page ends at id {raw[-1].a}, not past {last}")
            return
        last = rows[-1].a
        page = [
            AggTrade(
                EXCHANGE,
                symbol,
                r.a,
                float(r.p),
                float(r.q),
                r.f,
                r.l,
                "sell" if r.m else "buy",
                r.T * NS_PER_MS,
                ts_recv,
            )
            for r in rows
            if start_ms <= r.T < end_ms
        ]
        if page:
            yield page
        if rows[-1].T >= end_ms:
            return


async def trades_by_id(
    rest: BinanceRest, symbol: str, first_id: int, last_id: int, exchange: str = EXCHANGE
) -> AsyncIterator[list[Trade]]:
    """Trades ``first_id..last_id`` from ``/api/v3/historicalTrades``, marked backfilled."""
    cursor = first_id
    while cursor <= last_id:
        body, ts_recv = await rest.get(
            rest.trades_path,
            {"symbol": symbol.upper(), "fromId": cursor, "limit": min(PAGE, last_id - cursor + 1)},
            25,
        )
        rows = [r for r in _decode_trades(body) if cursor <= r.id <= last_id]
        if not rows:
            return
        yield [
            Trade(
                exchange,  # the venue asked (spot, or USD-M over rest.trades_path)
                symbol,
                r.id,
                r.price,
                r.qty,
                "sell" if r.isBuyerMaker else "buy",
                r.time * NS_PER_MS,
                ts_recv,
                True,
            )
            for r in rows
        ]
        cursor = rows[-1].id + 1
