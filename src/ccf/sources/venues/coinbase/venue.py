"""Coinbase Exchange websocket feed as a venue: endpoints, limits, streams, symbols."""

from __future__ import annotations

from ccf.sources.venues import register
from ccf.sources.venues.base import ConnectionRules, Endpoints
from ccf.sources.venues.coinbase.feed import CHANNELS, CoinbaseFeed, subscribe_message
from ccf.sources.venues.coinbase.symbols import to_common, to_venue
from ccf.sources.venues.wsvenue import WsVenue

COINBASE = register(
    WsVenue(
        name="coinbase",
        market="spot",
        endpoints=Endpoints(
            ws_url="wss://ws-feed.exchange.coinbase.com",
            rest_url="https://api.exchange.coinbase.com",
            depth_path="/products/{}/book?level=2&limit={}",
            ws_path="",
        ),
        rules=ConnectionRules(
            max_streams_per_connection=300,
            control_messages_per_s=4,  # Coinbase limits messages per second per IP
            ping_interval_s=30,  # no app-level ping: the websocket's own, answered by aiohttp
            max_connection_age_s=24 * 3600,
            streams_in_url=0,
        ),
        kinds={"level2": "book", "matches": "trade", "ticker": "quote"},
        feed_factory=CoinbaseFeed,
        subscribe=lambda syms, chans: [subscribe_message(syms, chans)],
        to_common=to_common,
        to_venue=to_venue,
    )
)
__all__ = ["CHANNELS", "COINBASE"]
