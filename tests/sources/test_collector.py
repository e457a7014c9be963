"""The collector against the replay exchange serving the real recordings.

Every test runs the real parts: the replay exchange on a local port, the
collector's websocket and REST clients, the feed, the writer thread and the
SQLite store. Expected values come from the recordings, read independently
(``recorded.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ccf.config import ReplayConfig, Settings, load_settings
from ccf.records import book_columns
from ccf.sources.collector import Collector, plan_connections
from ccf.sources.replay.exchange import ReplayExchange, running_exchange
from ccf.sources.replay.timeline import Timeline, load_timeline
from ccf.storage import SqliteStore
from tests import parts
from tests.sources.recorded import SYMBOLS, recorded, recording_files, same_levels

NS = 1_000_000
LEVELS = ", ".join(book_columns(20))


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return load_timeline(recording_files())


def settings_for(tmp_path: Path, ex: ReplayExchange, *extra: str) -> Settings:
    return load_settings(
        [
            f"replay.port={ex.port}",
            f"data_dir={tmp_path / 'data'}",
            "collect.print_every_s=0",
            "collect.reconnect.base_s=0.05",
            "collect.reconnect.cap_s=0.2",
            *extra,
        ],
        environ={},
    )


async def collect_until(
    settings: Settings, done: Callable[[Collector], bool], timeout_s: float = 120
) -> Collector:
    return await parts.run_until(Collector(settings), done, timeout_s, lambda c: c.status())


def connects(c: Collector) -> int:
    return sum(conn.connects for conn in c.connections)


def reconnected_and_whole(c: Collector) -> bool:
    """At least one reconnect behind it, every gap closed, every book synced."""
    return (
        connects(c) >= 2 and not c.feed.open_gaps and all(s.synced for s in c.feed.state.values())
    )


def trades_seen(c: Collector) -> int:
    return sum(c.counts[(s, "trade")] for s in SYMBOLS)


def all_trades() -> int:
    return sum(len(recorded(s).trades) for s in SYMBOLS)


def stored_trade_ids(store: SqliteStore, symbol: str) -> list[int]:
    return [
        r[0] for r in store.query("SELECT trade_id FROM trade WHERE symbol=? ORDER BY 1", (symbol,))
    ]


def assert_books_exact(store: SqliteStore, symbol: str) -> int:
    """Every stored diff book equals the independent rebuild at its update id."""
    ref = recorded(symbol).books
    rows = store.query(
        f"SELECT update_id, {LEVELS} FROM book WHERE symbol=? AND source='diff' ORDER BY update_id",
        (symbol,),
    )
    assert rows, f"no books stored for {symbol}"
    for row in rows:
        assert row[0] in ref, f"{symbol}: stored update id {row[0]} is not in the recording"
        assert same_levels(row[1:], ref[row[0]]), f"{symbol}: book differs at u={row[0]}"
    return len(rows)


def gaps(store: SqliteStore, symbol: str | None = None) -> list[tuple]:
    where, params = ("WHERE symbol=?", (symbol,)) if symbol else ("", ())
    return store.query(
        f"SELECT symbol, stream, start_ts, end_ts, reason, detail, filled FROM gap {where} "
        "ORDER BY start_ts",
        params,
    )


# -- the happy path ---------------------------------------------------------------------------


async def test_every_trade_and_the_exact_book_at_every_update(
    tmp_path: Path, timeline: Timeline
) -> None:
    t_start = time.time_ns()
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        settings = settings_for(tmp_path, ex, "collect.silence_timeout_s=120")
        collector = await collect_until(settings, lambda c: trades_seen(c) >= all_trades())
    t_end = time.time_ns()

    store = SqliteStore(settings.db_path, readonly=True)
    for sym in SYMBOLS:
        rec = recorded(sym)
        rows = store.query(
            "SELECT trade_id, ts_event, price, qty, ts_recv FROM trade "
            "WHERE symbol=? ORDER BY trade_id",
            (sym,),
        )
        assert [r[0] for r in rows] == sorted(rec.trades)  # complete, none doubled
        # exchange time is the recorded T (one constant shift if the replay rebases time)
        assert len({ts - rec.trades[tid][0] * NS for tid, ts, *_ in rows}) == 1
        assert all((p, q) == rec.trades[tid][1:] for tid, _, p, q, _ in rows)
        assert all(t_start <= r[4] <= t_end for r in rows)  # received during this run
        n_books = assert_books_exact(store, sym)
        # from the first synced update on, a book record for every diff, none skipped
        first = store.query("SELECT min(update_id) FROM book WHERE symbol=?", (sym,))[0][0]
        assert n_books == sum(1 for u in rec.books if u >= first)
        assert n_books > 0.9 * len(rec.books)  # synced early: the snapshot waits on REST only
    assert gaps(store) == []
    assert store.dead_letter_counts() == {}
    assert collector.feed.stats["crossed_books"] == 0


# -- faults: each one recovers, says what happened, keeps what it had ---------------------------


def assert_trades_missing_only_where_gaps_say(store: SqliteStore, symbol: str) -> int:
    """Every recorded trade is stored, live, except the ids a trade gap names; those are
    stored as backfilled when the gap says it was filled. Returns how many ids gaps named."""
    named: set[int] = set()
    filled: set[int] = set()
    for _, stream, _, _, _, detail, was_filled in gaps(store, symbol):
        for part in detail.split("; "):
            if stream == "trade" and part.startswith("trade ids "):
                lo, hi = part.split()[2].split("..")
                ids = set(range(int(lo), int(hi) + 1))
                named |= ids
                filled |= ids if was_filled else set()
    rows = dict(store.query("SELECT trade_id, backfilled FROM trade WHERE symbol=?", (symbol,)))
    live = {t for t, backfilled in rows.items() if not backfilled}
    rec = recorded(symbol).trades
    assert set(rows) <= set(rec)  # nothing invented
    first, last = min(live), max(live)
    assert live == {t for t in rec if first <= t <= last} - named
    assert filled <= {t for t, backfilled in rows.items() if backfilled}
    assert {t for t, backfilled in rows.items() if backfilled} <= named
    for t, backfilled in rows.items():  # backfilled rows are the real trades
        if backfilled:
            assert (
                store.query(
                    "SELECT ts_event / 1000000, price, qty FROM trade WHERE "
                    "symbol=? AND trade_id=?",
                    (symbol, t),
                )[0][1:]
                == rec[t][1:]
            )
    return len(named)


async def test_dropped_connections_write_gaps_and_resync(
    tmp_path: Path, timeline: Timeline
) -> None:
    cfg = ReplayConfig(port=0, speed=0, loop=False)
    async with running_exchange(cfg, timeline) as ex:
        settings = settings_for(tmp_path, ex)
        ex.set_faults(drop_after_frames=40_000)
        collector = await collect_until(
            settings, lambda c: connects(c) >= 3 and not c.feed.open_gaps and trades_seen(c) > 5000
        )
    store = SqliteStore(settings.db_path, readonly=True)
    found = gaps(store)
    assert {(g[1], g[4]) for g in found} >= {
        ("book", "disconnect"),
        ("trade", "disconnect"),
        ("quote", "disconnect"),
    }
    assert all(g[3] is not None and g[3] >= g[2] for g in found)  # every gap closed again
    assert collector.feed.stats["snapshots"] >= 2 * len(SYMBOLS)  # resynced after each drop
    for sym in SYMBOLS:
        assert_books_exact(store, sym)
        assert_trades_missing_only_where_gaps_say(store, sym)


async def test_skipped_update_ids_force_a_resync_of_that_symbol(
    tmp_path: Path, timeline: Timeline
) -> None:
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        settings = settings_for(tmp_path, ex)
        ex.set_faults(skip_update_every=1500)
        collector = await collect_until(
            settings, lambda c: c.feed.stats["resyncs"] >= 3 and not c.feed.open_gaps
        )
    store = SqliteStore(settings.db_path, readonly=True)
    book_gaps = [g for g in gaps(store) if g[1] == "book"]
    assert book_gaps and all(
        g[4] == "sequence_gap" and "update ids missing" in g[5] for g in book_gaps
    )
    assert all(g[3] is not None for g in book_gaps)
    assert not [g for g in gaps(store) if g[1] != "book"]  # trades and quotes were fine
    assert connects(collector) == 1  # a resync, not a reconnect
    for sym in SYMBOLS:
        assert_books_exact(store, sym)  # never a record from a book known to be wrong
        assert assert_trades_missing_only_where_gaps_say(store, sym) == 0


async def test_malformed_frames_go_to_dead_letters_and_nothing_stops(
    tmp_path: Path, timeline: Timeline
) -> None:
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        settings = settings_for(tmp_path, ex, "collect.silence_timeout_s=120")
        ex.set_faults(malformed_every=2000)
        collector = await collect_until(settings, lambda c: trades_seen(c) >= all_trades())
    store = SqliteStore(settings.db_path, readonly=True)
    reasons = [r[0] for r in store.query("SELECT reason FROM dead_letter")]
    assert len(reasons) == collector.feed.stats["dead_letters"] >= 20
    kinds = {r.split(":")[0].split(" '")[0] for r in reasons}
    assert len(kinds) >= 3, reasons[:10]  # several kinds of damage, each named
    assert all(f for (f,) in store.query("SELECT frame FROM dead_letter"))  # frame kept
    for sym in SYMBOLS:
        assert stored_trade_ids(store, sym) == sorted(recorded(sym).trades)
        assert_books_exact(store, sym)
    assert gaps(store) == []


async def test_rate_limited_snapshots_wait_and_retry(tmp_path: Path, timeline: Timeline) -> None:
    cfg = ReplayConfig(port=0, speed=5, loop=False)
    async with running_exchange(cfg, timeline) as ex:
        ex.set_faults(rest_429=2, rest_418=1, retry_after_s=1)
        settings = settings_for(tmp_path, ex)
        collector = await collect_until(
            settings, lambda c: all(s.synced for s in c.feed.state.values())
        )
        state = ex.state()
    assert collector.rest is not None
    assert collector.rest.stats["rate_limited"] + collector.rest.stats["banned"] >= 2
    assert collector.feed.stats["snapshots"] == len(SYMBOLS)
    assert state is not None


async def test_stale_snapshot_is_fetched_again(tmp_path: Path, timeline: Timeline) -> None:
    async with running_exchange(ReplayConfig(port=0, speed=5, loop=False), timeline) as ex:
        ex.set_faults(stale_snapshots=1)
        settings = settings_for(tmp_path, ex)
        collector = await collect_until(
            settings,
            lambda c: (
                all(s.synced for s in c.feed.state.values()) and c.counts[("btcusdt", "book")] > 10
            ),
        )
    assert collector.feed.stats["stale_snapshots"] == 1
    store = SqliteStore(settings.db_path, readonly=True)
    for sym in SYMBOLS:
        assert_books_exact(store, sym)


async def test_a_stalled_stream_is_dropped_and_reopened(tmp_path: Path, timeline: Timeline) -> None:
    # Paced (10x): at full speed the whole replay would be over before the reconnect.
    async with running_exchange(ReplayConfig(port=0, speed=10, loop=False), timeline) as ex:
        ex.set_faults(stall_after_frames=2000, stall_s=30)
        settings = settings_for(tmp_path, ex, "collect.silence_timeout_s=1")
        await collect_until(
            settings,
            reconnected_and_whole,
        )
    store = SqliteStore(settings.db_path, readonly=True)
    details = {g[5] for g in gaps(store)}
    assert any("no frame for 1 s" in d for d in details), details
    for sym in SYMBOLS:
        assert_books_exact(store, sym)
        assert_trades_missing_only_where_gaps_say(store, sym)


async def test_server_shutdown_and_connection_age_reconnect(
    tmp_path: Path, timeline: Timeline
) -> None:
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        ex.set_faults(shutdown_after_frames=20_000)
        settings = settings_for(tmp_path, ex)
        await collect_until(
            settings,
            lambda c: (
                c.feed.stats["server_shutdowns"] >= 1 and connects(c) >= 2 and not c.feed.open_gaps
            ),
        )
    store = SqliteStore(settings.db_path, readonly=True)
    assert any("serverShutdown" in g[5] for g in gaps(store))
    for sym in SYMBOLS:
        assert_books_exact(store, sym)

    async with running_exchange(ReplayConfig(port=0, speed=1, loop=True), timeline) as ex:
        settings = settings_for(tmp_path / "age", ex, "collect.max_connection_age_s=1.5")
        await collect_until(
            settings,
            reconnected_and_whole,
            timeout_s=60,
        )
    store = SqliteStore(settings.db_path, readonly=True)
    assert any("24 h cut" in g[5] for g in gaps(store))


async def test_restart_opens_a_gap_from_what_the_store_holds(
    tmp_path: Path, timeline: Timeline
) -> None:
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        settings = settings_for(tmp_path, ex)
        await collect_until(settings, lambda c: trades_seen(c) > 3000)
        store = SqliteStore(settings.db_path, readonly=True)
        before = {s: stored_trade_ids(store, s) for s in SYMBOLS}
        await collect_until(settings, lambda c: not c.feed.open_gaps and trades_seen(c) > 3000)
    after = {s: stored_trade_ids(store, s) for s in SYMBOLS}
    for sym in SYMBOLS:
        assert set(before[sym]) <= set(after[sym])  # nothing it had is lost
        restart = [g for g in gaps(store, sym) if g[4] == "restart"]
        assert {g[1] for g in restart} == {"book", "trade", "quote"}
        assert all(g[3] is not None for g in restart)
        assert_trades_missing_only_where_gaps_say(store, sym)


def test_connections_are_planned_within_the_stream_limit() -> None:
    symbols = tuple(f"sym{i}usdt" for i in range(700))
    plan = plan_connections(symbols, ("depth@100ms", "trade", "bookTicker"), 1024)
    assert [len(streams) for _, streams in plan] == [1023, 1023, 54]
    assert sum(len(syms) for syms, _ in plan) == 700
    with pytest.raises(ValueError, match="exceed"):
        plan_connections(("a",), ("trade",) * 3, 2)


async def test_pings_are_answered_so_the_exchange_keeps_us(
    tmp_path: Path, timeline: Timeline
) -> None:
    import aiohttp

    cfg = ReplayConfig(port=0, speed=1, loop=True, ping_interval_s=0.2, pong_timeout_s=0.8)
    async with running_exchange(cfg, timeline) as ex:
        # a client that never answers pings is dropped...
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{ex.ws_url}/stream?streams=btcusdt@trade", autoping=False) as ws,
        ):
            closed = False
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not closed:
                msg = await ws.receive(timeout=10)
                closed = msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                )
            assert closed, "the exchange should drop a client that does not pong"
        # ...the collector answers them and stays connected
        settings = settings_for(tmp_path, ex)
        began = time.monotonic()
        collector = await collect_until(settings, lambda c: time.monotonic() - began > 3)
    assert connects(collector) == 1
    assert collector.connections[0].disconnects == 0


async def test_partial_depth_books_match_the_rebuild(tmp_path: Path, timeline: Timeline) -> None:
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        settings = settings_for(
            tmp_path, ex, "collect.streams=[depth20@100ms,trade]", "collect.silence_timeout_s=120"
        )
        await collect_until(settings, lambda c: trades_seen(c) >= all_trades())
    store = SqliteStore(settings.db_path, readonly=True)
    for sym in SYMBOLS:
        ref = recorded(sym).books
        rows = store.query(
            f"SELECT update_id, {LEVELS} FROM book WHERE symbol=? AND "
            "source='depth20' ORDER BY update_id",
            (sym,),
        )
        assert len(rows) > 0.95 * len(ref)
        assert all(same_levels(r[1:], ref[r[0]]) for r in rows)


async def test_closed_live_candles_equal_backfilled_ones(
    tmp_path: Path, timeline: Timeline
) -> None:
    import aiohttp

    from ccf.sources.backfill import Backfill
    from ccf.sources.binance.rest import BinanceRest

    cols = (
        "open_time, close_time, open, high, low, close, volume, quote_volume, trades, "
        "taker_buy_volume, taker_buy_quote_volume"
    )
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        settings = settings_for(
            tmp_path,
            ex,
            "collect.streams=[trade,kline_1m,kline_1s]",
            "collect.silence_timeout_s=120",
        )
        await collect_until(settings, lambda c: trades_seen(c) >= all_trades())
        live = SqliteStore(settings.db_path, readonly=True)
        backfilled = SqliteStore(tmp_path / "backfill.sqlite")
        async with aiohttp.ClientSession() as session:
            rest = BinanceRest(session, ex.url)
            job = Backfill(backfilled)
            for sym in SYMBOLS:
                for iv in ("1m", "1s"):
                    ((lo, hi),) = live.query(
                        "SELECT min(open_time), max(open_time) FROM candle "
                        "WHERE symbol=? AND interval=?",
                        (sym, iv),
                    )
                    await job.klines(rest, sym, iv, lo // NS, hi // NS + 1)
    for sym in SYMBOLS:
        for iv in ("1m", "1s"):
            query = (
                f"SELECT {cols} FROM candle WHERE symbol=? AND interval=? AND closed=1 "
                "ORDER BY open_time"
            )
            got_live = live.query(query, (sym, iv))
            got_rest = {r[0]: r for r in backfilled.query(query, (sym, iv))}
            assert len(got_live) >= (9 if iv == "1m" else 600)
            assert all(got_rest[r[0]] == r for r in got_live), (sym, iv)
