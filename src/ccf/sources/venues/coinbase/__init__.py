"""Coinbase Exchange websocket feed: ``level2`` books, ``matches``, ``ticker``.

``feed.CoinbaseFeed`` turns frames into records without I/O; ``symbols`` maps
product ids (``BTC-USD``) to CCF's common names (``btc-usd``).
"""
