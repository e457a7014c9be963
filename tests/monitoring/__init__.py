"""Helpers for the monitoring tests: feature rows from the real recordings, predictions
written directly into the prediction store (the monitor only reads what is stored)."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ccf.config import Settings, load_settings
from ccf.features.runner import run_backfill
from ccf.features.spec import feature_set
from ccf.features.store import FeatureStore
from ccf.records import Prediction
from ccf.serving.store import PredictionStore
from tests.features.test_runner import fill

LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)
SECOND = 1_000_000_000


def settings_for(data: Path, *extra: str) -> Settings:
    return load_settings(
        [
            f"data_dir={data}",
            "metrics.ports.monitor=0",
            "metrics.ports.features=0",
            "metrics.ports.collect=0",
            *extra,
        ],
        environ={},
    )


def build_features(data: Path) -> Settings:
    """The feature store of both recorded symbols (about 650 one-second rows each)."""
    settings = settings_for(data)
    fill(settings)
    run_backfill(settings)
    return settings


def copy_data(src: Path, dst: Path, *extra: str) -> Settings:
    """A fresh data dir holding a copy of ``src``'s raw and feature stores."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("ccf.sqlite", "features.sqlite"):
        shutil.copy(src / name, dst / name)
    return settings_for(dst, *extra)


def features(settings: Settings) -> FeatureStore:
    return FeatureStore(settings.features_path, feature_set(settings.features))


def frame(settings: Settings, symbol: str) -> pd.DataFrame:
    store = features(settings)
    try:
        return store.frame([symbol]).set_index("ts")
    finally:
        store.close()


def prediction(
    symbol: str,
    ts: int,
    horizon: int,
    last_value: float,
    quantiles: tuple[float, ...],
    role: str = "champion",
    flag: str | None = None,
) -> Prediction:
    return Prediction(
        "binance",
        symbol,
        "m_p",
        ts,
        horizon,
        ts + horizon * SECOND,
        role,
        f"ccf-{role}",
        "3",
        ts + SECOND,
        ts + SECOND,
        last_value,
        quantiles[len(quantiles) // 2],
        LEVELS,
        quantiles,
        flag,
    )


def write_predictions(settings: Settings, preds: Iterable[Prediction]) -> int:
    store = PredictionStore(settings.predictions_path)
    try:
        return store.write(list(preds))
    finally:
        store.close()


def set_columns(settings: Settings, symbol: str, ts: int, **values: float) -> None:
    """Change one stored feature row in place (plant a gap flag, a value)."""
    store = features(settings)
    try:
        cols = store.set.float_columns
        table = store.set.table
        (blob,) = store._con.execute(
            f"SELECT row FROM {table} WHERE symbol = ? AND ts = ?", (symbol, ts)
        ).fetchone()
        row = list(struct.unpack(f"<{len(cols)}d", blob))
        for k, v in values.items():
            row[cols.index(k)] = v
        store._con.execute(
            f"UPDATE {table} SET row = ? WHERE symbol = ? AND ts = ?",
            (struct.pack(f"<{len(cols)}d", *row), symbol, ts),
        )
    finally:
        store.close()


def delete_row(settings: Settings, symbol: str, ts: int) -> None:
    store = features(settings)
    try:
        store._con.execute(
            f"DELETE FROM {store.set.table} WHERE symbol = ? AND ts = ?", (symbol, ts)
        )
    finally:
        store.close()
