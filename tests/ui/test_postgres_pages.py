"""The dashboard on PostgreSQL (``storage.backend=postgres``): the filled data dir's stores
copied row for row into PostgreSQL through the PostgreSQL stores, then every reader and
every page run on both backends. Same data in, the same figures out: each reader returns
the same frame, each page the same metrics, tables and charts. An empty database gives
each page its empty state, and a server that cannot be reached is said so on the page,
without the password."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import psycopg
import pytest
from streamlit.testing.v1 import AppTest

from ccf.config import PostgresConfig, Settings
from ccf.features.engine import FeatureRow
from ccf.features.store import FeatureStore, list_sets
from ccf.monitoring.store import MonitorStore
from ccf.records import Book
from ccf.serving.store import PredictionStore
from ccf.storage.backends import (
    open_feature_store,
    open_monitor_store,
    open_prediction_store,
    open_raw_store,
)
from ccf.storage.postgres.connect import connect, describe
from ccf.storage.postgres.monitor import ALERTS, TABLES
from ccf.storage.postgres.predictions import Table, copy_insert, create_tables
from ccf.storage.postgres.raw import SPECS
from ccf.ui.data import accuracy, db, forecasts, market, parts, quality, streams
from ccf.ui.data.db import Store
from tests import infra
from tests.infra import PG_PASSWORD, PG_PASSWORD_ENV, PG_ROLE, free_port, pg_overrides
from tests.ui import SYMBOLS, overrides, settings_at
from tests.ui.test_pages import EMPTY, PAGES, open_page, texts

# the fixtures, bound by assignment: an import would read as redefined by the arguments
pg = infra.pg
postgres_server = infra.postgres_server


# -- the filled data dir, copied into PostgreSQL ------------------------------------------------


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _copy_raw(src: Settings, dst: Settings) -> None:
    """Every raw record and heartbeat, as records, into the PostgreSQL raw store."""
    tables = {r[0] for r in _rows(src.db_path, "SELECT name FROM sqlite_master")}
    raw = open_raw_store(dst)
    try:
        for record, spec in SPECS.items():  # every kind but the book, which has levels
            if spec.name in tables:
                sql = f"SELECT {', '.join(record._fields)} FROM {spec.name}"
                raw.write([record(*r) for r in _rows(src.db_path, sql)])
        books = _rows(src.db_path, "SELECT * FROM book ORDER BY symbol, source, update_id")
        raw.write([Book(*r[:6], tuple(r[6:])) for r in books])
        for r in _rows(src.db_path, "SELECT * FROM part_status"):
            raw.heartbeat(*r)
    finally:
        raw.close()


def _copy_features(src: Settings, dst: Settings) -> None:
    for s in list_sets(src.features_path):
        df = FeatureStore(src.features_path, s, readonly=True).frame()
        values = df[list(s.float_columns)].to_numpy()
        rows = [
            FeatureRow(sym, int(ts), int(te), tuple(v))
            for sym, ts, te, v in zip(df.symbol, df.ts, df.ts_end, values, strict=True)
        ]
        store = open_feature_store(dst, s)
        try:
            store.write(rows)
        finally:
            store.close()


def _copy_predictions(src: Settings, dst: Settings) -> None:
    """In rowid order, so PostgreSQL's ids follow the same order; the models' own quantiles
    beside the calibrated ones."""
    source = PredictionStore(src.predictions_path, readonly=True)
    rows, _ = source.since(0, limit=10**9)
    serving = source.serving()
    source.close()
    raw = [
        np.frombuffer(r, dtype="<f8").tolist()
        for (r,) in _rows(
            src.predictions_path, "SELECT raw_quantiles FROM predictions ORDER BY rowid"
        )
    ]
    store = open_prediction_store(dst)
    try:
        store.write(rows, raw)
        for info in serving.values():
            store.set_serving(info)
    finally:
        store.close()


def _blob_to_list(table: Table, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """SQLite's packed float arrays as the lists PostgreSQL stores."""
    return tuple(
        np.frombuffer(v, dtype="<f8").tolist() if c.kind == "reals" else v
        for c, v in zip(table.columns, row, strict=True)
    )


def _copy_monitor(src: Settings, dst: Settings) -> None:
    """The monitor's tables with its own bulk writer, and the alerts raised, updated and
    cleared through the store as the monitor did."""
    open_monitor_store(dst).close()  # the tables, made as the monitor makes them
    con = connect(dst.storage.postgres)
    try:
        create_tables(con, TABLES, part="monitor")  # this session's staging tables
        with con.transaction(), con.cursor() as cur:
            for table in TABLES:
                if table is ALERTS:
                    continue
                cols = ", ".join(f'"{n}"' for n in table.names)
                rows = _rows(src.monitor_path, f"SELECT {cols} FROM {table.name}")
                copy_insert(cur, table, [_blob_to_list(table, r) for r in rows])
    finally:
        con.close()
    store = open_monitor_store(dst)
    try:
        for a in MonitorStore(src.monitor_path, readonly=True).alerts():
            store.raise_alert(a.part, a.symbol, a.kind, a.message, a.ts)
            if a.updated_at != a.ts:
                store.raise_alert(a.part, a.symbol, a.kind, a.message, a.updated_at)
            if not a.active:
                store.clear_alert(a.part, a.symbol, a.kind, a.cleared_at)
    finally:
        store.close()


class Both(NamedTuple):
    """The same data on both backends, and the dashboard's arguments for each."""

    sqlite: Settings
    postgres: Settings
    sqlite_args: list[str]
    postgres_args: list[str]
    postgres_dir: Path


def _database(name: str) -> PostgresConfig:
    """A new, empty database on the local cluster (the test role may create them)."""
    with psycopg.connect(
        host="127.0.0.1", dbname="postgres", user=PG_ROLE, password=PG_PASSWORD, autocommit=True
    ) as con:
        con.execute(f"CREATE DATABASE {name}")
    return PostgresConfig(
        host="127.0.0.1", dbname=name, user=PG_ROLE, password=f"env:{PG_PASSWORD_ENV}"
    )


def _drop(cfg: PostgresConfig) -> None:
    db.close_idle()  # the dashboard's kept connections to it
    with psycopg.connect(
        host="127.0.0.1", dbname="postgres", user=PG_ROLE, password=PG_PASSWORD, autocommit=True
    ) as con:
        con.execute(f"DROP DATABASE IF EXISTS {cfg.dbname} WITH (FORCE)")


@pytest.fixture(scope="module")
def both(
    filled: Path, postgres_server: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Both]:
    """The filled data dir, and a database holding the same rows; the PostgreSQL run gets an
    empty data dir of its own (so any read of a SQLite file would find nothing) and the
    same registry."""
    cfg = _database(f"ccf_ui_{uuid.uuid4().hex[:12]}")
    pg_dir = tmp_path_factory.mktemp("ui-pg") / "data"
    pg_dir.mkdir()
    extra = [*pg_overrides(cfg), f"ml.registry.tracking_uri=sqlite:///{filled / 'mlflow.db'}"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PG_PASSWORD_ENV, PG_PASSWORD)
        try:
            src, dst = settings_at(filled), settings_at(pg_dir, *extra)
            for copy in (_copy_raw, _copy_features, _copy_predictions, _copy_monitor):
                copy(src, dst)
            yield Both(src, dst, overrides(filled), [*overrides(pg_dir), *extra], pg_dir)
        finally:
            _drop(cfg)


# -- the readers ---------------------------------------------------------------------------------


def _readers(s: Settings, symbol: str, now: int) -> dict[str, Any]:
    """What every reader the pages call returns for ``symbol``."""
    raw, preds, mon = Store(s, "raw"), Store(s, "predictions"), Store(s, "monitor")
    ex, book_source = s.exchange, s.features.book_source
    origin = forecasts.newest_origin(preds, symbol)
    assert origin is not None
    p = forecasts.predictions(preds, symbol, origin - 600 * 10**9, origin + 1)
    runs = quality.drift_runs(mon)
    (computed_at,) = runs.loc[runs.symbol == symbol, "computed_at"]
    window = accuracy.windows(mon)[-1]
    return {
        "last_price": market.last_price(raw, ex, symbol, book_source),
        "book": market.book(raw, ex, symbol, book_source),
        "spread": market.spread(raw, ex, symbol, 3000, book_source),
        "trades": market.trades(raw, ex, symbol, 40),
        "candles": market.candles(raw, ex, symbol),
        "recent_trades": market.recent_trades(raw, ex, symbol, 1200),
        "news": market.news(raw, 30),
        "gaps": market.gaps(raw),
        "feeds": market.feeds(raw),
        "dead_letters": market.dead_letters(raw),
        "streams": streams.streams(raw, ex, SYMBOLS, now),
        "heartbeats": parts.heartbeats(raw, now),
        "newest_origin": origin,
        "predictions": p,
        "predictions_raw": forecasts.predictions(
            preds, symbol, origin - 600 * 10**9, origin + 1, "raw"
        ),
        "realized": forecasts.realized(
            s, symbol, str(p["target"].iloc[0]), origin - 600 * 10**9, None
        ),
        "newest_bucket": forecasts.newest_bucket(s, symbol),
        "serving": forecasts.serving(preds),
        "champion_spec": forecasts.champion_spec(preds),
        "windows": accuracy.windows(mon),
        "rolling": accuracy.rolling(mon, symbol, "champion", window, 3600),
        "latest": accuracy.latest(mon, symbol, window),
        "scores": accuracy.scores(mon, symbol, "champion", 3600),
        "drift_runs": runs,
        "column_checks": quality.column_checks(mon, symbol, int(computed_at)),
        "alerts": quality.alerts(mon),
    }


EMPTY_HERE = {"candles"}  # no kline stream in the recordings: the page builds bars from trades


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_every_reader_answers_the_same_on_both_backends(both: Both, symbol: str) -> None:
    now = time.time_ns()
    lite, pg = _readers(both.sqlite, symbol, now), _readers(both.postgres, symbol, now)
    for name, want in lite.items():
        got = pg[name]
        if isinstance(want, pd.DataFrame):
            assert want.empty == (name in EMPTY_HERE), name  # a comparison of something
            pd.testing.assert_frame_equal(got, want, obj=name)
            assert got.attrs == want.attrs, name
        else:
            assert want is not None and got == want, name


# -- the pages -----------------------------------------------------------------------------------

# shown with the wall clock (the age of a heartbeat or a row): differ between two runs
CLOCK_COLUMNS = ["received", "receive_age_s", "heartbeat_age_s", "state"]
CLOCK_METRICS = {"parts running", "not responding", "stopped"}


class Shown(NamedTuple):
    metrics: dict[str, tuple[str, str | None]]
    tables: list[pd.DataFrame]
    charts: list[list[dict]]
    texts: list[str]


def shown(at: AppTest) -> Shown:
    """What a page shows, less what moves with the wall clock or names the data dir."""
    return Shown(
        {m.label: (m.value, m.delta) for m in at.metric if m.label not in CLOCK_METRICS},
        [d.value.drop(columns=CLOCK_COLUMNS, errors="ignore") for d in at.dataframe],
        [json.loads(c.proto.spec)["data"] for c in at.get("plotly_chart")],
        [t for t in texts(at).splitlines() if "data `" not in t],
    )


@pytest.mark.parametrize("page", PAGES)
def test_each_page_shows_the_same_on_postgres(
    both: Both, page: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lite = shown(open_page(monkeypatch, both.sqlite_args, page))
    pg = shown(open_page(monkeypatch, both.postgres_args, page))
    assert pg.metrics == lite.metrics
    assert len(pg.tables) == len(lite.tables) > 0
    for got, want in zip(pg.tables, lite.tables, strict=True):
        pd.testing.assert_frame_equal(got, want)
    assert pg.charts == lite.charts
    assert pg.texts == lite.texts
    assert list(both.postgres_dir.iterdir()) == []  # no SQLite file read, none written


def test_an_empty_database_gives_each_page_its_empty_state(
    pg: PostgresConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [*overrides(tmp_path), *pg_overrides(pg)]
    for page in PAGES:
        at = open_page(monkeypatch, args, page)
        assert EMPTY[page] in texts(at), page
        if page == "live":  # the sidebar says where the data is (AppTest drops it on a switch)
            (where,) = [c.value for c in at.sidebar.caption]
            assert f"data `{describe(pg)}`" in where
    con = connect(pg)
    try:
        made = con.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert made.fetchone() == (0,)  # looking makes no table
    finally:
        con.close()
    db.close_idle()


def test_a_server_out_of_reach_is_said_on_the_page_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PG_PASSWORD_ENV, PG_PASSWORD)
    cfg = PostgresConfig(
        host="127.0.0.1",
        port=free_port(),  # nothing listens there
        dbname="ccf",
        user=PG_ROLE,
        password=f"env:{PG_PASSWORD_ENV}",
    )
    args = [*overrides(tmp_path), *pg_overrides(cfg)]
    for page in ("live", "accuracy", "market", "health"):
        at = open_page(monkeypatch, args, page)
        errors = [e.value for e in at.error]
        assert any(
            f"cannot connect to postgresql://{PG_ROLE}@127.0.0.1:{cfg.port}/ccf" in e
            for e in errors
        ), page
        assert PG_PASSWORD not in texts(at)
