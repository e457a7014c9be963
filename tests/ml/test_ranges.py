"""Scale-free inputs and the range check, on real BTC candles: volume given in quote
instead of base units changes nothing a model reads (by default), and an input far
outside what training saw is flagged in evaluation and for the predictor."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ccf.config import EvaluateConfig, TrainConfig
from ccf.ml import dataset, ranges, sources
from ccf.ml.evaluate import score, walk_forward
from ccf.ml.models.gbm import LightGBM
from tests.ml.data import BTC, candle_settings, rows_of

BARS = 6000


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return sources.read_candles(BTC)[1].iloc[:BARS].reset_index(drop=True)


@pytest.fixture(scope="module")
def base_rows(candles) -> sources.Rows:
    return rows_of(candle_settings(), candles, "btcusdt")


@pytest.fixture(scope="module")
def quote_rows(candles) -> sources.Rows:
    quote = candles.copy()
    quote["volume"] = quote["volume"] * quote["close"]  # the same bars, volume in USDT
    return rows_of(candle_settings(), quote, "btcusdt")


def built(rows: sources.Rows, units: str, spec: dataset.DatasetSpec | None = None):
    settings = candle_settings()
    if spec is None:
        spec = dataset.make_spec(settings.ml, rows.name, rows.version, rows.bucket_ns, rows.columns)
        spec = dataset.stationary_inputs(rows.frame, spec, units)
    return dataset.build(rows.frame, spec, (0.7, 0.15, 0.15))


def test_inputs_with_units_enter_relative_to_their_recent_level(base_rows) -> None:
    data = built(base_rows, "relative")
    spec = data.spec
    assert spec.transform_of("volume") == dataset.LOGREL
    assert spec.transform_of("candle_return_1") == dataset.RAW
    assert spec.transform_of("volume_zscore_20") == dataset.RAW
    assert {c for c in spec.inputs if spec.transform_of(c) != dataset.RAW} == {"volume"}
    assert spec.lo is not None and len(spec.lo) == len(spec.unknown) == len(spec.hi)
    # log1p(volume / mean of the last 60 volumes), computed by hand at one row
    v = base_rows.frame["volume"].to_numpy()
    i = 4000
    j = spec.unknown.index("volume")
    assert data.series[0].raw[i, j] == pytest.approx(np.log1p(v[i] / v[i - 59 : i + 1].mean()))
    assert dataset.stationary_inputs(base_rows.frame, spec, "drop").inputs == tuple(
        c for c in spec.inputs if c != "volume"
    )


def test_volume_in_quote_units_changes_nothing_the_model_reads(base_rows, quote_rows) -> None:
    base = built(base_rows, "relative")
    quote = built(quote_rows, "relative", base.spec)  # the base-trained spec serves quote data
    j = base.spec.unknown.index("volume")
    a, b = base.series[0], quote.series[0]
    # volume/mean volume in quote units differs only by the price's drift inside 60 bars
    np.testing.assert_allclose(b.raw[:, j], a.raw[:, j], rtol=0.02, equal_nan=True)
    # every normalized input within 0.1 sd (the volume z-scores move with the price too)
    np.testing.assert_allclose(b.x, a.x, atol=0.1)
    sp = base.split(0.7, 0.15, 0.15)
    model = LightGBM(base.spec, {"n_estimators": 40})
    model.fit(base, sp.train, sp.val, TrainConfig(progress_bar=False, num_threads=1))
    pa, pb = model.predict(base, sp.test), model.predict(quote, sp.test)
    moved = np.abs(pa - pb).mean() / np.abs(pa).mean()
    assert moved < 0.01 and np.abs(pa - pb).max() < 0.15 * np.abs(pa).mean()
    # the range check sees the quote-unit file as it sees the base-unit one
    own = ranges.summary(base.spec, base.raw_inputs(sp.test))
    assert ranges.summary(base.spec, quote.raw_inputs(sp.test)) == own and own["share"] < 0.01
    # the old way, raw volume: the same bars in quote units are another world
    raw = built(base_rows, "raw")
    raw_quote = built(quote_rows, "raw", raw.spec)
    flagged = ranges.summary(raw.spec, raw_quote.raw_inputs(sp.test))
    assert flagged["share"] > 0.99 and flagged["columns"]["volume"] == flagged["origins"]
    old = LightGBM(raw.spec, {"n_estimators": 40})
    old.fit(raw, sp.train, sp.val, TrainConfig(progress_bar=False, num_threads=1))
    pa, pb = old.predict(raw, sp.test), old.predict(raw_quote, sp.test)
    assert np.abs(pa - pb).mean() / np.abs(pa).mean() > 5 * moved


def test_an_input_far_outside_training_is_flagged_in_evaluation_and_live(candles) -> None:
    spiked = candles.copy()
    spiked.loc[BARS - 200, "volume"] *= 1e4  # one bar with ten thousand times the volume
    base = built(rows_of(candle_settings(), candles, "btcusdt"), "relative")
    data = built(rows_of(candle_settings(), spiked, "btcusdt"), "relative", base.spec)
    sp = data.split(0.7, 0.15, 0.15)
    model = LightGBM(base.spec, {"n_estimators": 20})
    model.fit(base, sp.train, sp.val, TrainConfig(progress_bar=False, num_threads=1))
    cfg = EvaluateConfig(min_history=1000)
    ev = walk_forward({"lightgbm": model}, data, sp.test, cfg)
    r = score(ev, cfg)["models"]["lightgbm"]["range_check"]
    own = ranges.summary(base.spec, base.raw_inputs(sp.test), cfg.range_sd)
    assert "volume" not in own["columns"]  # real extremes of the test period, not volume
    assert r["checked"] and r["columns"]["volume"] == 1  # the spike, not the whole period
    assert r["flagged"] <= own["flagged"] + 1
    t = np.arange(len(data.series[0].ts))
    flags = ranges.flags_at(data, t, cfg.range_sd)
    hits = [i for i, f in enumerate(flags) if f]
    assert BARS - 200 in hits and flags[BARS - 200].startswith("input_out_of_range:volume")
    assert flags[BARS - 201] is None or "volume," not in flags[BARS - 201]
    # the same from feature rows, as the predictor would ask for its newest row
    frame = rows_of(candle_settings(), spiked.iloc[: BARS - 199], "btcusdt").frame
    found = ranges.check_frame(base.spec, frame.iloc[-base.spec.history :], cfg.range_sd)
    [(key, cols)] = found.items()
    assert key == ("btcusdt", int(frame["ts"].iloc[-1])) and cols[0].column == "volume"
    assert cols[0].value > cols[0].hi and cols[0].sds > cfg.range_sd


def test_the_check_is_outside_the_range_and_far_from_the_center() -> None:
    spec = replace(
        dataset.DatasetSpec("f", "1", 60, ("a",), ("a",), (1,), 5, ("a",), (), (0.5,), 3),
        center=(0.0, 0.0, 0.0),
        scale=(1.0, 1.0, 1.0),
        lo=(-3.0, -3.0, -3.0),
        hi=(3.0, 3.0, 3.0),
    )
    raw = np.array([[2.0, 9.0, -9.0], [4.0, 8.5, np.nan]])
    flags = ranges.check(spec, raw, k=8.0)
    assert flags.tolist() == [[False, True, True], [False, True, False]]
    assert not ranges.check(replace(spec, lo=None), raw).any()  # a model saved without ranges
