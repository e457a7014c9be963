"""The promotion rule and the yardstick on the real BTC candles, with planted models: better
only on pinball, worse at one horizon, equal to naive, significantly worse everywhere (it
must not become the challenger), ties (to the simpler), and the online naive yardstick
that only ever reads the past."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ccf.config import EvaluateConfig, TrainConfig
from ccf.ml import dataset
from ccf.ml.evaluate import beats_naive, judge, online_naive, score, walk_forward
from ccf.ml.models.naive import Naive
from ccf.ml.promotion import best_of, choose, round_pairs, rule
from tests.ml.data import candle_dataset, candle_rows

CFG = EvaluateConfig()


class Twin(Naive):
    """The naive forecast under another name."""

    kind = "twin"


class PinballOnly(Naive):
    """Its outer quantiles move halfway to the realized return (a leak: pinball far better),
    but its median is off by half the origin's vol * sqrt(h): MAE worse."""

    kind = "pinball_only"

    def predict(self, data: dataset.Dataset, origins: dataset.Origins) -> np.ndarray:
        out = super().predict(data, origins)
        y = np.nan_to_num(data.targets(origins))[..., None]
        mid = self.spec.quantiles.index(0.5)
        med = out[..., mid : mid + 1] + 0.5 * data.scales(origins)[..., None]
        lo = np.minimum(out[..., :mid] + 0.5 * y, med)  # ordered, the median kept in place
        hi = np.maximum(out[..., mid + 1 :] + 0.5 * y, med)
        return np.concatenate([lo, med, hi], axis=-1)


class WorseAtOne(Naive):
    """Halfway to the truth at the first two horizons, 20 bps off at the last."""

    kind = "worse_at_one"

    def predict(self, data: dataset.Dataset, origins: dataset.Origins) -> np.ndarray:
        out = super().predict(data, origins)
        y = np.nan_to_num(data.targets(origins))
        out[:, :, :2] += 0.5 * y[:, :, :2, None]
        out[:, :, -1] += 20e-4
        return out


class Bad(Naive):
    """Significantly worse than naive everywhere: 15 bps off at every horizon (as the NHiTS
    that once took the challenger alias)."""

    kind = "bad"

    def predict(self, data: dataset.Dataset, origins: dataset.Origins) -> np.ndarray:
        return super().predict(data, origins) + 15e-4


class Oracle(Naive):
    """Moves naive's quantiles a share of the way to the realized return."""

    kind = "oracle"
    share = 0.5

    def predict(self, data: dataset.Dataset, origins: dataset.Origins) -> np.ndarray:
        y = np.nan_to_num(data.targets(origins))
        return super().predict(data, origins) + self.share * y[..., None]


class WeakOracle(Oracle):
    kind = "weak_oracle"
    share = 0.2


@pytest.fixture(scope="module")
def btc() -> tuple[dataset.Dataset, dataset.Splits]:
    ds = candle_dataset(candle_rows())
    return ds, ds.split(0.7, 0.15, 0.15)


def fitted(btc, **classes: type[Naive]) -> dict[str, Naive]:
    ds, sp = btc
    out = {}
    for label, cls in classes.items():
        out[label] = cls(ds.spec)
        out[label].fit(ds, sp.train, sp.val, TrainConfig())
    return out


@pytest.fixture(scope="module")
def planted(btc) -> dict:
    ds, sp = btc
    models = fitted(
        btc,
        naive=Naive,
        twin=Twin,
        pinball_only=PinballOnly,
        worse_at_one=WorseAtOne,
        bad=Bad,
        oracle=Oracle,
        oracle2=Oracle,
        weak=WeakOracle,
    )
    ev = walk_forward(models, ds, sp.test, CFG)
    pairs = [("oracle", "oracle2"), ("oracle2", "oracle"), ("oracle", "weak"), ("weak", "oracle")]
    pairs += [("twin", "bad"), ("bad", "twin")]
    return score(ev, CFG, pairs)


def test_better_only_on_pinball_does_not_beat_naive(planted) -> None:
    v = judge(planted, "pinball_only")
    assert v.better  # significantly better on the primary loss (pinball) ...
    assert {w.split()[0] for w in v.worse} == {"absolute"}  # ... but worse on MAE
    assert not beats_naive(planted, "pinball_only")
    assert planted["models"]["pinball_only"]["skill"] > 0.1  # the old rule said yes


def test_worse_at_one_horizon_does_not_beat_naive(planted) -> None:
    v = judge(planted, "worse_at_one")
    assert "close h=1" in v.better and "close h=5" in v.better
    assert "pinball close h=15" in v.worse and "absolute close h=15" in v.worse
    assert not beats_naive(planted, "worse_at_one")


def test_equal_to_naive_does_not_beat_it(planted) -> None:
    assert judge(planted, "twin") == ((), ())
    assert not beats_naive(planted, "twin")
    ok, why = rule(_as(planted, challenger="twin"), has_champion=False)
    assert not ok and "finds no significant gain" in why


def test_one_holm_family_over_every_model_horizon_and_pair(planted) -> None:
    tests = planted["meta"]["tests"]
    assert tests["holm_family_size"] == 3 * (7 + 6)  # 3 horizons x (7 vs naive + 6 pairs)
    p = [
        r["p_two"]
        for body in planted["models"].values()
        for by_t in body["dm"]["pinball"].values()
        for r in by_t.values()
    ]
    assert len(p) == 21
    r = planted["models"]["weak"]["dm"]["pinball"]["close"]["5"]
    # Holm: the adjusted p is at least the raw p times (family size - rank)
    assert r["p_two_adj"] >= r["p_two"]


def test_a_model_significantly_worse_than_naive_never_becomes_challenger(planted) -> None:
    assert judge(planted, "bad").worse and not judge(planted, "bad").better
    report = planted
    chal, champ, _ = choose(report, {"naive": "naive", "bad": "nhits", "twin": "lightgbm"})
    assert chal == "twin"  # not the worse one, whatever its kind or skill
    assert champ == "naive"  # nothing beats naive: naive serves
    chal, champ, why = choose(report, {"naive": "naive", "bad": "nhits"})
    assert chal is None and champ == "naive" and "no model beats naive" in why


def test_ties_go_to_the_simpler_model(planted) -> None:
    # two equal oracles: the tests cannot tell them apart, the simpler kind wins either way
    assert judge(planted, "oracle", "oracle2") == ((), ())
    assert best_of(planted, {"oracle": "tft", "oracle2": "lightgbm"}) == "oracle2"
    assert best_of(planted, {"oracle": "lightgbm", "oracle2": "tft"}) == "oracle"
    # a more complex model that is significantly better than the simpler one wins
    assert judge(planted, "oracle", "weak").wins
    assert best_of(planted, {"oracle": "tft", "weak": "lightgbm"}) == "oracle"
    kinds = {"naive": "naive", "oracle": "tft", "weak": "lightgbm"}
    assert set(round_pairs(kinds)) == {("oracle", "weak")}
    assert choose(planted, kinds)[:2] == ("oracle", "oracle")


def test_the_challenger_must_beat_the_champion_too(planted) -> None:
    # better than naive and than the champion: promoted
    ok, why = rule(_as(planted, challenger="oracle", champion="weak"), has_champion=True)
    assert ok and why.startswith("beats naive") and "and the champion" in why
    # better than naive, worse than the champion: refused
    ok, why = rule(_as(planted, challenger="weak", champion="oracle"), has_champion=True)
    assert not ok and "significantly worse than the champion" in why
    # a tie: only a simpler challenger takes over
    tie = _as(planted, challenger="oracle", champion="oracle2")
    ok, why = rule(tie, True, challenger_kind="tft", champion_kind="lightgbm")
    assert not ok and "a tie keeps the champion" in why
    ok, why = rule(tie, True, challenger_kind="lightgbm", champion_kind="tft")
    assert ok and "tie goes to the simpler model" in why


def test_a_yardstick_fitted_on_a_tiny_split_is_refused(btc) -> None:
    ds, _ = btc
    sp = ds.split(0.01, 0.0, 0.99)
    with pytest.raises(ValueError, match="only .* origins before the test split.*--test all"):
        walk_forward(fitted(btc, twin=Twin), ds, sp.test, CFG)


def test_the_online_naive_reads_only_the_past_and_is_calibrated(btc) -> None:
    ds, sp = btc
    cfg = EvaluateConfig(min_history=1000, online_refresh=60)
    new = ds.origins(int(ds.ts(sp.val).min()))  # the last 30 % as a "new file"
    ev = walk_forward(fitted(btc, twin=Twin), ds, new, cfg, yardstick="online")
    assert "online naive" in ev.yardstick
    report = score(ev, cfg)
    for h in ("1", "5", "15"):
        cell = report["models"]["naive"]["metrics"]["close"][h]
        assert 0.77 < cell["coverage"]["80"]["overall"] < 0.83
        assert 0.47 < cell["coverage"]["50"]["overall"] < 0.53
    assert not beats_naive(report, "twin")  # a naive fitted elsewhere is no better
    # every forecast is the quantile of the targets known at its refresh time: recompute one
    f = online_naive(ds, new, 1000, 60)
    allo = ds.origins()
    ts_all = ds.ts(allo)
    z = ds.targets(allo) / ds.scales(allo)
    ts_new = ds.ts(new)
    bucket = ds.spec.bucket_ns
    for i in (1500, 4000, len(new) - 1):
        at = ts_new.min() + (ts_new[i] - ts_new.min()) // (60 * bucket) * 60 * bucket
        for j, h in enumerate(ds.spec.horizons):
            col = z[ts_all <= at - h * bucket, 0, j]
            zq = np.quantile(col[np.isfinite(col)], ds.spec.quantiles)
            zq[2] = 0.0
            expected = ds.scales(new.take(slice(i, i + 1)))[0, 0, j] * np.sort(zq)
            np.testing.assert_allclose(f[i, 0, j], expected)


def test_the_online_naive_needs_a_history(btc) -> None:
    ds, _ = btc
    few = ds.origins().take(slice(0, 500))
    cfg = EvaluateConfig(min_history=1000)
    assert np.isnan(online_naive(ds, few, 1000, 60)).all()
    with pytest.raises(ValueError, match="online naive yardstick needs 1000 known targets"):
        walk_forward(fitted(btc, twin=Twin), ds, few, cfg, yardstick="online")


def _as(report: dict, *, challenger: str, champion: str | None = None) -> dict:
    """The report with two of its models named as the rule reads them (the pair's tests
    moved along)."""
    models = dict(report["models"])
    chal = dict(models[challenger])
    if champion is not None:
        chal["vs"] = {"champion": chal["vs"][champion]}
        models["champion"] = models[champion]
    models["challenger"] = chal
    return {**report, "models": models}


def test_the_headline_table(planted) -> None:
    from ccf.ml.summary import NO_PAY, flat_metrics, headline

    text = headline(planted, ["naive", "weak", "bad"])
    rows = [line for line in text.splitlines() if line.split()[:1] in (["weak"], ["bad"])]
    assert len(rows) == 6
    cov = re.compile(r"\d\.\d\d \(\d\.\d\d/\d\.\d\d/\d\.\d\d\)")
    for line in rows:
        assert len(cov.findall(line)) == 2  # 50 % and 80 %, overall (low/mid/high)
    cell = planted["models"]["weak"]["metrics"]["close"]["1"]
    assert f" {cell['mase']:.4f} " in rows[0] and f" {cell['pinball_bps']['mean']:.3f} " in rows[0]
    assert cell["direction"]["breakeven"] > 1 and " none* " in rows[0]
    assert f"* b/e none: {NO_PAY}" in text
    assert "yardstick: " in text and "Holm over 39 tests per loss" in text
    flat = flat_metrics(planted, "weak")
    assert flat["coverage80_low_h1"] == cell["coverage"]["80"]["low"]


def test_a_naive_champion_is_the_yardstick_itself(planted) -> None:
    ok, why = rule(_as(planted, challenger="oracle"), True, champion_label="naive")
    assert ok and why.startswith("beats naive") and "and the champion" in why
    ok, why = rule(_as(planted, challenger="twin"), True, champion_label="naive")
    assert not ok and why.startswith("challenger does not beat naive")
