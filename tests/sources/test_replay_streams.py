"""Each stream of the replay at its own cadence, the ticker streams, stream names as Binance
checks them, microsecond times and long stream URLs, against a real aiohttp client.

Every check compares what the client received with something else it received
(the 100 ms diffs, the trades) or with the recording, never with a figure
written here by hand.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from itertools import islice
from typing import Any

import aiohttp
import pytest

from ccf.config import ReplayConfig, shared_dir
from ccf.sources.replay.exchange import ReplayExchange, running_exchange
from ccf.sources.replay.timeline import Timeline, load_timeline

DATA = shared_dir() / "data" / "binance"
pytestmark = pytest.mark.skipif(
    not (DATA / "spot_btcusdt_20240808.jsonl.gz").exists(),
    reason="shared recordings not found: set CCF_SHARED",
)
LINES = 2500  # about 12 s of each symbol


@pytest.fixture(scope="module")
def timeline(tmp_path_factory: pytest.TempPathFactory) -> Timeline:
    out = tmp_path_factory.mktemp("rec")
    paths = []
    for sym in ("btcusdt", "ethusdt"):
        with gzip.open(DATA / f"spot_{sym}_20240808.jsonl.gz", "rt", encoding="utf-8") as f:
            (out / f"{sym}.jsonl").write_text("".join(islice(f, LINES)))
        paths.append(out / f"{sym}.jsonl")
    return load_timeline(paths)


@asynccontextmanager
async def exchange(
    timeline: Timeline, **kw: Any
) -> AsyncIterator[tuple[ReplayExchange, aiohttp.ClientSession]]:
    cfg = ReplayConfig(port=0, **{"speed": 0, "loop": False, **kw})
    async with running_exchange(cfg, timeline) as ex, aiohttp.ClientSession() as http:
        yield ex, http


async def drain(ex: ReplayExchange, ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """Every combined frame until the replay has finished and the stream went quiet."""
    out = []
    while True:
        try:
            msg = await ws.receive(timeout=0.3)
        except TimeoutError:
            if ex.finished:
                return out
            continue
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        out.append(json.loads(msg.data))


def by_stream(frames: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in frames:
        out[f["stream"]].append(f["data"])
    return out


class LocalBook:
    """Binance's procedure: a snapshot, then diffs applied in order (qty 0 removes a level)."""

    def __init__(self, snapshot: Any) -> None:
        self.bids = {float(p): q for p, q in snapshot.bids}
        self.asks = {float(p): q for p, q in snapshot.asks}
        self.u = snapshot.last_update_id

    def apply(self, d: dict[str, Any]) -> None:
        if d["u"] <= self.u:
            return
        assert d["U"] <= self.u + 1 <= d["u"], (d["U"], self.u)
        for side, levels in ((self.bids, d["b"]), (self.asks, d["a"])):
            for p, q in levels:
                if float(q) == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = q
        self.u = d["u"]

    def top(self, n: int) -> tuple[list[list[str]], list[list[str]]]:
        bids = [[f"{p:.8f}", self.bids[p]] for p in sorted(self.bids, reverse=True)[:n]]
        asks = [[f"{p:.8f}", self.asks[p]] for p in sorted(self.asks)[:n]]
        return bids, asks

    def state(self) -> tuple[int, dict[float, str], dict[float, str]]:
        return self.u, dict(self.bids), dict(self.asks)


async def test_each_depth_stream_at_its_own_cadence(timeline: Timeline) -> None:
    """binance_formats.md 2.1-2.2: @depth@100ms per update; @depth and @depth@1000ms one
    aggregated diff a second; @depthN and @depthN@1000ms the book each second; @depthN@100ms
    the book at each update."""
    streams = [
        "btcusdt@depth@100ms",
        "btcusdt@depth",
        "btcusdt@depth@1000ms",
        "btcusdt@depth5",
        "btcusdt@depth10@1000ms",
        "btcusdt@depth20@100ms",
    ]
    async with exchange(timeline) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/stream?streams={'/'.join(streams)}") as ws:
            got = by_stream(await drain(ex, ws))
    fast, slow = got["btcusdt@depth@100ms"], got["btcusdt@depth"]
    seconds = (fast[-1]["E"] - fast[0]["E"]) / 1000
    assert len(fast) > 8 * seconds  # the recording's 100 ms diffs, every one
    assert got["btcusdt@depth@1000ms"] == slow
    assert seconds - 1 <= len(slow) <= seconds + 2
    assert all(d["E"] % 1000 == 0 for d in slow)
    assert [b["E"] - a["E"] for a, b in zip(slow, slow[1:], strict=False)] == [1000] * (
        len(slow) - 1
    )
    assert [b["U"] for b in slow[1:]] == [a["u"] + 1 for a in slow[:-1]]  # no gap
    # Both books, built by Binance's procedure, agree at every 1000 ms diff's u.
    start = ex.timeline.symbols["btcusdt"].start
    by_fast, by_slow = LocalBook(start), LocalBook(start)
    at_u = {}
    for d in fast:
        by_fast.apply(d)
        at_u[d["u"]] = (by_fast.state(), by_fast.top(20))
    for d in slow:
        by_slow.apply(d)
        assert at_u[d["u"]][0] == by_slow.state()
    # partial depth: the book at that moment, once a second or at each update
    for name, n, per_second in (
        ("btcusdt@depth5", 5, True),
        ("btcusdt@depth10@1000ms", 10, True),
        ("btcusdt@depth20@100ms", 20, False),
    ):
        frames = got[name]
        if per_second:
            # one a second, one at the first frame, and one after the last (which holds no
            # diff when the recording ends right after a second's push)
            assert len(slow) + 1 <= len(frames) <= len(slow) + 2
        else:
            assert len(frames) == len(fast)
        for p in frames[1:]:
            bids, asks = at_u[p["lastUpdateId"]][1]
            assert (p["bids"], p["asks"]) == (bids[:n], asks[:n])


async def test_1000ms_diffs_join_loop_passes_without_a_gap(timeline: Timeline) -> None:
    """Across a loop pass (its resync diff included) the 1000 ms diffs stay contiguous, and a
    book built from them alone equals REST depth at the end."""
    async with exchange(timeline, loop=True, max_passes=2) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/ws/btcusdt@depth@1000ms") as ws:
            slow = []
            while True:
                try:
                    msg = await ws.receive(timeout=0.3)
                except TimeoutError:
                    if ex.finished:
                        break
                    continue
                slow.append(json.loads(msg.data))
        depth = await (await http.get(f"{ex.url}/api/v3/depth?symbol=BTCUSDT&limit=5000")).json()
    assert ex.market.pass_index == 1
    assert [b["U"] for b in slow[1:]] == [a["u"] + 1 for a in slow[:-1]]
    book = LocalBook(ex.timeline.symbols["btcusdt"].start)
    for d in slow:
        book.apply(d)
    bids, asks = book.top(5000)
    assert book.u == depth["lastUpdateId"] and (bids, asks) == (depth["bids"], depth["asks"])


async def test_a_withheld_update_is_a_gap_in_the_1000ms_diffs_too(timeline: Timeline) -> None:
    """skip_update_every withholds a 100 ms diff; the second holding it is withheld from the
    1000 ms stream, so its clients see the gap too (and resync) instead of a silently wrong
    book."""
    async with exchange(timeline, faults={"skip_update_every": 40}) as (ex, http):
        url = f"{ex.ws_url}/stream?streams=btcusdt@depth@100ms/btcusdt@depth"
        async with http.ws_connect(url) as ws:
            got = by_stream(await drain(ex, ws))
    fast, slow = got["btcusdt@depth@100ms"], got["btcusdt@depth"]
    fast_gaps = sum(b["U"] != a["u"] + 1 for a, b in zip(fast, fast[1:], strict=False))
    slow_gaps = sum(b["U"] != a["u"] + 1 for a, b in zip(slow, slow[1:], strict=False))
    assert fast_gaps >= 2 and slow_gaps >= 1
    assert all(b["U"] > a["u"] for a, b in zip(slow, slow[1:], strict=False))


def units(text: str) -> Decimal:
    return Decimal(text)


async def test_ticker_streams_from_the_trades_the_client_received(timeline: Timeline) -> None:
    """@ticker, @miniTicker, @avgPrice and the all-market arrays, each second, equal the
    statistics of the @trade frames that came before them on the same connection."""
    streams = [
        "btcusdt@trade",
        "ethusdt@trade",
        "btcusdt@ticker",
        "btcusdt@miniTicker",
        "btcusdt@avgPrice",
        "btcusdt@bookTicker",
        "!ticker@arr",
        "!miniTicker@arr",
    ]
    async with exchange(timeline) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/stream?streams={'/'.join(streams)}") as ws:
            frames = await drain(ex, ws)
        rest = await (await http.get(f"{ex.url}/api/v3/ticker/24hr?symbol=BTCUSDT")).json()
    trades: dict[str, list[dict[str, Any]]] = defaultdict(list)
    checked: dict[str, int] = defaultdict(int)
    tickers: list[dict[str, Any]] = []
    for f in frames:
        stream, d = f["stream"], f["data"]
        if stream.endswith("@trade"):
            trades[d["s"]].append(d)
            continue
        if stream == "btcusdt@bookTicker":
            continue
        rows = d if stream.startswith("!") else [d]
        for row in rows:
            seen = trades[row["s"]]
            assert row["E"] % 1000 == 0
            vol = sum(units(t["q"]) for t in seen)
            quote = sum((units(t["p"]) * units(t["q"])).quantize(Decimal("1e-8")) for t in seen)
            if row["e"] == "avgPrice":
                assert units(row["w"]) == (quote / vol).quantize(Decimal("1e-8"))
                assert row["T"] == seen[-1]["T"] and row["i"] == "5m"
            else:
                assert units(row["c"]) == units(seen[-1]["p"])
                assert units(row["o"]) == units(seen[0]["p"])
                assert units(row["h"]) == max(units(t["p"]) for t in seen)
                assert units(row["l"]) == min(units(t["p"]) for t in seen)
                assert (units(row["v"]), units(row["q"])) == (vol, quote)
            if row["e"] == "24hrTicker":
                assert (row["F"], row["L"], row["n"]) == (seen[0]["t"], seen[-1]["t"], len(seen))
                assert units(row["Q"]) == units(seen[-1]["q"])
                assert row["C"] - row["O"] == 86_400_000
                change = units(row["c"]) - units(row["o"])
                assert units(row["p"]) == change
                assert units(row["P"]) == (change * 100 / units(row["o"])).quantize(
                    Decimal("0.001")
                )
                if stream == "btcusdt@ticker":
                    tickers.append(row)
            checked[stream] += 1
    assert min(checked.values()) >= 5 and set(checked) == set(streams) - {
        "btcusdt@trade",
        "ethusdt@trade",
        "btcusdt@bookTicker",
    }
    # REST at the end: the same figures as the last second's push, plus what played since
    last = tickers[-1]
    assert rest["count"] >= last["n"] and rest["firstId"] == last["F"]
    assert rest["lastId"] == trades["BTCUSDT"][-1]["t"] and rest["count"] == len(trades["BTCUSDT"])


async def test_stream_names_binance_would_refuse(timeline: Timeline) -> None:
    async with exchange(timeline) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/ws") as ws:
            answers = []
            for i, params in enumerate(
                (
                    ["btcusdt@depht"],  # a typo
                    ["btcusdt@trade", "BTCUSDT@trade"],  # names are lower case
                    ["btcusdt@kline_1m@+08:00"],  # Binance serves it, the replay does not
                    ["xrpxrp@miniTicker"],  # well-formed, a symbol not replayed
                )
            ):
                await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": params, "id": i}))
                answers.append(json.loads((await ws.receive(timeout=5)).data))
            await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 9}))
            listing = json.loads((await ws.receive(timeout=5)).data)
        # not checked in a URL, as on Binance (ccxt opens /ws/0): accepted, and silent
        async with http.ws_connect(f"{ex.ws_url}/ws/0") as quiet:
            await quiet.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
            in_url = json.loads((await quiet.receive(timeout=5)).data)
        assert ex.frames_sent == 0  # nothing was ever sent for the unknown symbol
    invalid = {"code": 2, "msg": "Invalid request: invalid stream"}
    assert answers[0] == {**invalid, "id": 0}
    assert answers[1] == {**invalid, "id": 1}
    assert (
        answers[2]["code"] == 2
        and "does not serve stream btcusdt@kline_1m@+08:00" in (answers[2]["msg"])
    )
    assert answers[3] == {"result": None, "id": 3}  # as on Binance: acknowledged, silent
    assert listing == {"result": ["xrpxrp@miniTicker"], "id": 9}
    assert in_url == {"result": ["0"], "id": 1}


_TIMES = ("E", "T", "O", "C")


def in_micros(frame: dict[str, Any]) -> dict[str, Any]:
    """A millisecond frame as the microsecond connection must receive it (written here from
    web-socket-streams.md: event, trade and ticker-window times, a kline's open and close)."""
    d = dict(frame["data"])
    for key in _TIMES:
        if key in d:
            d[key] *= 1000
    if "k" in d:
        d["k"] = {**d["k"], "t": d["k"]["t"] * 1000, "T": d["k"]["T"] * 1000}
    return {"stream": frame["stream"], "data": d}


async def test_time_unit_microsecond(timeline: Timeline) -> None:
    """?timeUnit=MICROSECOND: every time in microseconds, ids untouched."""
    names = "btcusdt@trade/btcusdt@aggTrade/btcusdt@kline_1s/btcusdt@ticker/btcusdt@depth@100ms"
    async with exchange(timeline) as (ex, http):
        async with (
            http.ws_connect(f"{ex.ws_url}/stream?streams={names}") as ms,
            http.ws_connect(f"{ex.ws_url}/stream?streams={names}&timeUnit=MICROSECOND") as us,
        ):
            a, b = await drain(ex, ms), await drain(ex, us)
        bad = await http.get(f"{ex.url}/stream?streams=btcusdt@trade&timeUnit=NANOSECOND")
    assert bad.status == 400
    # the second connection opened a little later: line it up on its first frame
    first = next(i for i, x in enumerate(a) if in_micros(x) == b[0])
    assert len(a) - first == len(b) > 100
    kinds = set()
    for x, y in zip(a[first:], b, strict=True):
        kinds.add(x["data"]["e"])
        assert in_micros(x) == y
    assert kinds == {"trade", "aggTrade", "kline", "24hrTicker", "depthUpdate"}


async def test_a_long_stream_url_reaches_the_1024_stream_rule(timeline: Timeline) -> None:
    """A /stream?streams= URL of 1025 names (about 20 KB, past aiohttp's 8 KB request line)
    gets Binance's stream-limit answer; 1024 connect."""
    names = [f"s{i:04d}usdt@trade" for i in range(1025)]
    async with exchange(timeline) as (ex, http):
        over = await http.get(f"{ex.url}/stream?streams={'/'.join(names)}")
        async with http.ws_connect(f"{ex.ws_url}/stream?streams={'/'.join(names[:1024])}") as ws:
            await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
            listing = json.loads((await ws.receive(timeout=5)).data)
    assert len("/".join(names)) > 8190
    assert over.status == 400 and (await over.json())["msg"] == (
        "Invalid request: too many streams, the limit is 1024"
    )
    assert listing["result"] == names[:1024]
