"""Feature rows to a split dataset, the first step of every ML flow.

Rows come from the feature store (the configured symbols over ``[start, end)``) or from
candle files run through the same feature engine (one symbol per file). A fresh spec is
built from the ``ml`` config (:func:`~ccf.ml.dataset.make_spec`, price levels dropped by
:func:`~ccf.ml.dataset.stationary_inputs`); a fitted model's spec is reused as it is, so
the model sees its own normalizer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ccf.ml import dataset, sources
from ccf.ml.dataset import Dataset, DatasetSpec, Splits

if TYPE_CHECKING:
    from ccf.config import Settings

log = logging.getLogger(__name__)

# fields two specs must share for their forecasts to answer the same question on the
# same origins; a warm start needs the same inputs too
_QUESTION = (
    "feature_set",
    "version",
    "bucket_ns",
    "targets",
    "horizons",
    "quantiles",
    "encoder_length",
    "vol_halflife",
)
_WARM = (*_QUESTION, "inputs", "known", "transforms")


class MLError(RuntimeError):
    """An ML run that cannot go on; the message says why and what to do instead."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where rows come from: candle files when given, else the feature store."""

    candles: tuple[Path, ...] = ()
    start_ns: int | None = None
    end_ns: int | None = None

    def describe(self) -> str:
        if self.candles:
            return "candles:" + ",".join(p.name for p in self.candles)
        lo = "start" if self.start_ns is None else _iso(self.start_ns)
        hi = "newest" if self.end_ns is None else _iso(self.end_ns)
        return f"store:{lo}..{hi}"


@dataclass
class Prepared:
    rows: sources.Rows
    data: Dataset
    splits: Splits

    def info(self) -> dict[str, Any]:
        """The data range a run logs."""
        ts = self.rows.frame["ts"]
        lo, c1, c2, hi = self.splits.bounds_ns
        return {
            "first_bucket": _iso(int(ts.min())),
            "last_bucket": _iso(int(ts.max())),
            "symbols": ",".join(self.data.symbols),
            "windows_train": len(self.splits.train),
            "windows_val": len(self.splits.val),
            "windows_test": len(self.splits.test),
            "train_end": _iso(c1),
            "val_end": _iso(c2),
        }


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat()


def check_source(source: Source) -> None:
    """Fail at once, naming the file, when a candle file is missing, empty, truncated or
    lacks a column: before any model, store or MLflow database is made."""
    for path in source.candles:
        try:
            sources.check_candle_file(Path(path))
        except (FileNotFoundError, ValueError) as e:
            raise MLError(str(e)) from None


def load_rows(settings: Settings, source: Source) -> sources.Rows:
    """Feature rows from the source; :class:`MLError` when there are none to use."""
    if not source.candles:
        try:
            return sources.from_store(settings, settings.symbols, source.start_ns, source.end_ns)
        except (FileNotFoundError, ValueError) as e:
            raise MLError(str(e)) from None
    if settings.features.source != "candle":
        raise MLError(
            f"--candles needs features.source=candle (add --config {sources.CANDLE_PRESET})"
        )
    parts: list[sources.Rows] = []
    for path in source.candles:
        try:
            rows = sources.from_candles(settings, Path(path))
        except (FileNotFoundError, ValueError) as e:
            raise MLError(str(e)) from None
        sym = rows.frame["symbol"].iat[0] if len(rows.frame) else "?"
        if any(p.frame["symbol"].iat[0] == sym for p in parts if len(p.frame)):
            raise MLError(
                f"two candle files for symbol {sym} ({Path(path).name}): give one file per "
                "symbol (the symbol is the file name's first part, e.g. BTCUSDT-1m-...)"
            )
        parts.append(rows)
    first = parts[0]
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    return sources.Rows(frame, first.name, first.version, first.bucket_ns, first.columns)


def fresh_spec(settings: Settings, rows: sources.Rows) -> DatasetSpec:
    try:
        spec = dataset.make_spec(settings.ml, rows.name, rows.version, rows.bucket_ns, rows.columns)
    except ValueError as e:
        raise MLError(str(e)) from None
    return dataset.stationary_inputs(rows.frame, spec, settings.ml.input_units)


def prepare(
    settings: Settings,
    rows: sources.Rows,
    spec: DatasetSpec | None = None,
    *,
    whole: bool = False,
) -> Prepared:
    """Dataset and time splits; ``spec`` (a fitted model's) keeps that model's normalizer.
    ``whole``: every origin is scored (``--test all``), so the splits need not hold any."""
    if whole and (spec is None or spec.center is None):
        raise MLError("--test all scores fitted models only: give them with --model-uri")
    if spec is None:
        spec = fresh_spec(settings, rows)
    elif (spec.feature_set, spec.version) != (rows.name, rows.version):
        raise MLError(
            f"the model reads feature set {spec.feature_set} version {spec.version}, the rows "
            f"are {rows.name} version {rows.version}: configure the features it was trained on"
        )
    sp = settings.ml.split
    data = dataset.build(rows.frame, spec, (sp.train, sp.val, sp.test))
    splits = data.split(sp.train, sp.val, sp.test)
    if whole and not len(data.origins()):
        raise MLError(
            f"too little data: no window in {len(rows.frame)} rows (a window needs "
            f"{spec.encoder_length} buckets of history and {spec.max_horizon} ahead): use a "
            "longer file or range"
        )
    if not whole and (not len(splits.train) or not len(splits.test)):
        raise MLError(
            f"too little data: {len(splits.train)} training and {len(splits.test)} test "
            f"windows from {len(rows.frame)} rows (a window needs {spec.encoder_length} "
            f"buckets of history and {spec.max_horizon} ahead): use a longer range, or "
            "--test all to score registered models on every window of it"
        )
    log.info(
        "part=ml data set=%s version=%s symbols=%s rows=%d windows train=%d val=%d test=%d",
        rows.name,
        rows.version,
        ",".join(data.symbols),
        len(rows.frame),
        len(splits.train),
        len(splits.val),
        len(splits.test),
    )
    return Prepared(rows, data, splits)


def mismatch(a: DatasetSpec, b: DatasetSpec, *, warm: bool = False) -> str | None:
    """Why two specs do not answer the same question (or, with ``warm``, cannot share
    weights); None when they do."""
    diffs = [f for f in (_WARM if warm else _QUESTION) if getattr(a, f) != getattr(b, f)]
    if not diffs:
        return None
    return ", ".join(f"{f} {getattr(a, f)} vs {getattr(b, f)}" for f in diffs)
