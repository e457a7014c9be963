"""OKX v5 public as a venue: endpoints, limits, streams, symbols."""

from __future__ import annotations

from ccf.sources.venues import register
from ccf.sources.venues.base import ConnectionRules, Endpoints
from ccf.sources.venues.okx.feed import CHANNELS, OkxFeed, subscribe_message
from ccf.sources.venues.okx.symbols import to_common, to_venue
from ccf.sources.venues.wsvenue import WsVenue

OKX = register(
    WsVenue(
        name="okx",
        market="spot",
        endpoints=Endpoints(
            ws_url="wss://ws.okx.com:8443",
            rest_url="https://www.okx.com",
            depth_path="/api/v5/market/books?instId={}&sz={}",
            ws_path="/ws/v5/public",
        ),
        rules=ConnectionRules(
            max_streams_per_connection=240,  # channel x instrument pairs we put on one connection
            control_messages_per_s=3,  # subscribe requests: OKX rate-limits them per connection
            ping_interval_s=25,  # OKX drops a connection silent for 30 s: "ping" before that
            max_connection_age_s=24 * 3600,
            streams_in_url=0,
        ),
        kinds={"books": "book", "trades": "trade", "tickers": "quote"},
        feed_factory=OkxFeed,
        subscribe=lambda syms, chans: [subscribe_message(chans, syms)],
        to_common=to_common,
        to_venue=to_venue,
        ping_message="ping",
    )
)
__all__ = ["CHANNELS", "OKX"]
