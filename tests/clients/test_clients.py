"""Binance clients nobody here wrote, unpatched, against the replay exchange.

ccxt (``ccxt.pro.binance``, urls overridden), python-binance (``AsyncClient``,
``BinanceSocketManager``, ``DepthCacheManager``; URLs set on the instances)
and cryptofeed 2.4.1 (over TLS, its endpoints named in a subclass, in its
own process: see ``cryptofeed_client.py``) each build a book, receive trades
and read candles and tickers. The checks:

- their book equals the replay's REST depth at the same ``lastUpdateId``
  (the replay has finished, so the book stands still at the last ``u``);
- their trades equal the recording's, trade for trade (aggregates: their
  quantity is the recorded trades' ``f..l``), with times moved by the
  replay's one rebase shift;
- their candles equal the replay's klines.

docs/clients.md is the matrix of these calls and their results.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ccf.config import ReplayConfig, shared_dir
from ccf.sources.replay.exchange import ReplayExchange, running_exchange
from ccf.sources.replay.tls import client_context

DATA = shared_dir() / "data" / "binance"
pytestmark = [
    pytest.mark.slow,  # about 45 s: each client syncs against a replay at 3x
    pytest.mark.skipif(
        not (DATA / "spot_btcusdt_20240808.jsonl.gz").exists(),
        reason="shared recordings not found: set CCF_SHARED",
    ),
]
LINES = 2500  # about 12 s of BTCUSDT
SPEED = 3.0  # played in about 4 s: clients sync their book while diffs stream
TOP = 100  # levels compared (clients fetch 1000-level snapshots; deeper ones stay unknown)
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "btcusdt.jsonl"
    with gzip.open(DATA / "spot_btcusdt_20240808.jsonl.gz", "rt", encoding="utf-8") as f:
        path.write_text("".join(islice(f, LINES)))
    return path


def recorded_trades(path: Path) -> dict[int, dict[str, Any]]:
    """The recording's own trade frames by id (``t``), read from the file itself."""
    out = {}
    for line in path.read_text().splitlines():
        frame = json.loads(line.split(" ", 1)[1])
        if frame.get("stream", "").endswith("@trade"):
            out[frame["data"]["t"]] = frame["data"]
    return out


@pytest.fixture
async def replay(recording: Path, tmp_path: Path) -> AsyncIterator[ReplayExchange]:
    cfg = ReplayConfig(
        port=0, files=(recording,), speed=SPEED, loop=False, tls_dir=tmp_path / "tls"
    )
    async with running_exchange(cfg) as ex:
        yield ex


async def rest(ex: ReplayExchange, path: str, ssl: Any = None, **params: Any) -> Any:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl)) as http:
        r = await http.get(f"{ex.url}{path}", params=params)
        assert r.status == 200, await r.text()
        return await r.json()


async def until(check: Any, what: str, timeout_s: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def floats(levels: list[list[Any]]) -> list[list[float]]:
    return [[float(p), float(q)] for p, q, *_ in levels]


def assert_trades_match(
    got: list[tuple[int, float, float, str, int]], rec: dict[int, dict[str, Any]], shift_ms: int
) -> None:
    """(id, price, qty, side, time ms) as a client parsed them, against the recording."""
    ids = [g[0] for g in got]
    assert len(ids) > 300 and ids == list(range(ids[0], ids[0] + len(ids)))  # none lost
    for tid, price, qty, side, t_ms in got:
        r = rec[tid]
        assert (price, qty) == (float(r["p"]), float(r["q"]))
        assert side == ("sell" if r["m"] else "buy") and t_ms == r["T"] + shift_ms


async def test_ccxt_pro(replay: ReplayExchange, recording: Path) -> None:
    import ccxt.pro as ccxtpro

    ex = replay
    client = ccxtpro.binance({"options": {"fetchMarkets": {"types": ["spot"]}}})
    client.urls["api"]["public"] = f"{ex.url}/api/v3"
    client.urls["api"]["ws"]["spot"] = f"{ex.ws_url}/ws"
    live_book = ex.market.books["btcusdt"]  # the exchange's own book: its id moves on
    state: dict[str, Any] = {"trades": [], "ticker": None}

    async def watch_book() -> None:
        while True:
            state["book"] = await client.watch_order_book("BTC/USDT")

    async def watch_trades() -> None:
        while True:
            state["trades"] += await client.watch_trades("BTC/USDT")

    async def watch_ticker() -> None:
        while True:
            state["ticker"] = await client.watch_ticker("BTC/USDT")

    try:
        await client.load_markets()
        tasks = [asyncio.create_task(f()) for f in (watch_book, watch_trades, watch_ticker)]
        await until(lambda: ex.finished, "the replay to finish")
        await until(
            lambda: state.get("book", {}).get("nonce") == live_book.last_update_id, "ccxt's book"
        )
        last_id = str(ex.market.last_trade_id["btcusdt"])
        await until(lambda: state["trades"] and state["trades"][-1]["id"] == last_id, "trades")
        for t in tasks:
            t.cancel()
        depth = await rest(ex, "/api/v3/depth", symbol="BTCUSDT", limit=TOP)
        klines = await rest(ex, "/api/v3/klines", symbol="BTCUSDT", interval="1s", limit=1000)
        ohlcv = await client.fetch_ohlcv("BTC/USDT", "1s", limit=1000)
        since = state["trades"][0]["timestamp"]
        fetched = await client.fetch_trades("BTC/USDT", since=since, limit=1000)  # aggTrades, 1 h
        ticker = await client.fetch_ticker("BTC/USDT")
        day = await rest(ex, "/api/v3/ticker/24hr", symbol="BTCUSDT")
        snapshot = await client.fetch_order_book("BTC/USDT", limit=TOP)
    finally:
        await client.close()
    book = state["book"]
    assert book["nonce"] == depth["lastUpdateId"]
    assert (book["bids"][:TOP], book["asks"][:TOP]) == (
        floats(depth["bids"]),
        floats(depth["asks"]),
    )
    assert snapshot["nonce"] == depth["lastUpdateId"] and snapshot["bids"] == book["bids"][:TOP]
    got = [
        (int(t["id"]), t["price"], t["amount"], t["side"], t["timestamp"]) for t in state["trades"]
    ]
    assert_trades_match(got, recorded_trades(recording), ex.time_shift_ms)
    assert ohlcv == [[k[0], *map(float, k[1:6])] for k in klines] and len(ohlcv) > 5
    aggs = [t for t in fetched if t["timestamp"] >= since]
    assert aggs and sum(t["amount"] for t in aggs) == pytest.approx(
        sum(t["amount"] for t in state["trades"] if t["timestamp"] >= since)
    )
    assert (ticker["last"], ticker["baseVolume"]) == (float(day["lastPrice"]), float(day["volume"]))
    streamed = state["ticker"]
    assert streamed is not None and streamed["last"] == ticker["last"]


async def test_python_binance(replay: ReplayExchange, recording: Path) -> None:
    from binance import AsyncClient, BinanceSocketManager, DepthCacheManager

    ex = replay
    client = AsyncClient()
    client.API_URL = f"{ex.url}/api"
    client.MARGIN_API_URL = f"{ex.url}/sapi"
    sockets = BinanceSocketManager(client)
    sockets.STREAM_URL = f"{ex.ws_url}/"
    trades: list[dict[str, Any]] = []
    candles: list[dict[str, Any]] = []

    async def trade_socket() -> None:
        async with sockets.trade_socket("BTCUSDT") as s:
            while True:
                trades.append(await s.recv())

    async def kline_socket() -> None:
        async with sockets.kline_socket("BTCUSDT", interval="1s") as s:
            while True:
                candles.append(await s.recv())

    try:
        tasks = [asyncio.create_task(f()) for f in (trade_socket, kline_socket)]
        # python-binance's own book: a 1000-level snapshot, then the 1000 ms @depth diffs
        async with DepthCacheManager(client, "BTCUSDT", bm=sockets, limit=1000) as dcm:
            while True:
                cache = await dcm.recv()
                book = ex.market.books["btcusdt"]
                if ex.finished and dcm._last_update_id == book.last_update_id:  # noqa: SLF001
                    break
            book_u = dcm._last_update_id  # noqa: SLF001 - its only record of the id
        last_id = ex.market.last_trade_id["btcusdt"]
        await until(lambda: trades and trades[-1]["t"] == last_id, "trades")
        for t in tasks:
            t.cancel()
        depth = await client.get_order_book(symbol="BTCUSDT", limit=TOP)
        klines = await client.get_klines(symbol="BTCUSDT", interval="1s", limit=1000)
        ui = await client.get_ui_klines(symbol="BTCUSDT", interval="1s", limit=1000)
        start = trades[0]["T"]
        aggs = await client.get_aggregate_trades(
            symbol="BTCUSDT", startTime=start, endTime=start + 3_600_000
        )
        ticker = await client.get_ticker(symbol="BTCUSDT")
        price = await client.get_symbol_ticker(symbol="BTCUSDT")
        best = await client.get_orderbook_ticker(symbol="BTCUSDT")
        avg = await client.get_avg_price(symbol="BTCUSDT")
        status = await client.get_system_status()
    finally:
        await client.close_connection()
    assert book_u == depth["lastUpdateId"]
    assert (cache.get_bids()[:TOP], cache.get_asks()[:TOP]) == (
        floats(depth["bids"]),
        floats(depth["asks"]),
    )
    got = [
        (t["t"], float(t["p"]), float(t["q"]), "sell" if t["m"] else "buy", t["T"]) for t in trades
    ]
    assert_trades_match(got, recorded_trades(recording), ex.time_shift_ms)
    closed = {c["k"]["t"]: c["k"] for c in candles if c["k"]["x"]}
    by_open = {k[0]: k for k in klines}
    assert len(closed) > 5 and ui == klines
    for t, k in closed.items():
        row = by_open[t]
        assert [k["o"], k["h"], k["l"], k["c"], k["v"], k["n"]] == [*row[1:6], row[8]]
    assert aggs and aggs[0]["T"] >= start and len(aggs) <= 500
    in_span = [t for t in trades if t["T"] >= start]
    assert sum(Decimal(a["q"]) for a in aggs) == sum(Decimal(t["q"]) for t in in_span)
    assert ticker["lastPrice"] == price["price"] == trades[-1]["p"]
    assert [best["bidPrice"], best["bidQty"]] == depth["bids"][0]
    assert avg["mins"] == 5 and status == {"status": 0, "msg": "normal"}


async def test_cryptofeed_over_tls(recording: Path, tmp_path: Path) -> None:
    cfg = ReplayConfig(
        port=0, files=(recording,), speed=SPEED, loop=False, tls=True, tls_dir=tmp_path / "tls"
    )
    out = tmp_path / "cryptofeed.json"
    async with running_exchange(cfg) as ex:
        assert ex.tls is not None and ex.ws_url.startswith("wss://")
        trust = {"SSL_CERT_FILE": str(ex.tls.ca), "REQUESTS_CA_BUNDLE": str(ex.tls.ca)}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "cryptofeed_client.py"),
            ex.ws_url,
            ex.url,
            "BTC-USDT",
            str(out),
            env={**os.environ, **trust},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        log = (await asyncio.wait_for(proc.communicate(), 120))[0].decode()
        assert proc.returncode == 0, log[-3000:]
        ctx = client_context(ex.tls)
        depth = await rest(ex, "/api/v3/depth", ctx, symbol="BTCUSDT", limit=TOP)
        aggs = await rest(ex, "/api/v3/aggTrades", ctx, symbol="BTCUSDT", limit=1000)
        klines = await rest(ex, "/api/v3/klines", ctx, symbol="BTCUSDT", interval="1m")
    got = json.loads(out.read_text())
    book = got["book"]
    assert book["seq"] == depth["lastUpdateId"]
    bids = sorted(floats(book["bids"]), reverse=True)[:TOP]
    asks = sorted(floats(book["asks"]))[:TOP]
    assert (bids, asks) == (floats(depth["bids"]), floats(depth["asks"]))
    # TRADES: cryptofeed 2.4.1 reads @aggTrade; each aggregate is recorded trades f..l
    rec = recorded_trades(recording)
    by_id = {a["a"]: a for a in aggs}
    ids = [int(t[0]) for t in got["trades"]]
    assert len(ids) > 100 and ids == list(range(ids[0], ids[0] + len(ids)))
    for tid, price, qty, side, ts in got["trades"]:
        a = by_id[int(tid)]
        parts = [rec[i] for i in range(a["f"], a["l"] + 1)]
        assert Decimal(qty) == sum(Decimal(r["q"]) for r in parts)
        assert Decimal(price) == Decimal(parts[0]["p"]) and side == (
            "sell" if parts[0]["m"] else "buy"
        )
        assert round(ts * 1000) == parts[0]["T"] + ex.time_shift_ms
    by_open = {k[0]: k for k in klines}
    assert got["candles"]
    prices = {Decimal(r["p"]) for r in rec.values()}
    for start, o, h, lo, c, v, n in got["candles"].values():
        row = by_open[round(start * 1000)]
        # an open candle's last update (every 2 s) may lag the final REST row by its last trades
        assert Decimal(o) == Decimal(row[1]) and Decimal(v) <= Decimal(row[5]) and n <= row[8]
        assert Decimal(row[3]) <= Decimal(lo) <= Decimal(h) <= Decimal(row[2])
        assert Decimal(c) in prices
