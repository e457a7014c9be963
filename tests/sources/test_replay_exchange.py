"""The replay exchange against real clients (aiohttp), on short slices of the real recordings."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ccf.config import ReplayConfig, shared_dir
from ccf.sources.replay.clock import rebase_shift_ms
from ccf.sources.replay.exchange import ReplayExchange, running_exchange
from ccf.sources.replay.frames import Frame, Resync
from ccf.sources.replay.market import Market
from ccf.sources.replay.stamps import DEPTH_KEYS, TRADE_KEYS, find_spans, shift_spans
from ccf.sources.replay.timeline import Timeline, load_timeline
from ccf.sources.replay.wire import DEPTH, TRADE

DATA = shared_dir() / "data" / "binance"
pytestmark = pytest.mark.skipif(
    not (DATA / "spot_btcusdt_20240808.jsonl.gz").exists(),
    reason="shared recordings not found: set CCF_SHARED",
)
LINES = 1200  # about 11 s of both symbols, ~100 diffs each


def _head(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return list(islice(f, n))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    """btcusdt as two consecutive files (like 0808 + 0809), ethusdt as one."""
    out = tmp_path_factory.mktemp("rec")
    btc = _head(DATA / "spot_btcusdt_20240808.jsonl.gz", LINES)
    eth = _head(DATA / "spot_ethusdt_20240808.jsonl.gz", LINES)
    parts = {"btc_a.jsonl": btc[:500], "btc_b.jsonl": btc[500:], "eth.jsonl": eth}
    for name, lines in parts.items():
        (out / name).write_text("".join(lines))
    return tuple(out / name for name in parts)


@pytest.fixture(scope="module")
def timeline(files: tuple[Path, ...]) -> Timeline:
    return load_timeline(files)


@asynccontextmanager
async def exchange(
    files: tuple[Path, ...], timeline: Timeline, **kw: Any
) -> AsyncIterator[tuple[ReplayExchange, aiohttp.ClientSession]]:
    cfg = ReplayConfig(port=0, files=files, **{"speed": 0, **kw})
    async with running_exchange(cfg, timeline) as ex, aiohttp.ClientSession() as http:
        yield ex, http


async def texts(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[str]:
    out = []
    while len(out) < n:
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        out.append(msg.data)
    return out


async def reply(ws: aiohttp.ClientWebSocketResponse, req: dict[str, Any]) -> dict[str, Any]:
    """Send a control message and return its answer, skipping stream frames."""
    await ws.send_str(json.dumps(req))
    while True:
        obj = json.loads((await texts(ws, 1))[0])
        if "result" in obj or "code" in obj:
            return obj


async def closed(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """Read until the server ends the connection; return that last message."""
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return msg


# --- timeline ----------------------------------------------------------------


def test_timeline_starts_at_snapshot_and_merges_by_event_time(timeline: Timeline) -> None:
    assert set(timeline.symbols) == {"btcusdt", "ethusdt"}
    assert [it.ts_ns for it in timeline.items] == sorted(it.ts_ns for it in timeline.items)
    for sym, info in timeline.symbols.items():
        diffs = [it for it in timeline.items if it.symbol == sym and it.kind == DEPTH]
        assert diffs[0].first_id == info.start.last_update_id + 1  # stale diffs dropped
        assert all(b.first_id == a.last_id + 1 for a, b in zip(diffs, diffs[1:], strict=False))
    # btcusdt's trade on line 4 came before its snapshot line (8): not replayed
    assert timeline.symbols["btcusdt"].start.last_update_id == 50093239218
    trades = [it for it in timeline.items if it.symbol == "btcusdt" and it.kind == "trade"]
    assert b'"t":3735683259' not in trades[0].payload


def test_recorded_gap_is_repaired_from_a_later_snapshot(tmp_path: Path, timeline: Timeline) -> None:
    """A CCF recording with a disconnect: diffs missing, then a fresh snapshot line."""
    src = tmp_path / "eth_full.jsonl"
    src.write_text("".join(_head(DATA / "spot_ethusdt_20240808.jsonl.gz", LINES)))
    lines = src.read_text().splitlines(keepends=True)
    diff_rows = [i for i, ln in enumerate(lines) if "@depth@100ms" in ln]
    cut = diff_rows[10:14]  # four diffs lost, then the recorder resyncs
    full = load_timeline([src])
    market = Market(full)
    resync_u = json.loads(lines[cut[-1]].split(" ", 1)[1])["data"]["u"]
    for k, item in full.passes(loop=False):
        market.step(k, item)
        if item.kind == DEPTH and item.last_id == resync_u:
            snap = json.dumps(market.depth("ethusdt", 5000))
            break
    ts = lines[cut[-1]].split(" ", 1)[0]
    gappy = [ln for i, ln in enumerate(lines) if i not in cut]
    gappy.insert(cut[-1] - len(cut) + 1, f"{ts} {snap}\n")
    (tmp_path / "eth_gap.jsonl").write_text("".join(gappy))

    tl = load_timeline([tmp_path / "eth_gap.jsonl"])
    assert sum(isinstance(it, Resync) for it in tl.items) == 1
    diffs = [it for it in tl.items if it.kind == DEPTH]
    assert all(b.first_id == a.last_id + 1 for a, b in zip(diffs, diffs[1:], strict=False))
    replayed, original = Market(tl), Market(full)
    for market, t in ((replayed, tl), (original, full)):
        for k, item in t.passes(loop=False):
            market.step(k, item)
    assert replayed.depth("ethusdt", 5000) == original.depth("ethusdt", 5000)


# --- websocket ---------------------------------------------------------------


async def test_combined_stream_wraps_frames(files: tuple[Path, ...], timeline: Timeline) -> None:
    async with exchange(files, timeline) as (ex, http):
        url = f"{ex.ws_url}/stream?streams=btcusdt@trade/ethusdt@depth@100ms/btcusdt@aggTrade"
        async with http.ws_connect(url) as ws:
            frames = [json.loads(t) for t in await texts(ws, 30)]
    streams = {f["stream"] for f in frames}
    assert streams <= {"btcusdt@trade", "ethusdt@depth@100ms", "btcusdt@aggTrade"}
    assert {"btcusdt@trade", "ethusdt@depth@100ms"} <= streams
    for f in frames:
        data = f["data"]
        kind = {"btcusdt@trade": "trade", "ethusdt@depth@100ms": "depthUpdate"}.get(f["stream"])
        if kind is None:  # one frame per aggregate of trades f..l (test_replay_history.py)
            assert data["e"] == "aggTrade" and data["f"] <= data["l"]
        else:
            assert data["e"] == kind


async def test_raw_stream_partial_depth_and_book_ticker(
    files: tuple[Path, ...], timeline: Timeline
) -> None:
    async with exchange(files, timeline) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/ws/btcusdt@depth5@100ms/ethusdt@bookTicker") as ws:
            frames = [json.loads(t) for t in await texts(ws, 20)]
    partial = [f for f in frames if "lastUpdateId" in f]
    tickers = [f for f in frames if f.get("s") == "ETHUSDT"]
    assert partial and tickers and len(partial) + len(tickers) == 20
    for p in partial:
        assert len(p["bids"]) == len(p["asks"]) == 5 and "e" not in p
        assert float(p["bids"][0][0]) < float(p["asks"][0][0])
    assert all({"u", "b", "B", "a", "A"} <= t.keys() for t in tickers)


async def test_control_messages(files: tuple[Path, ...], timeline: Timeline) -> None:
    async with exchange(files, timeline, max_incoming_per_s=50, max_streams_per_connection=3) as (
        ex,
        http,
    ):
        async with http.ws_connect(f"{ex.ws_url}/ws") as ws:
            sub = {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@depth"], "id": 1}
            assert await reply(ws, sub) == {"result": None, "id": 1}
            listing = await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3})
            assert listing == {"result": ["btcusdt@trade", "btcusdt@depth"], "id": 3}
            unsub = {"method": "UNSUBSCRIBE", "params": ["btcusdt@depth"], "id": 312}
            assert await reply(ws, unsub) == {"result": None, "id": 312}
            get = {"method": "GET_PROPERTY", "params": ["combined"], "id": 2}
            assert await reply(ws, get) == {"result": False, "id": 2}
            set_ = {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}
            assert await reply(ws, set_) == {"result": None, "id": 5}
            assert json.loads((await texts(ws, 1))[0])["stream"] == "btcusdt@trade"

            too_many = {"method": "SUBSCRIBE", "params": ["a@trade", "b@trade", "c@trade"], "id": 6}
            assert (await reply(ws, too_many))["code"] == 2
            bad_prop = {"method": "GET_PROPERTY", "params": ["nope"], "id": 7}
            assert await reply(ws, bad_prop) == {"code": 0, "msg": "Unknown property", "id": 7}
            bad_value = {"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 8}
            assert await reply(ws, bad_value) == {
                "code": 1,
                "msg": "Invalid value type: expected Boolean",
            }
            bad_id = await reply(ws, {"method": "LIST_SUBSCRIPTIONS", "id": -1})
            assert bad_id == {
                "code": 2,
                "msg": "Invalid request: request ID must be an unsigned integer",
            }
            unknown = await reply(ws, {"method": "SUBSCRIBEX", "id": 9})
            assert unknown["code"] == 2 and "unknown variant SUBSCRIBEX" in unknown["msg"]
            await ws.send_str("{not json")
            while "code" not in (err := json.loads((await texts(ws, 1))[0])):
                pass
            assert err["code"] == 3 and err["msg"].startswith("Invalid JSON")
            unknown_stream = {"method": "SUBSCRIBE", "params": ["nosuch@stream"], "id": 10}
            assert await reply(ws, unknown_stream) == {
                "code": 2,
                "msg": "Invalid request: invalid stream",
                "id": 10,
            }


async def test_too_many_incoming_messages_disconnects(
    files: tuple[Path, ...], timeline: Timeline
) -> None:
    async with exchange(files, timeline, max_incoming_per_s=5) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/ws") as ws:
            for i in range(8):
                await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            msg = await closed(ws)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.POLICY_VIOLATION


async def test_missing_pong_and_connection_age_close(
    files: tuple[Path, ...], timeline: Timeline
) -> None:
    async with exchange(files, timeline, ping_interval_s=0.1, pong_timeout_s=0.4) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/ws", autoping=False) as ws:
            pings = 0
            while (msg := await ws.receive(timeout=5)).type is aiohttp.WSMsgType.PING:
                pings += 1
            assert pings >= 1 and msg.type is aiohttp.WSMsgType.CLOSE
            assert msg.extra == "pong timeout"
    async with exchange(files, timeline, max_connection_age_s=0.3) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/ws") as ws:  # answers pings by itself
            msg = await closed(ws)
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.extra == "connection age limit"


async def test_loop_boundary_has_no_gap_and_book_matches_rest(
    files: tuple[Path, ...], timeline: Timeline
) -> None:
    """A client following Binance's procedure keeps an exact book across two loop boundaries."""
    syms = ("btcusdt", "ethusdt")
    passes_seen: set[int] = set()

    def pass_of(d: dict[str, Any], shift_ms: int) -> int:
        return ((d["E"] - shift_ms) * 10**6 - timeline.start_ns) // timeline.period_ns

    # speed 0 runs ahead while the client fetches its snapshots: 8 passes leave room to cross two
    async with exchange(files, timeline, loop=True, max_passes=8) as (ex, http):
        url = f"{ex.ws_url}/stream?streams=" + "/".join(f"{s}@depth@100ms" for s in syms)
        async with http.ws_connect(url) as ws:
            buffered: dict[str, list[dict[str, Any]]] = {s: [] for s in syms}
            while not all(buffered.values()):
                frame = json.loads((await texts(ws, 1))[0])
                buffered[frame["stream"].split("@")[0]].append(frame["data"])
            books: dict[str, dict[str, dict[str, str]]] = {}
            last: dict[str, int] = {}
            for s in syms:
                r = await http.get(
                    f"{ex.url}/api/v3/depth", params={"symbol": s.upper(), "limit": 5000}
                )
                snap = await r.json()
                assert snap["lastUpdateId"] >= buffered[s][0]["U"] - 1
                books[s] = {"b": dict(snap["bids"]), "a": dict(snap["asks"])}
                last[s] = snap["lastUpdateId"]
            applied = {s: 0 for s in syms}

            def apply(s: str, d: dict[str, Any]) -> None:
                if d["u"] <= last[s]:
                    return
                if applied[s]:
                    assert d["U"] == last[s] + 1, f"gap in {s}: {last[s]} -> {d['U']}"
                else:
                    assert d["U"] <= last[s] + 1 <= d["u"]
                for side in ("b", "a"):
                    for p, q in d[side]:
                        if float(q) == 0:
                            books[s][side].pop(p, None)
                        else:
                            books[s][side][p] = q
                last[s], applied[s] = d["u"], applied[s] + 1
                passes_seen.add(pass_of(d, ex.time_shift_ms))

            for s in syms:
                for d in buffered[s]:
                    apply(s, d)
            while not (
                ex.finished and all(last[s] == ex.market.books[s].last_update_id for s in syms)
            ):
                frame = json.loads((await texts(ws, 1))[0])
                apply(frame["stream"].split("@")[0], frame["data"])
            state = ex.state()
            assert state["loop_count"] == 7 and state["finished"]
            assert len(passes_seen) >= 3, passes_seen  # two loop boundaries crossed without a gap
            assert passes_seen <= set(range(8))
            for s in syms:
                r = await http.get(
                    f"{ex.url}/api/v3/depth", params={"symbol": s.upper(), "limit": 5000}
                )
                rest = await r.json()
                assert rest["lastUpdateId"] == last[s] == state["symbols"][s]["last_u"]
                assert dict(rest["bids"]) == books[s]["b"] and dict(rest["asks"]) == books[s]["a"]
                assert [float(p) for p, _ in rest["bids"]] == sorted(
                    (float(p) for p in books[s]["b"]), reverse=True
                )
            # the last pass ended: the stream stops but the connection stays open
            with pytest.raises(asyncio.TimeoutError):
                await ws.receive(timeout=0.3)
            assert not ws.closed


async def test_speed_paces_by_event_time(files: tuple[Path, ...], timeline: Timeline) -> None:
    """At speed 8 the ~11 s slice plays in ~1.4 s, in event-time order."""
    expected = sum(
        1
        for it in timeline.items
        if it.kind == DEPTH or (it.kind == "trade" and it.symbol == "btcusdt")
    )
    async with exchange(files, timeline, speed=8, loop=False) as (ex, http):
        url = f"{ex.ws_url}/stream?streams=btcusdt@trade/btcusdt@depth@100ms/ethusdt@depth@100ms"
        times, clocks = [], []
        async with http.ws_connect(url) as ws:
            for _ in range(expected):
                times.append(json.loads((await texts(ws, 1))[0])["data"]["E"])
                if len(times) % 10 == 0:
                    r = await http.get(f"{ex.url}/api/v3/time")
                    clocks.append(((await r.json())["serverTime"], times[-1]))
        assert ex.state()["started"]
    assert times == sorted(times)  # one timeline, ordered by event time
    assert [c for c, _ in clocks] == sorted(c for c, _ in clocks)
    end_ms = timeline.end_ns // 10**6 + ex.time_shift_ms
    assert all(seen <= clock <= end_ms for clock, seen in clocks), clocks


# --- exchange times ----------------------------------------------------------


def recorded_by_id(timeline: Timeline) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Pass-0 payloads as recorded, by (symbol, kind, u or t)."""
    return {
        (it.symbol, it.kind, it.last_id): json.loads(it.payload)
        for it in timeline.items
        if isinstance(it, Frame) and it.kind in (DEPTH, TRADE)
    }


async def drain(ws: aiohttp.ClientWebSocketResponse) -> list[tuple[str, dict[str, Any]]]:
    """Every combined frame until the stream goes quiet: (stream, data)."""
    out = []
    with contextlib.suppress(asyncio.TimeoutError):
        while True:
            msg = await ws.receive(timeout=0.5)
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            frame = json.loads(msg.data)
            out.append((frame["stream"], frame["data"]))
    return out


async def test_rebased_times_are_one_shift_from_the_recording_starting_now(
    files: tuple[Path, ...], timeline: Timeline
) -> None:
    recorded = recorded_by_id(timeline)
    period_ms = timeline.period_ns // 10**6
    streams = [f"{s}@{k}" for s in timeline.symbols for k in ("depth@100ms", "trade", "aggTrade")]
    async with exchange(files, timeline, loop=True, max_passes=2) as (ex, http):
        before = time.time_ns() // 10**6
        idle = (await (await http.get(f"{ex.url}/api/v3/time")).json())["serverTime"]
        assert before <= idle <= time.time_ns() // 10**6 + 1  # not started: the wall clock
        t0 = time.time_ns() // 10**6
        async with http.ws_connect(f"{ex.ws_url}/stream?streams=" + "/".join(streams)) as ws:
            frames = await drain(ws)
        shift = ex.time_shift_ms
        assert ex.finished and shift == ex.state()["time_shift_ms"] != 0
        # the replay's first event happened when it started: at the subscription, give or take
        first_ms = timeline.start_ns // 10**6 + shift
        assert t0 - 1 <= first_ms <= t0 + 2000
        deltas: dict[int, set[int]] = {0: set(), 1: set()}
        for stream, d in frames:
            sym, kind = stream.split("@")[0], DEPTH if "@depth" in stream else TRADE
            own_id = d["u"] if kind == DEPTH else d.get("t", d.get("l"))  # aggTrade: last trade
            info = timeline.symbols[sym]
            step = info.id_step if kind == DEPTH else info.trade_step
            for k in (0, 1):
                rec = recorded.get((sym, kind, own_id - k * step))
                if rec is not None:
                    deltas[k] |= {d[key] - rec[key] for key in ("E", "T") if key in rec}
                    break
            else:
                assert d.get("e") == "depthUpdate"  # only the synthetic resync is not recorded
        assert deltas == {0: {shift}, 1: {shift + period_ms}}
        server_time = (await (await http.get(f"{ex.url}/api/v3/time")).json())["serverTime"]
        assert server_time == timeline.end_ns // 10**6 + period_ms + shift
        params = {"symbol": "BTCUSDT", "interval": "1m", "limit": 1000}
        rows = await (await http.get(f"{ex.url}/api/v3/klines", params=params)).json()
        assert rows and all(t0 - 60_000 <= r[0] <= server_time for r in rows)


async def test_rebase_off_serves_the_recorded_bytes(
    files: tuple[Path, ...], timeline: Timeline
) -> None:
    payloads = {
        (it.symbol, it.kind, it.last_id): it.payload
        for it in timeline.items
        if isinstance(it, Frame) and not it.patched
    }
    async with exchange(files, timeline, rebase_time=False, loop=False) as (ex, http):
        idle = (await (await http.get(f"{ex.url}/api/v3/time")).json())["serverTime"]
        assert idle == timeline.start_ns // 10**6
        url = f"{ex.ws_url}/ws/btcusdt@trade/ethusdt@depth@100ms"
        async with http.ws_connect(url) as ws:
            got = [json.loads(t) for t in await texts(ws, 60)]
            raw = await texts(ws, 20)
        assert ex.time_shift_ms == ex.state()["time_shift_ms"] == 0
    for d in got:
        key = ("btcusdt", TRADE, d["t"]) if d["e"] == "trade" else ("ethusdt", DEPTH, d["u"])
        assert d == json.loads(payloads[key])
    assert {t.encode() for t in raw} <= set(payloads.values())  # untouched


def test_rebase_splices_times_as_reserializing_would(timeline: Timeline) -> None:
    shift = 86_400_000 * 800 + 7
    plain, rebased = Market(timeline), Market(timeline)
    rebased.rebase(shift)
    for k, item in timeline.passes(loop=True, max_passes=2):
        a, b = plain.step(k, item), rebased.step(k, item)
        want = json.loads(a.payload)
        for key in ("E", "T"):
            if key in want:
                want[key] += shift
        assert json.loads(b.payload) == want
        agg_bytes = rebased.agg_trade(b) if b.kind == TRADE else None
        if agg_bytes is not None:  # the trade completed an aggregate: same times as the trade
            agg = json.loads(agg_bytes)
            assert (agg["E"], agg["T"], agg["l"]) == (want["E"], want["T"], want["t"])


def test_times_are_rewritten_where_their_digits_were_not_found(tmp_path: Path) -> None:
    rec = tmp_path / "spaced.jsonl"
    lines = [
        {"lastUpdateId": 10, "bids": [["1.0", "1.0"]], "asks": [["2.0", "1.0"]]},
        {"e": "depthUpdate", "E": 1_700_000_000_000, "s": "ABCUSDT", "U": 11, "u": 12}
        | {"b": [], "a": [["2.0", "0.5"]]},
        {"e": "trade", "E": 1_700_000_000_100, "s": "ABCUSDT", "t": 5, "p": "2.0", "q": "0.1"}
        | {"T": 1_700_000_000_099, "m": True, "M": True},
    ]
    rec.write_text("".join(f"{1000 + i} {json.dumps(obj)}\n" for i, obj in enumerate(lines)))
    tl = load_timeline([rec])
    assert [it.stamps for it in tl.items if isinstance(it, Frame)] == [(), ()]  # '"E": 1'
    market = Market(tl)
    market.rebase(1000)
    depth, trade = (json.loads(market.step(0, it).payload) for it in tl.items)
    assert depth["E"] == 1_700_000_001_000 and depth["u"] == 12
    assert (trade["E"], trade["T"], trade["t"]) == (1_700_000_001_100, 1_700_000_001_099, 5)


def test_stamp_spans() -> None:
    p = b'{"e":"trade","E":999,"t":7,"T":998,"m":true}'
    spans = find_spans(p, TRADE_KEYS, (999, 998))
    assert shift_spans(p, spans, 1) == b'{"e":"trade","E":1000,"t":7,"T":999,"m":true}'
    assert find_spans(p, TRADE_KEYS, (999, 5)) == ()  # a match that is not the parsed value
    assert find_spans(b'{"E":"x"}', DEPTH_KEYS, (1,)) == ()
    assert rebase_shift_ms(1_500_000, 3_000_000) == 2  # 1.5 ms rounds to whole ms
    assert rebase_shift_ms(10**6, 10**6 + 499_999) == 0


# --- REST --------------------------------------------------------------------


async def test_depth_snapshot_before_start_is_the_recorded_one(
    files: tuple[Path, ...], timeline: Timeline
) -> None:
    recorded = json.loads(_head(DATA / "spot_btcusdt_20240808.jsonl.gz", 8)[7].split(" ", 1)[1])
    async with exchange(files, timeline) as (ex, http):
        r = await http.get(f"{ex.url}/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 1000})
        assert r.status == 200 and r.headers["X-MBX-USED-WEIGHT-1M"] == "50"
        assert await r.json() == recorded
        r = await http.get(f"{ex.url}/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 3})
        top = await r.json()
        assert top["bids"] == recorded["bids"][:3] and top["asks"] == recorded["asks"][:3]
        assert r.headers["X-MBX-USED-WEIGHT-1M"] in ("55", "5")  # "5": a new minute began
        r = await http.get(f"{ex.url}/api/v3/depth", params={"symbol": "NOPEUSDT"})
        assert r.status == 400 and await r.json() == {"code": -1121, "msg": "Invalid symbol."}
        assert "X-MBX-USED-WEIGHT-1M" in r.headers


async def test_exchange_info_time_ping_and_klines(
    files: tuple[Path, ...], timeline: Timeline
) -> None:
    async with exchange(files, timeline, start="immediately", loop=False) as (ex, http):
        while not ex.finished:  # noqa: ASYNC110 - the exchange has no finish event to wait on
            await asyncio.sleep(0.01)
        r = await http.get(f"{ex.url}/api/v3/exchangeInfo")
        info = await r.json()
        assert r.headers["X-MBX-USED-WEIGHT-1M"] == "20"
        assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT", "ETHUSDT"]
        assert info["rateLimits"][0]["limit"] == 6000
        server_time = (await (await http.get(f"{ex.url}/api/v3/time")).json())["serverTime"]
        shift = ex.time_shift_ms
        assert server_time == timeline.end_ns // 10**6 + shift
        assert await (await http.get(f"{ex.url}/api/v3/ping")).json() == {}
        trades = [it for it in timeline.items if it.kind == "trade" and it.symbol == "btcusdt"]
        for interval in ("1s", "1m"):
            r = await http.get(
                f"{ex.url}/api/v3/klines", params={"symbol": "BTCUSDT", "interval": interval}
            )
            rows = await r.json()
            assert r.status == 200 and all(len(row) == 12 for row in rows)
            assert sum(row[8] for row in rows) == len(trades)
            assert [row[0] for row in rows] == sorted(row[0] for row in rows)
        first = json.loads(trades[0].payload)
        assert rows[0][1] == first["p"] and rows[0][0] == (first["T"] + shift) // 60000 * 60000
        r = await http.get(
            f"{ex.url}/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "7m"}
        )
        assert r.status == 400 and (await r.json())["code"] == -1120


async def test_klines_from_csv_history_then_played_from_the_replay_start(
    tmp_path: Path, files: tuple[Path, ...], timeline: Timeline
) -> None:
    """A CSV is the symbol's past at its own times, then plays again from the replay's start."""
    csv = tmp_path / "ETHUSDT-1m-2026-03-23.csv"
    rows = [(1774267740000 + i * 60_000, 10 + i, 12 + i, 9 + i, 11 + i, 2.5) for i in range(9)]
    lines = ["open_time_ms,open,high,low,close,volume"] + [",".join(map(str, r)) for r in rows]
    csv.write_text("\n".join(lines) + "\n")

    def row(t: int, r: tuple[int, ...]) -> list[Any]:
        o, h, lo, c = (f"{x:.8f}" for x in r[1:5])
        return (
            [t, o, h, lo, c, "2.50000000", t + 59_999, "0.00000000", 0] + ["0.00000000"] * 2 + ["0"]
        )

    params: dict[str, Any] = {"symbol": "ETHUSDT", "interval": "1m", "startTime": 0}
    # 30 passes of the ~11 s slice: about 5.4 minutes of event time, played flat out
    async with exchange(files, timeline, klines=(csv,), loop=True, max_passes=30) as (ex, http):
        history = await (await http.get(f"{ex.url}/api/v3/klines", params=params)).json()
        ex.player.go.set()
        while not ex.finished:  # noqa: ASYNC110 - the exchange has no finish event to wait on
            await asyncio.sleep(0.01)
        one = await (await http.get(f"{ex.url}/api/v3/klines", params=params)).json()
        page = await (
            await http.get(f"{ex.url}/api/v3/klines", params=params | {"startTime": rows[7][0]})
        ).json()
        newest = await (
            await http.get(
                f"{ex.url}/api/v3/klines", params={**params, "startTime": "", "limit": 3}
            )
        ).json()
        three = await (
            await http.get(f"{ex.url}/api/v3/klines", params=params | {"interval": "3m"})
        ).json()
        now = ex.market.event_ms
        first_event = timeline.start_ns // 10**6 + ex.time_shift_ms
    assert history == [row(r[0], r) for r in rows]  # before the replay: the file as it is
    assert now is not None
    first_open = -(-first_event // 60_000) * 60_000
    closed = (now - first_open) // 60_000  # minutes whose close time has been played
    assert 4 <= closed < len(rows)
    live = [row(first_open + i * 60_000, rows[i]) for i in range(closed)]
    assert one == history + live
    assert page == one[7:]  # paging skips the months between the file and the replay
    assert newest == live[-3:]
    # 3m candles regroup the minutes (aligned to the epoch, the newest one partial)
    assert [r[0] for r in three] == sorted({r[0] // 180_000 * 180_000 for r in one})
    assert sum(float(r[5]) for r in three) == 2.5 * len(one)
    assert three[0][1] == one[0][1] and three[-1][4] == one[-1][4]


async def test_weight_limit_429_then_418_ban(files: tuple[Path, ...], timeline: Timeline) -> None:
    async with exchange(files, timeline, weight_limit_per_minute=12, ban_after_429s=1) as (
        ex,
        http,
    ):
        statuses, used = [], []
        for _ in range(12):
            r = await http.get(f"{ex.url}/api/v3/depth", params={"symbol": "ETHUSDT", "limit": 10})
            statuses.append(r.status)
            used.append(int(r.headers["X-MBX-USED-WEIGHT-1M"]))
            if r.status in (418, 429):
                assert int(r.headers["Retry-After"]) >= 1
    assert used[:2] in ([5, 10], [5, 5])  # [5, 5]: the minute turned in between
    first_429 = statuses.index(429)
    assert 418 in statuses[first_429:]
    assert set(statuses[statuses.index(418) :]) == {418}  # banned: every call answers 418


# --- faults ------------------------------------------------------------------


async def test_fault_drop_after_frames(files: tuple[Path, ...], timeline: Timeline) -> None:
    async with exchange(files, timeline, faults={"drop_after_frames": 5}) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/ws/btcusdt@bookTicker") as ws:
            await texts(ws, 5)
            msg = await closed(ws)
        assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        assert ex.state()["fault_counts"]["dropped_connections"] == 1


async def test_fault_skipped_update_is_a_gap(files: tuple[Path, ...], timeline: Timeline) -> None:
    async with exchange(files, timeline, faults={"skip_update_every": 3}) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/ws/btcusdt@depth@100ms") as ws:
            diffs = [json.loads(t) for t in await texts(ws, 12)]
        gaps = sum(b["U"] != a["u"] + 1 for a, b in zip(diffs, diffs[1:], strict=False))
        assert gaps >= 3 and ex.state()["fault_counts"]["skipped_updates"] >= 4


async def test_fault_malformed_frames_rotate(files: tuple[Path, ...], timeline: Timeline) -> None:
    async with exchange(files, timeline, faults={"malformed_every": 2}) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/stream?streams=btcusdt@trade") as ws:
            frames = await texts(ws, 18)
    kinds = set()
    for text in frames:
        try:
            obj = json.loads(text)
        except ValueError:
            kinds.add("truncated" if text.startswith('{"stream"') else "garbage")
            continue
        if obj["stream"] != "btcusdt@trade":
            kinds.add("unknown_stream")
        elif "p" not in obj["data"]:
            kinds.add("missing_fields")
    assert kinds == {"truncated", "garbage", "unknown_stream", "missing_fields"}


async def test_fault_rest_errors_via_admin_endpoint(
    files: tuple[Path, ...], timeline: Timeline, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    async with exchange(files, timeline, admin_token=f"file:{token}") as (ex, http):
        url, body = f"{ex.url}/_replay/faults", {"rest_429": 1, "rest_418": 1, "retry_after_s": 7}
        refused = [
            (r.status, await r.json())
            for r in (
                await http.post(url, json=body),
                await http.post(url, json=body, headers={"X-Replay-Token": "guess"}),
            )
        ]
        r = await http.post(url, json=body, headers={"X-Replay-Token": "s3cret"})
        assert r.status == 200 and (await r.json())["faults"]["rest_429"] == 1
        got = []
        for _ in range(3):
            r = await http.get(f"{ex.url}/api/v3/time")
            got.append((r.status, r.headers.get("Retry-After")))
        assert got == [(418, "7"), (429, "7"), (200, None)]
        bad = await http.post(url, json={"rest_429": -1}, headers={"X-Replay-Token": "s3cret"})
        assert bad.status == 400
        state = await (await http.get(f"{ex.url}/_replay/state")).json()
        assert state["fault_counts"] == {"rest_418": 1, "rest_429": 1}
        assert state["faults"]["rest_429"] == 0
    assert refused == [
        (401, {"error": "missing or wrong X-Replay-Token header"}),
        (401, {"error": "missing or wrong X-Replay-Token header"}),
    ]


async def test_fault_changes_are_refused_without_a_configured_token(
    files: tuple[Path, ...], timeline: Timeline
) -> None:
    async with exchange(files, timeline) as (ex, http):
        r = await http.post(f"{ex.url}/_replay/faults", json={"rest_429": 1})
        body = await r.json()
        state = await (await http.get(f"{ex.url}/_replay/state")).json()
    assert r.status == 403 and "replay.admin_token" in body["error"]
    assert state["faults"]["rest_429"] == 0


async def test_fault_stall_keeps_pinging(files: tuple[Path, ...], timeline: Timeline) -> None:
    faults = {"stall_after_frames": 3, "stall_s": 1.0}
    async with exchange(files, timeline, faults=faults, ping_interval_s=0.3) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/ws/btcusdt@bookTicker", autoping=False) as ws:
            await texts(ws, 3)
            pings = 0
            while (msg := await ws.receive(timeout=5)).type is aiohttp.WSMsgType.PING:
                pings += 1
                await ws.pong(msg.data)
            assert msg.type is aiohttp.WSMsgType.TEXT and pings >= 1
        counts = ex.state()["fault_counts"]
        assert counts["stalls"] == 1 and counts["stalled_frames"] > 0


async def test_fault_stale_snapshot(files: tuple[Path, ...], timeline: Timeline) -> None:
    async with exchange(files, timeline, faults={"stale_snapshots": 1}) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/ws/ethusdt@depth@100ms") as ws:
            first_u = json.loads((await texts(ws, 1))[0])["U"]
            await texts(ws, 3)
            ids = []
            for _ in range(2):
                r = await http.get(f"{ex.url}/api/v3/depth", params={"symbol": "ETHUSDT"})
                ids.append((await r.json())["lastUpdateId"])
        assert ids[0] < first_u <= ids[1] + 1


async def test_fault_server_shutdown(files: tuple[Path, ...], timeline: Timeline) -> None:
    async with exchange(files, timeline, faults={"shutdown_after_frames": 3}) as (ex, http):
        async with http.ws_connect(f"{ex.ws_url}/stream?streams=btcusdt@bookTicker") as ws:
            frames = [json.loads(t) for t in await texts(ws, 4)]
            assert frames[3]["stream"] == "!serverShutdown"
            assert frames[3]["data"]["e"] == "serverShutdown" and frames[3]["data"]["E"] > 0
            msg = await closed(ws)
            assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ex.state()["fault_counts"]["shutdowns"] == 1
