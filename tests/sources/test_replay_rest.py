"""The replay's REST tickers, avgPrice, uiKlines, 1M klines, system status and its errors,
checked against its own trades, depth and klines endpoints (a real aiohttp client)."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ccf.config import ReplayConfig, shared_dir
from ccf.sources.replay.exchange import ReplayExchange, running_exchange
from ccf.sources.replay.timeline import load_timeline

DATA = shared_dir() / "data" / "binance"
pytestmark = pytest.mark.skipif(
    not (DATA / "spot_btcusdt_20240808.jsonl.gz").exists(),
    reason="shared recordings not found: set CCF_SHARED",
)
E8 = Decimal("1e-8")


@pytest.fixture
async def played(tmp_path: Path) -> AsyncIterator[tuple[ReplayExchange, aiohttp.ClientSession]]:
    """Both symbols' first ~12 s, played to the end (so REST is stable)."""
    paths = []
    for sym in ("btcusdt", "ethusdt"):
        with gzip.open(DATA / f"spot_{sym}_20240808.jsonl.gz", "rt", encoding="utf-8") as f:
            (tmp_path / f"{sym}.jsonl").write_text("".join(islice(f, 2500)))
        paths.append(tmp_path / f"{sym}.jsonl")
    cfg = ReplayConfig(port=0, speed=0, loop=False, start="immediately")
    async with running_exchange(cfg, load_timeline(paths)) as ex, aiohttp.ClientSession() as http:
        ex.player.go.set()
        while not ex.finished:  # noqa: ASYNC110 - no finish event to wait on
            await asyncio.sleep(0.02)
        yield ex, http


async def call(
    http: aiohttp.ClientSession, ex: ReplayExchange, path: str, **params: Any
) -> tuple[int, Any, int]:
    """(status, body, weight charged by this call)."""
    r = await http.get(f"{ex.url}{path}", params=params)
    used = int(r.headers.get("X-MBX-USED-WEIGHT-1M", "0"))
    return r.status, await r.json(), used


async def all_trades(http: aiohttp.ClientSession, ex: ReplayExchange, sym: str) -> list[dict]:
    rows: list[dict] = []
    from_id = 0
    while True:
        page = await (
            await http.get(
                f"{ex.url}/api/v3/historicalTrades",
                params={"symbol": sym, "fromId": from_id, "limit": 1000},
            )
        ).json()
        rows += page
        if len(page) < 1000:
            return rows
        from_id = page[-1]["id"] + 1


async def test_tickers_equal_the_trades_and_the_book(played: Any) -> None:
    ex, http = played
    trades = await all_trades(http, ex, "BTCUSDT")
    _, depth, _ = await call(http, ex, "/api/v3/depth", symbol="BTCUSDT", limit=5)
    _, day, _ = await call(http, ex, "/api/v3/ticker/24hr", symbol="BTCUSDT")
    _, mini, _ = await call(http, ex, "/api/v3/ticker/24hr", symbol="BTCUSDT", type="MINI")
    _, both, _ = await call(http, ex, "/api/v3/ticker/24hr", symbols='["BTCUSDT","ETHUSDT"]')
    _, every, _ = await call(http, ex, "/api/v3/ticker/24hr")
    _, price, _ = await call(http, ex, "/api/v3/ticker/price", symbol="BTCUSDT")
    _, prices, _ = await call(http, ex, "/api/v3/ticker/price")
    _, book, _ = await call(http, ex, "/api/v3/ticker/bookTicker", symbol="BTCUSDT")
    _, avg, _ = await call(http, ex, "/api/v3/avgPrice", symbol="BTCUSDT")
    vol = sum(Decimal(t["qty"]) for t in trades)
    quote = sum(Decimal(t["quoteQty"]) for t in trades)
    assert (day["firstId"], day["lastId"], day["count"]) == (
        trades[0]["id"],
        trades[-1]["id"],
        len(trades),
    )
    assert Decimal(day["volume"]) == vol and Decimal(day["quoteVolume"]) == quote
    assert day["openPrice"] == trades[0]["price"] and day["lastPrice"] == trades[-1]["price"]
    assert day["lastQty"] == trades[-1]["qty"]
    assert Decimal(day["highPrice"]) == max(Decimal(t["price"]) for t in trades)
    assert Decimal(day["lowPrice"]) == min(Decimal(t["price"]) for t in trades)
    assert Decimal(day["weightedAvgPrice"]) == (quote / vol).quantize(E8)
    assert day["closeTime"] - day["openTime"] == 86_400_000
    assert [day["bidPrice"], day["bidQty"]] == depth["bids"][0]
    assert [day["askPrice"], day["askQty"]] == depth["asks"][0]
    assert mini == {k: day[k] for k in mini} | {"symbol": "BTCUSDT"} and "bidPrice" not in mini
    assert both[0] == day and [t["symbol"] for t in every] == ["BTCUSDT", "ETHUSDT"]
    assert price == {"symbol": "BTCUSDT", "price": trades[-1]["price"]}
    assert prices[0] == price and len(prices) == 2
    assert book == {
        "symbol": "BTCUSDT",
        "bidPrice": depth["bids"][0][0],
        "bidQty": depth["bids"][0][1],
        "askPrice": depth["asks"][0][0],
        "askQty": depth["asks"][0][1],
    }
    recent = [t for t in trades if t["time"] >= avg["closeTime"] - 300_000]
    avg_q = sum(Decimal(t["quoteQty"]) for t in recent) / sum(Decimal(t["qty"]) for t in recent)
    assert avg == {"mins": 5, "price": str(avg_q.quantize(E8)), "closeTime": trades[-1]["time"]}


async def test_ticker_weights_and_errors(played: Any) -> None:
    ex, http = played
    weights, errors = [], []
    for path, params in (
        ("/api/v3/ticker/24hr", {"symbol": "BTCUSDT"}),
        ("/api/v3/ticker/24hr", {}),
        ("/api/v3/ticker/24hr", {"symbols": '["BTCUSDT"]'}),
        ("/api/v3/ticker/price", {"symbol": "BTCUSDT"}),
        ("/api/v3/ticker/price", {}),
        ("/api/v3/ticker/bookTicker", {}),
        ("/api/v3/avgPrice", {"symbol": "ETHUSDT"}),
        ("/api/v3/uiKlines", {"symbol": "ETHUSDT", "interval": "1m"}),
    ):
        before = ex.limiter.used
        status, _, used = await call(http, ex, path, **params)
        weights.append((status, used - before))
    for params in (
        {"symbol": "NOPEUSDT"},
        {"symbol": "BTCUSDT", "symbols": '["BTCUSDT"]'},
        {"symbols": '["BTCUSDT","BTCUSDT"]'},
        {"symbols": "BTCUSDT"},
        {"symbol": "BTCUSDT", "type": "HALF"},
    ):
        status, body, _ = await call(http, ex, "/api/v3/ticker/24hr", **params)
        errors.append((status, body["code"]))
    assert weights == [
        (200, 2),
        (200, 80),
        (200, 2),
        (200, 2),
        (200, 4),
        (200, 4),
        (200, 2),
        (200, 2),
    ]
    assert errors == [(400, -1121), (400, -1128), (400, -1151), (400, -1100), (400, -1139)]


async def test_ui_klines_and_monthly_klines(played: Any) -> None:
    ex, http = played
    _, klines, _ = await call(http, ex, "/api/v3/klines", symbol="BTCUSDT", interval="1s")
    _, ui, _ = await call(http, ex, "/api/v3/uiKlines", symbol="BTCUSDT", interval="1s")
    _, days, _ = await call(http, ex, "/api/v3/klines", symbol="BTCUSDT", interval="1d")
    _, months, _ = await call(http, ex, "/api/v3/klines", symbol="BTCUSDT", interval="1M")
    after, _, _ = await call(
        http, ex, "/api/v3/klines", symbol="BTCUSDT", interval="1M", startTime=months[-1][6] + 1
    )
    status, tz, _ = await call(
        http, ex, "/api/v3/klines", symbol="BTCUSDT", interval="1M", timeZone="8"
    )
    assert ui == klines and len(klines) > 5
    assert len(months) == 1 and len(days) == 1  # a few seconds: one day, one month
    opened = datetime.fromtimestamp(months[0][0] / 1000, tz=UTC)
    assert (opened.day, opened.hour, opened.minute) == (1, 0, 0)
    closes = datetime.fromtimestamp((months[0][6] + 1) / 1000, tz=UTC)
    assert closes.day == 1 and (closes.month - opened.month) % 12 == 1
    assert months[0][1:6] == days[0][1:6] and months[0][7:] == days[0][7:]
    assert after == 200 and (status, tz["code"]) == (400, -1100)


async def test_system_status_json_404s_and_overflowing_limits(played: Any) -> None:
    ex, http = played
    status = await (await http.get(f"{ex.url}/sapi/v1/system/status")).json()
    answers = []
    for method, path in (
        ("GET", "/api/v3/nope"),
        ("GET", "/nope"),
        ("POST", "/api/v3/depth?symbol=BTCUSDT"),
        ("GET", "/api/v3/depth?symbol=BTCUSDT&limit=1e20"),
        ("GET", "/api/v3/depth?symbol=BTCUSDT&limit=99999999999999999999"),
        ("GET", "/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=99999999999999999999"),
    ):
        r = await http.request(method, f"{ex.url}{path}")
        answers.append((r.status, r.content_type, await r.json()))
    assert status == {"status": 0, "msg": "normal"}
    unsupported = {"code": -1020, "msg": "This operation is not supported."}
    assert answers[0] == (404, "application/json", unsupported)
    assert answers[1] == (404, "application/json", unsupported)
    assert answers[2] == (405, "application/json", unsupported)
    assert answers[3][:2] == (400, "application/json") and answers[3][2]["code"] == -1100
    assert answers[4] == (
        400,
        "application/json",
        {"code": -1108, "msg": "Parameter 'limit' overflowed."},
    )
    assert answers[5][2] == {"code": -1108, "msg": "Parameter 'startTime' overflowed."}
