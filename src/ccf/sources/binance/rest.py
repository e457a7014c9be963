"""Binance REST market data with the exchange's rate limits honoured.

Every answer carries ``X-MBX-USED-WEIGHT-1M``; the client keeps the last
value and, before a call that would exceed the limit, waits for the next
minute instead of collecting a 429. A 429 or 418 waits ``Retry-After``
seconds (Binance bans an IP that keeps calling after a 429) and tries again;
a ``Retry-After`` that is no number of seconds (text, NaN, negative, huge)
waits a bounded backoff instead, with a warning, never an exception.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

DEPTH_WEIGHTS = ((100, 5), (500, 25), (1000, 50), (5000, 250))
MAX_RETRY_AFTER_S = 300.0  # a longer Retry-After is taken as this: keep trying, slowly


def depth_weight(limit: int) -> int:
    for upto, weight in DEPTH_WEIGHTS:
        if limit <= upto:
            return weight
    raise ValueError(f"depth limit {limit} is over Binance's maximum of 5000")


def weight_wait_s(used: int, weight: int, limit: int, now_s: float) -> float:
    """Seconds to wait before spending ``weight`` more: 0 while it fits in this minute's
    limit, else until the next minute starts (Binance's REQUEST_WEIGHT window is the
    calendar minute)."""
    if used + weight <= limit:
        return 0.0
    return 60 - now_s % 60 + 0.05


def retry_after_s(header: str | None, attempt: int) -> float:
    """Seconds a ``Retry-After`` header asks for; a missing or unreadable one (an HTTP
    date, text, NaN, a negative number) gives a backoff of ``2**attempt`` seconds, and
    any answer is capped at MAX_RETRY_AFTER_S.

    >>> retry_after_s("7", 0), retry_after_s("soon", 2), retry_after_s("1e9", 0)
    (7.0, 4.0, 300.0)
    """
    fallback = min(MAX_RETRY_AFTER_S, float(2 ** min(attempt, 16)))
    if header is None:
        return fallback
    try:
        value = float(header)
    except ValueError:
        log.warning(
            "part=collect exchange=binance Retry-After %r is not a number of seconds: "
            "waiting %.0f s",
            header[:50],
            fallback,
        )
        return fallback
    if not math.isfinite(value) or value < 0:
        return fallback
    return min(value, MAX_RETRY_AFTER_S)


class RestError(RuntimeError):
    """A REST answer that retrying will not fix (bad symbol, bad parameter)."""


class RateLimited(RuntimeError):
    def __init__(self, status: int, retry_after_s: float) -> None:
        super().__init__(f"HTTP {status}: rate limited, retry after {retry_after_s:.0f} s")
        self.status = status
        self.retry_after_s = retry_after_s


class BinanceRest:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        weight_limit: int = 6000,
        timeout_s: float = 10.0,
        max_tries: int = 8,
        depth_path: str = "/api/v3/depth",  # USD-M: /fapi/v1/depth
        trades_path: str = "/api/v3/historicalTrades",  # USD-M: /fapi/v1/historicalTrades
    ) -> None:
        self.depth_path = depth_path
        self.trades_path = trades_path
        self._session = session
        self._base = base_url.rstrip("/")
        self._limit = weight_limit
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_tries = max_tries
        self.used_weight = 0
        self._weight_minute = 0
        self.stats: dict[str, int] = {
            "calls": 0,
            "rate_limited": 0,
            "banned": 0,
            "errors": 0,
            "weight_waits": 0,
        }

    async def depth(self, symbol: str, limit: int = 1000) -> tuple[bytes, int]:
        """``/api/v3/depth`` (or the venue's ``depth_path``): the raw body and its receive
        time (ns). The weight charged is spot's, which is above USD-M's for every limit."""
        return await self.get(
            self.depth_path, {"symbol": symbol.upper(), "limit": limit}, depth_weight(limit)
        )

    async def get(self, path: str, params: dict[str, Any], weight: int) -> tuple[bytes, int]:
        """GET with weight accounting and retries; returns (body, receive time ns)."""
        for attempt in range(self._max_tries):
            await self._wait_for_weight(weight)
            try:
                return await self._get_once(path, params, attempt)
            except RateLimited as e:
                self.stats["banned" if e.status == 418 else "rate_limited"] += 1
                log.warning(
                    "part=collect exchange=binance path=%s %s (try %d)", path, e, attempt + 1
                )
                await asyncio.sleep(e.retry_after_s)
            except (TimeoutError, aiohttp.ClientError) as e:
                self.stats["errors"] += 1
                delay = min(30.0, 0.5 * 2**attempt)
                log.warning(
                    "part=collect exchange=binance path=%s request failed: %r; retry in %.1f s",
                    path,
                    e,
                    delay,
                )
                await asyncio.sleep(delay)
        raise RestError(f"GET {path} {params} failed {self._max_tries} times; giving up")

    async def _get_once(
        self, path: str, params: dict[str, Any], attempt: int = 0
    ) -> tuple[bytes, int]:
        self.stats["calls"] += 1
        async with self._session.get(
            self._base + path, params=params, timeout=self._timeout
        ) as resp:
            body = await resp.read()
            ts_recv = time.time_ns()
            used = resp.headers.get("X-MBX-USED-WEIGHT-1M")
            if used is not None and used.isdigit():
                self.used_weight = int(used)
                self._weight_minute = int(time.time() // 60)
            if resp.status in (418, 429):
                wait = retry_after_s(resp.headers.get("Retry-After"), attempt)
                raise RateLimited(resp.status, wait)
            if resp.status >= 500:
                raise aiohttp.ClientResponseError(
                    resp.request_info,
                    (),
                    status=resp.status,
                    message=body[:200].decode("utf-8", "replace"),
                )
            if resp.status != 200:
                raise RestError(
                    f"GET {path} {params}: HTTP {resp.status}: "
                    f"{body[:200].decode('utf-8', 'replace')}"
                )
            return body, ts_recv

    async def _wait_for_weight(self, weight: int) -> None:
        now = time.time()
        if int(now // 60) != self._weight_minute:
            self.used_weight, self._weight_minute = 0, int(now // 60)
        wait = weight_wait_s(self.used_weight, weight, self._limit, now)
        if wait:
            self.stats["weight_waits"] += 1
            log.warning(
                "part=collect exchange=binance used weight %d + %d would pass the limit "
                "%d: waiting %.1f s for the next minute",
                self.used_weight,
                weight,
                self._limit,
                wait,
            )
            await asyncio.sleep(wait)
            self.used_weight = 0
