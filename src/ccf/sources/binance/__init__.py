"""Binance spot: wire schemas, local order book, REST and websocket clients."""
