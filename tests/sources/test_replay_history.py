"""REST history and the built streams of the replay exchange, against what its websocket sent.

aggTrades, historicalTrades, trades and klines are checked against the
``@trade``, ``@aggTrade`` and ``@kline_*`` frames a real aiohttp client
received from the same replay, on the first recorded files (about 5.8
minutes of BTCUSDT and ETHUSDT), and on a small synthetic recording whose
every candle and aggregate is known by hand.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ccf.config import ReplayConfig, shared_dir
from ccf.sources.replay.exchange import ReplayExchange, running_exchange
from ccf.sources.replay.timeline import Timeline, load_timeline

DATA = shared_dir() / "data"
FILES = [DATA / "binance" / f"spot_{s}_20240808.jsonl.gz" for s in ("btcusdt", "ethusdt")]
ETH_CSV = DATA / "klines" / "ETHUSDT-1m-2026-03-23_2026-04-11.csv.gz"
pytestmark = pytest.mark.skipif(
    not all(f.exists() for f in [*FILES, ETH_CSV]), reason="shared data not found: set CCF_SHARED"
)
KLINE_KEYS = ["t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"]
T0 = 1_700_000_000_000  # synthetic recording: a whole second (and not a whole minute)


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return load_timeline(FILES)


@asynccontextmanager
async def exchange(
    timeline: Timeline, **kw: Any
) -> AsyncIterator[tuple[ReplayExchange, aiohttp.ClientSession]]:
    cfg = ReplayConfig(port=0, **{"speed": 0, "loop": False, **kw})
    async with running_exchange(cfg, timeline) as ex, aiohttp.ClientSession() as http:
        yield ex, http


async def get(http: aiohttp.ClientSession, ex: ReplayExchange, path: str, **params: Any) -> Any:
    r = await http.get(f"{ex.url}/api/v3/{path}", params=params)
    assert r.status == 200, await r.text()
    return await r.json()


async def drain(
    ex: ReplayExchange, ws: aiohttp.ClientWebSocketResponse, *, combined: bool = True
) -> list[tuple[str | None, Any]]:
    """Every frame until the replay has finished and the stream went quiet, as
    (stream, payload); raw streams carry no name, so theirs is None."""
    out: list[tuple[str | None, Any]] = []
    while True:
        try:
            msg = await ws.receive(timeout=0.3)
        except TimeoutError:
            if ex.finished:
                return out
            continue
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        out.append((frame["stream"], frame["data"]) if combined else (None, frame))


async def finished(ex: ReplayExchange) -> None:
    ex.player.go.set()
    while not ex.finished:  # noqa: ASYNC110 - the exchange has no finish event to wait on
        await asyncio.sleep(0.01)


async def pages(
    http: aiohttp.ClientSession, ex: ReplayExchange, path: str, key: str, start: int, **kw: Any
) -> list[dict[str, Any]]:
    """Walk ``path`` by fromId from ``start`` to an empty page; each page starts at the cursor."""
    out: list[dict[str, Any]] = []
    while rows := await get(http, ex, path, fromId=start, limit=1000, **kw):
        assert rows[0][key] == start or not out
        out += rows
        start = rows[-1][key] + 1
    return out


# --- aggregate trades and trades --------------------------------------------------


async def test_aggregates_cover_every_trade_once_across_passes(timeline: Timeline) -> None:
    streams = "btcusdt@trade/btcusdt@aggTrade/btcusdt@kline_1m"
    async with exchange(timeline, loop=True, max_passes=2) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/stream?streams={streams}") as ws:
            frames = await drain(ex, ws)
        trades = [d for s, d in frames if s == "btcusdt@trade"]
        live = [d for s, d in frames if s == "btcusdt@aggTrade"]
        candles = [d["k"] for s, d in frames if s == "btcusdt@kline_1m" and d["k"]["x"]]
        base = timeline.tapes["btcusdt"].agg_base
        rest = await pages(http, ex, "aggTrades", "a", 0, symbol="BTCUSDT")
        assert rest[0]["a"] == base
        rows = await get(
            http, ex, "klines", symbol="BTCUSDT", interval="1m", startTime=candles[0]["t"]
        )
    # minute candles across the pass boundary: live and REST agree, none missing
    assert len(candles) >= 10 and [r[0] for r in rows[: len(candles)]] == [k["t"] for k in candles]
    for k, r in zip(candles, rows, strict=False):
        assert [k["o"], k["h"], k["l"], k["c"], k["v"], k["q"], k["n"], k["V"], k["Q"]] == [
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[7],
            r[8],
            r[9],
            r[10],
        ]
    assert len(trades) == 2 * timeline.tapes["btcusdt"].count
    # the stream sends each aggregate once, with its last trade, as REST shows it
    assert [{k: v for k, v in d.items() if k not in "eEs"} for d in live] == rest
    by_id = {t["t"]: t for t in trades}
    assert all(d["E"] == by_id[d["l"]]["E"] for d in live)  # sent with its last trade
    assert [a["a"] for a in rest] == list(range(base, base + len(rest)))  # on across the passes
    covered = [i for a in rest for i in range(a["f"], a["l"] + 1)]
    assert covered == [t["t"] for t in trades]  # every trade once, in order
    for a in rest:
        members = [by_id[i] for i in range(a["f"], a["l"] + 1)]
        assert {(t["T"], t["p"], t["m"]) for t in members} == {(a["T"], a["p"], a["m"])}
        assert Decimal(a["q"]) == sum(Decimal(t["q"]) for t in members)
        assert len(a["q"].split(".")[1]) == 8 and a["M"] is True
    for a, b in zip(rest, rest[1:], strict=False):  # maximal: neighbours could not have joined
        assert (a["T"], a["p"], a["m"]) != (b["T"], b["p"], b["m"])
    assert len(rest) < len(trades) * 0.8  # real aggregation happened


async def test_trades_history_equals_the_trade_stream_and_weights(timeline: Timeline) -> None:
    async with exchange(timeline) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/ws/ethusdt@trade") as ws:
            sent = [d for _, d in await drain(ex, ws, combined=False)]
        rows = await pages(http, ex, "historicalTrades", "id", sent[0]["t"], symbol="ETHUSDT")
        recent = await get(http, ex, "trades", symbol="ETHUSDT", limit=700)
        latest = await get(http, ex, "historicalTrades", symbol="ETHUSDT")
        used = []
        for path, params in (
            ("depth", {"limit": 10}),
            ("klines", {"interval": "1m"}),
            ("aggTrades", {}),
            ("historicalTrades", {}),
            ("trades", {}),
        ):
            r = await http.get(f"{ex.url}/api/v3/{path}", params={"symbol": "ETHUSDT", **params})
            used.append(int(r.headers["X-MBX-USED-WEIGHT-1M"]))
    assert len(rows) == len(sent) == timeline.tapes["ethusdt"].count
    for row, t in zip(rows, sent, strict=True):
        assert (row["id"], row["price"], row["qty"], row["time"], row["isBuyerMaker"]) == (
            t["t"],
            t["p"],
            t["q"],
            t["T"],
            t["m"],
        )
        exact = Decimal(t["p"]) * Decimal(t["q"])
        assert Decimal(row["quoteQty"]) == exact.quantize(Decimal("1e-8"))
        assert row["isBestMatch"] is True
    assert recent == rows[-700:] and latest == rows[-500:]
    steps = [b - a for a, b in zip(used, used[1:], strict=False)]
    assert steps == [2, 4, 25, 25] or used[-1] < used[0]  # else the minute turned over


async def test_agg_trades_by_time_and_binance_errors(timeline: Timeline) -> None:
    """Binance's rule since 2022-12-05 (CHANGELOG): no one-hour limit on the span; startTime
    alone pages forward, endTime alone gives the newest up to it. ccxt and python-binance send
    exactly endTime = startTime + 1 h."""
    async with exchange(timeline, start="immediately") as (ex, http):
        await finished(ex)
        every = await pages(http, ex, "aggTrades", "a", 0, symbol="ETHUSDT")
        t = every[len(every) // 2]["T"]
        span = await get(http, ex, "aggTrades", symbol="ETHUSDT", startTime=t, endTime=t + 2000)
        hour = await get(
            http, ex, "aggTrades", symbol="ETHUSDT", startTime=t, endTime=t + 3_600_000
        )
        day = await get(http, ex, "aggTrades", symbol="ETHUSDT", startTime=t, endTime=t + 86400000)
        after = await get(http, ex, "aggTrades", symbol="ETHUSDT", startTime=t, limit=1000)
        before = await get(http, ex, "aggTrades", symbol="ETHUSDT", endTime=t, limit=7)
        recent = await get(http, ex, "aggTrades", symbol="ETHUSDT")
        errors = []
        for params in (
            {"fromId": every[0]["a"], "startTime": t},
            {"startTime": "abc"},
            {"limit": "99999999999999999999"},
        ):
            r = await http.get(f"{ex.url}/api/v3/aggTrades", params={"symbol": "ETHUSDT", **params})
            errors.append((r.status, await r.json()))
    assert span == [a for a in every if t <= a["T"] <= t + 2000] and span
    assert hour == day == [a for a in every if a["T"] >= t][:500] and hour
    assert after == [a for a in every if a["T"] >= t][:1000]
    assert before == [a for a in every if a["T"] <= t][-7:]
    assert recent == every[-500:]
    assert errors[0] == (400, {"code": -1128, "msg": "Combination of optional parameters invalid."})
    assert errors[1][0] == 400 and errors[1][1]["code"] == -1100
    assert errors[2] == (400, {"code": -1108, "msg": "Parameter 'limit' overflowed."})


async def test_nothing_from_the_future(timeline: Timeline) -> None:
    """At speed 1 the replay has played a second or so: REST knows no more than that."""
    async with exchange(timeline, speed=1, start="immediately") as (ex, http):
        while ex.market.last_trade_id["btcusdt"] is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        before = ex.market.last_trade_id["btcusdt"]
        assert before is not None
        trades = await get(http, ex, "historicalTrades", symbol="BTCUSDT", limit=1000)
        after = ex.market.last_trade_id["btcusdt"]
        first_id = timeline.tapes["btcusdt"].ids[0]
        assert after is not None and before <= trades[-1]["id"] <= after
        assert [r["id"] for r in trades] == list(range(first_id, trades[-1]["id"] + 1))
        beyond = await get(http, ex, "historicalTrades", symbol="BTCUSDT", fromId=after + 5000)
        assert beyond == []
        aggs = await get(http, ex, "aggTrades", symbol="BTCUSDT", fromId=0, limit=1000)
        assert aggs and aggs[-1]["l"] <= ex.market.last_trade_id["btcusdt"]
        now = ex.market.event_ms
        assert now is not None
        later = await get(http, ex, "aggTrades", symbol="BTCUSDT", startTime=now + 1000)
        assert later == []
        bars = await get(http, ex, "klines", symbol="BTCUSDT", interval="1s", limit=1000)
        assert bars and bars[-1][0] <= ex.market.event_ms
        played = ex.market.last_trade_id["btcusdt"] - first_id + 1
        assert len(trades) <= sum(b[8] for b in bars) <= played
        future = await get(
            http, ex, "klines", symbol="BTCUSDT", interval="1s", startTime=now + 5000
        )
        assert future == []
        assert not ex.finished


async def test_duplicate_pages_fault_repeats_rows(timeline: Timeline) -> None:
    async with exchange(timeline, start="immediately") as (ex, http):
        await finished(ex)
        sym = {"symbol": "BTCUSDT", "limit": 100}
        a1 = await get(http, ex, "aggTrades", fromId=0, **sym)
        t1 = await get(http, ex, "historicalTrades", fromId=timeline.tapes["btcusdt"].ids[0], **sym)
        k1 = await get(http, ex, "klines", interval="1s", startTime=0, **sym)
        ex.set_faults(rest_duplicate_pages=3)
        a2 = await get(http, ex, "aggTrades", fromId=a1[-1]["a"] + 1, **sym)
        t2 = await get(http, ex, "historicalTrades", fromId=t1[-1]["id"] + 1, **sym)
        k2 = await get(http, ex, "klines", interval="1s", startTime=k1[-1][0] + 1000, **sym)
        a3 = await get(http, ex, "aggTrades", fromId=a2[-1]["a"] + 1, **sym)
        state = ex.state()
    assert a2[:50] == a1[50:] and a2[50]["a"] == a1[-1]["a"] + 1
    assert t2[:50] == t1[50:] and t2[50]["id"] == t1[-1]["id"] + 1
    assert k2[:50] == k1[50:] and k2[50][0] == k1[-1][0] + 1000
    assert a3[0]["a"] == a2[-1]["a"] + 1  # the fault is spent
    assert state["fault_counts"] == {"rest_duplicate_pages": 3}
    assert state["faults"]["rest_duplicate_pages"] == 0


# --- klines ----------------------------------------------------------------------


async def test_kline_streams_equal_rest_klines(timeline: Timeline) -> None:
    """Closed candles received live equal REST's, field for field; ETH's minutes come from a CSV."""
    streams = ["btcusdt@trade"] + [
        f"{s}@kline_{iv}" for s in ("btcusdt", "ethusdt") for iv in ("1s", "1m", "3m")
    ]
    async with exchange(timeline, klines=(ETH_CSV,)) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/stream?streams=" + "/".join(streams)) as ws:
            frames = await drain(ex, ws)
        by_stream: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for name, d in frames:
            by_stream[name].append(d)
        rest: dict[str, dict[int, list[Any]]] = {}
        for name in streams[1:]:
            sym, iv = name.split("@kline_")
            first = next(d["k"]["t"] for d in by_stream[name] if d["k"]["x"])
            rows = await get(
                http, ex, "klines", symbol=sym.upper(), interval=iv, startTime=first, limit=1000
            )
            rest[name] = {r[0]: r for r in rows}
    trades = by_stream["btcusdt@trade"]
    for name in streams[1:]:
        sym, iv = name.split("@kline_")
        iv_ms = {"1s": 1000, "1m": 60_000, "3m": 180_000}[iv]
        got = by_stream[name]
        assert got and all(
            list(d) == ["e", "E", "s", "k"] and list(d["k"]) == KLINE_KEYS for d in got
        )
        closed = [d["k"] for d in got if d["k"]["x"]]
        assert closed, name
        opens = [k["t"] for k in closed]
        assert opens == list(range(opens[0], opens[-1] + 1, iv_ms))  # every interval, once
        for d in got:
            k = d["k"]
            assert (d["e"], d["s"], k["s"], k["i"], k["B"]) == (
                "kline",
                sym.upper(),
                sym.upper(),
                iv,
                "0",
            )
            assert k["T"] == k["t"] + iv_ms - 1 and (d["E"] > k["T"]) == k["x"]
        for k in closed:
            row = rest[name][k["t"]]
            mine = [
                k["t"],
                k["o"],
                k["h"],
                k["l"],
                k["c"],
                k["v"],
                k["T"],
                k["q"],
                k["n"],
                k["V"],
                k["Q"],
            ]
            assert mine == row[:11], (name, k, row)
        updates = [d for d in got if not d["k"]["x"]]
        if sym == "ethusdt" and iv != "1s":  # from the CSV: one closing frame per candle
            assert not updates and all(k["n"] == 0 and k["f"] == k["L"] == -1 for k in closed)
            continue
        push, lag = 1000 if iv == "1s" else 2000, timeline.tapes[sym].lag_ms
        slots = [(d["E"] - lag) // push for d in updates]  # one update per push period at most
        assert updates and slots == sorted(set(slots))
        last_n: dict[int, int] = {}
        for d in got:  # an open candle only grows until it closes
            k = d["k"]
            assert k["n"] >= last_n.get(k["t"], 0)
            last_n[k["t"]] = k["n"]
        empty = [(a, b) for a, b in zip(closed, closed[1:], strict=False) if b["n"] == 0]
        for a, b in empty:  # an interval without trades: the previous close, nothing traded
            assert b["o"] == b["h"] == b["l"] == b["c"] == a["c"] and b["v"] == "0.00000000"
            assert b["f"] == b["L"] == -1
        if name == "ethusdt@kline_1s":
            assert len(empty) >= 10  # the recording has quiet seconds
        if sym == "btcusdt":
            ids: dict[int, list[int]] = defaultdict(list)
            for t in trades:
                ids[t["T"] // iv_ms * iv_ms].append(t["t"])
            for k in closed:
                want = (min(ids[k["t"]]), max(ids[k["t"]])) if k["n"] else (-1, -1)
                assert (k["f"], k["L"]) == want
    # the CSV's minutes begin at the replay's first minute, with the file's values
    first_csv = by_stream["ethusdt@kline_1m"][0]["k"]
    with gzip.open(ETH_CSV, "rt") as f:
        head = list(islice(f, 2))[1].split(",")
    assert [first_csv["o"], first_csv["h"], first_csv["l"], first_csv["c"]] == [
        f"{Decimal(x):.8f}" for x in head[1:5]
    ]


def synthetic(path: Path) -> Path:
    """ABCUSDT: depth every 100 ms for 7.5 s; trades that test each aggregation rule."""
    lines = [
        {
            "lastUpdateId": 100,
            "bids": [["99.00000000", "1.00000000"]],
            "asks": [["101.00000000", "1.00000000"]],
        }
    ]
    trades = [  # id, ms after T0, price, qty, buyer is maker
        (1, 200, "100.00000000", "0.10000000", True),
        (2, 200, "100.00000000", "0.20000000", True),  # joins 1
        (3, 200, "100.50000000", "0.30000000", True),  # another price
        (4, 200, "100.50000000", "0.40000000", False),  # another side
        (5, 300, "100.50000000", "0.50000000", False),  # another time
        (7, 300, "100.50000000", "0.60000000", False),  # id 6 missing: not consecutive
        (8, 4500, "101.00000000", "1.00000000", False),  # after three quiet seconds
        (9, 5100, "99.12345678", "0.00000001", True),
    ]
    events: list[tuple[int, dict[str, Any]]] = []
    for n in range(76):
        u = 101 + n
        diff = {
            "e": "depthUpdate",
            "E": T0 + n * 100,
            "s": "ABCUSDT",
            "U": u,
            "u": u,
            "b": [],
            "a": [],
        }
        events.append((T0 + n * 100, {"stream": "abcusdt@depth@100ms", "data": diff}))
    for tid, dt, p, q, m in trades:
        trade = {
            "e": "trade",
            "E": T0 + dt + 1,
            "s": "ABCUSDT",
            "t": tid,
            "p": p,
            "q": q,
            "T": T0 + dt,
            "m": m,
            "M": True,
        }
        events.append((T0 + dt + 1, {"stream": "abcusdt@trade", "data": trade}))
    events.sort(key=lambda e: e[0])
    text = [f"{T0 * 10**6} {json.dumps(lines[0])}"] + [
        f"{t * 10**6} {json.dumps(o)}" for t, o in events
    ]
    path.write_text("\n".join(text) + "\n")
    return path


async def test_synthetic_aggregates_and_empty_candles(tmp_path: Path) -> None:
    tl = load_timeline([synthetic(tmp_path / "abc.jsonl")])
    streams = "abcusdt@aggTrade/abcusdt@kline_1s"
    async with exchange(tl, rebase_time=False) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/stream?streams={streams}") as ws:
            frames = await drain(ex, ws)
        aggs = await get(http, ex, "aggTrades", symbol="ABCUSDT", fromId=0)
        rows = await get(http, ex, "klines", symbol="ABCUSDT", interval="1s", startTime=T0)
    assert [(a["a"], a["f"], a["l"], a["q"]) for a in aggs] == [
        (0, 1, 2, "0.30000000"),
        (1, 3, 3, "0.30000000"),
        (2, 4, 4, "0.40000000"),
        (3, 5, 5, "0.50000000"),
        (4, 7, 7, "0.60000000"),
        (5, 8, 8, "1.00000000"),
        (6, 9, 9, "0.00000001"),
    ]
    live = [d for s, d in frames if s == "abcusdt@aggTrade"]
    assert [{k: v for k, v in d.items() if k not in "eEs"} for d in live] == aggs
    assert [d["E"] for d in live] == [a["T"] + 1 for a in aggs]
    closed = [d["k"] for s, d in frames if s == "abcusdt@kline_1s" and d["k"]["x"]]
    got = [
        [k[f] for f in ("t", "o", "h", "l", "c", "v", "n", "q", "V", "Q", "f", "L")] for k in closed
    ]
    z = "0.00000000"
    # fmt: off
    want = [  # open, o, h, l, c, v, n, q, V (taker buy), Q, f, L
        [T0, "100.00000000", "100.50000000", "100.00000000", "100.50000000", "2.10000000", 6,
         "210.90000000", "1.50000000", "150.75000000", 1, 7],
        *([T0 + s, *["100.50000000"] * 4, z, 0, z, z, z, -1, -1] for s in (1000, 2000, 3000)),
        [T0 + 4000, *["101.00000000"] * 4, "1.00000000", 1, "101.00000000", "1.00000000",
         "101.00000000", 8, 8],
        [T0 + 5000, *["99.12345678"] * 4, "0.00000001", 1, "0.00000099", z, z, 9, 9],
        [T0 + 6000, *["99.12345678"] * 4, z, 0, z, z, z, -1, -1],
    ]
    # fmt: on
    assert got == want
    assert [[*r[:6], r[8], r[7], r[9], r[10]] for r in rows[:7]] == [k[:10] for k in want]
    assert rows[-1][0] == T0 + 7000  # the candle open at the replay's last event, no further
