"""The PostgreSQL raw store against the embedded one, on real records and a real server.

Every record kind comes from the shared recordings: books, trades and quotes from
the Binance websocket recordings through the collector's feed, closed candles
from the one-minute kline file, open candles and a dead letter from the recorded
kline stream, stories from the saved RSS feeds. Written to both stores in the
writer's batch size, they must give the same rows, the same change counts and
the same summaries.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ccf.cli import app
from ccf.config import FeedConfig, PostgresConfig, ReplayConfig, load_settings, shared_dir
from ccf.records import AggTrade, Candle, DeadLetter, FeedStatus, Gap, Record, Trade
from ccf.sources import archive
from ccf.sources.binance.feed import BinanceFeed
from ccf.sources.collector import Collector
from ccf.sources.news.dedupe import DedupeIndex, assign
from ccf.sources.news.health import initial_status, on_failure, on_success
from ccf.sources.news.parse import parse_feed
from ccf.sources.recording import read_frames
from ccf.sources.replay.exchange import running_exchange
from ccf.sources.replay.timeline import load_timeline
from ccf.storage.postgres.connect import connect
from ccf.storage.postgres.raw import PgRawStore
from ccf.storage.sqlite import _KEYS, SqliteStore
from tests import infra, parts
from tests.infra import free_port, pg_overrides, scale_env
from tests.sources.recorded import SYMBOLS, recording_files

# the fixtures, bound by assignment: an import would read as redefined by the arguments
pg = infra.pg
postgres_server = infra.postgres_server

DATA = shared_dir() / "data"
KLINES = DATA / "klines" / "BTCUSDT-1m-2026-03-23_2026-04-11.csv.gz"
BATCH = 5000  # the writer's storage.batch_rows
INGESTED = 1_786_000_000 * 10**9
TABLES = (*_KEYS, "dead_letter", "part_status")


@cache
def recorded_symbol(sym: str, limit: int) -> tuple[Record, ...]:
    """The first ``limit`` records of one recording through the collector's feed, in
    receive order: depth-20 books, trades, quotes and the gaps the feed opens."""
    out: list[Record] = []
    feed = BinanceFeed((sym,), ("depth@100ms", "trade", "bookTicker"), book_depth=20)
    for ts, frame in (fr for f in recording_files((sym,)) for fr in read_frames(f)):
        if frame.startswith('{"lastUpdateId"'):
            feed.on_snapshot(sym, frame, ts, out)
        else:
            feed.handle(frame, ts, out)
        if len(out) >= limit:
            break
    return tuple(out[:limit])


def market_records(per_symbol: int = 15_000) -> list[Record]:
    """The first records of each symbol (a few minutes of the busy quote stream): every
    kind and both symbols, small enough to write many times over."""
    return [r for sym in SYMBOLS for r in recorded_symbol(sym, per_symbol)]


@cache
def closed_candles(n: int = 3000) -> tuple[Candle, ...]:
    """The first ``n`` bars of the kline file: closed, no trade count, NaN taker volumes."""
    _, recs = archive.parse(
        archive.csv_text(KLINES.read_bytes(), KLINES.name), KLINES.name, ts_recv=1
    )
    return tuple(r for _, r in zip(range(n), recs, strict=False))  # type: ignore[misc]


@cache
def kline_stream() -> tuple[Record, ...]:
    """The recorded kline_1m frames (open candles) and one cut-off frame (a dead letter)."""
    path = DATA / "binance" / "fixtures" / "BINANCE.ws.1.0"
    lines = [line.split(": ", 1) for line in path.read_text().splitlines() if ": " in line]
    frames = [(int(float(t) * 1e9), f) for t, f in lines if "@kline_1m" in f]
    feed = BinanceFeed(("nknusdt", "blzeth", "lrcbtc", "runeeur"), ("kline_1m",), book_depth=20)
    out: list[Record] = []
    for ts, frame in frames:
        feed.handle(frame, ts, out)
    feed.handle(frames[0][1][:60], frames[0][0], out)
    return tuple(out)


def news_records() -> list[Record]:
    """Stories and sightings from the two saved feeds, deduplicated, and feed statuses."""
    index = DedupeIndex(3600 * 10**9)
    out: list[Record] = []
    for n, name in enumerate(("coindesk_2026-09-30.xml", "cointelegraph_2026-02-15.xml")):
        source = name.split("_")[0]
        parsed = parse_feed(
            (DATA / "news" / name).read_bytes(),
            source=source,
            url=f"https://{source}.example/rss",
            ingested_at=INGESTED + n,
        )
        got = assign(index, parsed.entries, INGESTED + n)
        st = initial_status(FeedConfig(name=source, url=f"https://{source}.example/rss"), 0)
        st = on_success(
            st,
            now=INGESTED + n,
            http_status=200,
            items_seen=len(parsed.entries),
            new_items=len(got.items),
            bozo=parsed.bozo,
            etag='"v1"',
            last_modified="",
        )
        out += [*got.items, *got.sources, st]
    out.append(on_failure(st, now=INGESTED + 9, error="HTTP 503", http_status=503))
    return out


def agg_trades(trades: list[Trade]) -> list[AggTrade]:
    """Real trades as one-trade aggregates (the recordings hold no aggTrade stream)."""
    return [
        AggTrade(
            t.exchange,
            t.symbol,
            t.trade_id,
            t.price,
            t.qty,
            t.trade_id,
            t.trade_id,
            t.side,
            t.ts_event,
            t.ts_recv,
        )  # fmt: skip
        for t in trades
    ]


def all_records() -> list[Record]:
    market = market_records()
    trades = [r for r in market if type(r) is Trade]
    return [
        *market,
        *agg_trades(trades[:5000]),
        *closed_candles(),
        *kline_stream(),
        *news_records(),
    ]


def rewritten(r: Record) -> bool:
    """Whether writing ``r`` again changes a row (or adds one), in either store."""
    return type(r) in (Gap, FeedStatus, DeadLetter) or (type(r) is Candle and not r.closed)


def write_batches(store: Any, records: list[Record]) -> list[int]:
    return [store.write(records[i : i + BATCH]) for i in range(0, len(records), BATCH)]


def rows(store: Any, table: str) -> list[tuple[Any, ...]]:
    order = {"dead_letter": "id", "part_status": "part"}.get(table) or _KEYS[table]
    return store.query(f"SELECT * FROM {table} ORDER BY {order}")


def both(tmp_path: Path, cfg: PostgresConfig, depth: int = 10) -> tuple[SqliteStore, PgRawStore]:
    return SqliteStore(tmp_path / "ccf.sqlite", book_depth=depth), PgRawStore(cfg, book_depth=depth)


def test_real_records_give_equal_rows_counts_and_summaries(
    tmp_path: Path, pg: PostgresConfig
) -> None:
    records = all_records()
    lite, post = both(tmp_path, pg)  # depth 10: the depth-20 books widen both tables
    assert write_batches(post, records) == write_batches(lite, records)
    for table in TABLES:
        assert rows(post, table) == rows(lite, table), table
    assert post.summaries() == lite.summaries()
    assert {s.kind for s in post.summaries()} == {"book", "trade", "agg_trade", "quote", "candle"}
    assert post.dead_letter_counts() == lite.dead_letter_counts() == {"-": 1}
    assert list(post.iter_news()) == list(lite.iter_news())
    assert list(post.iter_news(INGESTED + 1, INGESTED + 2)) == list(
        lite.iter_news(INGESTED + 1, INGESTED + 2)
    )
    assert sorted(post.news_keys(INGESTED)) == sorted(lite.news_keys(INGESTED))
    assert post.feed_statuses() == lite.feed_statuses()
    assert post.news_sources() == lite.news_sources()
    for store in (lite, post):
        store.heartbeat("collect", 7, 1, 2, "running", "{}")
        store.heartbeat("collect", 7, 1, 3, "stopped", '{"rows": 1}')
    assert post.parts() == lite.parts() == [("collect", 7, 1, 3, "stopped", '{"rows": 1}')]
    # callers' SQLite SQL runs unchanged: ? placeholders, 0/1 booleans, a literal %
    sql = (
        "SELECT count(*), max(open_time) FROM candle "
        "WHERE closed=1 AND symbol LIKE '%usdt' AND interval=?"
    )
    last = closed_candles()[-1].open_time
    assert post.query(sql, ("1m",)) == lite.query(sql, ("1m",)) == [(3000, last)]


def test_a_batch_written_twice_changes_nothing(tmp_path: Path, pg: PostgresConfig) -> None:
    records = all_records()
    lite, post = both(tmp_path, pg)
    first = records[: len(records) // 2 + 1234]  # then a batch of stored and new keys
    assert write_batches(post, first) == write_batches(lite, first)
    assert write_batches(post, records) == write_batches(lite, records)
    before = {t: rows(post, t) for t in TABLES}
    assert before == {t: rows(lite, t) for t in TABLES}
    # events are written once; open candles, gaps and feed statuses are replaced, dead
    # letters appended
    events = [r for r in records if not rewritten(r)]
    assert write_batches(post, events) == [0] * len(write_batches(lite, events))
    # the replaced and appended kinds count as in SQLite; their rows stay the same
    assert write_batches(post, records) == write_batches(lite, records)
    assert {t: rows(post, t) for t in TABLES if t != "dead_letter"} == {
        t: v for t, v in before.items() if t != "dead_letter"
    }


def test_a_closed_candle_is_never_rewritten_by_a_later_open_update(
    tmp_path: Path, pg: PostgresConfig
) -> None:
    closed = list(closed_candles(50))
    # the same bars seen live before they closed, and a late open update after
    early = [c._replace(closed=False, close=c.open, high=c.open, ts_recv=2) for c in closed]
    late = [c._replace(closed=False, close=c.close * 1.01, ts_recv=3) for c in closed]
    lite, post = both(tmp_path, pg)
    for store in (lite, post):
        assert store.write(early[:25]) == 25
        assert store.write(closed) == 50  # 25 open rows rewritten, 25 new
        assert store.write(late) == 0
        assert store.write(early[25:]) == 0
    assert rows(post, "candle") == rows(lite, "candle")
    assert [r[14] for r in rows(post, "candle")] == [1] * 50
    assert [r[8] for r in rows(post, "candle")] == [c.close for c in closed]
    # one batch holding open, closed and open again for each bar: row by row, as SQLite
    seq = [c for trio in zip(early, closed, late, strict=True) for c in trio]
    lite2, post2 = (
        SqliteStore(tmp_path / "b.sqlite"),
        PgRawStore(pg.model_copy(update={"db_schema": "seq"})),
    )
    assert post2.write(seq) == lite2.write(seq) == 100
    assert rows(post2, "candle") == rows(lite2, "candle") == rows(lite, "candle")
    open_only = kline_stream()[:2]
    assert post2.write(open_only * 2) == lite2.write(open_only * 2) == 4


def test_text_with_nul_does_not_fail_a_batch(pg: PostgresConfig) -> None:
    store = PgRawStore(pg)
    bad = DeadLetter("binance", "btcusdt", "malformed json", '{"e":"trade\x00"}', 1)
    assert store.write([bad, market_records()[0]]) == 2
    assert store.query("SELECT frame FROM dead_letter") == [('{"e":"trade\ufffd"}',)]


def test_a_row_beyond_int64_is_a_dead_letter_not_a_lost_batch(pg: PostgresConfig) -> None:
    """Issue 17: such a row made the binary COPY fail, and the writer lost its batch."""
    store = PgRawStore(pg)
    good = market_records()[:3]
    bad = Trade("binance", "btcusdt", 2**64, 1.0, 1.0, "buy", 1, 2)
    assert store.write([*good, bad]) == 4
    (reason,) = store.query("SELECT reason FROM dead_letter")[0]
    assert reason == f"unstorable_row: Trade trade_id={2**64} is beyond int64"
    assert store.refused_rows == 1
    assert store.write(good) == 0  # the good rows were stored, once


def test_a_reader_of_an_empty_database_is_told_to_collect_first(pg: PostgresConfig) -> None:
    with pytest.raises(FileNotFoundError, match="run `ccf collect` first"):
        PgRawStore(pg, readonly=True)
    PgRawStore(pg).close()
    reader = PgRawStore(pg, readonly=True)
    assert reader.summaries() == [] and reader.parts() == []
    with pytest.raises(Exception, match="read-only"):
        reader.write(market_records()[:10])


def test_parts_that_open_a_new_database_at_once_make_one_schema(pg: PostgresConfig) -> None:
    start = threading.Barrier(4)

    def open_store(depth: int) -> PgRawStore:
        start.wait()
        return PgRawStore(pg, book_depth=depth)

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(open_store, (5, 10, 20, 20)))
    assert len(stores[0].query("SELECT * FROM book")) == 0
    assert len(stores[0]._columns("book")) == 6 + 4 * 20  # the deepest one's width
    brin = stores[0].query(
        "SELECT tablename FROM pg_indexes WHERE indexdef LIKE ? ORDER BY 1", ("%USING brin%",)
    )
    assert brin == [("agg_trade",), ("book",), ("quote",), ("trade",)]
    for store in stores:
        store.close()


_KILLED_WRITER = """
import pickle, sys
from ccf.config import PostgresConfig
from ccf.storage.postgres.raw import PgRawStore
cfg = PostgresConfig.model_validate_json(sys.argv[1])
with open(sys.argv[2], "rb") as f:
    trades = pickle.load(f)
store = PgRawStore(cfg)
print(store._con.info.backend_pid, flush=True)
k = 0
while True:  # batch k: the same trades under ids shifted by k * 10**10
    store.write([t._replace(trade_id=t.trade_id + k * 10**10) for t in trades])
    print(k, flush=True)
    k += 1
"""


def test_a_writer_killed_mid_transaction_loses_nothing_it_committed(
    tmp_path: Path, pg: PostgresConfig
) -> None:
    trades = [r for r in market_records() if type(r) is Trade and r.symbol == "btcusdt"]
    n = len(trades)
    (tmp_path / "trades.pickle").write_bytes(pickle.dumps(trades))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _KILLED_WRITER,
            pg.model_dump_json(),
            str(tmp_path / "trades.pickle"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=scale_env(),
    )
    assert proc.stdout is not None
    backend = int(proc.stdout.readline())
    committed = [proc.stdout.readline() for _ in range(3)]
    watch = connect(pg)
    in_transaction = "SELECT xact_start IS NOT NULL FROM pg_stat_activity WHERE pid = %s"
    while not watch.execute(in_transaction, (backend,)).fetchone()[0]:
        pass  # until the writer is inside its next batch's transaction
    os.kill(proc.pid, signal.SIGKILL)
    committed += proc.stdout.read().split()
    proc.wait()
    gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %s"
    while not watch.execute(gone, (backend,)).fetchone()[0]:
        time.sleep(0.01)  # its server process ends the transaction (commit sent, or abort)
    per_batch = dict(
        watch.execute("SELECT trade_id / 10000000000, count(*) FROM trade GROUP BY 1").fetchall()
    )
    # every batch it reported is there in full; the one it was killed in, all or nothing
    assert sorted(per_batch) == list(range(len(per_batch)))
    assert set(per_batch.values()) == {n}
    assert len(committed) <= len(per_batch) <= len(committed) + 1
    # a new writer replays from where it likes: nothing doubles
    store = PgRawStore(pg)
    replay = [t._replace(trade_id=t.trade_id + len(per_batch) * 10**10) for t in trades]
    assert store.write(replay) == n and store.write(replay) == 0
    watch.close()


async def test_ccf_collect_writes_into_postgres(tmp_path: Path, pg: PostgresConfig) -> None:
    """The collector's writer thread and heartbeats on PostgreSQL, nothing in SQLite."""
    timeline = load_timeline(recording_files(("btcusdt",)))
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        settings = load_settings(
            [
                f"replay.port={ex.port}",
                f"data_dir={tmp_path}",
                "symbols=[btcusdt]",
                "collect.print_every_s=0",
                *pg_overrides(pg),
            ],
            environ={},
        )
        await parts.run_until(
            Collector(settings), lambda c: c.counts[("btcusdt", "trade")] >= 2000, 120
        )
    store = PgRawStore(pg, readonly=True)
    ids = [r[0] for r in store.query("SELECT trade_id FROM trade ORDER BY 1")]
    assert len(ids) >= 2000 and ids == list(range(ids[0], ids[0] + len(ids)))  # no hole
    assert {s.kind for s in store.summaries()} >= {"book", "trade", "quote"}
    assert [(p[0], p[4]) for p in store.parts()] == [("collect", "stopped")]
    assert not (tmp_path / "ccf.sqlite").exists()


def _status(overrides: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["status", "--json", *overrides])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_ccf_status_json_lists_the_postgres_tables(tmp_path: Path, pg: PostgresConfig) -> None:
    overrides = [f"data_dir={tmp_path}", *pg_overrides(pg)]
    assert _status(overrides)["exists"] is False
    down = _status([*overrides, f"storage.postgres.port={free_port()}"])
    assert not down["exists"] and down["error"].startswith("cannot connect to postgresql://")
    assert "secret" not in json.dumps(down)
    records = [*market_records(), *closed_candles(100), *kline_stream(), *news_records()]
    lite, post = both(tmp_path, pg, depth=20)
    for store in (lite, post):
        store.write(records)
        store.heartbeat("collect", os.getpid(), 1, 2, "stopped", "{}")
    on_pg, on_lite = _status(overrides), _status([f"data_dir={tmp_path}"])
    assert on_pg["exists"] and on_pg["store"].startswith("postgresql://ccf_test@127.0.0.1")
    assert "secret" not in json.dumps(on_pg)
    assert {(s["kind"], s["symbol"]) for s in on_pg["streams"]} >= {
        (k, s) for k in ("book", "trade", "quote") for s in SYMBOLS
    }
    for report in (on_pg, on_lite):
        for s in report["streams"]:
            s.pop("receive_age_s")
        report.pop("store")
    assert on_pg == on_lite
