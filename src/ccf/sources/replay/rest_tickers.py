"""REST tickers: ``ticker/24hr``, ``ticker/price``, ``ticker/bookTicker``, ``avgPrice``.

Each is computed at request time from what the replay has played
(:mod:`.stats`) and the exchange's book, so a ticker always agrees with the
trades and depth a client could have received. ``symbol`` answers one
object, ``symbols=["A","B"]`` or neither an array (all symbols), as on
Binance; both together is -1128, an unknown one -1121, a repeated one -1151.
"""

from __future__ import annotations

from aiohttp import web

from ccf.sources.replay.clock import ReplayClock
from ccf.sources.replay.history import played
from ccf.sources.replay.market import Market
from ccf.sources.replay.rest import BadRequest, json_response, rest_error
from ccf.sources.replay.stats import (
    AVG_PRICE_MINS,
    DAY_MS,
    Window,
    avg_price_rest,
    empty_window,
    mini_rest,
    ticker_rest,
    window,
)
from ccf.sources.replay.tape import fmt8
from ccf.sources.replay.wire import loads


def symbols_param(request: web.Request, known: list[str]) -> tuple[list[str], bool]:
    """``(lower-case symbols, one)``: ``one`` when ``symbol`` was sent (answer an object)."""
    q = request.query
    if "symbol" in q and "symbols" in q:
        raise BadRequest(rest_error(-1128, "Combination of optional parameters invalid."))
    if "symbol" in q:
        sym = q["symbol"].lower()
        if not sym:
            raise BadRequest(
                rest_error(
                    -1102,
                    "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                )
            )
        if sym not in known:
            raise BadRequest(rest_error(-1121, "Invalid symbol."))
        return [sym], True
    if "symbols" not in q:
        return list(known), False
    try:
        wanted = loads(q["symbols"])
    except ValueError:
        wanted = None
    if not isinstance(wanted, list) or not all(isinstance(s, str) for s in wanted):
        raise BadRequest(rest_error(-1100, "Illegal characters found in parameter 'symbols'."))
    out = [s.lower() for s in wanted]
    if len(set(out)) != len(out):
        raise BadRequest(rest_error(-1151, "Symbol is present multiple times in the list."))
    if any(s not in known for s in out):
        raise BadRequest(rest_error(-1121, "Invalid symbol."))
    return out, False


class TickerApi:
    """The ticker handlers; weights and errors go through the REST middleware."""

    def __init__(self, market: Market, clock: ReplayClock) -> None:
        self._market = market
        self._clock = clock

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v3/ticker/24hr", self._day)
        app.router.add_get("/api/v3/ticker/price", self._price)
        app.router.add_get("/api/v3/ticker/bookTicker", self._book)
        app.router.add_get("/api/v3/avgPrice", self._avg)

    @property
    def _known(self) -> list[str]:
        return list(self._market.timeline.symbols)

    def stats(self, sym: str, span_ms: int, now_ms: int | None = None) -> Window:
        """The played trades of ``sym`` in the ``span_ms`` before now (exchange time)."""
        now = self._clock.now_ms() if now_ms is None else now_ms
        v = played(self._market, sym)
        return empty_window(now, span_ms) if v is None else window(v, now, span_ms)

    @staticmethod
    def _answer(rows: list[dict[str, object]], one: bool) -> web.Response:
        return json_response(rows[0] if one else rows)

    async def _day(self, request: web.Request) -> web.Response:
        syms, one = symbols_param(request, self._known)
        kind = request.query.get("type", "FULL")
        if kind not in ("FULL", "MINI"):
            raise BadRequest(rest_error(-1139, "Invalid ticker type."))
        rows = []
        for s in syms:
            w = self.stats(s, DAY_MS)
            if kind == "MINI":
                rows.append(mini_rest(s, w))
            else:
                rows.append(ticker_rest(s, w, self._market.books[s].top(1)))
        return self._answer(rows, one)

    async def _price(self, request: web.Request) -> web.Response:
        syms, one = symbols_param(request, self._known)
        rows = [{"symbol": s.upper(), "price": fmt8(self.stats(s, DAY_MS).last)} for s in syms]
        return self._answer(rows, one)

    async def _book(self, request: web.Request) -> web.Response:
        syms, one = symbols_param(request, self._known)
        rows = []
        for s in syms:
            bids, asks = self._market.books[s].top(1)
            bid = bids[0] if bids else ("0.00000000", "0.00000000")
            ask = asks[0] if asks else ("0.00000000", "0.00000000")
            rows.append(
                {
                    "symbol": s.upper(),
                    "bidPrice": bid[0],
                    "bidQty": bid[1],
                    "askPrice": ask[0],
                    "askQty": ask[1],
                }
            )
        return self._answer(rows, one)

    async def _avg(self, request: web.Request) -> web.Response:
        syms, one = symbols_param(request, self._known)
        if not one:
            raise BadRequest(
                rest_error(
                    -1102,
                    "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                )
            )
        return json_response(avg_price_rest(self.stats(syms[0], AVG_PRICE_MINS * 60_000)))
