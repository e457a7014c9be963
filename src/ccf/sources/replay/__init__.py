"""A local exchange that serves recordings over the Binance protocol."""
