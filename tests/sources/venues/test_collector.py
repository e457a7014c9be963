"""OKX, Coinbase and Kraken through the collector: each venue's replay exchange, the
``Collector`` configured with ``venues=[...]`` as ``ccf collect`` runs it, the SQLite store;
every recorded trade stored once, and a corrupted checksum resynced by resubscribing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ccf.config import FaultConfig, Settings, load_settings
from ccf.sources import venues
from ccf.sources.collector import Collector
from ccf.sources.replay.venues.server import running_venue
from ccf.storage import SqliteStore
from tests import parts
from tests.sources.venues.recorded import SYMBOLS, venue_facts

STREAMS = {"okx": "books, trades, tickers", "coinbase": "level2, matches, ticker", "kraken": "book"}


def settings_for(tmp_path: Path, venue: str, port: int) -> Settings:
    syms = ", ".join(f'"{s}"' for s in SYMBOLS[venue])
    return load_settings(
        [
            "source=replay",
            f"data_dir={tmp_path / 'data'}",
            "collect.print_every_s=0",
            "collect.book_depth=10",
            f"venues=[{{name: {venue}, symbols: [{syms}], streams: [{STREAMS[venue]}], "
            f"replay_port: {port}}}]",
        ],
        environ={},
    )


def _trades(store: SqliteStore, venue: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for sym, tid in store.query("SELECT symbol, trade_id FROM trade WHERE exchange=?", (venue,)):
        out.setdefault(sym, []).append(tid)
    return out


@pytest.mark.parametrize("venue", ["okx", "coinbase", "kraken"])
async def test_collector_stores_every_recorded_trade_once(venue: str, tmp_path: Path) -> None:
    facts = venue_facts(venue)
    async with running_venue(venue) as ex:
        settings = settings_for(tmp_path, venue, ex.port)
        c = await parts.run_until(
            Collector(settings),
            lambda c: ex.done.is_set() and c.feed.frames >= ex.counts["played"] * 0.95,
            60,
            lambda c: c.status(),
        )
    assert c.venue.name == venue
    store = SqliteStore(settings.db_path, readonly=True)
    stored = _trades(store, venue)
    assert {s: set(v) for s, v in stored.items()} == facts.trades
    assert all(len(v) == len(set(v)) for v in stored.values())
    assert store.query("SELECT count(*) FROM gap WHERE reason != 'disconnect'") == [(0,)]
    assert store.dead_letter_counts() == {}
    books = store.query("SELECT count(*) FROM book WHERE exchange=?", (venue,))[0][0]
    assert books > 250
    if venue != "coinbase":
        assert c.feed.stats["checksums_verified"] == facts.book_updates_with_checksum


async def test_collector_resyncs_a_corrupted_checksum_by_resubscribing(tmp_path: Path) -> None:
    async with running_venue("okx", faults=FaultConfig(corrupt_checksum_every=60)) as ex:
        settings = settings_for(tmp_path, "okx", ex.port)
        c = await parts.run_until(
            Collector(settings),
            lambda c: (
                ex.done.is_set()
                and c.feed.stats["checksum_mismatches"] >= 2
                and not any(k[1] == "book" for k in c.feed.open_gaps)
            ),
            60,
            lambda c: (c.status(), dict(ex.counts)),
        )
        rendered = ex.counts["snapshots_rendered"]
    store = SqliteStore(settings.db_path, readonly=True)
    gaps = store.query("SELECT end_ts FROM gap WHERE reason='checksum_mismatch'")
    assert len(gaps) == c.feed.stats["checksum_mismatches"] and all(g[0] for g in gaps)
    assert rendered == len(gaps)  # each resync answered by a snapshot, on the same connection
    assert sum(conn.connects for conn in c.connections) == 1
    assert {s: set(v) for s, v in _trades(store, "okx").items()} == venue_facts("okx").trades


async def test_the_collector_pings_okx_when_the_feed_goes_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OKX closes a connection silent for 30 s unless the client sends ``ping``: with the
    replay stalled past the ping interval but not the silence timeout, the collector pings
    and stays on the same connection."""
    okx = venues.get("okx")
    quick = dataclasses.replace(okx, rules=dataclasses.replace(okx.rules, ping_interval_s=0.2))
    monkeypatch.setitem(venues._REGISTRY, "okx", quick)
    faults = FaultConfig(stall_after_frames=50, stall_s=1.5)
    async with running_venue("okx", faults=faults) as ex:
        settings = settings_for(tmp_path, "okx", ex.port)
        c = await parts.run_until(
            Collector(settings),
            lambda c: ex.done.is_set() and ex.counts["pings"] >= 3 and c.feed.frames > 300,
            60,
            lambda c: (c.status(), dict(ex.counts)),
        )
    assert sum(conn.pings for conn in c.connections) >= 3
    assert sum(conn.connects for conn in c.connections) == 1
