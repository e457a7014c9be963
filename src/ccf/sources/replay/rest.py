"""The public market-data REST endpoints, with Binance's weights and rate-limit answers.

Every ``/api/`` call is charged its weight against a per-minute budget
(``X-MBX-USED-WEIGHT-1M``); over it the answer is 429 with Retry-After, and
a client that keeps going after ``ban_after_429s`` of them is banned (418).
Injected REST faults take the same path. Depth, exchangeInfo, time and ping
are here; the history endpoints (klines, trades) are in :mod:`.rest_history`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Container, Mapping
from typing import Any

from aiohttp import web

from ccf.sources.replay.clock import ReplayClock
from ccf.sources.replay.faults import Faults
from ccf.sources.replay.market import Market
from ccf.sources.replay.wire import dumps, loads

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# binance_formats.md section 3; depth is weighed by its limit
WEIGHTS = {
    "/api/v3/exchangeInfo": 20,
    "/api/v3/klines": 2,
    "/api/v3/aggTrades": 4,
    "/api/v3/trades": 25,
    "/api/v3/historicalTrades": 25,
    "/fapi/v1/historicalTrades": 20,
    "/api/v3/uiKlines": 2,
    "/api/v3/avgPrice": 2,
}
_NOT_FOUND = {"code": -1020, "msg": "This operation is not supported."}


def depth_weight(limit: int) -> int:
    """REST weight of ``/api/v3/depth`` by limit (binance_formats.md 2.3)."""
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


class WeightLimiter:
    """REQUEST_WEIGHT per wall-clock minute; 429 over the limit, a 418 ban for ignoring 429s."""

    def __init__(self, limit: int, ban_after_429s: int, ban_s: float) -> None:
        self.limit = limit
        self._ban_after = ban_after_429s
        self._ban_s = ban_s
        self._minute = -1
        self.used = 0
        self._strikes = 0
        self.banned_until = 0.0

    def charge(self, weight: int, now: float) -> tuple[int, int | None, int]:
        """``(used weight, error status or None, Retry-After seconds)`` for one request."""
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self.used = minute, 0
        if now < self.banned_until:
            return self.used, 418, math.ceil(self.banned_until - now)
        self.used += weight
        if self.used <= self.limit:
            self._strikes = 0
            return self.used, None, 0
        self._strikes += 1
        if self._strikes > self._ban_after:
            self.banned_until = now + self._ban_s
            log.warning(
                "part=exchange rest ban for_s=%.0f after_429s=%d", self._ban_s, self._strikes - 1
            )
            return self.used, 418, math.ceil(self._ban_s)
        return self.used, 429, max(1, math.ceil(60 - now % 60))


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=dumps(obj), status=status, headers=headers, content_type="application/json"
    )


def rest_error(code: int, msg: str) -> web.Response:
    """Binance's error body, HTTP 400."""
    return json_response({"code": code, "msg": msg}, status=400)


class BadRequest(Exception):
    """Raised by a handler; the middleware answers its ``response`` (weight charged)."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


INT_MAX = 2**31 - 1  # Binance's INT parameters (limit); LONG ones (ids, times) up to int64
LONG_MAX = 2**63 - 1


def int_param(
    request: web.Request, name: str, default: int | None = None, most: int = LONG_MAX
) -> int | None:
    """A non-negative integer parameter, refused as Binance refuses it (-1100, -1108)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not raw.isascii() or len(raw) > 20:
        raise BadRequest(
            rest_error(
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^[0-9]{1,20}$'.",
            )
        )
    value = int(raw)
    if value > most:
        raise BadRequest(rest_error(-1108, f"Parameter '{name}' overflowed."))
    return value


def limit_param(request: web.Request, default: int, most: int) -> int:
    """``limit``, clamped to ``[1, most]``."""
    return min(max(int_param(request, "limit", default, INT_MAX) or 1, 1), most)


def symbol_param(request: web.Request, known: Container[str]) -> str:
    """The lower-case ``symbol``; Binance's errors when it is missing or unknown."""
    sym = request.query.get("symbol", "")
    if not sym:
        raise BadRequest(
            rest_error(
                -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        )
    if sym.lower() not in known:
        raise BadRequest(rest_error(-1121, "Invalid symbol."))
    return sym.lower()


def ticker_weight(path: str, query: Mapping[str, str]) -> int:
    """Weights of the ticker endpoints, by how many symbols they answer (rest-api.md)."""
    if "symbol" in query:
        return 2
    if path == "/api/v3/ticker/24hr":
        if "symbols" not in query:
            return 80
        n = query["symbols"].count(",") + 1
        return 2 if n <= 20 else 40 if n <= 100 else 80
    return 4


def request_weight(request: web.Request) -> int:
    path = request.path
    if path in ("/api/v3/depth", "/fapi/v1/depth"):
        raw = request.query.get("limit", "100")
        return depth_weight(int(raw)) if raw.isdigit() and len(raw) <= 20 else 5
    if path.startswith("/api/v3/ticker/"):
        return ticker_weight(path, request.query)
    return WEIGHTS.get(path, 1)


class RestApi:
    """Handlers for depth, exchangeInfo, time and ping, and the limiter around every call."""

    def __init__(
        self,
        market: Market,
        clock: ReplayClock,
        faults: Faults,
        limiter: WeightLimiter,
        exchange_info: dict[str, Any],
    ) -> None:
        self._market = market
        self._clock = clock
        self._faults = faults
        self.limiter = limiter
        self._exchange_info = exchange_info
        self.requests: Counter[tuple[str, int]] = Counter()  # (endpoint, status) answered
        self.weight_total = 0  # weight charged since the start

    def _count(self, request: web.Request, status: int) -> None:
        path = request.path
        routed = request.match_info.route.resource is not None
        self.requests[(path if routed else "other", status)] += 1

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v3/depth", self._depth)
        app.router.add_get("/fapi/v1/depth", self._depth)  # USD-M futures
        app.router.add_get("/api/v3/exchangeInfo", self._info)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/sapi/v1/system/status", self._status)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(("/api/", "/sapi/", "/fapi/")):
            try:
                return await handler(request)
            except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as e:
                return json_response(_NOT_FOUND, e.status)
        resp = await self._limited(request, handler)
        self._count(request, resp.status)
        return resp

    async def _limited(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        weight = request_weight(request)
        used, status, retry = self.limiter.charge(weight, time.time())
        if status is None:
            self.weight_total += weight
            injected = self._faults.rest_fault()
            if injected is not None:
                status, retry = injected
        headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
        if status == 429:
            return json_response(
                {
                    "code": -1003,
                    "msg": f"Too much request weight used; current limit is {self.limiter.limit} "
                    "request weight per 1 MINUTE. Please use WebSocket Streams for live updates "
                    "to avoid "
                    "polling the API.",
                },
                429,
                {**headers, "Retry-After": str(retry)},
            )
        if status == 418:
            until = int((time.time() + retry) * 1000)
            return json_response(
                {
                    "code": -1003,
                    "msg": f"Way too much request weight used; IP banned until {until}. "
                    "Please use WebSocket Streams for live updates to avoid bans.",
                },
                418,
                {**headers, "Retry-After": str(retry)},
            )
        try:
            resp = await handler(request)
        except BadRequest as e:
            resp = e.response
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as e:
            resp = json_response(_NOT_FOUND, e.status)
        except web.HTTPException as e:
            e.headers.update(headers)
            raise
        resp.headers.update(headers)
        return resp

    def _symbol(self, request: web.Request) -> str:
        return symbol_param(request, self._market.timeline.symbols)

    async def _depth(self, request: web.Request) -> web.Response:
        sym = self._symbol(request)
        limit = limit_param(request, 100, 5000)
        if self._faults.stale_snapshot():
            log.info("part=exchange fault stale snapshot symbol=%s", sym)
            return json_response(self._market.stale_depth(sym, limit))
        return json_response(self._market.depth(sym, limit))

    async def _info(self, request: web.Request) -> web.Response:
        wanted: list[str] = []
        if "symbol" in request.query:
            wanted = [self._symbol(request).upper()]
        elif "symbols" in request.query:
            try:
                wanted = [str(s).upper() for s in loads(request.query["symbols"])]
            except ValueError:
                raise BadRequest(
                    rest_error(-1100, "Illegal characters found in parameter 'symbols'.")
                ) from None
            if any(s.lower() not in self._market.timeline.symbols for s in wanted):
                raise BadRequest(rest_error(-1121, "Invalid symbol."))
        info = dict(self._exchange_info, serverTime=self._clock.now_ms())
        if wanted:
            info["symbols"] = [s for s in info["symbols"] if s["symbol"] in wanted]
        return json_response(info)

    async def _time(self, request: web.Request) -> web.Response:
        return json_response({"serverTime": self._clock.now_ms()})

    async def _ping(self, request: web.Request) -> web.Response:
        return json_response({})

    async def _status(self, request: web.Request) -> web.Response:
        """``/sapi/v1/system/status``: 0 = normal, 1 = system maintenance."""
        return json_response({"status": 0, "msg": "normal"})
