"""The yardstick: no change, with a volatility-scaled interval around it.

The point forecast is a zero log return at every horizon (tomorrow's price is
today's). The interval is the EWMA volatility at the origin times sqrt(h) times
the empirical quantiles of the volatility-normalized return in the training
window: an honest interval that widens and narrows with the market, and the
bar every other model's intervals must clear.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ccf.ml.dataset import Dataset, DatasetSpec, Origins
from ccf.ml.models.base import FitResult, Forecaster


class Naive(Forecaster):
    kind = "naive"
    defaults: dict[str, Any] = {}

    def __init__(self, spec: DatasetSpec, params: dict[str, Any] | None = None) -> None:
        super().__init__(spec, params)
        self.z_quantiles: np.ndarray | None = None  # (K, H, Q), the median column 0

    def fit(
        self, data, train, val, cfg, *, seed=42, warm_start=None, callbacks=None, workdir=None
    ) -> FitResult:
        t0 = time.perf_counter()
        z = data.targets(train) / data.scales(train)  # (n, K, H)
        q = np.asarray(self.spec.quantiles)
        zq = np.empty((z.shape[1], z.shape[2], len(q)))
        for k in range(z.shape[1]):
            for h in range(z.shape[2]):
                col = z[:, k, h]
                col = col[np.isfinite(col)]
                if col.size < 10:
                    raise ValueError(
                        f"naive: only {col.size} training targets at horizon "
                        f"{self.spec.horizons[h]}: need more history"
                    )
                zq[k, h] = np.quantile(col, q)
        zq[..., list(q).index(0.5)] = 0.0  # no change: the point forecast is exactly zero
        self.z_quantiles = np.sort(zq, axis=-1)
        self.fit_result = FitResult(seconds=time.perf_counter() - t0, samples=len(train), epochs=1)
        return self.fit_result

    def predict(self, data: Dataset, origins: Origins) -> np.ndarray:
        if self.z_quantiles is None:
            raise RuntimeError("naive: predict before fit")
        return data.scales(origins)[..., None] * self.z_quantiles[None]

    def _save(self, path: Path) -> None:
        assert self.z_quantiles is not None
        (path / "naive.json").write_text(json.dumps({"z_quantiles": self.z_quantiles.tolist()}))

    @classmethod
    def _load(cls, path: Path, spec: DatasetSpec, params: dict[str, Any]) -> Naive:
        m = cls(spec, params)
        m.z_quantiles = np.asarray(json.loads((path / "naive.json").read_text())["z_quantiles"])
        return m
