"""Scoring functions against hand computations and known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ccf.ml import metrics as m


def test_pinball_charges_q_above_and_one_minus_q_below() -> None:
    q = np.array([0.1, 0.5, 0.9])
    f = np.array([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])
    y = np.array([1.0, 1.0])
    # y above the forecast by 1: q * 1; below by 1: (1 - q) * 1
    assert np.allclose(m.pinball(y, f, q), [[0.1, 0.5, 0.9], [0.9, 0.5, 0.1]])
    assert m.pinball(np.array([0.0]), np.array([[1.0]]), np.array([0.25]))[0, 0] == 0.75


def test_mae_and_rmse() -> None:
    err = np.array([1.0, -2.0, 3.0])
    assert m.mae(err) == 2.0
    assert m.rmse(err) == pytest.approx(math.sqrt(14 / 3))
    assert math.isnan(m.mae(np.zeros(0)))


def test_rank_ic_is_spearman_and_undefined_for_a_constant() -> None:
    # ranks of y: 1 2 4 3 -> sum d^2 = 2 -> 1 - 6*2 / (4 * 15) = 0.8
    assert m.rank_ic(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 40, 30])) == pytest.approx(0.8)
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)  # ties in a
    assert m.rank_ic(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)
    assert math.isnan(m.rank_ic(np.zeros(10), b[:10]))


def test_direction_leaves_out_zero_moves_and_zero_forecasts() -> None:
    pred = np.array([1.0, -1.0, 0.0, 2.0, -3.0, 1.0])
    y = np.array([0.5, 0.2, 1.0, -1.0, -0.1, 0.0])
    d = m.direction(pred, y)  # scored: 0 (hit), 1 (miss), 3 (miss), 4 (hit)
    assert d.accuracy == 0.5 and d.n == 4
    assert d.mean_abs == pytest.approx((0.5 + 0.2 + 1.0 + 0.1) / 4)
    assert m.direction(np.zeros(3), np.ones(3)).n == 0


def test_breakeven_hit_rate_after_fees() -> None:
    # win 10 bps, lose 10 bps, pay 7.5: p*10 - (1-p)*10 = 7.5 -> p = 0.875
    assert m.breakeven(7.5e-4, 10e-4) == pytest.approx(0.875)
    assert m.breakeven(0.0, 10e-4) == 0.5
    assert math.isnan(m.breakeven(7.5e-4, 0.0))


def test_coverage_and_intervals() -> None:
    y = np.array([0.0, 1.0, 2.0, 3.0])
    assert m.coverage(y, np.full(4, 0.5), np.full(4, 2.0)) == 0.5  # bounds inclusive
    ivs = m.intervals((0.1, 0.25, 0.5, 0.75, 0.9))
    assert ivs == [m.Interval("50", 0.5, 1, 3), m.Interval("80", 0.8, 0, 4)]


def test_vol_regimes_are_terciles() -> None:
    scale = np.arange(1.0, 10.0)
    edges = m.vol_edges(scale)
    assert np.allclose(edges, [11 / 3, 19 / 3])
    assert m.vol_regime(scale[::-1], edges).tolist() == [2, 2, 2, 1, 1, 1, 0, 0, 0]


@pytest.mark.parametrize(
    ("h", "step", "lags"), [(1, 1, 0), (5, 1, 4), (15, 1, 14), (15, 5, 2), (5, 2, 2), (1, 5, 0)]
)
def test_hac_lags_follow_the_overlap(h: int, step: int, lags: int) -> None:
    assert m.hac_lags(h, step) == lags


def test_hac_variance_matches_the_direct_formula() -> None:
    d = np.random.default_rng(2).normal(size=60)
    n, lags = d.size, 3
    e = d - d.mean()
    direct = sum(e[t] * e[t] for t in range(n)) / n
    for k in range(1, lags + 1):
        gamma = sum(e[t] * e[t - k] for t in range(k, n)) / n
        direct += 2 * (1 - k / (lags + 1)) * gamma
    assert m.hac_variance(d, lags) == pytest.approx(direct)
    assert m.hac_variance(d, 0) == pytest.approx(np.var(d))


def test_diebold_mariano_by_hand() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(1.0, 0.3, 40) ** 2
    model = base + rng.normal(-0.05, 0.2, 40)
    d = model - base
    n, h, lags = 40, 3, 2
    lrv = m.hac_variance(d, lags)
    stat = d.mean() / math.sqrt(lrv / n) * math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    r = m.diebold_mariano(model, base, lags)
    assert r.stat == pytest.approx(stat)
    assert r.p_better == pytest.approx(stats.t.cdf(stat, n - 1))
    assert r.p_two == pytest.approx(2 * stats.t.sf(abs(stat), n - 1))
    assert r.n == n and r.lags == lags and r.mean_diff == pytest.approx(d.mean())


def test_diebold_mariano_sees_a_better_model_and_not_an_identical_one() -> None:
    rng = np.random.default_rng(4)
    base = np.abs(rng.normal(size=500))
    better = m.diebold_mariano(base * 0.8 + rng.normal(0, 0.01, 500), base, 0)
    assert better.stat < 0 and better.p_better < 1e-6
    same = m.diebold_mariano(base, base.copy(), 4)
    assert (same.stat, same.p_two, same.p_better) == (0.0, 1.0, 0.5)


def test_diebold_mariano_keeps_its_size_under_overlap_only_with_hac() -> None:
    """Loss differentials of 5-step overlapping targets are MA(4): with 4 lags the test
    rejects a true null near 5 % of the time (a little more: Bartlett weights shrink the
    long-run variance of a flat MA); treated as independent, about a third of the time."""
    rng = np.random.default_rng(5)
    sims, n, h = 300, 300, 5
    rej_hac = rej_iid = 0
    for _ in range(sims):
        e = rng.normal(size=n + h - 1)
        d = np.convolve(e, np.ones(h), mode="valid")  # equal expected loss, overlapping
        rej_hac += m.diebold_mariano(d, np.zeros(n), h - 1).p_two < 0.05
        rej_iid += m.diebold_mariano(d, np.zeros(n), 0).p_two < 0.05
    assert rej_hac / sims < 0.15
    assert rej_iid / sims > 0.25


def test_holm_step_down() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max so far 0.06
    assert np.allclose(m.holm(p), [0.03, 0.06, 0.06, 0.02])
    out = m.holm(np.array([0.2, np.nan, 0.9]))
    assert np.isnan(out[1]) and np.allclose(out[[0, 2]], [0.4, 0.9])
    assert m.holm(np.array([0.7, 0.8])).max() <= 1.0


def test_mean_by_time_averages_symbols_at_one_origin() -> None:
    uts, v = m.mean_by_time(np.array([2, 1, 2]), np.array([1.0, 5.0, 3.0]))
    assert uts.tolist() == [1, 2] and v.tolist() == [5.0, 2.0]


def test_trades_and_signal_summary() -> None:
    pred = np.array([3.0, -3.0, 1.0, 0.0, 2.5]) / m.BPS
    y = np.array([10.0, 4.0, 50.0, -5.0, -2.0]) / m.BPS
    t = m.trades(pred, y, threshold_bps=2.0, fee_bps=7.5)
    assert t.side.tolist() == [1, -1, 0, 0, 1]
    assert np.allclose(t.pnl_bps, [2.5, -11.5, 0, 0, -9.5])
    s = m.signal_summary(t, y)
    assert (s.buy, s.sell, s.hold) == (2, 1, 2)
    assert s.hit_buy == 0.5 and s.hit_sell == 0.0
    assert s.mean_bps == pytest.approx(-18.5 / 3) and s.total_bps == pytest.approx(-18.5)


def test_block_skill_by_hand() -> None:
    a_m, a_b = np.array([1.0, 1, 3, 3]), np.array([2.0, 2, 3, 3])
    p_m, p_b = np.array([1.0, 1, 2, 2]), np.array([2.0, 2, 1, 1])
    b = m.block_skill(a_m, a_b, p_m, p_b, 2)
    assert b.start.tolist() == [0, 2]
    assert np.allclose(b.mae_ratio, [0.5, 1.0])
    assert np.allclose(b.pinball_skill, [0.5, -1.0])
