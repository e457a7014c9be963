"""Datasets on real data: targets, splits, gaps, the normalizer, and leak checks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ccf.config import TrainConfig
from ccf.ml import dataset, sources
from ccf.ml.leaks import LeakError, check_no_lookahead
from ccf.ml.models import base
from tests.ml.data import BTC, candle_dataset, candle_rows, candle_settings, rows_of

MIN = 60 * 10**9


@pytest.fixture(scope="module")
def btc() -> dataset.Dataset:
    return candle_dataset(candle_rows())


def test_rows_are_one_per_bar_at_the_bar_open(btc: dataset.Dataset) -> None:
    raw = pd.read_csv(BTC)
    (s,) = btc.series
    assert len(s.ts) == len(raw)
    assert np.array_equal(s.ts, raw["open_time_ms"].to_numpy() * 10**6)


def test_targets_are_log_returns_of_the_close_from_the_origin(btc: dataset.Dataset) -> None:
    close = pd.read_csv(BTC)["close"].to_numpy()
    (s,) = btc.series
    for k in (1, 5, 15):
        expect = np.log(close[k:]) - np.log(close[:-k])
        assert np.allclose(s.y[: len(close) - k, 0, k - 1], expect, rtol=0, atol=1e-12)
        assert np.isnan(s.y[len(close) - k :, 0, k - 1]).all()  # the future past the end
    o = btc.origins()
    np.testing.assert_allclose(
        btc.scales(o), s.vol[o.t][:, :, None] * np.sqrt([1, 5, 15]), rtol=1e-12
    )


def test_splits_are_in_time_order_with_an_embargo_of_the_longest_horizon(
    btc: dataset.Dataset,
) -> None:
    sp = btc.split(0.7, 0.15, 0.15)
    train, val, test = (btc.ts(o) for o in sp[:3])
    lo, c1, c2, c3 = sp.bounds_ns
    step = btc.spec.max_horizon * MIN
    assert train.max() + step < c1 <= val.min()  # every train target ends before val starts
    assert val.max() + step < c2 <= test.min()
    assert val.min() - train.max() > step and test.min() - val.max() > step
    assert len(train) > 4 * len(test) > 0


def test_gap_buckets_and_missing_rows_never_reach_a_target() -> None:
    rows = candle_rows(BTC, 3000)
    frame = rows.frame.copy()
    frame.loc[1000, "gap"] = 1.0  # the collector flagged this bucket
    frame = frame.drop(index=2000).reset_index(drop=True)  # and this one is missing
    data = candle_dataset(replace(rows, frame=frame))
    (s,) = data.series
    y = s.y[:, 0, :]  # (T, 15)
    for t in range(985, 1001):
        assert np.isnan(y[t, 1000 - t - 1 :]).all()  # a window reaching bucket 1000
        assert np.isfinite(y[t, : max(1000 - t - 1, 0)]).all()  # ends before it: kept
    assert np.isnan(y[1000]).all()  # the flagged bucket as origin
    # the row that was bar 2001 is now at index 2000: windows across the hole are unknown
    assert np.isnan(y[1999, :]).all() and np.isfinite(y[1998, 0])
    assert not s.valid[2000 : 2000 + data.spec.encoder_length - 1].any()  # broken encoder


def test_the_normalizer_sees_only_the_training_rows() -> None:
    rows = candle_rows(BTC, 4000)
    a = candle_dataset(rows)
    frame = rows.frame.copy()
    frame.loc[3000:, "volume_zscore_20"] = 1e6  # the test period, changed beyond recognition
    b = candle_dataset(replace(rows, frame=frame))
    assert a.spec.center == b.spec.center and a.spec.scale == b.spec.scale


def test_inputs_and_forecasts_at_an_origin_never_depend_on_later_candles(
    btc: dataset.Dataset,
) -> None:
    """The leak check that matters: recompute everything from candles cut right after t
    (features through the engine too) and the window and forecasts at t are unchanged."""
    sp = btc.split(0.7, 0.15, 0.15)
    cfg = TrainConfig(max_train_samples=6000)
    models = [
        base.create("naive", btc.spec),
        base.create("lightgbm", btc.spec, {"n_estimators": 30}),
    ]
    for m in models:
        m.fit(btc, sp.train, sp.val, cfg)
    sym, candles = sources.read_candles(BTC)
    for cut in (21_000, 25_000):
        part = rows_of(candle_settings(), candles.iloc[:cut], sym)
        cut_data = dataset.build(part.frame, btc.spec)  # the same fitted spec
        t = np.arange(cut - 200, cut)
        o = dataset.Origins(np.zeros(len(t), int), t)
        (s_full,), (s_cut,) = btc.series, cut_data.series
        assert np.array_equal(s_cut.x[t], s_full.x[t])
        assert np.array_equal(s_cut.vol[t], s_full.vol[t])
        assert np.array_equal(s_cut.valid[t], s_full.valid[t])
        for m in models:
            np.testing.assert_array_equal(m.predict(cut_data, o), m.predict(btc, o))


def test_a_target_shifted_back_one_step_is_caught(btc: dataset.Dataset) -> None:
    rows = candle_rows()
    frame = rows.frame.copy()
    frame["lograt_leak"] = frame["lograt_close_1"].shift(-1)  # next bar's return: the future
    leaky = replace(rows, frame=frame, columns=(*rows.columns, "lograt_leak"))
    data = candle_dataset(leaky)
    assert "lograt_leak" in data.spec.inputs
    origins = data.split(0.7, 0.15, 0.15).train
    with pytest.raises(LeakError, match=r"leak at h=1: \+0\.9"):
        check_no_lookahead(data, origins)
    check_no_lookahead(btc, btc.split(0.7, 0.15, 0.15).train)  # the honest set passes


def test_several_targets_at_once_from_the_recorded_order_books(tmp_path: Path) -> None:
    from ccf.features.runner import run_backfill
    from tests.features.test_runner import fill, settings_for

    settings = settings_for(tmp_path, "symbols=[btcusdt,ethusdt]", "ml.targets=[a_p_0,b_p_0]")
    fill(settings)
    run_backfill(settings)
    rows = sources.from_store(settings)
    spec = dataset.make_spec(settings.ml, rows.name, rows.version, rows.bucket_ns, rows.columns)
    spec = dataset.stationary_inputs(rows.frame, spec)
    assert not {"a_p_0", "b_p_0", "m_p", "micro_price"} & set(spec.inputs)  # price levels out
    assert {"rel_spread", "depth_imbalance_cum_5", "lograt_m_p_1"} <= set(spec.inputs)
    data = dataset.build(rows.frame, spec, (0.7, 0.15, 0.15))
    assert data.symbols == ["btcusdt", "ethusdt"]
    sp = data.split(0.7, 0.15, 0.15)
    for kind in ("naive", "lightgbm"):
        m = base.create(kind, data.spec)
        m.fit(data, sp.train, sp.val, TrainConfig())
        q = m.predict(data, sp.test)
        assert q.shape == (len(sp.test), 2, 3, 5)  # ask and bid, 3 horizons, 5 quantiles
        assert np.isfinite(q).all() and (np.diff(q, axis=-1) >= 0).all()


def test_bad_dataset_settings_name_the_key() -> None:
    rows = candle_rows(BTC, 500)
    s = candle_settings("ml.targets=[m_p]")
    with pytest.raises(ValueError, match=r"ml.targets: \['m_p'\] not in feature set candles"):
        dataset.make_spec(s.ml, rows.name, rows.version, rows.bucket_ns, rows.columns)
    s = candle_settings("ml.inputs=[nothing_*]")
    with pytest.raises(ValueError, match="ml.inputs: 'nothing_\\*' matches no column"):
        dataset.make_spec(s.ml, rows.name, rows.version, rows.bucket_ns, rows.columns)


def test_candle_files_in_parquet_read_like_csv_and_bad_ones_say_why(tmp_path: Path) -> None:
    sym, df = sources.read_candles(BTC)
    pq = tmp_path / "BTCUSDT-1m-x.parquet"
    df.iloc[:300].to_parquet(pq)
    a = sources.from_candles(candle_settings(), pq).frame
    b = candle_rows(BTC, 300).frame
    pd.testing.assert_frame_equal(a, b)
    bad = tmp_path / "x.csv"
    df.drop(columns=["volume"]).iloc[:5].to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"lacks columns \['volume'\]"):
        sources.read_candles(bad)
    with pytest.raises(FileNotFoundError, match="candle file not found"):
        sources.read_candles(tmp_path / "none.csv")
