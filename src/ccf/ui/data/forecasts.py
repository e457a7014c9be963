"""Forecasts as they were made, beside the realized series they forecast.

A prediction row is the log-return quantiles from its origin's value (``last_value``) to
``target_ts``; a price is ``last_value * exp(q)``. Nothing is re-forecast here: a band at
time t is what the model said ``horizon`` buckets before t.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from ccf.config import Settings
from ccf.features.store import StoredSet
from ccf.monitoring.scoring import SignalRule, signal_of
from ccf.serving.store import Kind
from ccf.storage.backends import list_feature_sets, open_feature_store, open_prediction_store
from ccf.ui.data.db import Store, has_tables, readonly, to_time

SIGNALS = {1: "BUY", -1: "SELL", 0: "HOLD"}


RECENT_ROWS = 100_000  # newest prediction rows searched first for a symbol's newest origin


def newest_origin(store: Store, symbol: str) -> int | None:
    """The newest origin bucket forecast for ``symbol`` (any role).

    Searched first among the newest rows written (the rowid, PostgreSQL's ``id``, grows
    with every write and the predictor writes origins in order), which stays cheap however
    long the store runs; only a symbol with nothing recent costs a read of its whole key
    range."""
    with readonly(store) as r:
        if r is None or "predictions" not in r.tables():
            return None
        rowid = r.rowid
        row = r.one(
            f"SELECT max(ts) FROM predictions{r.not_indexed} WHERE symbol = ? AND {rowid} > "
            f"(SELECT coalesce(max({rowid}), 0) FROM predictions) - ?",
            (symbol, RECENT_ROWS),
        )
        if row is None or row[0] is None:
            row = r.one("SELECT max(ts) FROM predictions WHERE symbol = ?", (symbol,))
        return None if row is None else row[0]


def predictions(
    store: Store, symbol: str, start_ns: int, end_ns: int, kind: Kind = "calibrated"
) -> pd.DataFrame:
    """Every role's forecasts with origin in [start, end), with prices for each quantile:
    the quantiles served (``calibrated``) or the models' own (``raw``)."""
    if not has_tables(store, "predictions"):
        return pd.DataFrame()
    preds = open_prediction_store(store.settings, readonly=True)
    try:
        df = preds.frame([symbol], start_ns, end_ns, kind=kind)
    finally:
        preds.close()
    return with_prices(df)


def with_prices(df: pd.DataFrame) -> pd.DataFrame:
    """Quantile and point forecasts as prices (``p0.1``, ..., ``price``), the change in
    percent, and times for the axes."""
    if df.empty:
        return df
    df = df.copy()
    for q in quantile_columns(df):
        df["p" + q[1:]] = df["last_value"] * np.exp(df[q])
    df["price"] = df["last_value"] * np.exp(df["point"])
    df["change_pct"] = np.expm1(df["point"]) * 100
    df["origin_time"] = to_time(df["ts"])
    df["target_time"] = to_time(df["target_ts"])
    return df


def model_label(model: str, version: str) -> str:
    """``ccf-default v2``; the naive yardstick the predictor fits live has no version."""
    return str(model) if version == "live" else f"{model} v{version}"


def quantile_columns(df: pd.DataFrame) -> list[str]:
    """``q0.1``, ``q0.25``, ... in increasing level."""
    return sorted((c for c in df.columns if c.startswith("q")), key=lambda c: float(c[1:]))


def bands(df: pd.DataFrame) -> list[tuple[str, str, float]]:
    """(low price column, high price column, nominal coverage) of each central interval,
    widest first: the pairs q / 1-q around the median."""
    levels = [float(c[1:]) for c in quantile_columns(df)]
    out = []
    for lo in levels:
        hi = round(1 - lo, 9)
        if lo < 0.5 and hi in levels:
            out.append((f"p{lo:g}", f"p{hi:g}", round(hi - lo, 9)))
    return out


def latest(df: pd.DataFrame, rule: SignalRule) -> pd.DataFrame:
    """Per role and horizon, the newest origin's forecast with its BUY/SELL/HOLD signal
    (HOLD where the prediction is flagged without a forecast)."""
    if df.empty:
        return df
    newest = df[df["ts"] == df.groupby("role")["ts"].transform("max")].copy()
    newest["signal"] = [
        "-" if math.isnan(p) else SIGNALS[signal_of(p, rule)] for p in newest["point"]
    ]
    newest["change_bps"] = newest["point"] * 1e4
    return newest.sort_values(["role", "horizon"]).reset_index(drop=True)


def _feature_set(settings: Settings, serving_spec: str | None) -> StoredSet | None:
    """The feature set the champion reads (its spec names it), else the configured one,
    else the newest stored."""
    sets = list_feature_sets(settings)
    if not sets:
        return None
    if serving_spec:
        d = json.loads(serving_spec)
        for s in sets:
            if (s.name, s.version) == (d.get("feature_set"), d.get("version")):
                return s
    from ccf.features.spec import feature_set

    configured = feature_set(settings.features).version
    return next((s for s in sets if s.version == configured), sets[-1])


def champion_spec(store: Store) -> str | None:
    """The DatasetSpec JSON of the model serving ``champion`` (None before the first)."""
    if not has_tables(store, "serving"):
        return None
    preds = open_prediction_store(store.settings, readonly=True)
    try:
        info = preds.serving().get("champion")
    finally:
        preds.close()
    return info.spec if info is not None else None


def realized(
    settings: Settings, symbol: str, column: str, start_ns: int | None, end_ns: int | None
) -> pd.DataFrame:
    """The realized series of ``column`` (the forecast target) per closed bucket."""
    fs = _feature_set(settings, champion_spec(Store(settings, "predictions")))
    if fs is None or column not in fs.columns:
        return pd.DataFrame(columns=["ts", "time", "value"])
    store = open_feature_store(settings, fs, readonly=True)
    try:
        df = store.frame([symbol], start_ns, end_ns)
    finally:
        store.close()
    out = pd.DataFrame({"ts": df["ts"], "value": df[column]})
    out["time"] = to_time(out["ts"])
    return out


def newest_bucket(settings: Settings, symbol: str) -> int | None:
    """Start of the newest closed bucket of ``symbol`` in the feature store."""
    fs = _feature_set(settings, champion_spec(Store(settings, "predictions")))
    if fs is None:
        return None
    store = open_feature_store(settings, fs, readonly=True)
    try:
        return store.last_bucket(symbol)
    finally:
        store.close()


def stored_buckets(settings: Settings, symbol: str) -> int:
    """Buckets of ``symbol`` in the feature store, oldest to newest (0 when none)."""
    fs = _feature_set(settings, champion_spec(Store(settings, "predictions")))
    if fs is None:
        return 0
    store = open_feature_store(settings, fs, readonly=True)
    try:
        lo, hi = store.first_bucket(symbol), store.last_bucket(symbol)
        return 0 if lo is None or hi is None else (hi - lo) // fs.bucket_ns + 1
    finally:
        store.close()


def serving(store: Store) -> pd.DataFrame:
    """Which model serves each role, since when."""
    cols = ["role", "model", "version", "kind", "loaded", "from_origin"]
    if not has_tables(store, "serving"):
        return pd.DataFrame(columns=cols)
    preds = open_prediction_store(store.settings, readonly=True)
    try:
        rows = list(preds.serving().values())
    finally:
        preds.close()
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=cols)
    df["loaded"] = to_time(df["loaded_at"])
    df["from_origin"] = to_time(df["from_ts"])
    return df[cols]
