"""A small REST client for the subscription-message venues: depth snapshots and
instrument lists, raw bodies back (the venue's module decodes them)."""

from __future__ import annotations

import logging
import time

import aiohttp

log = logging.getLogger(__name__)


class VenueRest:
    """``depth_path`` has one ``{}`` for the instrument: ``/api/v5/market/books?instId={}``."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, depth_path: str, *, timeout_s: float
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._depth_path = depth_path
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.stats: dict[str, int] = {"calls": 0, "errors": 0}

    async def get(self, path: str) -> tuple[bytes, int]:
        """The body of ``GET base+path`` and its receive time (ns); raises on HTTP errors."""
        self.stats["calls"] += 1
        async with self._session.get(self._base + path, timeout=self._timeout) as r:
            body = await r.read()
            if r.status != 200:
                self.stats["errors"] += 1
                raise aiohttp.ClientResponseError(
                    r.request_info, r.history, status=r.status, message=body[:200].decode("replace")
                )
            return body, time.time_ns()

    async def depth(self, symbol: str, limit: int = 1000) -> tuple[bytes, int]:
        return await self.get(self._depth_path.format(symbol.upper(), limit))
