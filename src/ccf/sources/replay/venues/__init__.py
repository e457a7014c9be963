"""The replay exchange for OKX, Coinbase and Kraken: each venue's own websocket
protocol served from its raw recordings (``$CCF_SHARED/data/venues``)."""
