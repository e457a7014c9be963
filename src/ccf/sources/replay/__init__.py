"""A local exchange that serves recordings over the Binance protocol.

Modules, one job each, from the recording to the socket:

- ``frames``: recording lines parsed into snapshots, stream frames and resyncs
- ``timeline``: recordings merged by event time (``load_timeline``), loop passes
- ``stamps``: exchange times rewritten in a payload's bytes
- ``book``: the exchange's order book, with the levels' wire strings
- ``market``: frames rendered for a pass (id and time shifts), REST depth
- ``candles``: klines from played trades and 1m CSV history
- ``clock``: replay event time, rebased onto the wall clock
- ``hub``: connections, subscriptions, queued writes and backpressure
- ``player``: walks the timeline at ``speed`` and fans frames out
- ``ws`` / ``rest``: the websocket and REST endpoints; ``exchange_info``
- ``faults``: what to break, and when
- ``exchange``: the app that wires them (``ReplayExchange``, ``running_exchange``, ``serve``)
"""
