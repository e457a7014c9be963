"""The predictor's online calibration: :mod:`ccf.ml.calibration` fed with the truth it sees.

Every served model's quantiles are calibrated per stream (role, model version,
symbol, target, horizon). A forecast waits in its stream until the feature row of
its target bucket is read, then joins the stream's pool with its truth, the log
return from its origin's value to that row's, exactly as ``ccf monitor`` scores it
(a gap-flagged or missing target row resolves nothing). The origin's volatility
scale comes from the same dataset the model forecast from.

Nothing here depends on the monitor running, and nothing lives only in memory: a
restarted predictor replays the forecasts it stored (both quantile sets, from
:meth:`~ccf.serving.store.PredictionStore.resolved`) against the feature rows, and
ends with the pool it had. A new model version starts an empty pool: another
model's residuals say nothing about this one's (its own quantiles are served until
``min_scores`` of its forecasts are resolved).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from ccf.config import CalibrationConfig
from ccf.ml import dataset
from ccf.ml.calibration import CalibrationParams, Calibrator

if TYPE_CHECKING:
    from ccf.features.store import FeatureStore
    from ccf.serving.store import PredictionStore

log = logging.getLogger(__name__)

REPLAY = 3  # windows of stored origins a restart reads back


def params_of(cfg: CalibrationConfig) -> CalibrationParams:
    return CalibrationParams(
        method=cfg.method, window=cfg.window, min_scores=cfg.min_scores, gamma=cfg.gamma
    )


class _Waiting(NamedTuple):
    """A forecast whose target bucket has not been read yet."""

    target_ts: int
    origin_value: float  # the target column's value at the origin (the record's last_value)
    scale: float
    raw: np.ndarray
    served: np.ndarray


class _Stream:
    def __init__(self, params: CalibrationParams, levels: tuple[float, ...]) -> None:
        self.cal = Calibrator(params, levels)
        self.waiting: deque[_Waiting] = deque()  # in origin order, so in target order


def _truths(frame: pd.DataFrame, target: str) -> dict[int, float]:
    """Bucket start -> the target column's value, for the rows without a gap flag."""
    ts = frame["ts"].to_numpy()
    v = frame[target].to_numpy(dtype=float)
    gap = frame["gap"].to_numpy(dtype=float) > 0 if "gap" in frame else np.zeros(len(ts), bool)
    return {int(t): float(x) for t, x, g in zip(ts, v, gap, strict=True) if not g}


def _truth(origin_value: float, value: float | None) -> float:
    if value is None or not (value > 0) or not (origin_value > 0):
        return math.nan
    return math.log(value / origin_value)


class OnlineCalibration:
    """Calibration state of every stream the predictor serves."""

    def __init__(self, cfg: CalibrationConfig, bucket_ns: int) -> None:
        self.params = params_of(cfg)
        self.bucket = bucket_ns
        self._streams: dict[tuple[str, str, str, str, int], _Stream] = {}
        self._ready: set[tuple[str, str, str]] = set()  # (role, version, symbol) rebuilt
        self.resolved = 0

    @property
    def enabled(self) -> bool:
        return self.params.method != "none"

    def _stream(self, key: tuple[str, str, str, str, int], levels: tuple[float, ...]) -> _Stream:
        s = self._streams.get(key)
        if s is None:
            s = self._streams[key] = _Stream(self.params, levels)
        return s

    def _resolve(self, s: _Stream, upto: int, values: dict[int, float]) -> None:
        """Put every waiting forecast with its target bucket at or before ``upto`` in the
        pool (with its truth from ``values``; none known: dropped)."""
        while s.waiting and s.waiting[0].target_ts <= upto:
            w = s.waiting.popleft()
            truth = _truth(w.origin_value, values.get(w.target_ts))
            self.resolved += s.cal.add(w.scale, w.raw, w.served, truth)

    def calibrate(
        self,
        role: str,
        version: str,
        symbol: str,
        spec: dataset.DatasetSpec,
        frame: pd.DataFrame,
        data: dataset.Dataset,
        t: np.ndarray,
        ok: np.ndarray,
        q: np.ndarray,
    ) -> np.ndarray:
        """The served quantiles of a batch of origins (rows ``t`` of ``frame``, in order;
        ``q``: (n, K, H, Q) raw, NaN where not ``ok``), each calibrated from what was
        resolved by its own origin; the batch joins the waiting forecasts."""
        out = q.copy()
        if not self.enabled or len(t) == 0:
            return out
        ts = frame["ts"].to_numpy()
        scales = np.full(q.shape[:3], np.nan)
        if ok.any():
            scales[ok] = data.scales(dataset.Origins(np.zeros(int(ok.sum()), int), t[ok]))
        level = data.series[0].level  # log of each target column, row by row
        values = {target: _truths(frame, target) for target in spec.targets}
        levels = tuple(spec.quantiles)
        streams = {
            (k, h): self._stream((role, version, symbol, target, horizon), levels)
            for k, target in enumerate(spec.targets)
            for h, horizon in enumerate(spec.horizons)
        }
        for i, ti in enumerate(t):
            origin = int(ts[ti])
            for (k, h), s in streams.items():
                self._resolve(s, origin, values[spec.targets[k]])
                if not ok[i]:
                    continue
                out[i, k, h] = s.cal.apply(scales[i, k, h], q[i, k, h])
                s.waiting.append(
                    _Waiting(
                        origin + spec.horizons[h] * self.bucket,
                        float(np.exp(level[ti, k])),
                        float(scales[i, k, h]),
                        q[i, k, h].copy(),
                        out[i, k, h].copy(),
                    )
                )
        return out

    # -- after a restart -----------------------------------------------------------------------

    def rebuild(
        self,
        role: str,
        version: str,
        symbol: str,
        spec: dataset.DatasetSpec,
        preds: PredictionStore,
        features: FeatureStore,
        next_ts: int | None,
    ) -> None:
        """Replay the stored forecasts of (role, version, symbol) before ``next_ts``, once
        per stream set: the newest :data:`REPLAY` windows of origins, so that a pool is
        rebuilt whole where flagged origins (no forecast) and unknown truths (gaps) took
        up to two thirds of them. The origins' volatility is recomputed from the feature
        rows, as the live path computed it from its own read (a warm-up of
        ``spec.history`` rows: equal to within a few parts in ten thousand)."""
        key = (role, version, symbol)
        if key in self._ready or not self.enabled:
            return
        self._ready.add(key)
        if next_ts is None:
            return
        start = next_ts - (REPLAY * self.params.window + spec.max_horizon) * self.bucket
        rows = [r for r in preds.resolved(symbol, role, start, next_ts) if r.version == version]
        if not rows:
            return
        first = rows[0].ts
        frame = features.frame([symbol], first - spec.history * self.bucket, next_ts)
        if frame.empty:
            return
        data = dataset.build(frame, spec)
        ts = frame["ts"].to_numpy()
        row_of = {int(x): i for i, x in enumerate(ts)}
        level = data.series[0].level
        vol = data.series[0].vol
        values = {target: _truths(frame, target) for target in spec.targets}
        k_of = {target: k for k, target in enumerate(spec.targets)}
        h_of = {horizon: h for h, horizon in enumerate(spec.horizons)}
        levels = tuple(spec.quantiles)
        n = 0
        for r in rows:
            ti = row_of.get(int(r.ts))
            k, h = k_of.get(r.target), h_of.get(int(r.horizon))
            if ti is None or k is None or h is None:
                continue
            raw, served = np.asarray(r.raw, float), np.asarray(r.quantiles, float)
            if not (np.isfinite(raw).all() and len(raw) == len(levels)):
                continue  # a flagged origin: nothing was forecast
            s = self._stream((role, version, symbol, r.target, int(r.horizon)), levels)
            self._resolve(s, int(r.ts), values[r.target])
            s.waiting.append(
                _Waiting(
                    int(r.ts) + int(r.horizon) * self.bucket,
                    float(np.exp(level[ti, k])),
                    float(vol[ti, k] * math.sqrt(r.horizon)),
                    raw,
                    served,
                )
            )
            n += 1
        last = int(ts[-1])
        for (ro, ve, sy, target, _), s in self._streams.items():
            if (ro, ve, sy) == key:
                self._resolve(s, last, values[target])
        log.info(
            "part=predict symbol=%s calibration of %s v%s rebuilt from %d stored forecasts",
            symbol,
            role,
            version,
            n,
        )

    def forget(self, symbols: set[str]) -> None:
        """Drop the state of ``symbols``: the next forecast rebuilds it from the stores (a
        Kafka worker taking a symbol over, or back, resumes from what others stored)."""
        self._streams = {k: v for k, v in self._streams.items() if k[2] not in symbols}
        self._ready = {k for k in self._ready if k[2] not in symbols}

    def pool_sizes(self, role: str, symbol: str) -> dict[str, int]:
        """Resolved forecasts per (target, horizon) of ``role`` for ``symbol`` (any version)."""
        return {
            f"{k[3]}@{k[4]}": len(s.cal)
            for k, s in self._streams.items()
            if k[0] == role and k[2] == symbol
        }
