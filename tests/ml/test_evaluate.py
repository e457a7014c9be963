"""Walk-forward evaluation on the real BTC candles: rolling origins, refits that never see
the future, the naive yardstick's calibration, a cheating model caught, a twin of naive
never promoted, and the report on disk."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from ccf.config import EvaluateConfig, TrainConfig
from ccf.ml import dataset
from ccf.ml.evaluate import LEAK, Evaluation, beats_naive, score, skill, walk_forward
from ccf.ml.models.naive import Naive
from ccf.ml.report import write_report
from tests.ml.data import candle_dataset, candle_rows

CFG = EvaluateConfig()


class Cheat(Naive):
    """Perfect foresight: every quantile is the realized return, read from the future."""

    kind = "cheat"

    def predict(self, data: dataset.Dataset, origins: dataset.Origins) -> np.ndarray:
        y = np.nan_to_num(data.targets(origins))
        return np.repeat(y[..., None], len(self.spec.quantiles), axis=-1)


class Twin(Naive):
    """The naive forecast under another name."""

    kind = "twin"


class Mixed(Naive):
    """Reads the future at the first horizon, and is biased by 20 bps at the last."""

    kind = "mixed"

    def predict(self, data: dataset.Dataset, origins: dataset.Origins) -> np.ndarray:
        out = super().predict(data, origins)
        out[:, :, 0] += np.nan_to_num(data.targets(origins)[:, :, 0])[..., None]
        out[:, :, -1] += 20e-4
        return out


@pytest.fixture(scope="module")
def btc() -> tuple[dataset.Dataset, dataset.Splits]:
    ds = candle_dataset(candle_rows())
    return ds, ds.split(0.7, 0.15, 0.15)


@pytest.fixture(scope="module")
def naive_only(btc) -> tuple[Evaluation, dict]:
    ds, sp = btc
    ev = walk_forward({}, ds, sp.test, CFG)
    return ev, score(ev, CFG)


@pytest.fixture(scope="module")
def contest(btc) -> tuple[Evaluation, dict]:
    ds, sp = btc
    models = {}
    for label, cls in (("naive", Naive), ("cheat", Cheat), ("twin", Twin), ("mixed", Mixed)):
        models[label] = cls(ds.spec)
        models[label].fit(ds, sp.train, sp.val, TrainConfig())
    ev = walk_forward(models, ds, sp.test, CFG)
    return ev, score(ev, CFG)


def test_naive_is_fitted_when_missing_and_calibrated_on_the_test_split(naive_only, btc) -> None:
    ev, report = naive_only
    _, sp = btc
    assert list(ev.forecasts) == ["naive"] and ev.refits == {"naive": 0}
    n, K, H, Q = ev.forecasts["naive"].shape
    assert (n, K, H, Q) == (len(sp.test), 1, 3, 5)
    assert np.all(np.diff(ev.ts) > 0)
    meta = report["meta"]
    assert meta["origins"] == n and meta["step"] == 1 and meta["hac_lags"]["15"] == 14
    for h in ("1", "5", "15"):
        cell = report["models"]["naive"]["metrics"]["close"][h]
        assert 0.75 < cell["coverage"]["80"]["overall"] < 0.85
        assert 0.45 < cell["coverage"]["50"]["overall"] < 0.55
        assert cell["mase"] == 1.0 and cell["ic"] is None  # a constant forecast has no rank
        assert cell["direction"]["n"] == 0
    assert skill(report, "naive") == 0.0 and not beats_naive(report, "naive")
    assert report["models"]["naive"]["flags"] == []
    json.dumps(report, allow_nan=False)


def test_the_report_leads_with_ranking_direction_and_calibration(naive_only) -> None:
    _, report = naive_only
    cell = report["models"]["naive"]["metrics"]["close"]["1"]
    assert list(cell)[:4] == ["n", "ic", "direction", "coverage"]
    assert list(cell["coverage"]["80"]) == ["nominal", "overall", "low", "mid", "high"]


def test_a_model_that_reads_the_future_is_flagged_and_beats_naive(contest) -> None:
    _, report = contest
    cheat = report["models"]["cheat"]
    assert {f["horizon"] for f in cheat["flags"]} == {1, 5, 15}
    assert all(f["message"] == LEAK for f in cheat["flags"])
    assert beats_naive(report, "cheat") and cheat["beats_naive"]
    assert skill(report, "cheat") == pytest.approx(1.0)
    assert cheat["metrics"]["close"]["5"]["direction"]["accuracy"] == 1.0
    for loss in ("pinball", "absolute"):
        assert cheat["dm"][loss]["close"]["15"]["p_better_adj"] < 1e-6
    assert beats_naive(_promote_on(report, "absolute"), "cheat")


def test_a_twin_of_naive_never_beats_it(contest) -> None:
    _, report = contest
    twin = report["models"]["twin"]
    assert not beats_naive(report, "twin") and not beats_naive(
        _promote_on(report, "absolute"), "twin"
    )
    assert skill(report, "twin") == 0.0 and twin["flags"] == []
    r = twin["dm"]["pinball"]["close"]["5"]
    assert (r["stat"], r["p_two"], r["p_better"]) == (0.0, 1.0, 0.5)


def test_better_at_one_horizon_but_worse_at_another_is_not_promoted(contest) -> None:
    _, report = contest
    dm = report["models"]["mixed"]["dm"]["pinball"]["close"]
    assert dm["1"]["p_better_adj"] < 0.05
    assert dm["15"]["p_two_adj"] < 0.05 and dm["15"]["mean_diff_bps"] > 0
    assert not beats_naive(report, "mixed")


def test_refits_every_k_steps_only_ever_train_on_the_past(btc) -> None:
    ds, sp = btc

    class Recorder(Naive):
        kind = "recorder"
        fits: ClassVar[list[tuple[int, int, int]]] = []  # train max, val min, val max ts
        predicts: ClassVar[list[tuple[int, int]]] = []  # first and last origin ts

        def fit(self, data, train, val, cfg, **kw):
            t, v = data.ts(train), data.ts(val)
            self.fits.append((int(t.max()), int(v.min()), int(v.max())))
            return super().fit(data, train, val, cfg, **kw)

        def predict(self, data, origins):
            ts = data.ts(origins)
            self.predicts.append((int(ts.min()), int(ts.max())))
            return super().predict(data, origins)

    first = Recorder(ds.spec)
    first.fit(ds, sp.train, sp.val, TrainConfig())
    Recorder.fits.clear()
    cfg = EvaluateConfig(step=3, refit_every=400)
    ev = walk_forward({"rec": first}, ds, sp.test, cfg)
    steps = len(np.unique(ev.ts))
    expected = math.ceil(steps / 400) - 1
    assert ev.refits == {"naive": expected, "rec": expected} and expected >= 2
    bucket = ds.spec.bucket_ns
    assert set(np.diff(ev.ts) // bucket) == {3}  # an origin every 3 buckets
    emb = ds.spec.max_horizon * bucket
    assert len(Recorder.fits) == expected and len(Recorder.predicts) == expected + 1
    for (train_max, val_min, val_max), (seg_start, _) in zip(
        Recorder.fits, Recorder.predicts[1:], strict=True
    ):
        assert train_max + emb < val_min  # embargo between train and validation
        assert val_max + emb < seg_start  # every target ended before the first forecast
    for (_, prev_end), (start, _) in zip(Recorder.predicts, Recorder.predicts[1:], strict=False):
        assert prev_end < start
    report = score(ev, cfg)
    assert report["meta"]["step"] == 3
    assert report["meta"]["hac_lags"] == {"1": 0, "5": 1, "15": 4}
    assert report["meta"]["refits"] == ev.refits


def test_unknown_targets_are_never_scored(naive_only) -> None:
    ev, report = naive_only
    truth = ev.truth.copy()
    truth[:100, 0, 0] = np.nan
    report2 = score(replace(ev, truth=truth), CFG)
    before = report["models"]["naive"]["metrics"]["close"]["1"]
    after = report2["models"]["naive"]["metrics"]["close"]["1"]
    assert after["n"] == before["n"] - 100
    y = truth[:, 0, 0]
    y = y[np.isfinite(y)]
    assert after["mae_bps"] == pytest.approx(np.mean(np.abs(y)) * 1e4)  # naive median is 0
    # the last 15 origins have no 15-minute outcome yet: not scored either
    assert report["models"]["naive"]["metrics"]["close"]["15"]["n"] == before["n"] - 14


def test_report_files_are_written(contest, tmp_path: Path) -> None:
    ev, report = contest
    paths = write_report(report, ev, tmp_path)
    names = {p.name for p in paths}
    assert {"report.json", "report.html", "calibration.png", "errors.png"} <= names
    assert {"skill_over_time.png", "signal.png", "fan_cheat.png", "fan_naive.png"} <= names
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "report.json").read_text()) == report
    page = (tmp_path / "report.html").read_text()
    assert LEAK in page and page.count("data:image/png;base64,") == len(names) - 2
    assert page.index("IC</th>") < page.index("MAE</th>")


def _promote_on(report: dict, loss: str) -> dict:
    return {**report, "meta": {**report["meta"], "promote_on": loss}}
