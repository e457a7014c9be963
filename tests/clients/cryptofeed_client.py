"""cryptofeed 2.4.1's Binance feed, unpatched, against a replay exchange; writes what it built.

    SSL_CERT_FILE=ca.pem REQUESTS_CA_BUNDLE=ca.pem \\
        python cryptofeed_client.py WSS_URL HTTPS_URL SYMBOL OUT.json

cryptofeed accepts only wss:// (so the replay runs with replay.tls), and it
reads exchangeInfo with requests, the depth snapshot with aiohttp and the
streams with websockets: the three trust the replay's CA through the
environment, set before Python starts, so this runs in its own process. The
only change to cryptofeed is configuration: a subclass naming the replay's
endpoints. It stops once nothing arrived for ``QUIET_S``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
from cryptofeed.defines import CANDLES, L2_BOOK, TRADES
from cryptofeed.exchanges import Binance

QUIET_S = 2.0
LIMIT_S = 60.0


def main(ws_url: str, rest_url: str, symbol: str, out: str) -> None:
    class ReplayBinance(Binance):
        websocket_endpoints = [WebsocketEndpoint(ws_url)]
        rest_endpoints = [
            RestEndpoint(
                rest_url,
                routes=Routes("/api/v3/exchangeInfo", l2book="/api/v3/depth?symbol={}&limit={}"),
            )
        ]

    got: dict[str, Any] = {"books": 0, "trades": [], "candles": {}, "book": None}
    last = [time.monotonic()]

    async def on_book(book: Any, receipt: float) -> None:
        d = book.book.to_dict()
        got["books"] += 1
        got["book"] = {
            "seq": book.sequence_number,
            "bids": [[str(p), str(q)] for p, q in d["bid"].items()],
            "asks": [[str(p), str(q)] for p, q in d["ask"].items()],
        }
        last[0] = time.monotonic()

    async def on_trade(t: Any, receipt: float) -> None:
        got["trades"].append([t.id, str(t.price), str(t.amount), t.side, t.timestamp])
        last[0] = time.monotonic()

    async def on_candle(c: Any, receipt: float) -> None:
        got["candles"][str(c.start)] = [
            c.start,
            str(c.open),
            str(c.high),
            str(c.low),
            str(c.close),
            str(c.volume),
            c.trades,
        ]
        last[0] = time.monotonic()

    feed = ReplayBinance(
        symbols=[symbol],
        channels=[L2_BOOK, TRADES, CANDLES],
        callbacks={L2_BOOK: on_book, TRADES: on_trade, CANDLES: on_candle},
        candle_interval="1m",
        candle_closed_only=False,
    )

    async def run() -> None:
        feed.start(asyncio.get_running_loop())
        started = time.monotonic()
        while time.monotonic() - last[0] < QUIET_S or not got["books"]:
            if time.monotonic() - started > LIMIT_S:
                break
            await asyncio.sleep(0.1)
        feed.stop()
        await feed.shutdown()

    asyncio.run(run())
    with open(out, "w", encoding="utf-8") as f:
        json.dump(got, f)


if __name__ == "__main__":
    main(*sys.argv[1:5])
