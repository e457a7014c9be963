"""The raw store's writer against rows no column can hold (issue 17, item 3).

The issue: an id or time above int64 made ``SqliteStore.write`` raise
``OverflowError``; the writer thread stopped, the batch was lost and the
collector exited (68 of 68 batches in the fuzz run). The edge refuses such
values now, but the store must hold too: the bad row becomes a dead letter,
the rest of its batch is stored, and the writer keeps going.
"""

from __future__ import annotations

from pathlib import Path

from ccf.records import Book, DeadLetter, Gap, Trade, unstorable_field
from ccf.storage import SqliteStore, StoreWriter


def trade(tid: int, ts: int = 1_000, ts_recv: int = 2_000) -> Trade:
    return Trade("binance", "btcusdt", tid, 61_000.5, 0.25, "buy", ts, ts_recv)


def test_a_row_beyond_int64_is_a_dead_letter_and_the_rest_of_the_batch_is_stored(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "raw.db")
    book = Book("binance", "btcusdt", "diff", 2**64, 1, 2, (1.0, 1.0, 0.5, 1.0))
    gap = Gap("binance", "btcusdt", "trade", 5, None, "sequence_gap", "x", 2**63)
    store.write([trade(1), trade(2**64), trade(2, ts=10**30), trade(3), book, gap])
    assert [r[0] for r in store.query("SELECT trade_id FROM trade ORDER BY 1")] == [1, 3]
    letters = store.query("SELECT symbol, reason, frame, ts_recv FROM dead_letter ORDER BY id")
    assert [r[1] for r in letters] == [
        "unstorable_row: Trade trade_id=18446744073709551616 is beyond int64",
        f"unstorable_row: Trade ts_event={10**30} is beyond int64",
        "unstorable_row: Book update_id=18446744073709551616 is beyond int64",
        "unstorable_row: Gap ts_recv=9223372036854775808 is beyond int64",
    ]
    assert letters[0][2].startswith("Trade(") and letters[0][3] == 2_000
    assert letters[3][3] != 2**63  # a bad receive time is replaced by the time of refusal
    assert store.refused_rows == 4
    store.write([trade(4)])  # the store goes on
    assert store.query("SELECT count(*) FROM trade")[0][0] == 3
    store.close()


def test_the_writer_thread_survives_a_bad_batch(tmp_path: Path) -> None:
    path = tmp_path / "raw.db"
    writer = StoreWriter(lambda: SqliteStore(path), batch_rows=10, flush_interval_s=0.01)
    writer.submit([trade(1), trade(2**70)])
    writer.submit([trade(2), DeadLetter("binance", "", "malformed_json: x", "{", 5)])
    writer.close()  # raises if the thread had died
    store = SqliteStore(path, readonly=True)
    assert [r[0] for r in store.query("SELECT trade_id FROM trade ORDER BY 1")] == [1, 2]
    assert store.query("SELECT count(*) FROM dead_letter")[0][0] == 2
    assert writer.rows_written == 4


def test_unstorable_field_names_the_field() -> None:
    assert unstorable_field(trade(1)) is None
    assert unstorable_field(trade(-(2**63))) is None
    assert unstorable_field(trade(-(2**63) - 1)) == f"trade_id={-(2**63) - 1}"
    assert unstorable_field(Gap("b", "s", "trade", 1, 2**63, "restart", "", 1)) == (
        f"end_ts={2**63}"
    )
