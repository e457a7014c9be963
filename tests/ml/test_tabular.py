"""The naive yardstick and the LightGBM quantile model on real one-minute candles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ccf.config import TrainConfig
from ccf.ml import dataset
from ccf.ml.models import base
from ccf.ml.models.gbm import tabular
from tests.ml.data import candle_dataset, candle_rows

CFG = TrainConfig(max_train_samples=8000)


@pytest.fixture(scope="module")
def btc() -> tuple[dataset.Dataset, dataset.Splits]:
    data = candle_dataset(candle_rows())
    return data, data.split(0.7, 0.15, 0.15)


@pytest.fixture(scope="module")
def gbm(btc) -> base.Forecaster:
    data, sp = btc
    m = base.create("lightgbm", data.spec, {"n_estimators": 60})
    m.fit(data, sp.train, sp.val, CFG)
    return m


def coverage(q: np.ndarray, y: np.ndarray, lo: int, hi: int) -> np.ndarray:
    ok = np.isfinite(y)
    inside = (y >= q[..., lo]) & (y <= q[..., hi])
    return inside.sum(axis=0) / ok.sum(axis=0)


def test_naive_forecasts_no_change_inside_a_calibrated_vol_interval(btc) -> None:
    data, sp = btc
    m = base.create("naive", data.spec)
    m.fit(data, sp.train, sp.val, CFG)
    q = m.predict(data, sp.test)
    assert q.shape == (len(sp.test), 1, 3, 5)
    assert (q[..., 2] == 0).all()  # the point forecast: no change
    y = data.targets(sp.test)
    cov80 = coverage(q, y, 0, 4)
    cov50 = coverage(q, y, 1, 3)
    # empirical quantiles of vol-normalized returns: close to nominal out of sample
    assert (np.abs(cov80 - 0.8) < 0.05).all(), cov80
    assert (np.abs(cov50 - 0.5) < 0.06).all(), cov50
    # wider in wild markets: the interval follows the vol at the origin
    width = q[:, 0, 0, 4] - q[:, 0, 0, 0]
    assert np.corrcoef(width, data.scales(sp.test)[:, 0, 0])[0, 1] > 0.999


def test_lightgbm_forecasts_sorted_quantiles_near_naive_skill(btc, gbm) -> None:
    data, sp = btc
    q = gbm.predict(data, sp.test)
    assert q.shape == (len(sp.test), 1, 3, 5)
    assert np.isfinite(q).all() and (np.diff(q, axis=-1) >= 0).all()
    assert len(gbm.boosters) == 15  # one per horizon and quantile
    y = data.targets(sp.test)
    mae = np.nanmean(np.abs(y - q[..., 2]), axis=0)
    mae_naive = np.nanmean(np.abs(y), axis=0)
    # one-minute candles allow little: near naive, neither far better (a leak) nor far worse
    assert ((mae / mae_naive > 0.97) & (mae / mae_naive < 1.03)).all(), mae / mae_naive
    assert (np.abs(coverage(q, y, 0, 4) - 0.8) < 0.06).all()
    assert gbm.fit_result is not None and gbm.fit_result.samples == 8000
    assert set(gbm.importance()) >= set(data.spec.unknown)


def test_saved_and_loaded_models_forecast_identically(btc, gbm, tmp_path: Path) -> None:
    data, sp = btc
    naive = base.create("naive", data.spec)
    naive.fit(data, sp.train, sp.val, CFG)
    for m in (naive, gbm):
        loaded = base.load(m.save(tmp_path / m.kind))
        assert loaded.kind == m.kind and loaded.spec == m.spec
        np.testing.assert_array_equal(loaded.predict(data, sp.test), m.predict(data, sp.test))


def test_a_warm_start_continues_from_the_given_boosters(btc, gbm) -> None:
    data, sp = btc
    newest = sp.train.take(slice(-3000, None))
    warm = base.create("lightgbm", data.spec, {"n_estimators": 5, "early_stopping_rounds": 100})
    warm.fit(data, newest, sp.val, CFG, warm_start=gbm)
    x = tabular(data, sp.test, gbm.lags)
    for key, b in warm.boosters.items():
        old = gbm.boosters[key]
        n = old.current_iteration()
        assert n < b.current_iteration() <= n + 5  # new trees on top of the old ones
        np.testing.assert_allclose(b.predict(x, num_iteration=n), old.predict(x, num_iteration=n))
    with pytest.raises(TypeError, match="cannot warm-start from a naive model"):
        other = base.create("naive", data.spec)
        other.fit(data, sp.train, sp.val, CFG)
        base.create("lightgbm", data.spec).fit(data, newest, sp.val, CFG, warm_start=other)


def test_unknown_model_parameters_name_the_key(btc) -> None:
    data, _ = btc
    with pytest.raises(ValueError, match=r"ml.params.lightgbm: unknown keys \['leaves'\]"):
        base.create("lightgbm", data.spec, {"leaves": 3})
    with pytest.raises(ValueError, match="ml.models: unknown model 'prophet'"):
        base.create("prophet", data.spec)
