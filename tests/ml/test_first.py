"""The retrain loop's first model, on the real one-minute candles and a real MLflow
registry: with no champion, naive on the short spec serves first; the loop then comes
back at retry pace, not after ``every``, and the first full round replaces it. A
short history that allows only the first model keeps it champion and keeps retrying."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest

from ccf.ml import first, pipeline
from ccf.ml.prepare import Source
from ccf.ml.registry import CHAMPION, Registry
from tests.ml.data import BTC, candle_settings

HOUR = 3600.0


def _candles(tmp_path: Path, bars: int) -> Path:
    path = tmp_path / f"BTCUSDT-1m-first{bars}.csv"
    pd.read_csv(BTC).iloc[:bars].to_csv(path, index=False)
    return path


def _loop(tmp_path: Path, bars: int, rounds_wanted: int, limit_s: float) -> tuple[list, object]:
    settings = candle_settings(
        f"data_dir={tmp_path / 'data'}", "ml.models=[naive]", "ml.registry.model_name=ccf-first"
    )
    stop = threading.Event()
    seen: list[tuple[int, dict, dict]] = []
    reg = Registry(settings)

    def on_round(n: int, rnd: pipeline.Round) -> None:
        champ = reg.alias(CHAMPION)
        assert champ is not None
        seen.append((n, dict(champ.tags), dict(rnd.aliases)))
        if len(seen) >= rounds_wanted:
            stop.set()

    timer = threading.Timer(limit_s, stop.set)
    timer.start()
    try:
        n = pipeline.train_loop(
            settings,
            Source(candles=(_candles(tmp_path, bars),)),
            ("naive",),
            every_s=HOUR,  # a round after a first model must not wait for this
            stop=stop,
            retry_s=0.2,
            on_round=on_round,
            first_model=True,
        )
    finally:
        timer.cancel()
    return seen, (n, reg, settings)


def test_a_first_model_serves_then_the_full_round_replaces_it(tmp_path: Path) -> None:
    seen, (n, reg, settings) = _loop(tmp_path, 600, 2, 240)
    assert n == 2 and len(seen) == 2, "the full round did not follow at retry pace"
    (_, tags1, _), (_, tags2, aliases2) = seen
    assert tags1["command"] == first.FIRST and tags1["kind"] == "naive"
    assert tags2["command"] == "loop"
    assert aliases2[CHAMPION] != seen[0][2][CHAMPION]
    assert not first.provisional(reg)
    # the served models' specs: the first one short, its replacement the configured one
    model1, _ = reg.load(seen[0][2][CHAMPION])
    model2, _ = reg.load(aliases2[CHAMPION])
    assert (model1.spec.encoder_length, model1.spec.vol_halflife) == (5, 10)
    assert (model2.spec.encoder_length, model2.spec.vol_halflife) == (
        settings.ml.encoder_length,
        settings.ml.vol_halflife,
    )


@pytest.mark.parametrize("bars", [70])
def test_too_little_history_for_the_full_models_keeps_the_first_and_retries(
    tmp_path: Path, bars: int, caplog: pytest.LogCaptureFixture
) -> None:
    s = candle_settings()
    need_first, need_full = first.needs(s)
    assert need_first <= bars < need_full
    with caplog.at_level("INFO", logger="ccf.ml.pipeline"):
        seen, (n, reg, _) = _loop(tmp_path, bars, 99, 20)
    assert len(seen) == 1 and seen[0][1]["command"] == first.FIRST
    assert n >= 3  # the first round, then full rounds retried at retry pace
    assert first.provisional(reg)
    assert "need more history" in caplog.text or "too little data" in caplog.text
