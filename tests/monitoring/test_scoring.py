"""Scores against the recorded feature rows equal a hand computation; predictions that
cannot be scored are kept with their reason, and the ones waiting get scored later."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ccf.features.engine import FeatureRow
from ccf.monitoring.monitor import Monitor
from ccf.monitoring.scoring import SignalRule, central_intervals, direction_hit, signal_of
from ccf.records import Prediction
from tests.monitoring import (
    LEVELS,
    SECOND,
    build_features,
    copy_data,
    delete_row,
    features,
    frame,
    prediction,
    set_columns,
    write_predictions,
)

NAN5 = (math.nan,) * 5


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("recorded")
    build_features(data)
    return data


def by_hand(p: Prediction, value: float, threshold_bps: float, fee_bps: float) -> dict:
    """What the score must be, written out once more without the monitor's code."""
    y = math.log(value / p.last_value)
    q = p.quantiles
    losses = [max(lv * (y - f), (lv - 1) * (y - f)) for lv, f in zip(LEVELS, q, strict=True)]
    side = 1 if p.point * 1e4 > threshold_bps else -1 if p.point * 1e4 < -threshold_bps else 0
    return {
        "truth": y,
        "error": p.point - y,
        "abs_error": abs(p.point - y),
        "sq_error": (p.point - y) ** 2,
        "naive_abs_error": abs(y),
        "direction_hit": math.nan if p.point == 0 or y == 0 else float((p.point > 0) == (y > 0)),
        "inside": (float(q[0] <= y <= q[4]), float(q[1] <= y <= q[3])),  # 80 %, then 50 %
        "pinball": sum(losses) / 5,
        "signal": side,
        "signal_return": side * y - fee_bps / 1e4 if side else 0.0,
    }


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-15)


def test_scores_equal_a_hand_computation_on_recorded_rows(recorded: Path, tmp_path: Path) -> None:
    settings = copy_data(
        recorded, tmp_path / "data", "ml.evaluate.threshold_bps=3", "ml.evaluate.fee_bps=5"
    )
    btc = frame(settings, "btcusdt")
    ts = list(btc.index)
    # an origin whose mid does not move in the next bucket: no direction to hit
    flat = next(t for t, u in zip(ts, ts[1:], strict=False) if btc.m_p[t] == btc.m_p[u])
    cases = [
        (ts[100], 1, (-4e-4, -1e-4, 4e-4, 6e-4, 9e-4), "champion"),  # 4 bps: BUY
        (ts[200], 5, (-9e-4, -6e-4, -3.5e-4, 1e-4, 4e-4), "champion"),  # SELL
        (ts[300], 10, (-3e-4, -1e-4, 1e-5, 1e-4, 3e-4), "champion"),  # 0.1 bps: HOLD
        (ts[300], 10, (-5e-4, -2e-4, 0.0, 2e-4, 5e-4), "naive"),  # zero: no direction
        (ts[400], 5, (-2e-3, -1e-3, -3e-4, 1e-3, 2e-3), "challenger"),  # 3 bps: HOLD
        (flat, 1, (-1e-4, -5e-5, 2e-5, 5e-5, 1e-4), "champion"),  # no move
    ]
    preds = [prediction("btcusdt", t, h, btc.m_p[t], q, role) for t, h, q, role in cases]
    assert write_predictions(settings, preds) == len(preds)

    monitor = Monitor(settings)
    monitor.open()
    try:
        result = monitor.score_pass()
        scores = {(s.ts, s.horizon, s.role): s for s in monitor.store.scores()}
    finally:
        monitor.close()
    assert (result.read, result.scored, result.unscored, result.waiting) == (6, 6, 0, 0)
    for p in preds:
        s = scores[(p.ts, p.horizon, p.role)]
        want = by_hand(p, btc.m_p[p.target_ts], 3.0, 5.0)
        for k, v in want.items():
            got = getattr(s, k)
            if k == "inside":
                assert got == v, (p, k)
            else:
                assert same(got, v), (p, k, got, v)
        assert (s.model, s.version, s.exchange, s.target) == (p.model, p.version, "binance", "m_p")
    signals = [scores[(t, h, r)].signal for t, h, _, r in cases]
    assert signals[:3] == [1, -1, 0] and signals[4] == 0
    assert math.isnan(scores[(ts[300], 10, "naive")].direction_hit)
    assert scores[(flat, 1, "champion")].truth == 0 and math.isnan(
        scores[(flat, 1, "champion")].direction_hit
    )


def test_unscorable_predictions_are_kept_with_their_reason(recorded: Path, tmp_path: Path) -> None:
    settings = copy_data(recorded, tmp_path / "data")
    eth = frame(settings, "ethusdt")
    ts = list(eth.index)
    q = (-4e-4, -1e-4, 4e-4, 6e-4, 9e-4)
    set_columns(settings, "ethusdt", ts[51], gap=1.0)
    delete_row(settings, "ethusdt", ts[61])
    set_columns(settings, "ethusdt", ts[71], m_p=math.nan)
    last = ts[-1]
    preds = [
        prediction("ethusdt", ts[40], 1, eth.m_p[ts[40]], NAN5, flag="warming_up"),
        prediction("ethusdt", ts[50], 1, eth.m_p[ts[50]], q),  # target is a gap
        prediction("ethusdt", ts[60], 1, eth.m_p[ts[60]], q),  # target row missing
        prediction("ethusdt", ts[70], 1, eth.m_p[ts[70]], q),  # no mid at the target
        prediction("ethusdt", ts[80], 1, eth.m_p[ts[80]], q, flag="stale_input"),  # scored
        prediction("ethusdt", last, 2, eth.m_p[last], q),  # target not closed yet
    ]
    write_predictions(settings, preds)
    monitor = Monitor(settings)
    monitor.open()
    try:
        first = monitor.score_pass()
        unscored = monitor.store.frame("unscored").set_index("ts")["reason"].to_dict()
        assert (first.scored, first.unscored, first.waiting) == (1, 4, 1)
        assert unscored == {
            ts[40]: "no_forecast",
            ts[50]: "gap",
            ts[60]: "missing",
            ts[70]: "no_value",
        }
        assert monitor.store.frame("scores")["flag"].tolist() == ["stale_input"]
        assert monitor.store.count("pending") == 1
        assert dict(monitor.counts) == {
            ("ethusdt", "scored"): 1,
            ("ethusdt", "no_forecast"): 1,
            ("ethusdt", "gap"): 1,
            ("ethusdt", "missing"): 1,
            ("ethusdt", "no_value"): 1,
        }
        # the target bucket closes: the waiting prediction is scored on the next pass
        store = features(settings)
        values = tuple(eth.loc[last, list(store.set.float_columns)].astype(float))
        store.write(
            [
                FeatureRow("ethusdt", t, t + SECOND, values)
                for t in (last + SECOND, last + 2 * SECOND)
            ]
        )
        store.close()
        second = monitor.score_pass()
        assert (second.read, second.scored, second.waiting) == (0, 1, 0)
        (late,) = [s for s in monitor.store.scores() if s.ts == last]
        assert late.truth == 0.0  # the planted row repeats the last mid
        assert monitor.store.count("pending") == 0
    finally:
        monitor.close()


def test_signal_direction_and_intervals_at_their_edges() -> None:
    rule = SignalRule(threshold_bps=2.0, fee_bps=7.5)
    assert [signal_of(x, rule) for x in (2e-4, 2.0001e-4, -2e-4, -2.0001e-4)] == [0, 1, 0, -1]
    assert math.isnan(direction_hit(0.0, 0.01)) and math.isnan(direction_hit(0.01, 0.0))
    assert direction_hit(-0.01, -0.02) == 1.0 and direction_hit(0.01, -0.02) == 0.0
    nine = tuple(round(0.1 * k, 1) for k in range(1, 10))
    assert [nom for _, _, nom in central_intervals(nine)] == [0.8, 0.6, 0.4, 0.2]
    assert central_intervals((0.5,)) == ()
