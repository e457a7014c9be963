"""Rolling-window statistics of the played trades: the 24 h tickers and the average price.

Binance computes ``ticker/24hr``, ``@ticker``, ``@miniTicker`` and their
all-market arrays over the trades of the last 24 hours (a rolling window,
not the UTC day), and ``avgPrice`` over the last 5 minutes. The replay does
the same over what it has played (:mod:`.history`: earlier loop passes
included, with the ids and times they were sent with), so every figure can
be checked against the trades a client received. Sums come from the tape's
running sums and whole passes from its totals: a window is a few binary
searches, however many passes it spans.

Formats (binance_formats.md section 3, rest-api.md): decimals with 8 places,
the change percent with 3, the weighted average price = quote / base volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from ccf.sources.replay.book import Level
from ccf.sources.replay.history import Played
from ccf.sources.replay.tape import SCALE, TradeTape, fmt8

DAY_MS = 86_400_000
AVG_PRICE_MINS = 5
_PCT = Decimal("0.001")


@dataclass(frozen=True, slots=True)
class Window:
    """The played trades with times in ``[open_ms, close_ms]``; prices and volumes in 1e-8."""

    open_ms: int
    close_ms: int
    count: int
    first_id: int  # -1 without trades
    last_id: int
    open: int
    high: int
    low: int
    last: int
    last_qty: int
    last_time: int  # -1 without trades
    prev_close: int  # the price of the trade before the window (0: none)
    volume: int
    quote: int


def _total(tape: TradeTape, cum: list[int], g: int) -> int:
    """Sum of a column over ordinals ``[0, g)`` (``cum`` is the tape's running sum)."""
    k, i = divmod(g, tape.count)
    return k * cum[-1] + cum[i]


def window(v: Played, close_ms: int, span_ms: int) -> Window:
    """Statistics of the played trades in the ``span_ms`` before ``close_ms`` (both included)."""
    tape = v.tape
    open_ms = close_ms - span_ms
    lo, hi = v.trade_at(open_ms), v.trades
    while hi > lo and v.trade_time(hi - 1) > close_ms:
        hi -= 1
    prev = v.trade_price(lo - 1) if lo else 0
    if hi <= lo:
        last = v.trade_price(hi - 1) if hi else 0
        return Window(open_ms, close_ms, 0, -1, -1, last, last, last, last, 0, -1, prev, 0, 0)
    high, low = 0, 1 << 62
    for _, i, j in v.segments(lo, hi):
        if i == 0 and j == tape.count:
            high, low = max(high, tape.high), min(low, tape.low)
        else:
            part = tape.prices[i:j]
            high, low = max(high, max(part)), min(low, min(part))
    return Window(
        open_ms,
        close_ms,
        hi - lo,
        v.trade_id(lo),
        v.trade_id(hi - 1),
        v.trade_price(lo),
        high,
        low,
        v.trade_price(hi - 1),
        tape.qtys[(hi - 1) % tape.count],
        v.trade_time(hi - 1),
        prev,
        _total(tape, tape.cum_qtys, hi) - _total(tape, tape.cum_qtys, lo),
        _total(tape, tape.cum_quotes, hi) - _total(tape, tape.cum_quotes, lo),
    )


def empty_window(close_ms: int, span_ms: int) -> Window:
    """A symbol without recorded trades."""
    return Window(close_ms - span_ms, close_ms, 0, -1, -1, 0, 0, 0, 0, 0, -1, 0, 0, 0)


def weighted(w: Window) -> str:
    """Quote volume over base volume, 8 decimals (half-even); the last price without trades."""
    if not w.volume:
        return fmt8(w.last)
    q, r = divmod(w.quote * SCALE, w.volume)
    if r * 2 > w.volume or (r * 2 == w.volume and q % 2):
        q += 1
    return fmt8(q)


def change_percent(w: Window) -> str:
    if not w.open:
        return "0.000"
    pct = Decimal(w.last - w.open) * 100 / Decimal(w.open)
    return str(pct.quantize(_PCT, rounding=ROUND_HALF_EVEN))


def _best(book: tuple[list[Level], list[Level]]) -> tuple[str, str, str, str]:
    bids, asks = book
    bid = bids[0] if bids else ("0.00000000", "0.00000000")
    ask = asks[0] if asks else ("0.00000000", "0.00000000")
    return bid[0], bid[1], ask[0], ask[1]


def ticker_rest(symbol: str, w: Window, book: tuple[list[Level], list[Level]]) -> dict[str, Any]:
    """One ``/api/v3/ticker/24hr`` answer (type FULL)."""
    bid, bid_qty, ask, ask_qty = _best(book)
    return {
        "symbol": symbol.upper(),
        "priceChange": fmt8(w.last - w.open),
        "priceChangePercent": change_percent(w),
        "weightedAvgPrice": weighted(w),
        "prevClosePrice": fmt8(w.prev_close),
        "lastPrice": fmt8(w.last),
        "lastQty": fmt8(w.last_qty),
        "bidPrice": bid,
        "bidQty": bid_qty,
        "askPrice": ask,
        "askQty": ask_qty,
        **_mini_rest_tail(w),
    }


def _mini_rest_tail(w: Window) -> dict[str, Any]:
    return {
        "openPrice": fmt8(w.open),
        "highPrice": fmt8(w.high),
        "lowPrice": fmt8(w.low),
        "volume": fmt8(w.volume),
        "quoteVolume": fmt8(w.quote),
        "openTime": w.open_ms,
        "closeTime": w.close_ms,
        "firstId": w.first_id,
        "lastId": w.last_id,
        "count": w.count,
    }


def mini_rest(symbol: str, w: Window) -> dict[str, Any]:
    """One ``/api/v3/ticker/24hr?type=MINI`` answer."""
    tail = _mini_rest_tail(w)
    return {"symbol": symbol.upper(), "lastPrice": fmt8(w.last), **tail}


def ticker_event(
    symbol: str, w: Window, book: tuple[list[Level], list[Level]], event_ms: int
) -> dict[str, Any]:
    """The ``<symbol>@ticker`` payload (``24hrTicker``)."""
    bid, bid_qty, ask, ask_qty = _best(book)
    return {
        "e": "24hrTicker",
        "E": event_ms,
        "s": symbol.upper(),
        "p": fmt8(w.last - w.open),
        "P": change_percent(w),
        "w": weighted(w),
        "x": fmt8(w.prev_close),
        "c": fmt8(w.last),
        "Q": fmt8(w.last_qty),
        "b": bid,
        "B": bid_qty,
        "a": ask,
        "A": ask_qty,
        "o": fmt8(w.open),
        "h": fmt8(w.high),
        "l": fmt8(w.low),
        "v": fmt8(w.volume),
        "q": fmt8(w.quote),
        "O": w.open_ms,
        "C": w.close_ms,
        "F": w.first_id,
        "L": w.last_id,
        "n": w.count,
    }


def mini_event(symbol: str, w: Window, event_ms: int) -> dict[str, Any]:
    """The ``<symbol>@miniTicker`` payload (``24hrMiniTicker``)."""
    return {
        "e": "24hrMiniTicker",
        "E": event_ms,
        "s": symbol.upper(),
        "c": fmt8(w.last),
        "o": fmt8(w.open),
        "h": fmt8(w.high),
        "l": fmt8(w.low),
        "v": fmt8(w.volume),
        "q": fmt8(w.quote),
    }


def avg_price_rest(w: Window) -> dict[str, Any]:
    """``/api/v3/avgPrice``: the 5-minute volume-weighted price and the last trade's time."""
    return {"mins": AVG_PRICE_MINS, "price": weighted(w), "closeTime": w.last_time}


def avg_price_event(symbol: str, w: Window, event_ms: int) -> dict[str, Any]:
    """The ``<symbol>@avgPrice`` payload."""
    return {
        "e": "avgPrice",
        "E": event_ms,
        "s": symbol.upper(),
        "i": f"{AVG_PRICE_MINS}m",
        "w": weighted(w),
        "T": w.last_time,
    }
