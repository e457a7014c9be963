"""Real data for the ML tests: one-minute candles through the feature engine, and the
feature store built from the recorded Binance streams."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd

from ccf.config import Settings, load_settings, shared_dir
from ccf.ml import dataset, sources

KLINES = shared_dir() / "data" / "klines"
BTC = KLINES / "BTCUSDT-1m-2026-03-23_2026-04-11.csv.gz"
ETH = KLINES / "ETHUSDT-1m-2026-03-23_2026-04-11.csv.gz"


def candle_settings(*overrides: str) -> Settings:
    return load_settings(list(overrides), files=[sources.CANDLE_PRESET], environ={})


@cache
def candle_rows(path: Path = BTC, bars: int | None = None) -> sources.Rows:
    """Feature rows of a candle file (the first ``bars`` bars when given)."""
    settings = candle_settings()
    if bars is None:
        return sources.from_candles(settings, path)
    sym, df = sources.read_candles(path)
    return rows_of(settings, df.iloc[:bars], sym)


def rows_of(
    settings: Settings, candles: pd.DataFrame, symbol: str, tmp: Path | None = None
) -> sources.Rows:
    """Feature rows of candles given as a frame (written to a temporary CSV first)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        f = Path(tmp or d) / f"{symbol.upper()}-1m-test.csv"
        candles.to_csv(f, index=False)
        return sources.from_candles(settings, f)


def candle_dataset(rows: sources.Rows, settings: Settings | None = None) -> dataset.Dataset:
    settings = settings or candle_settings()
    spec = dataset.make_spec(settings.ml, rows.name, rows.version, rows.bucket_ns, rows.columns)
    spec = dataset.stationary_inputs(rows.frame, spec)
    sp = settings.ml.split
    return dataset.build(rows.frame, spec, (sp.train, sp.val, sp.test))
