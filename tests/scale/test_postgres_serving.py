"""The prediction and monitor stores on PostgreSQL answer as the SQLite ones do, and the
predictor and the monitor run on PostgreSQL with no other change than the config.

The store tests write the same records to both backends and compare what every reader
returns; the end-to-end test serves a registered naive model over the recorded feature
rows held in the PostgreSQL feature store, then scores its forecasts there.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from ccf.config import PostgresConfig, Settings, load_settings
from ccf.features.engine import FeatureRow
from ccf.features.runner import run_backfill
from ccf.features.spec import feature_set
from ccf.features.store import FeatureStore
from ccf.ml.pipeline import train_round
from ccf.ml.prepare import Source
from ccf.monitoring.drift import ColumnCheck, DriftResult, Rows
from ccf.monitoring.monitor import Monitor
from ccf.monitoring.scoring import SignalRule, score, unscorable
from ccf.monitoring.store import MonitorStore
from ccf.records import Prediction, Score
from ccf.serving.predictor import Predictor
from ccf.serving.source import RegistrySource
from ccf.serving.store import PredictionStore, ServingInfo
from ccf.storage.backends import open_feature_store, open_prediction_store, open_raw_store
from ccf.storage.postgres.connect import connect
from ccf.storage.postgres.monitor import PgMonitorStore
from ccf.storage.postgres.predictions import PgPredictionStore
from tests import infra
from tests.features.test_runner import fill
from tests.infra import pg_overrides

# the fixtures, bound by assignment: an import would read as redefined by the arguments
pg = infra.pg
postgres_server = infra.postgres_server

S = 10**9
T0 = 1_717_200_000 * S
SYMBOLS = ("btcusdt", "ethusdt")
LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
RULE = SignalRule(2.0, 7.5)


# -- records -----------------------------------------------------------------------------------


def forecasts(origins: int = 120) -> list[Prediction]:
    """Two symbols, two horizons, two roles; one origin in 25 flagged without a forecast,
    as the predictor writes a warming-up window."""
    rng = np.random.default_rng(11)
    out = []
    for sym in SYMBOLS:
        for i in range(origins):
            ts = T0 + i * S
            last = 100.0 + float(rng.normal(0, 1))
            for h in (1, 5):
                for role in ("champion", "naive"):
                    if i % 25 == 0:
                        q, flag = (math.nan,) * len(LEVELS), "warming_up"
                    else:
                        mid = 0.0 if role == "naive" else float(rng.normal(0, 4e-4))
                        half = abs(float(rng.normal(5e-4, 1e-4)))
                        q, flag = tuple(mid + k * half for k in (-2, -1, 0, 1, 2)), None
                    out.append(
                        Prediction(
                            "binance",
                            sym,
                            "m_p",
                            ts,
                            h,
                            ts + h * S,
                            role,
                            f"ccf-{role}",
                            "3",
                            ts + S,
                            ts + S,
                            last,
                            q[2],
                            LEVELS,
                            q,
                            flag,
                        )  # fmt: skip
                    )
    return out


def resolve(
    preds: Sequence[Prediction], upto: int, at: int
) -> tuple[list[tuple[Prediction, Score]], list[tuple[Prediction, str]], list[Prediction]]:
    """Score what the scorer would: targets up to ``upto`` have a value (every 17th origin's
    bucket holds a gap), the rest waits."""
    rng = np.random.default_rng(int(upto % 1000))
    scored, unscored, waiting = [], [], []
    for p in preds:
        if p.target_ts > upto:
            waiting.append(p)
            continue
        gap = 1.0 if (p.target_ts - T0) // S % 17 == 0 else 0.0
        value = p.last_value * math.exp(float(rng.normal(0, 6e-4)))
        why = unscorable(p, value, gap)
        if why is None:
            scored.append((p, score(p, value, RULE, at)))
        else:
            unscored.append((p, why.reason))
    return scored, unscored, waiting


def same(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Equal record lists, NaN equal to NaN (floats compared exactly, by their repr)."""
    return repr(list(a)) == repr(list(b))


def keyed(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    return df.sort_values(key).reset_index(drop=True)


# -- the prediction store ----------------------------------------------------------------------


def test_prediction_stores_read_back_equal_and_writes_are_idempotent(
    pg: PostgresConfig, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="run `ccf predict`"):
        PgPredictionStore(pg, readonly=True)  # nothing made yet: a reader says what to run
    preds = forecasts()
    # the models' own quantiles beside the served (calibrated) ones
    own = [tuple(0.5 * q for q in p.quantiles) for p in preds]
    lite, post = PredictionStore(tmp_path / "p.sqlite"), PgPredictionStore(pg)
    try:
        for store in (lite, post):
            assert [
                store.write(preds[i : i + 300], own[i : i + 300]) for i in range(0, len(preds), 300)
            ] == [min(300, len(preds) - i) for i in range(0, len(preds), 300)]
            assert store.write(preds[::-1]) == 0  # a batch twice: nothing changes
            assert store.write([]) == 0 and store.count() == len(preds)
        # the same frames, whole and filtered (dtypes, NaN forecasts and column order too)
        for args in (
            {},
            {"symbols": ["ethusdt"], "role": "naive"},
            {"start_ns": T0 + 10 * S, "end_ns": T0 + 50 * S},
            {"symbols": []},
        ):
            pd.testing.assert_frame_equal(lite.frame(**args), post.frame(**args))
            pd.testing.assert_frame_equal(
                lite.frame(**args, kind="raw"), post.frame(**args, kind="raw")
            )
        assert not lite.frame().equals(lite.frame(kind="raw"))
        for sym in SYMBOLS:
            resolved = lite.resolved(sym, "champion", T0, T0 + 60 * S)
            assert resolved and same(resolved, post.resolved(sym, "champion", T0, T0 + 60 * S))
        assert lite.frame()["flag"].eq("warming_up").sum() > 0
        # the followers' reads: the same rows in the same order, in pages
        for limit in (137, 100_000):
            pages: dict[str, list[Prediction]] = {"lite": [], "post": []}
            for name, store in (("lite", lite), ("post", post)):
                cursor = 0
                while True:
                    rows, cursor = store.since(cursor, limit)
                    if not rows:
                        break
                    pages[name] += rows
                assert store.since(cursor, limit) == ([], cursor)
            assert len(pages["post"]) == len(preds) and same(pages["lite"], pages["post"])
        assert same(post.since(0)[0], preds)  # NaN forecasts come back NaN, tuples as tuples
        for sym in (*SYMBOLS, "solusdt"):
            for role in ("champion", "naive", "challenger"):
                assert lite.last_ts(sym, role) == post.last_ts(sym, role)
        assert post.last_ts("btcusdt") == T0 + 119 * S
        for store in (lite, post):
            for role, version in (("champion", "3"), ("naive", "live"), ("champion", "4")):
                spec = json.dumps({"feature_set": "ccf", "version": "abc"})
                store.set_serving(
                    ServingInfo(role, f"m-{role}", version, "naive", T0, T0 + S, 5, None, spec)
                )
        assert lite.serving() == post.serving() and post.serving()["champion"].version == "4"
    finally:
        lite.close()
        post.close()
    reader = PgPredictionStore(pg, readonly=True)
    try:
        assert reader.count() == len(preds) and same(reader.since(0, 5)[0], preds[:5])
    finally:
        reader.close()
    # a table made before calibration: readers read its quantiles as both sets, and the
    # first writer adds the column back
    with connect(pg) as con:
        con.execute("ALTER TABLE predictions DROP COLUMN raw_quantiles")
    reader = PgPredictionStore(pg, readonly=True)
    try:
        pd.testing.assert_frame_equal(reader.frame(), reader.frame(kind="raw"))
    finally:
        reader.close()
    writer = PgPredictionStore(pg)
    try:
        pd.testing.assert_frame_equal(writer.frame(), writer.frame(kind="raw"))
        assert writer.write(preds[:3], own[:3]) == 0  # the rows are there already
    finally:
        writer.close()


def test_a_follower_reads_every_row_of_concurrent_writers_once(pg: PostgresConfig) -> None:
    """Ids are taken at insert and seen at commit: the write lock keeps them in step, so a
    follower's cursor never passes a row that a slower writer has yet to commit."""
    preds = forecasts(150)
    halves = (preds[0::2], preds[1::2])
    PgPredictionStore(pg).close()  # the tables, before anyone reads
    follower = PgPredictionStore(pg, readonly=True)

    def write(rows: list[Prediction]) -> None:
        store = PgPredictionStore(pg)
        try:
            for i in range(0, len(rows), 40):
                store.write(rows[i : i + 40])
        finally:
            store.close()

    seen: list[Prediction] = []
    cursor = 0
    with ThreadPoolExecutor(2) as pool:
        writers = [pool.submit(write, h) for h in halves]
        while not all(w.done() for w in writers):
            rows, cursor = follower.since(cursor, 97)
            seen += rows
        for w in writers:
            w.result()
    seen += follower.since(cursor, len(preds))[0]  # what the last commits added
    follower.close()
    key = [(p.symbol, p.ts, p.horizon, p.role) for p in seen]
    assert len(key) == len(set(key)) == len(preds)


# -- the monitor store -------------------------------------------------------------------------


def drift_result(symbol: str, share: float) -> DriftResult:
    ref = Rows(pd.DataFrame({"x": [1.0, 2.0]}), "training window", T0, T0 + 60 * S)
    cur = Rows(pd.DataFrame({"x": [3.0]}), "newest rows", T0 + 61 * S, None)
    columns = (
        ColumnCheck("m_p", 0.31, True, 0.0, 0.0, False, 0.25),
        ColumnCheck("spread", 0.02, False, 0.5, 0.1, False, 0.0),
        ColumnCheck("gap", math.nan, None, 0.0, 0.0, True, math.nan),
    )
    return DriftResult(symbol, ref, cur, columns, share, ("m_p",), {})


def both(lite: MonitorStore, post: PgMonitorStore, call: Callable[[Any], Any]) -> tuple[Any, Any]:
    return call(lite), call(post)


def assert_aggregates_equal(a: Sequence[Any], b: Sequence[Any]) -> None:
    """Field by field; sums may differ in the last bits (SQL adds in its own order)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for name, u, v in zip(x._fields, x, y, strict=True):
            if isinstance(u, float):
                assert u == pytest.approx(v, rel=1e-12, nan_ok=True), name
            elif isinstance(u, dict):
                assert u.keys() == v.keys() and all(
                    u[k] == pytest.approx(v[k], rel=1e-12, nan_ok=True) for k in u
                ), name
            else:
                assert u == v, name


def test_monitor_stores_read_back_equal(pg: PostgresConfig, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run `ccf monitor`"):
        PgMonitorStore(pg, readonly=True)
    preds = forecasts()
    lite, post = MonitorStore(tmp_path / "m.sqlite"), PgMonitorStore(pg)
    try:
        # two passes: the first leaves predictions waiting, the second resolves most of them
        first = resolve(preds[: len(preds) // 2], T0 + 40 * S, at=7)
        waiting = first[2]
        second = resolve([*waiting, *preds[len(preds) // 2 :]], T0 + 110 * S, at=8)
        new = both(lite, post, lambda s: s.commit(*first, 480, 7))
        assert new[0] == new[1] == len(first[0]) > 0
        assert both(lite, post, lambda s: s.commit(*first, 480, 7)) == (0, 0)  # idempotent
        mid = both(lite, post, lambda s: (s.pending(), s.cursor()))
        assert same([_nans(p) for p in mid[0][0]], mid[1][0]) and mid[1][1] == 480
        assert both(lite, post, lambda s: s.commit(*second, 960, 8))[1] == len(second[0])
        for call in (
            lambda s: s.cursor(),
            lambda s: s.symbols(),
            lambda s: s.last_drift_at(),
            lambda s: [s.count(t) for t in ("scores", "unscored", "pending")],
            *(lambda s, sym=sym: s.newest_origin(sym) for sym in (*SYMBOLS, "solusdt")),
        ):
            a, b = both(lite, post, call)
            assert a == b
        pend = both(lite, post, lambda s: s.pending())
        assert len(pend[1]) == len(second[2]) > 0
        # SQLite hands back NULL for a NaN forecast (the monitor restores it): so NaN here
        assert same([_nans(p) for p in pend[0]], pend[1])
        assert same(*both(lite, post, lambda s: s.scores()))
        key = ["symbol", "target", "ts", "horizon", "role"]
        for table in ("scores", "unscored"):
            for sym in (None, "ethusdt"):
                a, b = both(lite, post, lambda s, t=table, y=sym: s.frame(t, y))
                pd.testing.assert_frame_equal(keyed(a, key), keyed(b, key))
        # rolling aggregates over three windows, and their accuracy rows
        for sym in (*SYMBOLS,):
            end = post.newest_origin(sym)
            for window, span in (("10s", 10 * S), ("1m", 60 * S), ("1h", 3600 * S)):
                a, b = both(lite, post, lambda s, a=(sym, window, end - span, end): s.aggregate(*a))
                assert len(b) == 4  # roles x horizons
                assert_aggregates_equal(a, b)
                both(lite, post, lambda s, rows=a: s.write_accuracy(123, rows))
                both(lite, post, lambda s, rows=a: s.write_accuracy(123, rows))  # replaced
        acc = ["computed_at", "symbol", "role", "horizon", "window"]
        pd.testing.assert_frame_equal(*(keyed(f, acc) for f in both(lite, post, _accuracy)))
        # drift runs and their column checks; a rerun at the same time replaces them
        for share in (0.2, 0.5):
            both(
                lite,
                post,
                lambda s, x=share: s.write_drift(
                    drift_result("btcusdt", x), "ccf/abc", 99, None, Path("r.json")
                ),
            )
        eth = drift_result("ethusdt", 0.0)
        both(lite, post, lambda s: s.write_drift(eth, "ccf/abc", 100, Path("r.html"), Path("j")))
        assert both(lite, post, lambda s: s.last_drift_at()) == (100, 100)
        for table, k in (
            ("drift_runs", ["computed_at", "symbol"]),
            ("column_checks", ["computed_at", "symbol", "column_name"]),
        ):
            a, b = both(lite, post, lambda s, t=table: s.frame(t))
            pd.testing.assert_frame_equal(keyed(a, k), keyed(b, k))
        assert post.frame("drift_runs", "btcusdt").share.tolist() == [0.5]
        # alerts: raised, found again, cleared, raised anew
        steps: list[Callable[[Any], Any]] = [
            lambda s: s.raise_alert("monitor", "btcusdt", "drift", "share 0.5", 1),
            lambda s: s.raise_alert("monitor", "btcusdt", "drift", "share 0.6", 2),
            lambda s: s.raise_alert("monitor", "ethusdt", "missing", "m_p 0.4", 2),
            lambda s: s.clear_alert("monitor", "btcusdt", "drift", 3),
            lambda s: s.clear_alert("monitor", "btcusdt", "drift", 4),
            lambda s: s.raise_alert("monitor", "btcusdt", "drift", "share 0.7", 5),
        ]
        assert [both(lite, post, f) for f in steps] == [(x, x) for x in (1, 0, 1, 1, 0, 1)]
        for active in (False, True):
            a, b = both(lite, post, lambda s, on=active: s.alerts(on))
            assert a == b
        assert [a.message for a in post.alerts(True)] == ["m_p 0.4", "share 0.7"]
        counts = ("scores", "unscored", "pending", "accuracy", "alerts", "drift_runs")
        assert both(lite, post, lambda s: [s.count(t) for t in counts]) == 2 * (
            [lite.count(t) for t in counts],
        )
        with pytest.raises(ValueError, match="no table 'pending'"):
            post.frame("pending")
    finally:
        lite.close()
        post.close()


def _nans(p: Prediction) -> Prediction:
    return p._replace(
        point=math.nan if p.point is None else p.point,
        last_value=math.nan if p.last_value is None else p.last_value,
    )


def _accuracy(s: MonitorStore | PgMonitorStore) -> pd.DataFrame:
    return s.frame("accuracy")


def test_a_monitor_commit_is_all_or_nothing(pg: PostgresConfig) -> None:
    preds = forecasts(40)
    store = PgMonitorStore(pg)
    try:
        first = resolve(preds, T0 + 20 * S, at=1)
        store.commit(*first, 100, 1)
        before = [store.count(t) for t in ("scores", "unscored", "pending")], store.cursor()
        later = resolve(first[2], T0 + 30 * S, at=2)
        assert later[0] and later[2]
        # one waiting prediction refused, by the client (a horizon past bigint) or by the
        # server (a NUL in a text): written after the scores and the deletes of the pass
        for bad, error in (
            (later[2][0]._replace(horizon=2**70), OverflowError),
            (later[2][0]._replace(flag="gap\x00"), psycopg.errors.CharacterNotInRepertoire),
        ):
            with pytest.raises(error):
                store.commit(later[0], later[1], [*later[2], bad], 200, 2)
            counts = [store.count(t) for t in ("scores", "unscored", "pending")]
            assert (counts, store.cursor()) == before
        assert store.commit(*later, 200, 2) == len(later[0]) > 0  # the same pass, whole
        assert store.cursor() == 200 and store.count("pending") == len(later[2])
    finally:
        store.close()


# -- the predictor and the monitor on PostgreSQL -----------------------------------------------


def settings_at(data_dir: Path, *extra: str) -> Settings:
    return load_settings(
        [
            f"data_dir={data_dir}",
            f"symbols=[{','.join(SYMBOLS)}]",
            "log_level=WARNING",
            "features.print_every_s=0",
            "serve.print_every_s=0",
            "serve.poll_interval_s=0.05",
            "serve.alias_check_s=0.2",
            "serve.max_input_lag_s=1e12",  # recorded in 2024: not stale here
            "ml.evaluate.step=5",
            "metrics.ports.monitor=0",
            "metrics.ports.predict=0",
            "monitor.poll_interval_s=0.05",
            "monitor.drift_every=24h",
            "monitor.drift_rows=100",
            *extra,
        ],
        environ={},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """The recorded feature rows, and a registry whose champion is the naive model trained
    on them (made on the embedded store: only serving runs on PostgreSQL here)."""
    root = tmp_path_factory.mktemp("pg-serving")
    settings = settings_at(root)
    fill(settings)
    run_backfill(settings)
    rnd = train_round(settings, Source(), ("naive",))
    assert "champion" in rnd.aliases
    rows = FeatureStore(settings.features_path, feature_set(settings.features)).frame()
    return root / "mlflow.db", rows


def feed(settings: Settings, rows: pd.DataFrame, upto: int, since: int = -1) -> int:
    """The recorded rows with bucket start in (since, upto], into the configured store."""
    fs = feature_set(settings.features)
    part = rows[(rows.ts > since) & (rows.ts <= upto)]
    values = part[list(fs.float_columns)].to_numpy()
    store = open_feature_store(settings, fs)
    try:
        return store.write(
            [
                FeatureRow(sym, int(ts), int(te), tuple(v))
                for sym, ts, te, v in zip(part.symbol, part.ts, part.ts_end, values, strict=True)
            ]
        )
    finally:
        store.close()


def monitored(cfg: PostgresConfig) -> int:
    """Predictions the monitor has committed (scored, unscorable or waiting); 0 before its
    tables exist."""
    try:
        store = PgMonitorStore(cfg, readonly=True)
    except FileNotFoundError:
        return 0
    try:
        return sum(store.count(t) for t in ("scores", "unscored", "pending"))
    finally:
        store.close()


async def wait_until(check: Callable[[], bool], what: str, task: asyncio.Task) -> None:
    """Poll ``check`` while ``task`` runs; a dead task fails with its own error."""
    for _ in range(1200):  # a minute at most: the work takes a few seconds
        if task.done():
            task.result()
            pytest.fail(f"stopped before {what}")
        if check():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def test_the_predictor_and_the_monitor_run_on_postgres(
    trained: tuple[Path, pd.DataFrame], pg: PostgresConfig, tmp_path: Path
) -> None:
    registry, rows = trained
    settings = settings_at(
        tmp_path, f"ml.registry.tracking_uri=sqlite:///{registry}", *pg_overrides(pg)
    )
    buckets = np.sort(rows.ts.unique())
    start = int(buckets[120])
    assert feed(settings, rows, start) > 0
    preds = open_prediction_store(settings)
    stop = asyncio.Event()

    def champion_upto(ts: int) -> Callable[[], bool]:
        return lambda: all((preds.last_ts(s) or 0) >= ts for s in SYMBOLS)

    predictor = Predictor(settings, RegistrySource(settings))
    task = asyncio.create_task(predictor.run(stop), name="predictor")
    since = start
    try:
        await wait_until(champion_upto(start), "the first forecasts", task)
        for upto in [*buckets[200:-1:80], buckets[-1]]:  # the feature part goes on
            feed(settings, rows, int(upto), since)
            since = int(upto)
            await wait_until(champion_upto(since), f"forecasts up to {since}", task)
    finally:
        stop.set()
        await task
    df = preds.frame(role="champion")
    served = buckets[buckets >= start]
    horizons = df.horizon.nunique()
    for sym in SYMBOLS:
        c = df[df.symbol == sym]
        assert np.array_equal(np.sort(c.ts.unique()), served)  # none skipped ...
        assert len(c) == len(served) * horizons  # ... none twice
    assert set(df.model) == {settings.model_name} and preds.serving()["champion"].trained_to
    # the monitor follows the same database: every forecast whose target bucket is stored
    # gets a score or a reason, exactly once
    total = preds.count()
    preds.close()
    due = int((df.target_ts <= since).sum())  # the champion's rows alone: a lower bound
    monitor = Monitor(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run(stop), name="monitor")
    try:
        await wait_until(lambda: monitored(pg) >= total, "every prediction read", task)
    finally:
        stop.set()
        await task
    mon = PgMonitorStore(pg, readonly=True)
    try:
        scores, unscored = mon.frame("scores"), mon.frame("unscored")
        n = len(scores) + len(unscored)
        assert n + mon.count("pending") == total and len(scores) >= 0.5 * due
        key = ["symbol", "target", "ts", "horizon", "role"]
        assert not pd.concat([scores[key], unscored[key]]).duplicated().any()
        assert (scores.naive_abs_error >= 0).all() and scores.inside.map(len).nunique() == 1
        acc = mon.frame("accuracy")
        assert set(acc.role) >= {"champion"} and (acc.n > 0).any()
        assert len(mon.frame("drift_runs")) == len(SYMBOLS)  # the first drift run, at start
    finally:
        mon.close()
    raw = open_raw_store(settings, readonly=True)
    try:
        states = {r[0]: r[4] for r in raw.parts()}
    finally:
        raw.close()
    assert states == {"predict": "stopped", "monitor": "stopped"}  # heartbeats, in PostgreSQL
    assert not settings.predictions_path.exists() and not settings.monitor_path.exists()
