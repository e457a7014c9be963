"""Online conformal calibration of any model's quantiles: pure math, no stores.

A model's quantiles can be right on average and wrong by regime (too narrow when the
market is calm, too wide when it is wild) or wrong everywhere once the market leaves
what training saw. This corrects them from the forecasts already resolved, and only
from those: a forecast at horizon h is resolved h buckets after its origin, so the
calibrated quantile at an origin never uses a truth that was not known then.

Per stream (one symbol, target, horizon and model), each resolved forecast leaves
its volatility ``scale`` at the origin (``vol * sqrt(h)``, :meth:`Dataset.scales`),
its normalized residual per quantile level ``r = (y - q_raw) / scale`` and whether
the served (calibrated) quantile was above the truth. A new forecast's quantile at
level tau becomes ``q_raw + scale * Q_tau'(r)``:

- ``regime``: a rolling conformal quantile per volatility regime. The pool of the
  newest ``window`` residuals is split into terciles of its scales (the regimes of
  the evaluation's coverage table, online); a forecast uses the residuals of its own
  regime (or the whole pool while that regime has fewer than ``min_scores``).
- ``aci``: adaptive conformal inference (Gibbs & Candes, 2021) on the level:
  ``tau' = tau + gamma * sum(tau - miss)`` over the pool's resolved forecasts (the
  regime's, with ``both``), so a stretch of under-coverage raises the next levels.
  The sum runs over the rolling pool (ACI restarted at its oldest entry), which makes
  the state a function of the pool alone: a restart that replays the stored
  forecasts rebuilds it exactly.
- ``both``: the two together.

The empirical tau-quantile of the residuals minimizes the pool's pinball loss over
all shifts of the raw quantile (zero shift included), so calibration costs pinball
only where the pool stops resembling what comes next. The median (the point
forecast) is never moved; the other levels are kept on their side of it and in order.

>>> import numpy as np
>>> cal = Calibrator(CalibrationParams(method="regime", window=100, min_scores=10),
...                  (0.1, 0.5, 0.9))
>>> rng = np.random.default_rng(0)
>>> for y in rng.normal(0, 2.0, 200):        # the truth is twice as wide as the model says
...     raw = np.array([-1.2816, 0.0, 1.2816])
...     _ = cal.add(1.0, raw, cal.apply(1.0, raw), float(y))
>>> lo, mid, hi = cal.apply(1.0, np.array([-1.2816, 0.0, 1.2816]))
>>> bool(-3.2 < lo < -2.0 and mid == 0.0 and 2.0 < hi < 3.2)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

METHODS = ("none", "regime", "aci", "both")
REGIMES = 3  # volatility terciles: low, mid, high


@dataclass(frozen=True, slots=True, kw_only=True)
class CalibrationParams:
    """How quantiles are calibrated (``serve.calibration``)."""

    method: Literal["none", "regime", "aci", "both"] = "both"
    window: int = 10_000  # resolved forecasts per stream in the pool
    min_scores: int = 300  # fewer in the pool: the raw quantiles are served
    gamma: float = 0.0002  # ACI step per resolved forecast (aci, both)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method {self.method!r}: one of {', '.join(METHODS)}")
        if self.window < self.min_scores or self.min_scores < 1:
            raise ValueError(
                f"calibration: need 1 <= min_scores ({self.min_scores}) <= window ({self.window})"
            )
        if not 0 <= self.gamma < 1:
            raise ValueError(f"calibration gamma {self.gamma} must be in [0, 1)")

    @property
    def by_regime(self) -> bool:
        return self.method in ("regime", "both")

    @property
    def adaptive(self) -> bool:
        return self.method in ("aci", "both")


def regime_edges(scales: np.ndarray) -> np.ndarray:
    """Tercile edges of ``scales``: the low/mid/high boundaries (as ``ml.metrics.vol_edges``)."""
    return np.quantile(scales, [1 / 3, 2 / 3])


def order_around_median(q: np.ndarray, mid: int) -> np.ndarray:
    """Levels below the median kept at or below it, those above at or above it, each side
    in increasing order (a calibrated quantile never crosses its neighbour)."""
    out = q.copy()
    out[:mid] = np.sort(np.minimum(out[:mid], out[mid]))
    out[mid + 1 :] = np.sort(np.maximum(out[mid + 1 :], out[mid]))
    return out


def conformal_shift(
    residuals: np.ndarray, levels: np.ndarray, misses: np.ndarray | None, gamma: float
) -> np.ndarray:
    """Per level, the shift (in scale units) to add to the raw quantile: the empirical
    ``tau'``-quantile of the pool's normalized residuals (``residuals``: (n, Q)), with
    ``tau'`` moved by ACI when ``misses`` ((n, Q): the truth was above the served
    quantile) are given. Finite-sample conservative: ``ceil((n+1) tau') / n``."""
    n = residuals.shape[0]
    tau = levels.astype(float)
    if misses is not None and gamma > 0:
        # Gibbs & Candes: a level covered less often than tau moves up, and vice versa
        tau = tau + gamma * (n * (tau - 1.0) + misses.sum(axis=0))
    tau = np.clip(tau, 0.5 / n, 1 - 0.5 / n)
    upper = tau > 0.5
    k = np.where(upper, np.ceil((n + 1) * tau), np.floor((n + 1) * tau)) - 1
    k = np.clip(k, 0, n - 1).astype(int)
    # one order statistic per level: a partition, not a sort, of each column (the
    # median's is skipped: it is never moved)
    return np.array(
        [
            0.0 if levels[j] == 0.5 else np.partition(residuals[:, j], k[j])[k[j]]
            for j in range(len(k))
        ]
    )


class Calibrator:
    """The calibration state of one stream: a rolling pool of resolved forecasts.

    ``apply`` calibrates a new forecast from the pool; ``add`` puts a resolved one in
    (its raw and served quantiles and the truth). The state is the pool alone, so
    replaying the same resolved forecasts in the same order rebuilds it exactly.
    """

    def __init__(self, params: CalibrationParams, levels: Sequence[float]) -> None:
        self.params = params
        self.levels = np.asarray(levels, dtype=float)
        if 0.5 not in levels:
            raise ValueError(f"calibration needs the median among the levels {tuple(levels)}")
        self.mid = list(levels).index(0.5)
        # ring buffers of the pool: column i of each is one resolved forecast (a level's
        # residuals lie contiguous, which is what a partition reads)
        w, q = params.window, len(self.levels)
        self._scale = np.zeros(w)
        self._resid = np.zeros((q, w))
        self._miss = np.zeros((q, w))
        self._n = 0  # rows filled
        self._at = 0  # the next row to write

    def __len__(self) -> int:
        return self._n

    def add(self, scale: float, raw: np.ndarray, served: np.ndarray, truth: float) -> bool:
        """Put a resolved forecast in the pool; False (and nothing kept) when any of it is
        unknown (a gap at the target, a warming-up window)."""
        raw = np.asarray(raw, dtype=float)
        served = np.asarray(served, dtype=float)
        if not (
            np.isfinite(truth)
            and np.isfinite(scale)
            and scale > 0
            and np.isfinite(raw).all()
            and np.isfinite(served).all()
        ):
            return False
        i = self._at
        self._scale[i] = scale
        self._resid[:, i] = (truth - raw) / scale
        self._miss[:, i] = truth > served
        self._at = (i + 1) % self.params.window
        self._n = min(self._n + 1, self.params.window)
        return True

    def apply(self, scale: float, raw: np.ndarray) -> np.ndarray:
        """The calibrated quantiles of a forecast with volatility ``scale`` at its origin
        (the raw ones while the pool is short, or when the method is ``none``)."""
        raw = np.asarray(raw, dtype=float)
        p = self.params
        n = self._n
        if p.method == "none" or n < p.min_scores or not np.isfinite(raw).all():
            return raw.copy()
        if not (np.isfinite(scale) and scale > 0):
            return raw.copy()
        resid = self._resid[:, :n]
        miss = self._miss[:, :n] if p.adaptive else None
        if p.by_regime:
            scales = self._scale[:n]
            edges = regime_edges(scales)
            pool = np.searchsorted(edges, scales, side="right")
            mine = pool == np.searchsorted(edges, scale, side="right")
            if mine.sum() >= p.min_scores:
                resid = resid[:, mine]
                miss = None if miss is None else miss[:, mine]
        shift = conformal_shift(resid.T, self.levels, miss if miss is None else miss.T, p.gamma)
        shift[self.mid] = 0.0  # the point forecast stays the model's
        return order_around_median(raw + scale * shift, self.mid)


def calibrate_series(
    raw: np.ndarray,
    truth: np.ndarray,
    scale: np.ndarray,
    horizons: Sequence[int],
    levels: Sequence[float],
    params: CalibrationParams,
    step: int = 1,
) -> np.ndarray:
    """What the live predictor serves, replayed over one series of consecutive origins.

    ``raw``: (n, H, Q) quantiles, ``truth``/``scale``: (n, H), origins ``step`` buckets
    apart. The forecast at origin i and horizon h is resolved (added to its horizon's
    pool) once origin i + ceil(h / step) is reached, before that origin is calibrated,
    exactly as the predictor learns the truth of a bucket when it closes.
    """
    n, H, _ = raw.shape
    out = raw.copy()
    cals = [Calibrator(params, levels) for _ in range(H)]
    delay = [max(1, -(-int(h) // step)) for h in horizons]
    for i in range(n):
        for j in range(H):
            r = i - delay[j]
            if r >= 0:
                cals[j].add(scale[r, j], raw[r, j], out[r, j], truth[r, j])
            out[i, j] = cals[j].apply(scale[i, j], raw[i, j])
    return out
