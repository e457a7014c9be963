"""REST history: ``/api/v3/klines``, ``aggTrades``, ``historicalTrades`` and ``trades``.

Each answers only what the replay has played (:mod:`.history`), so REST never
knows more than a websocket client could have seen. Paging follows Binance:

- ``aggTrades`` (weight 4): ``fromId`` -> from that id; ``startTime`` (and
  ``endTime``, both inclusive) -> the oldest in that span; ``endTime`` alone
  -> the newest up to it; ``fromId`` with a time -> -1128; nothing -> the
  most recent. Always oldest first, at most ``limit`` (default 500, max
  1000). Binance dropped its one-hour limit on the span (-1127) on
  2022-12-05 (CHANGELOG.md of binance-spot-api-docs): ccxt and
  python-binance send ``startTime`` with ``endTime = startTime + 1 h``.
- ``historicalTrades`` (25): from ``fromId``, else the most recent; ``trades``
  (25): the most recent.
- ``klines`` and ``uiKlines`` (2): see :class:`.candles.Candles` and
  :func:`.bars.window`; ``timeZone`` other than 0 is refused (-1100), the
  replay's candles are UTC.

The ``rest_duplicate_pages`` fault makes the next paged answers (those with
``fromId`` or ``startTime``) start half a page earlier than asked, repeating
the end of the previous page, like an exchange that serves overlapping pages.
"""

from __future__ import annotations

import logging

from aiohttp import web

from ccf.sources.replay.bars import INTERVALS_MS, MONTH
from ccf.sources.replay.candles import Candles
from ccf.sources.replay.faults import Faults
from ccf.sources.replay.history import Played, played
from ccf.sources.replay.market import Market
from ccf.sources.replay.rest import (
    BadRequest,
    int_param,
    json_response,
    limit_param,
    rest_error,
    symbol_param,
)

log = logging.getLogger(__name__)


class HistoryApi:
    """The history handlers; errors go through the limiter's middleware like the others."""

    def __init__(self, market: Market, candles: Candles, faults: Faults) -> None:
        self._market = market
        self._candles = candles
        self._faults = faults

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v3/klines", self._klines)
        # the same rows: without timeZone, Binance's presentation klines are the klines
        app.router.add_get("/api/v3/uiKlines", self._klines)
        app.router.add_get("/api/v3/aggTrades", self._agg_trades)
        app.router.add_get("/api/v3/historicalTrades", self._historical_trades)
        app.router.add_get("/fapi/v1/historicalTrades", self._historical_trades)  # USD-M
        app.router.add_get("/api/v3/trades", self._trades)

    def _back(self, what: str, sym: str, limit: int) -> int:
        """How far a paged answer starts before the asked start (the duplicate-pages fault)."""
        if not self._faults.duplicate_page():
            return 0
        back = max(1, limit // 2)
        log.info(
            "part=exchange fault duplicate page endpoint=%s symbol=%s back=%d", what, sym, back
        )
        return back

    def _played(self, request: web.Request) -> tuple[str, Played | None]:
        sym = symbol_param(request, self._market.timeline.symbols)
        return sym, played(self._market, sym)

    async def _klines(self, request: web.Request) -> web.Response:
        sym = symbol_param(request, self._candles.symbols)
        interval = request.query.get("interval", "")
        iv = INTERVALS_MS.get(interval)
        if iv is None and interval != MONTH:
            raise BadRequest(rest_error(-1120, "Invalid interval."))
        if request.query.get("timeZone", "0") not in ("0", "+0", "0:00", "+00:00", "00:00"):
            raise BadRequest(rest_error(-1100, "Illegal characters found in parameter 'timeZone'."))
        start, end = int_param(request, "startTime"), int_param(request, "endTime")
        limit = limit_param(request, 500, 1000)
        if iv is None:  # 1M: calendar months
            return json_response(self._candles.month_rows(sym, start, end, limit))
        if start is not None:
            start -= self._back("klines", sym, limit) * iv
        return json_response(self._candles.rows(sym, iv, start, end, limit))

    async def _agg_trades(self, request: web.Request) -> web.Response:
        sym, v = self._played(request)
        from_id = int_param(request, "fromId")
        start, end = int_param(request, "startTime"), int_param(request, "endTime")
        limit = limit_param(request, 500, 1000)
        if from_id is not None and (start is not None or end is not None):
            raise BadRequest(rest_error(-1128, "Combination of optional parameters invalid."))
        if v is None:
            return json_response([])
        if from_id is not None:
            lo, hi = v.agg_from_id(from_id), v.aggs
        elif start is not None:
            lo = v.agg_at(start)
            hi = v.aggs if end is None else v.agg_at(end + 1)
        else:
            hi = v.aggs if end is None else v.agg_at(end + 1)
            lo = max(0, hi - limit)
        if from_id is not None or start is not None:
            lo = max(0, lo - self._back("aggTrades", sym, limit))
        return json_response([v.agg_row(a) for a in range(lo, min(hi, lo + limit))])

    async def _historical_trades(self, request: web.Request) -> web.Response:
        sym, v = self._played(request)
        from_id = int_param(request, "fromId")
        limit = limit_param(request, 500, 1000)
        if v is None:
            return json_response([])
        if from_id is None:
            lo = max(0, v.trades - limit)
        else:
            lo = max(0, v.trade_from_id(from_id) - self._back("historicalTrades", sym, limit))
        return json_response([v.trade_row(g) for g in range(lo, min(v.trades, lo + limit))])

    async def _trades(self, request: web.Request) -> web.Response:
        _, v = self._played(request)
        limit = limit_param(request, 500, 1000)
        if v is None:
            return json_response([])
        return json_response([v.trade_row(g) for g in range(max(0, v.trades - limit), v.trades)])
