"""Kraken websocket v1 public: ``book`` (checksum-verified) and ``trade``.

``feed.KrakenFeed`` turns frames into records without I/O; ``symbols`` maps
Kraken's pair names (``XBT/CHF``) to CCF's (``btc-chf``).
"""
