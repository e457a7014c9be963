"""The range check: is an input far outside what the model saw in training?

A model extrapolates silently. The spec saved with every model holds, per input (after
the scale-free transforms, before normalization), the training minimum and maximum
(``lo``/``hi``) and the normalizer's center and scale. An input value is flagged when it
lies outside the training range AND more than ``k`` training scales (sds) from the
training center: far outside, not a new record by a hair. NaN inputs are not flagged
(the model reads them as the training mean).

:func:`check` is the pure rule on one array; :func:`check_frame` runs it on feature rows
(what the predictor and ``ccf evaluate`` call); :func:`summary` is the JSON the
evaluation report holds per model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ccf.ml import dataset

if TYPE_CHECKING:
    import pandas as pd

    from ccf.ml.dataset import DatasetSpec

DEFAULT_K = 8.0


class OutOfRange(NamedTuple):
    """One input of one row far outside its training range."""

    column: str
    value: float
    lo: float  # training minimum
    hi: float  # training maximum
    sds: float  # distance from the training center, in training sds


def bounds(spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(lo, hi, center, scale) per unknown input, or None for a model saved without them."""
    if spec.lo is None or spec.hi is None or spec.center is None or spec.scale is None:
        return None
    return (
        np.asarray(spec.lo, float),
        np.asarray(spec.hi, float),
        np.asarray(spec.center, float),
        np.asarray(spec.scale, float),
    )


def check(spec: DatasetSpec, raw: np.ndarray, k: float = DEFAULT_K) -> np.ndarray:
    """Boolean (n, U): which of ``raw``'s inputs (rows of unknown inputs before
    normalization, in ``spec.unknown`` order) are out of range; all False when the spec
    has no training range."""
    raw = np.atleast_2d(np.asarray(raw, float))
    b = bounds(spec)
    if b is None:
        return np.zeros(raw.shape, bool)
    lo, hi, center, scale = b
    with np.errstate(invalid="ignore"):
        sds = np.abs(raw - center) / scale
        return np.isfinite(raw) & ((raw < lo) | (raw > hi)) & (sds > k)


def check_frame(
    spec: DatasetSpec, rows: pd.DataFrame, k: float = DEFAULT_K, *, last_only: bool = True
) -> dict[tuple[str, int], list[OutOfRange]]:
    """Out-of-range inputs of feature rows (``symbol``, ``ts`` and the spec's columns, at
    least ``spec.history`` rows per symbol so the relative inputs are warm), keyed by
    (symbol, bucket start ns); only rows with a flag appear. ``last_only``: only each
    symbol's newest row (the live forecast's origin)."""
    out: dict[tuple[str, int], list[OutOfRange]] = {}
    b = bounds(spec)
    if b is None:
        return out
    lo, hi, center, scale = b
    names = spec.unknown
    for symbol, (ts, raw) in dataset.raw_inputs(rows, spec).items():
        if last_only:
            ts, raw = ts[-1:], raw[-1:]
        flags = check(spec, raw, k)
        for i in np.flatnonzero(flags.any(axis=1)):
            out[(symbol, int(ts[i]))] = [
                OutOfRange(
                    names[j],
                    float(raw[i, j]),
                    float(lo[j]),
                    float(hi[j]),
                    float(abs(raw[i, j] - center[j]) / scale[j]),
                )
                for j in np.flatnonzero(flags[i])
            ]
    return out


def summary(spec: DatasetSpec, raw: np.ndarray, k: float = DEFAULT_K) -> dict[str, Any]:
    """What an evaluation reports per model: origins checked and flagged, and the flagged
    count per input column."""
    flags = check(spec, raw, k)
    per_col = flags.sum(axis=0)
    return {
        "k_sd": k,
        "checked": bool(bounds(spec) is not None),
        "origins": int(flags.shape[0]),
        "flagged": int(flags.any(axis=1).sum()),
        "share": float(flags.any(axis=1).mean()) if flags.shape[0] else 0.0,
        "columns": {spec.unknown[j]: int(per_col[j]) for j in np.flatnonzero(per_col)},
    }


FLAG = "input_out_of_range"


def flags_at(
    data: dataset.Dataset, t: np.ndarray, k: float = DEFAULT_K, series: int = 0
) -> list[str | None]:
    """The predictor's hook: for rows ``t`` of one series of a dataset built with the
    model's spec (``dataset.build(frame, model.spec)``), the flag of each forecast:
    ``"input_out_of_range:<col>,<col>"`` when an input is far outside the training range,
    else None. Pure; the caller logs and alerts."""
    s = data.series[series]
    if s.raw is None or bounds(data.spec) is None:
        return [None] * len(t)
    flags = check(data.spec, s.raw[np.asarray(t, dtype=int)], k)
    names = data.spec.unknown
    return [
        f"{FLAG}:{','.join(names[j] for j in np.flatnonzero(row))}" if row.any() else None
        for row in flags
    ]
