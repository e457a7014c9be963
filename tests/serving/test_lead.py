"""Lead time on the event clock: right at any replay speed, kept in the prediction store."""

from __future__ import annotations

import math
import time
from pathlib import Path

from ccf.config import load_settings
from ccf.records import Book, Prediction
from ccf.serving.lead import EventClock, lead, lead_summary
from ccf.serving.store import PredictionStore
from ccf.storage import SqliteStore

S = 10**9


def test_lead_is_the_delay_and_the_share_of_the_horizon_left() -> None:
    assert lead(11 * S // 10, S, S) == (0.1, 0.9)
    delay, left = lead(3 * S, S, S)  # stored after the target bucket [1 s, 2 s) closed
    assert delay == 2.0 and left == -1.0


def _book(ts_event: int, ts_recv: int, uid: int) -> Book:
    return Book("binance", "btcusdt", "diff", uid, ts_event, ts_recv, (101.0, 1.0, 99.0, 1.0))


def test_the_event_clock_runs_at_the_replay_speed(tmp_path: Path) -> None:
    """At replay.speed=10 exchange time runs ten times faster than the wall: one wall
    second after the newest record was received, ten exchange seconds have passed."""
    wall = time.time_ns()
    raw = SqliteStore(tmp_path / "ccf.sqlite", book_depth=1)
    event = 1_723_161_600 * S  # a recording's exchange time, not rebased to the wall
    raw.write([_book(event - S, wall - 2 * S, 1), _book(event, wall - S, 2)])
    for speed, source in ((10, "replay"), (1, "binance")):
        settings = load_settings(
            [f"data_dir={tmp_path}", f"replay.speed={speed}", f"source={source}"], environ={}
        )
        now = EventClock(settings, raw).now("btcusdt")
        assert now is not None
        since = (now - event) / S
        assert speed * 1.0 <= since < speed * 1.0 + speed * 30  # 1 wall s (+ this test's time)
    assert EventClock(settings, raw).now("ethusdt") is None  # no record: no figure
    raw.close()


def _prediction(delay: float, left: float) -> Prediction:
    return Prediction(
        "binance",
        "btcusdt",
        "m_p",
        0,
        1,
        S,
        "champion",
        "naive",
        "1",
        5,
        S,
        100.0,
        0.0,
        (0.1, 0.5, 0.9),
        (-0.1, 0.0, 0.1),
        None,
        delay,
        left,
    )


def test_the_prediction_store_keeps_the_lead_time_and_adds_it_to_an_old_store(
    tmp_path: Path,
) -> None:
    import sqlite3

    path = tmp_path / "predictions.sqlite"
    con = sqlite3.connect(path)  # a store from before lead times: no such columns
    con.execute(
        "CREATE TABLE predictions (exchange TEXT, symbol TEXT, target TEXT, ts INTEGER, "
        "horizon INTEGER, target_ts INTEGER, role TEXT, model TEXT, version TEXT, "
        "made_at INTEGER, watermark INTEGER, last_value REAL, point REAL, levels BLOB, "
        "quantiles BLOB, flag TEXT)"
    )
    con.close()
    store = PredictionStore(path)
    assert store.write([_prediction(0.08, 0.92)]) == 1
    (got,), _ = store.since(0)
    assert (got.delay_s, got.horizon_left) == (0.08, 0.92)
    frame = store.frame()
    assert frame[["delay_s", "horizon_left"]].iloc[0].tolist() == [0.08, 0.92]
    store.close()


def test_a_prediction_without_a_clock_keeps_nan() -> None:
    p = Prediction(*_prediction(0, 0)[:16])
    assert math.isnan(p.delay_s) and math.isnan(p.horizon_left)


def test_the_heartbeat_summary_counts_forecasts_stored_after_their_target() -> None:
    out = lead_summary([0.05, 0.07, 1.4], {1: 1}, -0.4)
    assert out["n"] == 3 and out["after_target"] == {"1": 1}
    assert out["delay_p50_s"] == 0.07 and out["horizon_left_min"] == -0.4
