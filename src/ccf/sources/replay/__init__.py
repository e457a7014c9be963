"""A local exchange that serves recordings over the Binance protocol.

Modules, one job each, from the recording to the socket:

- ``frames``: recording lines parsed into snapshots, stream frames and resyncs
- ``timeline``: recordings merged by event time (``load_timeline``), loop passes
- ``stamps``: exchange times rewritten in a payload's bytes
- ``book``: the exchange's order book, with the levels' wire strings
- ``tape``: a symbol's trades as exact-decimal columns, and their aggregate trades
- ``market``: frames rendered for a pass (id and time shifts), REST depth, trades played
- ``history``: the played trades across passes (ordinals, ids, times) for REST history
- ``bars``: candle math shared by REST and live klines (exact integers)
- ``candles``: REST klines from played trades, or from 1m CSVs played alongside
- ``klines_live``: ``@kline_<interval>`` streams, equal to REST klines once closed
- ``stats``: rolling-window statistics of the played trades (24 h tickers, avgPrice)
- ``seconds``: the once-a-second streams (1000 ms diffs, partial depth, tickers)
- ``clock``: replay event time, rebased onto the wall clock
- ``streams``: stream names Binance accepts and the replay serves; microsecond times
- ``hub``: connections, subscriptions, queued writes and backpressure
- ``player``: walks the timeline at ``speed`` and fans frames out
- ``ws`` / ``rest`` / ``rest_history`` / ``rest_tickers``: the websocket and REST
  endpoints; ``exchange_info``
- ``faults``: what to break, and when
- ``tls``: the local CA and certificate for ``replay.tls``
- ``metrics``: the exchange's own Prometheus figures
- ``exchange``: the app that wires them (``ReplayExchange``, ``running_exchange``, ``serve``)
"""
