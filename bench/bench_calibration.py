"""Coverage by volatility tercile and pinball, before and after online calibration.

On the shipped one-minute candles (``$CCF_SHARED/data/klines``), BTCUSDT and ETHUSDT,
through the feature engine (``conf/candles.yaml``: horizons 1, 5, 15): models are
fitted on the first two thirds (the newest 15 % of that validates), the rest is new
data. Each model's quantiles on the new data are calibrated online with
:func:`ccf.ml.calibration.calibrate_series` (what the live predictor serves: a
forecast learns only from the truths known at its origin), and printed beside the raw
ones: 50 % and 80 % coverage in each volatility tercile of the new data (the
evaluation's regimes, ``ml.metrics.vol_edges``) and the mean pinball loss.

Two cases per symbol: the file as it is, and a planted regime change (every log
return after the start of the new data scaled by ``--factor``, 3 by default), which
no model saw in training.

Run: ``python bench/bench_calibration.py [--symbols BTCUSDT,ETHUSDT] [--models
naive,lightgbm] [--method both] [--factor 3]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ccf.config import TrainConfig, load_settings, shared_dir
from ccf.ml import dataset, sources
from ccf.ml import metrics as m
from ccf.ml.calibration import CalibrationParams, calibrate_series
from ccf.ml.models import base

KLINES = shared_dir() / "data" / "klines"
TRAIN = 2 / 3
VAL = 0.15  # of the training part


class Case(NamedTuple):
    """The new-data forecasts of one model: raw and calibrated quantiles, the truth."""

    symbol: str
    data: str  # "as is" | "planted 3x"
    model: str
    horizons: tuple[int, ...]
    levels: tuple[float, ...]
    truth: np.ndarray  # (n, H)
    scale: np.ndarray  # (n, H)
    raw: np.ndarray  # (n, H, Q)
    calibrated: np.ndarray  # (n, H, Q)


def candle_file(symbol: str) -> Path:
    return next(KLINES.glob(f"{symbol.upper()}-1m-*.csv.gz"))


def planted(path: Path, start_share: float, factor: float, out_dir: Path) -> Path:
    """The candle file with every log return after ``start_share`` of its bars scaled by
    ``factor``: prices after the change point p become ``c_p * (x / c_p) ** factor``."""
    df = pd.read_csv(path)
    p = int(len(df) * start_share)
    anchor = float(df["close"].iloc[p - 1])
    for c in ("open", "high", "low", "close"):
        v = df[c].to_numpy(dtype=float, copy=True)
        v[p:] = anchor * (v[p:] / anchor) ** factor
        df[c] = v
    hi = df[["open", "high", "low", "close"]].max(axis=1)
    lo = df[["open", "high", "low", "close"]].min(axis=1)
    df["high"], df["low"] = hi, lo
    out = out_dir / path.name
    df.to_csv(out, index=False)
    return out


def settings():
    return load_settings([], files=[sources.CANDLE_PRESET], environ={})


def new_data_cases(
    path: Path,
    label: str,
    kinds: Sequence[str],
    params: CalibrationParams,
    cfg: TrainConfig,
) -> list[Case]:
    """Fit each kind on the first two thirds of ``path``, forecast the rest, calibrate."""
    s = settings()
    rows = sources.from_candles(s, path)
    spec = dataset.make_spec(s.ml, rows.name, rows.version, rows.bucket_ns, rows.columns)
    spec = dataset.stationary_inputs(rows.frame, spec)
    ds = dataset.build(rows.frame, spec)
    sp = ds.split(TRAIN * (1 - VAL), TRAIN * VAL, 1 - TRAIN)
    test = sp.test
    truth = ds.targets(test)[:, 0]  # (n, H): one target
    scale = ds.scales(test)[:, 0]
    out = []
    for kind in kinds:
        model = base.create(kind, spec)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            model.fit(ds, sp.train, sp.val, cfg, seed=42, workdir=Path(d))
        raw = np.asarray(model.predict(ds, test), dtype=float)[:, 0]  # (n, H, Q)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cal = calibrate_series(raw, truth, scale, spec.horizons, spec.quantiles, params)
        logging.info(
            "symbol=%s part=bench data=%s model=%s fit+predict %.1f s, calibrate %.1f s "
            "(%d origins)",
            rows.frame["symbol"].iloc[0],
            label,
            kind,
            fit_s,
            time.perf_counter() - t0,
            len(raw),
        )
        out.append(
            Case(
                path.name.split("-")[0],
                label,
                kind,
                tuple(spec.horizons),
                tuple(spec.quantiles),
                truth,
                scale,
                raw,
                cal,
            )
        )
    return out


class Row(NamedTuple):
    horizon: int
    coverage: dict[str, tuple[float, float, float]]  # "80"/"50" -> by tercile low/mid/high
    pinball: float
    losses: np.ndarray  # mean pinball per origin (the Diebold-Mariano test's input)


def scores(c: Case, q: np.ndarray) -> list[Row]:
    """Coverage by volatility tercile of the new data and mean pinball, per horizon."""
    levels = np.asarray(c.levels)
    out = []
    for j, h in enumerate(c.horizons):
        ok = np.isfinite(c.truth[:, j]) & np.isfinite(q[:, j]).all(axis=1)
        y, s, qj = c.truth[ok, j], c.scale[ok, j], q[ok, j]
        regime = m.vol_regime(s, m.vol_edges(s))
        cov = {}
        for iv in m.intervals(levels):
            cov[iv.label] = tuple(
                m.coverage(y[regime == r], qj[regime == r, iv.lo], qj[regime == r, iv.hi])
                for r in range(3)
            )
        loss = m.pinball(y, qj, levels).mean(axis=1)
        out.append(Row(h, cov, float(loss.mean()), loss))
    return out


def table(cases: Sequence[Case]) -> str:
    """A markdown table: per case and horizon, coverage by tercile raw -> calibrated."""
    lines = [
        "| symbol | data | model | h | 80 % low / mid / high | 50 % low / mid / high | "
        "pinball (1e-4) | DM stat (p) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cov(v: tuple[float, float, float]) -> str:
        return " / ".join(f"{x:.3f}" for x in v)

    for c in cases:
        before, after = scores(c, c.raw), scores(c, c.calibrated)
        for b, a in zip(before, after, strict=True):
            dm = m.diebold_mariano(a.losses, b.losses, m.hac_lags(b.horizon, 1))
            lines.append(
                f"| {c.symbol} | {c.data} | {c.model} | {b.horizon} | "
                f"{cov(b.coverage['80'])} -> **{cov(a.coverage['80'])}** | "
                f"{cov(b.coverage['50'])} -> **{cov(a.coverage['50'])}** | "
                f"{b.pinball * 1e4:.3f} -> **{a.pinball * 1e4:.3f}** | "
                f"{dm.stat:+.2f} ({dm.p_two:.3f}) |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    ap.add_argument("--models", default="naive,lightgbm")
    ap.add_argument("--method", default="both")
    ap.add_argument("--window", type=int, default=CalibrationParams().window)
    ap.add_argument("--gamma", type=float, default=CalibrationParams().gamma)
    ap.add_argument("--factor", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    params = CalibrationParams(method=args.method, window=args.window, gamma=args.gamma)
    cfg = TrainConfig(progress_bar=False, num_threads=args.threads)
    kinds = args.models.split(",")
    print(
        f"# calibration bench: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; method={params.method} window={params.window} "
        f"min_scores={params.min_scores} gamma={params.gamma}"
    )
    cases: list[Case] = []
    with tempfile.TemporaryDirectory() as tmp:
        for sym in args.symbols.split(","):
            path = candle_file(sym)
            cases += new_data_cases(path, "as is", kinds, params, cfg)
            shifted = planted(path, TRAIN, args.factor, Path(tmp))
            cases += new_data_cases(shifted, f"planted {args.factor:g}x", kinds, params, cfg)
    print(table(cases))
    print(
        "\nDM: calibrated against raw pinball per origin (HAC, Harvey-Leybourne-Newbold); "
        "a positive stat means calibrated is worse, p two-sided."
    )


if __name__ == "__main__":
    main()
