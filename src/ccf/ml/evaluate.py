"""Honest walk-forward evaluation: rolling-origin forecasts, then their scores.

:func:`walk_forward` forecasts every ``step``-th origin with models that only
ever saw the past (refitted every ``refit_every`` steps on targets that ended
before the origin). :func:`score` turns the forecasts into a JSON-able report
led by what matters for a trader and is hard to fake (rank IC, directional
accuracy beside the break-even hit rate after fees, interval calibration),
then the usual errors, Diebold-Mariano tests against the naive forecast with
Holm's correction, leak flags, the threshold signal and skill over time.
:func:`beats_naive` and :func:`skill` read the two promotion figures off a
report.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from ccf.config import EvaluateConfig, TrainConfig
from ccf.ml import metrics as m
from ccf.ml.dataset import Dataset, DatasetSpec, Origins
from ccf.ml.models.base import Forecaster, create

log = logging.getLogger(__name__)

NAIVE = "naive"
LEAK = "probable leak: investigate"
VAL_SHARE = 0.15  # newest share of a refit's history that validates it (early stopping)
BLOCKS = 10  # time blocks of the skill-over-time view
CURVE_POINTS = 400  # points of each cumulative signal curve kept in the JSON


@dataclass
class Evaluation:
    """Walk-forward forecasts and what they are scored against, one row per origin."""

    spec: DatasetSpec
    ts: np.ndarray  # (n,) int64 origin bucket starts
    symbols: np.ndarray  # (n,) str
    truth: np.ndarray  # (n, K, H) realized log returns, NaN unknown
    scale: np.ndarray  # (n, K, H) vol*sqrt(h) at the origin
    forecasts: dict[str, np.ndarray]  # model label -> (n, K, H, Q); always holds "naive"
    refits: dict[str, int]


# -- walk forward ------------------------------------------------------------------------


def walk_forward(
    models: Mapping[str, Forecaster],
    data: Dataset,
    origins: Origins,
    cfg: EvaluateConfig,
    *,
    train_cfg: TrainConfig | None = None,
    seed: int = 42,
) -> Evaluation:
    """Rolling origin over `origins` (every cfg.step-th one): each forecast uses only data
    known at its origin. With cfg.refit_every = K > 0 each model is refitted every K steps
    on all valid origins whose targets end before the current origin (an embargo of
    max_horizon buckets), validation = the newest part of that; 0 = never refit. If
    `models` has no "naive", one is fitted on the origins before the first test origin.

    The models given are used as fitted for the first segment and never changed: a refit
    makes a new model of the same class, warm-started from the previous one. A step is
    ``cfg.step`` buckets of time (origin times on a grid from the first one), so
    overlapping targets are spaced evenly for the HAC variance.
    """
    spec = data.spec
    origins = _on_grid(data, origins, cfg.step)
    if len(origins) == 0:
        raise ValueError("walk_forward: no valid origins to forecast (check the test range)")
    ts = data.ts(origins)
    train_cfg = train_cfg or TrainConfig(progress_bar=False)
    current = dict(models)
    if NAIVE not in current:
        naive = create(NAIVE, spec)
        past = _past(data, int(ts[0]))  # all of it: naive has nothing to stop early
        naive.fit(data, past, past.take(slice(0, 0)), train_cfg, seed=seed)
        current = {NAIVE: naive, **current}
    n, K, H, Q = len(origins), len(spec.targets), len(spec.horizons), len(spec.quantiles)
    forecasts = {label: np.full((n, K, H, Q), np.nan) for label in current}
    refits = dict.fromkeys(current, 0)
    segments = _segments(ts, cfg.refit_every)
    for j, (lo, hi) in enumerate(segments):
        if j > 0:
            train, val = _history(data, int(ts[lo]))
            for label, model in current.items():
                current[label] = _refit(label, model, data, train, val, train_cfg, seed)
                refits[label] += 1
        part = origins.take(slice(lo, hi))
        for label, model in current.items():
            out = np.asarray(model.predict(data, part), dtype=float)
            if out.shape != (hi - lo, K, H, Q):
                raise ValueError(
                    f"model {label}: predict returned {out.shape}, expected {(hi - lo, K, H, Q)}"
                )
            forecasts[label][lo:hi] = out
        log.info(
            "part=ml evaluate segment=%d/%d origins=%d from=%s",
            j + 1,
            len(segments),
            hi - lo,
            _iso(int(ts[lo])),
        )
    return Evaluation(
        spec=spec,
        ts=ts,
        symbols=np.array([data.series[i].symbol for i in origins.series]),
        truth=data.targets(origins),
        scale=data.scales(origins),
        forecasts=forecasts,
        refits=refits,
    )


def _on_grid(data: Dataset, origins: Origins, step: int) -> Origins:
    """Origins whose time lies on a grid of ``step`` buckets from the first, in time order
    (then series order): a slice of them is a stretch of time."""
    ts = data.ts(origins)
    if len(ts) == 0:
        return origins
    keep = ((ts - ts.min()) // data.spec.bucket_ns) % step == 0
    idx = np.flatnonzero(keep)
    idx = idx[np.lexsort((origins.series[idx], ts[idx]))]
    return origins.take(idx)


def _segments(ts: np.ndarray, refit_every: int) -> list[tuple[int, int]]:
    """[lo, hi) slices of consecutive origins, refit_every distinct origin times each."""
    step = np.unique(ts, return_inverse=True)[1]  # the walk-forward step of each origin
    if refit_every <= 0:
        return [(0, len(ts))]
    seg = step // refit_every
    starts = np.flatnonzero(np.diff(seg, prepend=-1))
    return [(int(a), int(b)) for a, b in zip(starts, [*starts[1:], len(ts)], strict=True)]


def _history(data: Dataset, origin_ns: int) -> tuple[Origins, Origins]:
    """Train and validation origins whose targets ended before ``origin_ns``: the newest
    VAL_SHARE validates, an embargo of max_horizon buckets before it and before the origin."""
    emb = data.spec.max_horizon * data.spec.bucket_ns
    past = _past(data, origin_ns)
    ts = data.ts(past)
    cut = int(np.quantile(ts, 1 - VAL_SHARE))
    train = past.take(np.flatnonzero(ts < cut - emb))
    val = past.take(np.flatnonzero(ts >= cut))
    return train, val


def _past(data: Dataset, origin_ns: int) -> Origins:
    """Every valid origin whose targets (max_horizon buckets) ended before ``origin_ns``."""
    past = data.origins(None, origin_ns - data.spec.max_horizon * data.spec.bucket_ns)
    if len(past) == 0:
        raise ValueError(f"walk_forward: no history before {_iso(origin_ns)} to fit on")
    return past


def _refit(
    label: str,
    model: Forecaster,
    data: Dataset,
    train: Origins,
    val: Origins,
    cfg: TrainConfig,
    seed: int,
) -> Forecaster:
    new = type(model)(model.spec, model.params)
    new.fit(data, train, val, cfg, seed=seed, warm_start=model)
    log.info("part=ml evaluate refit model=%s train=%d val=%d", label, len(train), len(val))
    return new


# -- scoring -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cell:
    """One model's scored origins for one target and horizon, aligned with naive's."""

    ts: np.ndarray
    y: np.ndarray
    scale: np.ndarray
    f: np.ndarray  # (n, Q) model quantiles
    base: np.ndarray  # (n, Q) naive quantiles


def score(ev: Evaluation, cfg: EvaluateConfig) -> dict:
    """The report as plain JSON types (NaN written as None). Per model, target and horizon:
    rank IC, direction vs break-even, coverage (overall and by vol regime), MAE, RMSE,
    MASE, pinball; DM tests against naive (Holm over models x targets x horizons, per loss);
    leak flags; the threshold signal; skill over time blocks."""
    if NAIVE not in ev.forecasts:
        raise ValueError("score: the evaluation holds no naive forecast to compare against")
    spec = ev.spec
    q = np.asarray(spec.quantiles)
    mid = int(np.argmin(np.abs(q - 0.5)))
    step = _spacing(ev)
    body: dict[str, dict[str, Any]] = {}
    tests: list[tuple[str, str, str, str, m.DMResult]] = []  # label, loss, target, h, result
    pooled: dict[str, list[float]] = {}
    # vol terciles over every test origin with a known target, the same for all models, so
    # a regime is the same stretch of market in each model's row
    edges = {
        (k, j): m.vol_edges(ev.scale[np.isfinite(ev.truth[:, k, j]), k, j])
        for k in range(len(spec.targets))
        for j in range(len(spec.horizons))
    }
    for label, f in ev.forecasts.items():
        out: dict[str, Any] = {"metrics": {}, "dm": {"pinball": {}, "absolute": {}}}
        out.update(signal={}, skill_over_time={}, flags=[])
        pooled[label] = [0.0, 0.0]
        for k, target in enumerate(spec.targets):
            for loss in ("pinball", "absolute"):
                out["dm"][loss][target] = {}
            for key in ("metrics", "signal", "skill_over_time"):
                out[key][target] = {}
            for j, h in enumerate(spec.horizons):
                c = _cell(ev, f, k, j)
                hk = str(h)
                pin = m.pinball(c.y, c.f, q).mean(axis=1)
                pin_base = m.pinball(c.y, c.base, q).mean(axis=1)
                abs_err = np.abs(c.y - c.f[:, mid])
                abs_base = np.abs(c.y - c.base[:, mid])
                pooled[label][0] += float(pin.sum())
                pooled[label][1] += float(pin_base.sum())
                out["metrics"][target][hk] = _metrics(c, q, mid, cfg, edges[k, j])
                out["signal"][target][hk] = _signal(c, mid, cfg)
                out["skill_over_time"][target][hk] = _blocks(c, abs_err, abs_base, pin, pin_base)
                flag = _leak(out["metrics"][target][hk], cfg)
                if flag and label != NAIVE:
                    out["flags"].append({"target": target, "horizon": h, **flag})
                if label == NAIVE:
                    continue
                lags = m.hac_lags(h, step)
                for loss, a, b in (("pinball", pin, pin_base), ("absolute", abs_err, abs_base)):
                    _, da = m.mean_by_time(c.ts, a)
                    _, db = m.mean_by_time(c.ts, b)
                    tests.append((label, loss, target, hk, m.diebold_mariano(da, db, lags)))
        body[label] = out
    _attach_tests(body, tests)
    report = {"meta": _meta(ev, cfg, step), "models": {}}
    for label, out in body.items():
        s_m, s_n = pooled[label]
        if out["flags"]:
            log.warning(
                "part=ml evaluate model=%s %s at %d target/horizon(s)",
                label,
                LEAK,
                len(out["flags"]),
            )
        report["models"][label] = {
            "flags": out["flags"],
            "metrics": out["metrics"],
            "skill": 1 - s_m / s_n if s_n > 0 else math.nan,
            "beats_naive": False,
            "dm": out["dm"],
            "signal": out["signal"],
            "skill_over_time": out["skill_over_time"],
        }
    report = _plain(report)
    for label in report["models"]:
        report["models"][label]["beats_naive"] = beats_naive(report, label)
    return report


def skill(report: dict, model: str) -> float:
    """The one promotion figure: 1 - mean pinball(model) / mean pinball(naive), over every
    scored origin, target, horizon and quantile."""
    v = report["models"][model]["skill"]
    return math.nan if v is None else float(v)


def beats_naive(report: dict, model: str) -> bool:
    """True when, for the loss in ``promote_on``, the Holm-corrected one-sided DM test says
    the model is better at one horizon at least and the corrected two-sided test finds no
    horizon (of any target) where it is worse."""
    alpha = report["meta"]["alpha"]
    tests = report["models"][model]["dm"].get(report["meta"]["promote_on"], {})
    rows = [r for by_h in tests.values() for r in by_h.values()]
    better = any(r["p_better_adj"] is not None and r["p_better_adj"] < alpha for r in rows)
    worse = any(
        r["p_two_adj"] is not None and r["p_two_adj"] < alpha and (r["mean_diff_bps"] or 0) > 0
        for r in rows
    )
    return better and not worse


def _cell(ev: Evaluation, f: np.ndarray, k: int, j: int) -> _Cell:
    base = ev.forecasts[NAIVE][:, k, j]
    ok = np.isfinite(ev.truth[:, k, j]) & np.isfinite(f[:, k, j]).all(1) & np.isfinite(base).all(1)
    return _Cell(ev.ts[ok], ev.truth[ok, k, j], ev.scale[ok, k, j], f[ok, k, j], base[ok])


def _metrics(
    c: _Cell, q: np.ndarray, mid: int, cfg: EvaluateConfig, edges: np.ndarray
) -> dict[str, Any]:
    """The ordered metrics block: ranking and calibration first, then errors."""
    pred, err = c.f[:, mid], c.y - c.f[:, mid]
    d = m.direction(pred, c.y)
    regime = m.vol_regime(c.scale, edges)
    cov: dict[str, Any] = {}
    for iv in m.intervals(q):
        lo, hi = c.f[:, iv.lo], c.f[:, iv.hi]
        row = {"nominal": iv.nominal, "overall": m.coverage(c.y, lo, hi)}
        for r, name in enumerate(m.REGIMES):
            s = regime == r
            row[name] = m.coverage(c.y[s], lo[s], hi[s])
        cov[iv.label] = row
    pin = m.pinball(c.y, c.f, q)
    mae_base = m.mae(c.y - c.base[:, mid])
    mae = m.mae(err)
    return {
        "n": int(c.y.size),
        "ic": m.rank_ic(pred, c.y),
        "direction": {
            "accuracy": d.accuracy,
            "breakeven": m.breakeven(cfg.fee_bps / m.BPS, d.mean_abs),
            "n": d.n,
            "mean_abs_bps": d.mean_abs * m.BPS,
        },
        "coverage": cov,
        "below_quantile": {f"{x:g}": _share(c.y < c.f[:, i]) for i, x in enumerate(q)},
        "mae_bps": mae * m.BPS,
        "rmse_bps": m.rmse(err) * m.BPS,
        "mase": mae / mae_base if mae_base > 0 else math.nan,
        "pinball_bps": {
            "mean": float(pin.mean()) * m.BPS if pin.size else math.nan,
            **{f"{x:g}": float(pin[:, i].mean()) * m.BPS for i, x in enumerate(q)},
        },
    }


def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else math.nan


def _leak(cell: dict[str, Any], cfg: EvaluateConfig) -> dict[str, Any] | None:
    """Candle features alone reach MAE ratios of about 0.996-1.003 and hit rates of
    0.50-0.53: far past that, the model almost surely saw the future."""
    ratio, acc = cell["mase"], cell["direction"]["accuracy"]
    if (ratio == ratio and ratio < cfg.leak_mae_ratio) or (acc == acc and acc > cfg.leak_direction):
        return {"message": LEAK, "mae_ratio": ratio, "direction": acc}
    return None


def _signal(c: _Cell, mid: int, cfg: EvaluateConfig) -> dict[str, Any]:
    t = m.trades(c.f[:, mid], c.y, cfg.threshold_bps, cfg.fee_bps)
    s = m.signal_summary(t, c.y)
    curve = np.cumsum(t.pnl_bps)
    keep = np.unique(np.linspace(0, len(curve) - 1, min(len(curve), CURVE_POINTS)).astype(int))
    return {
        **s._asdict(),
        "curve": {"ts": [_iso(int(x)) for x in c.ts[keep]], "bps": curve[keep].tolist()},
    }


def _blocks(c: _Cell, abs_err, abs_base, pin, pin_base) -> dict[str, Any]:
    if not c.ts.size:  # no test origin has this horizon's target yet (a first model): no blocks
        return {"from": [], "mae_ratio": [], "pinball_skill": []}
    b = m.block_skill(abs_err, abs_base, pin, pin_base, BLOCKS)
    return {
        "from": [_iso(int(c.ts[i])) for i in b.start] if c.ts.size else [],
        "mae_ratio": b.mae_ratio.tolist(),
        "pinball_skill": b.pinball_skill.tolist(),
    }


def _attach_tests(body: dict[str, dict[str, Any]], tests: list) -> None:
    """Holm over every model x target x horizon tested, per loss, per sidedness."""
    for loss in ("pinball", "absolute"):
        mine = [t for t in tests if t[1] == loss]
        two = m.holm(np.array([t[4].p_two for t in mine]))
        better = m.holm(np.array([t[4].p_better for t in mine]))
        for (label, _, target, hk, r), a, b in zip(mine, two, better, strict=True):
            body[label]["dm"][loss][target][hk] = {
                "stat": r.stat,
                "p_better": r.p_better,
                "p_better_adj": float(b),
                "p_two": r.p_two,
                "p_two_adj": float(a),
                "mean_diff_bps": r.mean_diff * m.BPS,
                "n": r.n,
                "lags": r.lags,
            }


def _spacing(ev: Evaluation) -> int:
    """Buckets between consecutive origin times (the walk-forward step), read off the data
    so the HAC lags are right whatever config scores it."""
    u = np.unique(ev.ts)
    if u.size < 2:
        return 1
    d = np.diff(u) // ev.spec.bucket_ns
    vals, counts = np.unique(d, return_counts=True)
    return max(1, int(vals[np.argmax(counts)]))


def _meta(ev: Evaluation, cfg: EvaluateConfig, step: int) -> dict[str, Any]:
    s = ev.spec
    return {
        "feature_set": s.feature_set,
        "feature_version": s.version,
        "bucket_s": s.bucket_ns / 1e9,
        "targets": list(s.targets),
        "horizons": list(s.horizons),
        "quantiles": list(s.quantiles),
        "symbols": sorted({str(x) for x in ev.symbols}),
        "origins": len(ev.ts),
        "from": _iso(int(ev.ts.min())) if len(ev.ts) else None,
        "to": _iso(int(ev.ts.max())) if len(ev.ts) else None,
        "step": step,
        "hac_lags": {str(h): m.hac_lags(h, step) for h in s.horizons},
        "refit_every": cfg.refit_every,
        "refits": dict(ev.refits),
        "breakeven": _breakeven(ev, cfg),
        "fee_bps": cfg.fee_bps,
        "threshold_bps": cfg.threshold_bps,
        "alpha": cfg.alpha,
        "promote_on": cfg.promote_on,
        "leak_mae_ratio": cfg.leak_mae_ratio,
        "leak_direction": cfg.leak_direction,
        "units": "errors, pinball, signal in basis points of log return",
    }


def _breakeven(ev: Evaluation, cfg: EvaluateConfig) -> dict[str, dict[str, float]]:
    """The hit rate any model needs per target and horizon, E|r| over every non-zero
    outcome: shown even when a model (naive) makes no directional call."""
    out: dict[str, dict[str, float]] = {}
    for k, target in enumerate(ev.spec.targets):
        out[target] = {}
        for j, h in enumerate(ev.spec.horizons):
            y = ev.truth[:, k, j]
            y = np.abs(y[np.isfinite(y) & (y != 0)])
            out[target][str(h)] = m.breakeven(cfg.fee_bps / m.BPS, float(y.mean()) if y.size else 0)
    return out


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat()


def _plain(x: Any) -> Any:
    """Plain JSON types: numpy scalars unwrapped, NaN and infinities as None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_plain(v) for v in x.tolist()]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    return x
