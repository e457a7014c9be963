"""Binance's combined-stream protocol as a venue; Binance spot registered here.

Both Binance venues (spot here, USD-M futures in ``binance_usdm/``) share
the connection protocol: streams named ``<symbol>@<kind>`` in the URL
``/stream?streams=a/b/c`` and then in ``SUBSCRIBE`` messages, at most 5
incoming control messages per second, a ping every 3 min (spot: 20 s) that
aiohttp answers, and a cut after 24 h. They differ in endpoints, payloads and
the diff rule, which live in their feed classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ccf.sources.binance.feed import BinanceFeed, stream_kind
from ccf.sources.binance.rest import BinanceRest
from ccf.sources.venues import register
from ccf.sources.venues.base import (
    NO_CALLBACKS,
    ConnectionRules,
    Endpoints,
    FeedCallbacks,
    Market,
    split_symbol,
)

if TYPE_CHECKING:
    import aiohttp

SPOT_STREAMS = ("depth", "depth@100ms", "depth@1000ms", "trade", "bookTicker")


@dataclass(frozen=True)
class BinanceVenue:
    """A Binance-protocol venue: its name, market, endpoints, rules and feed class."""

    name: str
    market: Market
    endpoints: Endpoints
    rules: ConnectionRules
    feed_class: type[BinanceFeed] = BinanceFeed

    def stream_kind(self, stream: str) -> str:
        return self.feed_class.kind_of(stream)

    def supports(self, stream: str) -> bool:
        try:
            self.stream_kind(stream)
        except KeyError:
            return False
        return True

    def instrument(self, symbol: str) -> str:
        """``btcusdt`` -> ``btc-usdt`` (spot) or ``btc-usdt-perp`` (perpetual)."""
        base, quote = split_symbol(symbol)
        return f"{base}-{quote}-perp" if self.market == "perp" else f"{base}-{quote}"

    def native(self, instrument: str) -> str:
        parts = instrument.lower().split("-")
        want = 3 if self.market == "perp" else 2
        if len(parts) != want or (self.market == "perp" and parts[2] != "perp"):
            raise ValueError(f"{instrument!r} is not a {self.market} instrument of {self.name}")
        return parts[0] + parts[1]

    def stream_url(self, ws_url: str, streams: Sequence[str]) -> str:
        head = streams[: self.rules.streams_in_url]
        return ws_url.rstrip("/") + self.endpoints.ws_path + "?streams=" + "/".join(head)

    def subscribe_messages(self, streams: Sequence[str]) -> list[bytes]:
        rest = list(streams[self.rules.streams_in_url :])
        n = self.rules.streams_per_subscribe
        return [
            orjson.dumps({"method": "SUBSCRIBE", "params": rest[i : i + n], "id": i // n + 1})
            for i in range(0, len(rest), n)
        ]

    def make_feed(
        self,
        symbols: tuple[str, ...],
        streams: tuple[str, ...],
        *,
        book_depth: int = 20,
        book_cadence: str = "update",
        callbacks: FeedCallbacks = NO_CALLBACKS,
        **options: Any,
    ) -> BinanceFeed:
        return self.feed_class(
            symbols,
            streams,
            book_depth=book_depth,
            book_cadence=book_cadence,
            request_snapshot=callbacks.request_snapshot,
            on_server_shutdown=callbacks.on_server_shutdown,
            on_trade_gap=callbacks.on_trade_gap,
            **options,
        )

    def make_rest(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        weight_limit: int = 6000,
        timeout_s: float = 10.0,
    ) -> BinanceRest:
        return BinanceRest(
            session,
            base_url,
            weight_limit=weight_limit,
            timeout_s=timeout_s,
            depth_path=self.endpoints.depth_path,
            trades_path=self.endpoints.trades_path,
        )


SPOT = register(
    BinanceVenue(
        name="binance",
        market="spot",
        endpoints=Endpoints(
            ws_url="wss://stream.binance.com:9443",
            rest_url="https://api.binance.com",
            depth_path="/api/v3/depth",
        ),
        rules=ConnectionRules(
            max_streams_per_connection=1024,
            control_messages_per_s=5,
            ping_interval_s=20,
            max_connection_age_s=24 * 3600,
        ),
    )
)
__all__ = ["SPOT", "SPOT_STREAMS", "BinanceVenue", "stream_kind"]
