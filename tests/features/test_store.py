"""The feature store: a table per version, idempotent writes, offline frames, online windows."""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import numpy as np
import pytest

from ccf.features.engine import FeatureEngine, FeatureRow
from ccf.features.online import OnlineRings
from ccf.features.store import FeatureStore, feature_status, list_sets
from tests.features.helpers import MS, SYM, S, bits, book, run, tiny_set, trade


def _rows(n: int = 50, sym: str = SYM) -> tuple[list[FeatureRow], object]:
    fs = tiny_set()
    records = []
    for i in range(n):
        records.append(book(i * S + 100 * MS, 2 * i + 1, ask=101 + i))
        if i % 3 == 0:  # some buckets without trades, a NaN or two
            records.append(trade(i * S + 200 * MS, i + 1, 100.0, 1.0, "buy"))
    rows, _ = run(fs, records)
    return rows, fs


def test_a_new_config_writes_a_new_table_never_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite"
    a, b = tiny_set(), tiny_set(bucket="100ms")
    rows_a, _ = run(a, [book(100 * MS, 1), book(3 * S, 2)])
    rows_b, _ = run(b, [book(100 * MS, 1), book(3 * S, 2)])
    sa, sb = FeatureStore(path, a), FeatureStore(path, b)
    sa.write(rows_a)
    sb.write(rows_b)
    assert {(s.name, s.version) for s in list_sets(path)} == {
        ("default", a.version),
        ("default", b.version),
    }
    assert [r for r in sa.summary()] == [(SYM, len(rows_a), 0, rows_a[-1].ts)]
    assert sb.summary()[0][1] == len(rows_b) != len(rows_a)
    # a reader without the config opens the table from the registry
    (stored,) = [s for s in list_sets(path) if s.version == a.version]
    assert stored.columns == a.columns and stored.table == a.table


def test_writes_are_idempotent_by_symbol_and_bucket(tmp_path: Path) -> None:
    rows, fs = _rows()
    store = FeatureStore(tmp_path / "f.sqlite", fs)
    assert store.write(rows) == len(rows)
    assert store.write(rows) == 0
    changed = [r._replace(values=tuple(0.0 for _ in r.values)) for r in rows[:5]]
    assert store.write(changed) == 0  # the first row written for a bucket stays
    assert store.frame().iloc[0]["a_p_0"] == 101


def test_offline_frame_is_exact_in_range_and_point_in_time(tmp_path: Path) -> None:
    rows, fs = _rows()
    store = FeatureStore(tmp_path / "f.sqlite", fs)
    store.write(rows)
    df = store.frame([SYM], 10 * S, 20 * S)
    assert df.attrs == {"feature_set": "default", "version": fs.version}
    assert list(df.columns) == ["symbol", *fs.columns, "available_at"]
    assert df["ts"].tolist() == [i * S for i in range(10, 20)]
    assert df["ts"].dtype == np.int64 and df["a_p_0"].dtype == np.float64
    for r, (_, got) in zip(rows[10:20], df.iterrows(), strict=True):
        for c, v in zip(fs.float_columns, r.values, strict=True):
            assert (math.isnan(v) and math.isnan(got[c])) or got[c] == v
    assert (df["available_at"] == df["ts_end"] + fs.lateness_ns).all()
    # as_of: only rows a live model could have had by then
    as_of = 15 * S + fs.lateness_ns
    seen = store.frame([SYM], as_of=as_of)
    assert seen["ts_end"].max() == 15 * S and (seen["available_at"] <= as_of).all()


def test_rows_computed_before_a_time_equal_the_full_run_point_in_time(tmp_path: Path) -> None:
    """A row uses nothing after it is available: truncating the input there changes nothing."""
    fs = tiny_set()
    records = []
    for i in range(400):
        records.append(book(i * 37 * MS, i + 1, ask=101 + i % 7))
        records.append(trade(i * 37 * MS + MS, i + 1, 100.0 + i % 5, 0.1, "sell"))
    full, _ = run(fs, records)
    cut = 7 * S + fs.lateness_ns
    part, engine = run(fs, [r for r in records if r.ts_event <= cut])
    part += engine.flush(cut - fs.lateness_ns)  # what is known at `cut`, and no more
    known = [r for r in full if r.ts_end + fs.lateness_ns <= cut]
    assert known and bits(part[: len(known)]) == bits(known)


def test_online_windows_equal_the_offline_tail_and_read_fast(tmp_path: Path) -> None:
    rows, fs = _rows(300)
    store = FeatureStore(tmp_path / "f.sqlite", fs)
    store.write(rows)
    rings = OnlineRings(fs.float_columns, 100)
    rings.add(rows)
    df = store.frame([SYM])
    tail = df.tail(60)[list(fs.float_columns)].to_numpy()
    for w in (store.last(SYM, 60), rings.last(SYM, 60)):
        assert w.columns == fs.float_columns
        assert w.ts.tolist() == df["ts"].tail(60).tolist()
        assert w.values.tobytes() == np.ascontiguousarray(tail).tobytes()
    assert rings.last(SYM, 500).values.shape == (100, len(fs.float_columns))  # ring size
    assert store.last(SYM, 500).values.shape == (len(rows), len(fs.float_columns))
    reader = FeatureStore(tmp_path / "f.sqlite", fs, readonly=True)  # another process's view
    times = []
    for _ in range(200):
        t = time.perf_counter()
        reader.last(SYM, 60)
        times.append(time.perf_counter() - t)
    assert statistics.median(times) < 1e-3


def test_feature_status_says_rows_and_last_bucket(tmp_path: Path) -> None:
    rows, fs = _rows(10)
    FeatureStore(tmp_path / "f.sqlite", fs).write(rows)
    (st,) = feature_status(tmp_path / "f.sqlite", now_ns=20 * S)
    assert (st["symbol"], st["rows"], st["last_bucket"]) == (SYM, len(rows), rows[-1].ts)
    assert st["lag_s"] == pytest.approx((20 * S - rows[-1].ts_end) / 1e9)
    assert feature_status(tmp_path / "none.sqlite") == []


def test_engine_rows_round_trip_through_the_store(tmp_path: Path) -> None:
    fs = tiny_set()
    engine = FeatureEngine(fs, [SYM])
    rows = []
    for r in [book(100 * MS, 1), book(5 * S, 2)]:
        rows += engine.push(r)
    store = FeatureStore(tmp_path / "f.sqlite", fs)
    store.write(rows)
    w = store.last(SYM, 10)
    assert w.values.tobytes() == np.array([r.values for r in rows]).tobytes()
