"""The PostgreSQL feature store against the embedded one, on real feature rows.

Rows of the default (book) feature set come from the Binance recordings through
the feature engine, NaNs included; rows of the candle preset come from the real
one-minute kline file. Written to both stores, every reader must give the same
answer: frames equal in columns, dtypes, order and bits, windows equal byte for
byte, and training (``ccf.ml.sources``) the same rows from either backend.
"""

from __future__ import annotations

import asyncio
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ccf.config import ConfigError, PostgresConfig, Settings, load_settings
from ccf.features.engine import FeatureEngine, FeatureRow
from ccf.features.runner import FeatureRunner, run_backfill
from ccf.features.spec import FeatureSet, feature_set
from ccf.features.store import FeatureStore, feature_status, list_sets
from ccf.ml.sources import CANDLE_PRESET, from_store
from ccf.records import Book, Gap, Trade
from ccf.storage.backends import list_feature_sets, open_feature_store
from ccf.storage.postgres.features import PgFeatureStore, list_pg_sets, pg_feature_status
from tests import infra
from tests.infra import pg_overrides
from tests.scale.test_postgres_raw import closed_candles, market_records
from tests.sources.recorded import SYMBOLS

# the fixtures, bound by assignment: an import would read as redefined by the arguments
pg = infra.pg
postgres_server = infra.postgres_server

S = 10**9


def run_engine(fs: FeatureSet, symbols: tuple[str, ...], records: list[Any]) -> list[FeatureRow]:
    """The batch path's use of the engine: push in order, flush each symbol at its end."""
    engine = FeatureEngine(fs, list(symbols))
    rows: list[FeatureRow] = []
    for r in records:
        rows += engine.push(r)
    for sym in symbols:
        last = max(r.ts_event for r in records if r.symbol == sym)
        rows += engine.flush(last - fs.lateness_ns, [sym])
    return rows


@cache
def book_rows() -> tuple[FeatureSet, tuple[FeatureRow, ...]]:
    """The default feature set over the first minutes of both recordings."""
    fs = feature_set(load_settings([f"symbols=[{','.join(SYMBOLS)}]"], environ={}).features)
    records = [r for r in market_records() if type(r) in (Book, Trade, Gap)]
    return fs, tuple(run_engine(fs, SYMBOLS, records))


def candle_settings(tmp_path: Path, *extra: str) -> Settings:
    return load_settings(
        [f"data_dir={tmp_path}", "symbols=[btcusdt]", *extra], [CANDLE_PRESET], environ={}
    )


@cache
def candle_rows() -> tuple[FeatureRow, ...]:
    """The candle preset over the first 1,500 bars of the BTCUSDT kline file."""
    fs = feature_set(candle_settings(Path("/nonexistent")).features)
    return tuple(run_engine(fs, ("btcusdt",), list(closed_candles(1500))))


def assert_same_frame(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert a.attrs == b.attrs
    floats = [c for c in a.columns if a[c].dtype == np.float64]
    assert a[floats].to_numpy().tobytes() == b[floats].to_numpy().tobytes()  # NaN bits too


def test_feature_rows_read_back_equal_from_both_stores(tmp_path: Path, pg: PostgresConfig) -> None:
    fs, rows = book_rows()
    lite, post = FeatureStore(tmp_path / "features.sqlite", fs), PgFeatureStore(pg, fs)
    chunks = [rows[i : i + 200] for i in range(0, len(rows), 200)]
    assert [post.write(c) for c in chunks] == [lite.write(c) for c in chunks]
    assert post.write(rows) == lite.write(rows) == 0
    changed = [r._replace(values=tuple(0.0 for _ in r.values)) for r in rows[:20]]
    assert post.write(changed) == 0  # the first row written for a bucket stays
    assert np.isnan(post.frame().iloc[:, 3:].to_numpy()).any()  # NaNs are in the test
    t0, t1 = rows[10].ts, rows[80].ts
    for args, kw in [
        ((), {}),
        ((["ethusdt"],), {}),
        ((SYMBOLS, t0, t1), {}),
        ((None, t0), {"as_of": t1 + fs.lateness_ns}),
        ((["nope"],), {}),
    ]:
        assert_same_frame(post.frame(*args, **kw), lite.frame(*args, **kw))
    for sym in (*SYMBOLS, "nope"):
        assert post.last_bucket(sym) == lite.last_bucket(sym)
        assert post.first_bucket(sym) == lite.first_bucket(sym)
        for n in (1, 60, 10**6):
            a, b = post.last(sym, n), lite.last(sym, n)
            assert a.ts.tolist() == b.ts.tolist() and a.columns == b.columns
            assert a.values.dtype == b.values.dtype and a.values.tobytes() == b.values.tobytes()
    assert post.summary() == lite.summary()
    assert list_pg_sets(pg) == list_sets(tmp_path / "features.sqlite")
    now = rows[-1].ts + 60 * S
    assert pg_feature_status(pg, now) == feature_status(tmp_path / "features.sqlite", now)


def test_training_reads_the_same_rows_from_postgres(tmp_path: Path, pg: PostgresConfig) -> None:
    on_lite, on_pg = candle_settings(tmp_path), candle_settings(tmp_path, *pg_overrides(pg))
    rows = candle_rows()
    with pytest.raises(FileNotFoundError, match=r"postgresql://ccf_test@.*run `ccf features`"):
        from_store(on_pg)
    fs = feature_set(on_pg.features)
    for settings in (on_lite, on_pg):
        store = open_feature_store(settings, fs)
        assert store.write(rows) == len(rows)
        store.close()
    assert list_feature_sets(on_pg) == list_feature_sets(on_lite)
    a, b = from_store(on_pg), from_store(on_lite)
    assert (a.name, a.version, a.bucket_ns, a.columns) == (
        b.name,
        b.version,
        b.bucket_ns,
        b.columns,
    )
    assert_same_frame(a.frame, b.frame)
    start, end = rows[100].ts, rows[400].ts
    assert_same_frame(
        from_store(on_pg, None, start, end).frame, from_store(on_lite, None, start, end).frame
    )


def test_a_version_stored_with_other_columns_is_refused(pg: PostgresConfig) -> None:
    fs, rows = book_rows()
    PgFeatureStore(pg, fs).write(rows[:5])
    reader = PgFeatureStore(pg, list_pg_sets(pg)[0], readonly=True)
    assert reader.frame().shape[0] == 5
    with pytest.raises(ValueError, match="stored with other columns"):
        PgFeatureStore(pg, fs.__class__(**{**_fields(fs), "columns": (*fs.columns, "extra")}))
    other = feature_set(load_settings(["features.bucket=2s"], environ={}).features)
    with pytest.raises(FileNotFoundError, match="run `ccf features` first"):
        PgFeatureStore(pg, other, readonly=True)


def _fields(fs: FeatureSet) -> dict[str, Any]:
    return {f: getattr(fs, f) for f in fs.__dataclass_fields__}


def test_the_raw_tail_stops_at_once_on_postgres(tmp_path: Path, pg: PostgresConfig) -> None:
    """The live tail and the batch reader read SQLite: on PostgreSQL they say what to set."""
    settings = load_settings([f"data_dir={tmp_path}", *pg_overrides(pg)], environ={})
    with pytest.raises(ConfigError, match="set transport.backend=kafka"):
        asyncio.run(FeatureRunner(settings).run(asyncio.Event()))
    with pytest.raises(ConfigError, match="storage.backend=postgres"):
        run_backfill(settings)
    assert not (tmp_path / "ccf.sqlite").exists()  # it stopped before opening anything
