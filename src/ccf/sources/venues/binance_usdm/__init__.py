"""Binance USD-M futures (perpetuals) as a venue: ``binance_usdm``.

Folder: ``schemas`` (the futures wire messages), ``feed`` (the ``pu`` diff
rule, futures payloads). It shares Binance's combined-stream connection
protocol and REST client with spot (:mod:`ccf.sources.venues.binance`); its
endpoints are ``wss://fstream.binance.com`` (``/stream?streams=...``) and
``https://fapi.binance.com`` (``/fapi/v1/depth``). Symbols are the
perpetuals' names (``btcusdt``), instrument ``btc-usdt-perp``. Connection
rules from the USD-M docs: 1024 streams and 10 incoming messages per second
per connection, a ping every 3 minutes, a cut after 24 hours.
"""

from __future__ import annotations

from ccf.sources.venues import register
from ccf.sources.venues.base import ConnectionRules, Endpoints
from ccf.sources.venues.binance import BinanceVenue
from ccf.sources.venues.binance_usdm.feed import EXCHANGE, UsdmFeed

USDM = register(
    BinanceVenue(
        name=EXCHANGE,
        market="perp",
        endpoints=Endpoints(
            ws_url="wss://fstream.binance.com",
            rest_url="https://fapi.binance.com",
            depth_path="/fapi/v1/depth",
            trades_path="/fapi/v1/historicalTrades",
        ),
        rules=ConnectionRules(
            max_streams_per_connection=1024,
            control_messages_per_s=10,
            ping_interval_s=180,
            max_connection_age_s=24 * 3600,
        ),
        feed_class=UsdmFeed,
    )
)
__all__ = ["USDM", "UsdmFeed"]
