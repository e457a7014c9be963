"""Replay exchange (each venue's own protocol) -> live client -> feed -> SQLite store.

No fault: every recorded trade is stored once, and the books end where the
recording's do. Faults: a corrupted checksum or a skipped update is a gap and a
resync of that instrument, closed by the snapshot the replay renders for the
resubscription; a dropped connection is a disconnect gap and a reconnect.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from ccf.config import FaultConfig
from ccf.records import Book
from ccf.sources import venues
from ccf.sources.replay.venues.server import VenueExchange, running_venue
from ccf.sources.venues.wsclient import VenueConnection
from ccf.storage.sqlite import SqliteStore
from tests.sources.venues.recorded import (
    COINBASE_SYMBOLS,
    KRAKEN_SYMBOLS,
    OKX_SYMBOLS,
    venue_facts,
)

SYMBOLS = {"okx": OKX_SYMBOLS, "coinbase": COINBASE_SYMBOLS, "kraken": KRAKEN_SYMBOLS}


async def _collect(
    ex: VenueExchange,
    venue_name: str,
    store: SqliteStore,
    until: Callable[[VenueConnection], bool] = lambda conn: True,
    **conn_kw: float,
) -> tuple[VenueConnection, list[Book]]:
    venue = venues.get(venue_name)
    syms = SYMBOLS[venue_name]
    feed = venue.make_feed(syms, tuple(venue.kinds), book_depth=10)
    streams = [f"{s}@{c}" for s in syms for c in venue.kinds]
    books: list[Book] = []

    def write(records: list) -> None:
        store.write(records)
        books.extend(r for r in records if isinstance(r, Book))

    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        conn = VenueConnection(venue, feed, session, streams, ws_url=ex.ws_url, on_records=write,
                               reconnect_base_s=0.05, **conn_kw)  # fmt: skip
        task = asyncio.create_task(conn.run(stop))
        await asyncio.wait_for(ex.done.wait(), 60)
        for _ in range(100):
            if until(conn):
                break
            await asyncio.sleep(0.1)
        last = -1
        while (
            feed.frames != last or feed.outgoing or conn.sending
        ):  # until the client has read everything
            last = feed.frames
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, 10)
    return conn, books


def _store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "raw.db", book_depth=10)


def _trade_ids(store: SqliteStore, venue: str) -> dict[str, list[int]]:
    rows = store.query("SELECT symbol, trade_id FROM trade WHERE exchange = ?", (venue,))
    out: dict[str, list[int]] = {}
    for sym, tid in rows:
        out.setdefault(sym, []).append(tid)
    return out


def _last_books(books: list[Book]) -> dict[str, tuple[float, ...]]:
    return {b.symbol: b.levels for b in books}


def _same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


def _clean_final_books(venue: str) -> dict[str, tuple[float, ...]]:
    v = venues.get(venue)
    feed = v.make_feed(SYMBOLS[venue], tuple(v.kinds), book_depth=10)
    out: list = []
    for ts, text in venue_facts(venue).frames:
        feed.handle(text, ts, out)
    return _last_books([r for r in out if isinstance(r, Book)])


@pytest.mark.parametrize("venue", ["okx", "coinbase", "kraken"])
async def test_replay_to_store_loses_and_doubles_no_trade(venue: str, tmp_path: Path) -> None:
    store = _store(tmp_path)
    async with running_venue(venue) as ex:
        conn, books = await _collect(ex, venue, store)
    stored = _trade_ids(store, venue)
    assert {s: set(ids) for s, ids in stored.items()} == venue_facts(venue).trades
    assert all(len(ids) == len(set(ids)) for ids in stored.values())
    assert store.query("SELECT count(*) FROM gap WHERE reason != 'disconnect'") == [(0,)]
    assert store.query("SELECT count(*) FROM dead_letter") == [(0,)]
    clean = _clean_final_books(venue)
    last = _last_books(books)
    assert last.keys() == clean.keys() and all(_same(last[s], clean[s]) for s in clean)
    if venue != "coinbase":
        facts = venue_facts(venue)
        assert conn.feed.stats["checksums_verified"] == facts.book_updates_with_checksum
    assert conn.connects == 1
    store.close()


@pytest.mark.parametrize(
    ("venue", "fault"),
    [
        ("okx", {"corrupt_checksum_every": 40}),
        ("kraken", {"corrupt_checksum_every": 400}),
        ("okx", {"skip_update_every": 50}),
    ],
)
async def test_a_bad_checksum_is_a_gap_and_a_resync(venue: str, fault: dict, tmp_path: Path):
    store = _store(tmp_path)
    async with running_venue(venue, faults=FaultConfig(**fault)) as ex:
        conn, books = await _collect(ex, venue, store)
        fired = ex.counts["corrupted_checksums"] + ex.counts["skipped_updates"]
        rendered = ex.counts["snapshots_rendered"]
    assert fired >= 2
    gaps = store.query(
        "SELECT symbol, end_ts FROM gap WHERE reason = 'checksum_mismatch' ORDER BY start_ts"
    )
    assert len(gaps) == conn.feed.stats["checksum_mismatches"] >= 2
    assert all(end is not None for _, end in gaps)  # each closed by a rendered snapshot
    assert rendered >= 1 and conn.feed.stats["resyncs"] >= len(gaps)
    # the books are whole again: they end where a clean run's do
    clean = _clean_final_books(venue)
    last = _last_books(books)
    assert all(_same(last[s], clean[s]) for s in {s for s, _ in gaps})
    # trades never depended on the books
    assert {s: set(v) for s, v in _trade_ids(store, venue).items()} == venue_facts(venue).trades
    store.close()


async def test_a_dropped_connection_is_a_gap_and_a_reconnect(tmp_path: Path) -> None:
    store = _store(tmp_path)
    async with running_venue("coinbase", faults=FaultConfig(drop_after_frames=3000)) as ex:
        conn, books = await _collect(ex, "coinbase", store)
        drops = ex.counts["drops"]
    assert drops >= 1 and conn.connects >= 2
    gaps = store.query("SELECT stream, end_ts FROM gap WHERE reason = 'disconnect'")
    assert {"book"} <= {s for s, _ in gaps}
    stored = _trade_ids(store, "coinbase")
    recorded = venue_facts("coinbase").trades
    assert all(set(v) <= recorded[s] and len(v) == len(set(v)) for s, v in stored.items())
    store.close()


async def test_malformed_frames_are_dead_letters_and_books_go_on(tmp_path: Path) -> None:
    store = _store(tmp_path)
    async with running_venue("kraken", faults=FaultConfig(malformed_every=500)) as ex:
        conn, _ = await _collect(ex, "kraken", store)
        sent = ex.counts["malformed_frames"]
    assert sent >= 5
    assert store.query("SELECT count(*) FROM dead_letter") == [(sent,)]
    kinds = conn.feed.dead_letter_kinds
    assert sum(kinds.values()) == sent and set(kinds) <= {"malformed_json", "bad_payload"}
    assert conn.feed.stats["checksums_verified"] == venue_facts("kraken").book_updates_with_checksum
    store.close()


async def test_a_stall_past_the_silence_timeout_reconnects(tmp_path: Path) -> None:
    store = _store(tmp_path)
    faults = FaultConfig(stall_after_frames=100, stall_s=1.5)
    async with running_venue("okx", faults=faults) as ex:
        conn, _ = await _collect(ex, "okx", store, lambda c: c.connects >= 2, silence_timeout_s=0.5)
        stalls = ex.counts["stalls"]
    assert stalls == 1 and conn.connects >= 2
    assert store.query("SELECT count(*) FROM gap WHERE reason = 'disconnect'")[0][0] >= 1
    store.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_ccf_exchange_serves_each_configured_venue_on_its_port() -> None:
    from ccf.config import load_settings
    from ccf.sources.replay.exchange import ReplayStartError, replay_venues
    from ccf.sources.replay.venues.server import venue_servers

    port = _free_port()
    settings = load_settings(
        [
            "source=replay",
            "replay.speed=0",
            "venues=[{name: binance, symbols: [btcusdt]}, "
            f'{{name: kraken, symbols: ["xbt/chf"], streams: [book], replay_port: {port}}}]',
        ],
        environ={},
    )
    assert replay_venues(settings) == []  # not the Binance protocol's to serve
    tasks = [asyncio.create_task(run) for run in venue_servers(settings)]
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(50):
                try:
                    ws = await session.ws_connect(f"ws://127.0.0.1:{port}/")
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            await ws.send_str(
                '{"event":"subscribe","pair":["XBT/CHF"],"subscription":{"name":"book","depth":1000}}'
            )
            got = [(await ws.receive(timeout=10)).data for _ in range(3)]
            await ws.close()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert '"systemStatus"' in got[0] and '"subscribed"' in got[1]
    assert got[2].startswith("[") and '"as":' in got[2] and got[2].endswith('"XBT/CHF"]')
    no_port = load_settings(
        ["venues=[{name: okx, symbols: [btc-usdt], streams: [books]}]"], environ={}
    )
    with pytest.raises(ReplayStartError, match="set replay_port"):
        venue_servers(no_port)
