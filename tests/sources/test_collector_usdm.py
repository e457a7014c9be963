"""Binance USD-M end to end: the replay exchange serving the real futures recording over
the futures protocol (fapi REST, @depth@0ms with pu), the collector through the venue
interface, the SQLite store. Expected values come from ``test_venue_usdm``'s independent
rebuild of the recording."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from ccf.config import ReplayConfig, Settings, load_settings, shared_dir
from ccf.records import book_columns
from ccf.sources.collector import Collector
from ccf.sources.replay.exchange import running_exchange
from ccf.sources.replay.timeline import Timeline, load_timeline
from ccf.storage import SqliteStore
from tests import parts
from tests.sources.recorded import same_levels
from tests.sources.test_venue_usdm import frames, reference

LEVELS = ", ".join(book_columns(20))
USDM = "venues=[{name: binance_usdm, symbols: [btcusdt], streams: [depth@0ms, trade, bookTicker]}]"


def usdm_file() -> Path:
    return shared_dir() / "data" / "binance" / "usdm_btcusdt_20240808.jsonl.gz"


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return load_timeline([usdm_file()])


def trades_after_snapshot() -> list[int]:
    """The replay starts at the snapshot: the trades recorded after it."""
    items = frames()
    at = next(i for i, (_, f) in enumerate(items) if f.startswith('{"lastUpdateId"'))
    return sorted(json.loads(f)["data"]["t"] for _, f in items[at + 1 :] if '"e":"trade"' in f[:60])


def settings_for(tmp_path: Path, port: int, *extra: str) -> Settings:
    return load_settings(
        [
            f"replay.port={port}",
            f"data_dir={tmp_path / 'data'}",
            "collect.print_every_s=0",
            "collect.silence_timeout_s=120",
            USDM,
            *extra,
        ],
        environ={},
    )


def stored(store: SqliteStore, sql: str) -> list[tuple]:
    return store.query(sql, ("binance_usdm", "btcusdt"))


def assert_books_exact(store: SqliteStore) -> int:
    books = reference()[1]
    rows = stored(
        store,
        f"SELECT update_id, {LEVELS} FROM book WHERE exchange=? AND symbol=? ORDER BY update_id",
    )
    assert rows
    for row in rows:
        assert row[0] in books, f"stored update id {row[0]} is not in the recording"
        assert same_levels(row[1:], books[row[0]]), f"book differs at u={row[0]}"
    return len(rows)


@pytest.mark.slow
async def test_usdm_replay_to_store_loses_and_doubles_no_trade(
    tmp_path: Path, timeline: Timeline
) -> None:
    want = trades_after_snapshot()
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        settings = settings_for(tmp_path, ex.port)
        c = await parts.run_until(
            Collector(settings),
            lambda c: c.counts[("btcusdt", "trade")] >= len(want),
            120,
            lambda c: c.status(),
        )
    assert c.venue.name == "binance_usdm" and c.rest.depth_path == "/fapi/v1/depth"
    store = SqliteStore(settings.db_path, readonly=True)
    ids = [
        r[0]
        for r in stored(
            store, "SELECT trade_id FROM trade WHERE exchange=? AND symbol=? ORDER BY 1"
        )
    ]
    assert ids == want  # complete, none doubled
    n = assert_books_exact(store)
    assert n > 0.9 * len(reference()[1])
    assert store.query("SELECT count(*) FROM gap")[0][0] == 0
    assert store.dead_letter_counts() == {}
    quotes = stored(store, "SELECT count(*) FROM quote WHERE exchange=? AND symbol=?")[0][0]
    assert quotes > 60_000
    assert store.query("SELECT DISTINCT exchange FROM trade") == [("binance_usdm",)]


async def test_skipped_diffs_break_pu_and_resync_the_book(
    tmp_path: Path, timeline: Timeline
) -> None:
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        settings = settings_for(tmp_path, ex.port)
        ex.set_faults(skip_update_every=1500)
        c = await parts.run_until(
            Collector(settings),
            lambda c: c.feed.stats["resyncs"] >= 2 and not c.feed.open_gaps,
            120,
            lambda c: c.status(),
        )
    store = SqliteStore(settings.db_path, readonly=True)
    book_gaps = store.query("SELECT stream, reason, detail, end_ts FROM gap")
    assert book_gaps and all(
        g[0] == "book" and g[1] == "sequence_gap" and "pu=" in g[2] for g in book_gaps
    )
    assert all(g[3] is not None for g in book_gaps[1::2])  # each outage closed
    assert sum(conn.connects for conn in c.connections) == 1  # a resync, not a reconnect
    assert_books_exact(store)  # never a record from a book known to be wrong


@pytest.mark.slow
async def test_spot_and_usdm_at_once_into_one_store(tmp_path: Path, timeline: Timeline) -> None:
    """Two replay exchanges (spot on replay.port, USD-M on its venue's replay_port), one
    collector per venue as `ccf collect` runs them, one store keyed by (exchange, symbol)."""
    spot_files = [
        shared_dir() / "data" / "binance" / f"spot_btcusdt_{d}.jsonl.gz"
        for d in ("20240808", "20240809")
    ]
    want = trades_after_snapshot()
    spot_cfg = ReplayConfig(port=0, speed=0, loop=False, files=tuple(spot_files))
    async with (
        running_exchange(spot_cfg) as spot,
        running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as fut,
    ):
        settings = load_settings(
            [
                f"replay.port={spot.port}",
                f"data_dir={tmp_path / 'data'}",
                "collect.print_every_s=0",
                "collect.silence_timeout_s=120",
                "venues=[{name: binance, symbols: [btcusdt]}, {name: binance_usdm, symbols: "
                f"[btcusdt], streams: [depth@0ms, trade, bookTicker], replay_port: {fut.port}}}]",
            ],
            environ={},
        )
        both = [Collector(settings, venue=v) for v in settings.venue_list()]
        await parts.run_until(
            _Together(both),
            lambda t: (
                both[1].counts[("btcusdt", "trade")] >= len(want)
                and both[0].counts[("btcusdt", "trade")] >= 19_000
            ),
            180,
            lambda t: [c.status() for c in both],
        )
    store = SqliteStore(settings.db_path, readonly=True)
    per_venue = dict(store.query("SELECT exchange, count(*) FROM trade GROUP BY exchange"))
    assert per_venue["binance_usdm"] == len(want)
    assert per_venue["binance"] >= 19_000
    assert_books_exact(store)
    assert store.query("SELECT count(*) FROM gap")[0][0] == 0


class _Together:
    """Several collectors run as one part (what `ccf collect` does with several venues)."""

    def __init__(self, collectors: list[Collector]) -> None:
        self.collectors = collectors

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(c.run(stop) for c in self.collectors))


def test_each_further_venue_gets_its_own_replay_exchange(tmp_path: Path) -> None:
    from ccf.sources.replay.exchange import ReplayStartError, replay_venues

    two = "venues=[{name: binance, symbols: [btcusdt]}, {name: binance_usdm, symbols: [btcusdt]"
    s = load_settings([two + f", replay_port: 9555, replay_files: [{usdm_file()}]}}]"], environ={})
    [cfg] = replay_venues(s)
    assert (cfg.port, cfg.files) == (9555, (usdm_file(),))
    with pytest.raises(ReplayStartError, match="set replay_files and replay_port"):
        replay_venues(load_settings([two + "}]"], environ={}))


@pytest.mark.slow
async def test_loop_passes_join_without_a_gap(tmp_path: Path, timeline: Timeline) -> None:
    """The second pass opens with the replay's synthetic diff back to the start book: a
    futures diff (pu, T) that the feed takes, so the book never breaks."""
    want = trades_after_snapshot()
    cfg = ReplayConfig(port=0, speed=0, loop=True, max_passes=2)
    async with running_exchange(cfg, timeline) as ex:
        settings = settings_for(tmp_path, ex.port)
        c = await parts.run_until(
            Collector(settings),
            lambda c: c.counts[("btcusdt", "trade")] >= 2 * len(want),
            120,
            lambda c: c.status(),
        )
    assert c.feed.stats["snapshots"] == 1 and c.feed.stats["resyncs"] == 0
    store = SqliteStore(settings.db_path, readonly=True)
    assert store.query("SELECT count(*) FROM gap")[0][0] == 0
    assert store.dead_letter_counts() == {}
    n = stored(store, "SELECT count(DISTINCT trade_id) FROM trade WHERE exchange=? AND symbol=?")
    assert n[0][0] == 2 * len(want)  # the second pass's trade ids follow the first's


@pytest.mark.slow
async def test_dropped_connections_lose_no_trade(tmp_path: Path, timeline: Timeline) -> None:
    """The exchange cuts the connection every 30,000 frames: each drop is a gap and a
    resync; the trades missed meanwhile come back over /fapi/v1/historicalTrades."""
    want = trades_after_snapshot()
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        settings = settings_for(tmp_path, ex.port, "collect.reconnect.base_s=0.05")
        ex.set_faults(drop_after_frames=30_000)
        c = await parts.run_until(
            Collector(settings),
            # every trade in, live or filled over REST (the fill queue being empty is not
            # enough: a fill still in flight would be cut off by the stop)
            lambda c: (
                sum(conn.connects for conn in c.connections) >= 3
                and not c.feed.open_gaps
                and c.counts[("btcusdt", "trade")] >= len(want)
            ),
            120,
            lambda c: c.status(),
        )
    assert c.rest.trades_path == "/fapi/v1/historicalTrades"
    store = SqliteStore(settings.db_path, readonly=True)
    rows = stored(store, "SELECT trade_id, backfilled FROM trade WHERE exchange=? AND symbol=?")
    ids = sorted(t for t, _ in rows)
    assert ids == want  # none lost, none doubled
    assert any(b for _, b in rows)  # some came back over REST
    found = store.query("SELECT stream, reason, end_ts FROM gap")
    assert {(g[0], g[1]) for g in found} >= {("book", "disconnect"), ("trade", "disconnect")}
    assert all(g[2] is not None for g in found)
    assert_books_exact(store)


@pytest.mark.slow
async def test_malformed_frames_are_dead_letters_and_lose_nothing(
    tmp_path: Path, timeline: Timeline
) -> None:
    want = trades_after_snapshot()
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        settings = settings_for(tmp_path, ex.port)
        ex.set_faults(malformed_every=2000)
        c = await parts.run_until(
            Collector(settings),
            lambda c: c.counts[("btcusdt", "trade")] >= len(want),
            120,
            lambda c: c.status(),
        )
    store = SqliteStore(settings.db_path, readonly=True)
    letters = store.query("SELECT exchange, reason, frame FROM dead_letter")
    assert len(letters) == c.feed.stats["dead_letters"] >= 20
    assert all(ex == "binance_usdm" and frame for ex, _, frame in letters)
    ids = [
        r[0]
        for r in stored(
            store, "SELECT trade_id FROM trade WHERE exchange=? AND symbol=? ORDER BY 1"
        )
    ]
    assert ids == want
    assert_books_exact(store)
    assert store.query("SELECT count(*) FROM gap")[0][0] == 0


def test_venues_sharing_a_metrics_endpoint_sum_the_part_wide_counters() -> None:
    """`ccf collect` with two venues serves one endpoint: gaps and resyncs are counted
    once, over both venues; per-symbol counts are labelled venue:symbol beside spot."""
    from ccf.monitoring.metrics import PartMetrics

    s = load_settings(
        [
            "metrics.enabled=false",
            "venues=[{name: binance, symbols: [btcusdt]}, {name: binance_usdm, symbols: "
            "[btcusdt], replay_port: 9444}]",
        ],
        environ={},
    )
    m = PartMetrics("collect", s)
    group: list[Collector] = []
    spot, perp = (Collector(s, metrics=m, venue=v, group=group) for v in s.venue_list())
    spot.feed.stats["gaps"], perp.feed.stats["gaps"] = 3, 2
    perp.counts[("btcusdt", "trade")] = 7
    m.snapshot()
    spot.feed.stats["gaps"] = 4
    m.snapshot()
    assert m.registry.get_sample_value("ccf_gaps_total") == 6
    assert (
        m.registry.get_sample_value("ccf_events_in_total", {"symbol": "binance_usdm:btcusdt"}) == 7
    )
    assert (spot.part, perp.part) == ("collect", "collect:binance_usdm")
