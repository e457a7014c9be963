"""The embedded store: idempotent writes, gap upserts, concurrent readers."""

import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ccf.records import Book, Candle, DeadLetter, Gap, Quote, Trade, book_columns
from ccf.storage import SqliteStore, StoreWriter

NS = 1_000_000


def _trades(n: int, start: int = 1) -> list[Trade]:
    return [
        Trade("binance", "btcusdt", i, 100.0 + i, 0.5, "buy", i * NS, i * NS + 5)
        for i in range(start, start + n)
    ]


def test_writes_are_idempotent_and_keyed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite", book_depth=2)
    levels = (101.0, 1.0, 102.0, 2.0, 99.0, 3.0, math.nan, math.nan)
    batch = [
        *_trades(100),
        Book("binance", "btcusdt", "diff", 7, 7 * NS, 8 * NS, levels),
        Quote("binance", "btcusdt", 7, 99.0, 3.0, 101.0, 1.0, 8 * NS, 8 * NS),
    ]
    assert store.write(batch) == 102
    store.write(batch)  # a replay after a crash: nothing doubles
    store.write(_trades(50, start=80))  # overlapping batch
    rows = store.query("SELECT count(*), min(trade_id), max(trade_id) FROM trade")
    assert rows == [(129, 1, 129)]
    (book,) = store.query(f"SELECT {', '.join(book_columns(2))} FROM book")
    assert book[:6] == (101.0, 1.0, 102.0, 2.0, 99.0, 3.0)
    assert book[6] is None  # a missing level is NULL
    assert store.query("SELECT count(*) FROM quote") == [(1,)]


def test_gap_is_closed_by_rewriting_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    gap = Gap("binance", "btcusdt", "book", 10 * NS, None, "disconnect", "connection lost", 11)
    store.write([gap])
    assert store.query("SELECT count(*) FROM gap WHERE end_ts IS NULL") == [(1,)]
    store.write([gap._replace(end_ts=20 * NS, detail="resynced")])
    assert store.query("SELECT end_ts, detail FROM gap") == [(20 * NS, "resynced")]


def test_candles_update_until_closed_and_dead_letters_keep_the_frame(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite")
    open_c = Candle(
        "binance", "btcusdt", "1m", 0, 59_999 * NS, 1, 2, 0.5, 1.5, 10, 15, 3, 4, 6, False, 1, 2
    )
    store.write([open_c])
    store.write([open_c._replace(close=1.7, closed=True)])
    assert store.query("SELECT close, closed FROM candle") == [(1.7, 1)]
    # a closed candle is final: a late open update or a second backfill changes nothing
    store.write([open_c._replace(close=9.9), open_c._replace(close=1.7, closed=True, ts_recv=99)])
    assert store.query("SELECT close, closed, ts_recv FROM candle") == [(1.7, 1, 2)]
    store.write([DeadLetter("binance", "", "malformed json", '{"stream":', 5)])
    assert store.query("SELECT reason, frame FROM dead_letter") == [
        ("malformed json", '{"stream":')
    ]
    assert store.dead_letter_counts() == {"-": 1}


def test_wider_book_adds_columns(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    SqliteStore(path, book_depth=1).close()
    store = SqliteStore(path, book_depth=2)
    store.write([Book("binance", "x", "diff", 1, 1, 1, tuple(float(i) for i in range(8)))])
    assert store.query("SELECT a_p_1, b_q_1 FROM book") == [(2.0, 7.0)]


def test_writer_thread_drains_everything_on_close(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    writer = StoreWriter(lambda: SqliteStore(path), batch_rows=300, flush_interval_s=0.05)
    for start in range(1, 5001, 250):
        writer.submit(_trades(250, start))
    writer.close()
    assert writer.rows_written == 5000
    assert SqliteStore(path).query("SELECT count(*) FROM trade") == [(5000,)]


def test_writer_reports_a_broken_store(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RuntimeError, match="store writer failed"):
        StoreWriter(lambda: SqliteStore(blocker / "s.sqlite"))


def test_another_process_reads_while_one_writes(tmp_path: Path) -> None:
    """WAL: a reader process sees growing, consistent counts while writes go on."""
    path = tmp_path / "s.sqlite"
    SqliteStore(path).close()
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import time
            from ccf.storage import SqliteStore
            store = SqliteStore({str(path)!r}, readonly=True)
            seen = []
            deadline = time.time() + 60
            while time.time() < deadline:
                (n, hi), = store.query("SELECT count(*), coalesce(max(trade_id), 0) FROM trade")
                assert n == hi, (n, hi)   # every committed batch is whole
                seen.append(n)
                if n >= 20000:
                    break
                time.sleep(0.01)
            assert seen == sorted(seen)
            print(len(set(seen)), seen[-1])
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    writer = StoreWriter(lambda: SqliteStore(path), batch_rows=500, flush_interval_s=0.01)
    for start in range(1, 20001, 500):
        writer.submit(_trades(500, start))
        time.sleep(0.01)
    writer.close()
    out, _ = reader.communicate(timeout=90)
    assert reader.returncode == 0
    distinct, last = map(int, out.split())
    assert last == 20000
    assert distinct > 2  # it really read in between writes


def test_columns_added_to_a_record_later_are_added_to_an_old_store(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE trade (exchange TEXT, symbol TEXT, trade_id INTEGER, price REAL, "
        "qty REAL, side TEXT, ts_event INTEGER, ts_recv INTEGER, "
        "PRIMARY KEY (exchange, symbol, trade_id)) WITHOUT ROWID"
    )
    con.execute("INSERT INTO trade VALUES ('binance', 'btcusdt', 1, 1.0, 1.0, 'buy', 1, 1)")
    con.commit()
    con.close()
    store = SqliteStore(path)
    store.write([_trades(1, start=2)[0]._replace(backfilled=True)])
    assert store.query("SELECT trade_id, backfilled FROM trade ORDER BY 1") == [(1, 0), (2, 1)]
