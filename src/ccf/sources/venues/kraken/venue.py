"""Kraken websocket v1 public as a venue (books only: v1 trades have no id)."""

from __future__ import annotations

from ccf.sources.venues import register
from ccf.sources.venues.base import ConnectionRules, Endpoints
from ccf.sources.venues.kraken.feed import KrakenFeed, book_message
from ccf.sources.venues.kraken.symbols import to_common, to_venue
from ccf.sources.venues.wsvenue import WsVenue

BOOK_DEPTH = 1000

KRAKEN = register(
    WsVenue(
        name="kraken",
        market="spot",
        endpoints=Endpoints(
            ws_url="wss://ws.kraken.com",
            rest_url="https://api.kraken.com",
            depth_path="/0/public/Depth?pair={}&count={}",
            ws_path="",
        ),
        rules=ConnectionRules(
            max_streams_per_connection=100,
            control_messages_per_s=1,  # Kraken throttles subscriptions per connection
            ping_interval_s=30,  # Kraken heartbeats every second when idle; ping when silent
            max_connection_age_s=24 * 3600,
            streams_in_url=0,
        ),
        kinds={"book": "book"},
        feed_factory=KrakenFeed,
        subscribe=lambda syms, chans: [book_message(syms, BOOK_DEPTH)],
        to_common=to_common,
        to_venue=to_venue,
        ping_message='{"event":"ping"}',
    )
)
__all__ = ["KRAKEN"]
