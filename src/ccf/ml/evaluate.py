"""Honest walk-forward evaluation: rolling-origin forecasts, then their scores.

:func:`walk_forward` forecasts every ``step``-th origin with models that only
ever saw the past (refitted every ``refit_every`` steps on targets that ended
before the origin). :func:`score` turns the forecasts into a JSON-able report
led by what matters for a trader and is hard to fake (rank IC, directional
accuracy beside the break-even hit rate after fees, interval calibration),
then the usual errors, Diebold-Mariano tests against the naive forecast with
Holm's correction, leak flags, the threshold signal and skill over time.
:func:`judge` and :func:`beats_naive` read the promotion verdicts off a report,
:func:`skill` the pooled pinball skill.

The yardstick is the naive forecast: the registered (or given) naive model when there is
one, else a naive fitted on every origin before the test (refused when that is too few to
estimate interval quantiles from), or, for a whole new file (``yardstick="online"``, what
``--test all`` asks for), the online naive of :func:`online_naive`, whose intervals come
only from targets known before each origin. A naive calibrated on a handful of origins
makes every model look good.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import numpy as np

from ccf.config import EvaluateConfig, TrainConfig
from ccf.ml import metrics as m
from ccf.ml import ranges
from ccf.ml.dataset import Dataset, DatasetSpec, Origins
from ccf.ml.models.base import Forecaster, create

log = logging.getLogger(__name__)

NAIVE = "naive"
LEAK = "probable leak: investigate"
GIVEN = "the naive model given (registered, or fitted on the train split)"
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
    yardstick: str = GIVEN  # where naive's intervals came from (the report says it)
    ranges: dict[str, dict] = field(default_factory=dict)  # label -> range check summary


# -- walk forward ------------------------------------------------------------------------


def walk_forward(
    models: Mapping[str, Forecaster],
    data: Dataset,
    origins: Origins,
    cfg: EvaluateConfig,
    *,
    train_cfg: TrainConfig | None = None,
    seed: int = 42,
    yardstick: Literal["fit", "online", "none"] = "fit",
) -> Evaluation:
    """Rolling origin over `origins` (every cfg.step-th one): each forecast uses only data
    known at its origin. With cfg.refit_every = K > 0 each model is refitted every K steps
    on all valid origins whose targets end before the current origin (an embargo of
    max_horizon buckets), validation = the newest part of that; 0 = never refit.

    If `models` has no "naive", the yardstick is made here: ``fit`` fits one on every
    origin before the first test origin (ValueError when fewer than cfg.min_history);
    ``online`` forecasts with :func:`online_naive`, and the origins before it has
    cfg.min_history known targets are left out (they only warm it up); ``none`` makes
    none (the caller merges one in before scoring).

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
    how = GIVEN
    if NAIVE not in current and yardstick == "fit":
        naive = create(NAIVE, spec)
        past = _past(data, int(ts[0]))  # all of it: naive has nothing to stop early
        if len(past) < cfg.min_history:
            raise ValueError(
                f"only {len(past)} origins before the test split to estimate the naive "
                f"yardstick's intervals from (ml.evaluate.min_history={cfg.min_history}): a "
                "yardstick fitted on so few is miscalibrated and makes every model look "
                "better. Evaluate a whole new file with --test all (the yardstick's "
                "intervals then come from the data before each origin), pass a registered "
                "naive model, or use a larger train split"
            )
        naive.fit(data, past, past.take(slice(0, 0)), train_cfg, seed=seed)
        current = {NAIVE: naive, **current}
        how = f"naive fitted on the {len(past)} origins before the test"
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
    raw = data.raw_inputs(origins)
    checked = {
        label: ranges.summary(model.spec, raw, cfg.range_sd)
        for label, model in models.items()
        if label != NAIVE and getattr(model, "spec", None) == spec
    }
    for label, r in checked.items():
        if r["flagged"]:
            log.warning(
                "part=ml evaluate model=%s range check: %d of %d origins have an input more "
                "than %g sd outside the training range (%s)",
                label,
                r["flagged"],
                r["origins"],
                cfg.range_sd,
                ", ".join(f"{c} {n}" for c, n in sorted(r["columns"].items())),
            )
    ev = Evaluation(
        spec=spec,
        ts=ts,
        symbols=np.array([data.series[i].symbol for i in origins.series]),
        truth=data.targets(origins),
        scale=data.scales(origins),
        forecasts=forecasts,
        refits=refits,
        yardstick=how,
        ranges=checked,
    )
    if NAIVE not in current and yardstick == "online":
        ev = _with_online_naive(ev, data, origins, cfg)
    return ev


def online_naive(data: Dataset, origins: Origins, min_history: int, refresh: int) -> np.ndarray:
    """The naive forecast at ``origins`` with interval quantiles taken, for each origin,
    only from targets already known then: the vol-normalized returns of every valid origin
    s of ``data`` (all series) with s + h buckets <= the origin, for horizon h. The
    quantiles are recomputed every ``refresh`` buckets of origin time (from the data up to
    that refresh time, so never from the future); NaN while fewer than ``min_history``
    targets are known. (n, K, H, Q), median exactly 0."""
    spec = data.spec
    allo = data.origins()
    past_ts = data.ts(allo)
    order = np.argsort(past_ts, kind="stable")
    past_ts = past_ts[order]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (data.targets(allo) / data.scales(allo))[order]  # (N, K, H)
    q = np.asarray(spec.quantiles)
    mid = int(np.argmin(np.abs(q - 0.5)))
    ts = data.ts(origins)
    n, K, H = len(origins), len(spec.targets), len(spec.horizons)
    out = np.full((n, K, H, len(q)), np.nan)
    if n == 0:
        return out
    width = refresh * spec.bucket_ns
    t0 = int(ts.min())
    block = (ts - t0) // width
    scales = data.scales(origins)
    for b in np.unique(block):
        at = t0 + int(b) * width  # the refresh time: every origin of the block is at or after
        rows = np.flatnonzero(block == b)
        for j, h in enumerate(spec.horizons):
            cut = int(np.searchsorted(past_ts, at - h * spec.bucket_ns, side="right"))
            for k in range(K):
                col = z[:cut, k, j]
                col = col[np.isfinite(col)]
                if col.size < min_history:
                    continue
                zq = np.quantile(col, q)
                zq[mid] = 0.0
                out[rows, k, j] = scales[rows, k, j, None] * np.sort(zq)
    return out


def _with_online_naive(ev: Evaluation, data: Dataset, origins: Origins, cfg: EvaluateConfig):
    """``ev`` with the online naive added and its warm-up origins left out."""
    f = online_naive(data, origins, cfg.min_history, cfg.online_refresh)
    keep = np.isfinite(f).all(axis=(1, 2, 3))
    if not keep.any():
        raise ValueError(
            f"too little data: the online naive yardstick needs {cfg.min_history} known "
            f"targets before an origin (ml.evaluate.min_history) and the {len(ev.ts)} "
            "origins never reach that: use a longer file or range"
        )
    warm = int((~keep).sum())
    log.info(
        "part=ml evaluate yardstick=online-naive warm-up origins=%d scored=%d",
        int((~keep).sum()),
        int(keep.sum()),
    )
    forecasts = {NAIVE: f[keep], **{k: v[keep] for k, v in ev.forecasts.items()}}
    return Evaluation(
        spec=ev.spec,
        ts=ev.ts[keep],
        symbols=ev.symbols[keep],
        truth=ev.truth[keep],
        scale=ev.scale[keep],
        forecasts=forecasts,
        refits={NAIVE: 0, **ev.refits},
        ranges=ev.ranges,
        yardstick=(
            f"online naive: interval quantiles from the targets known before each origin "
            f"(refreshed every {cfg.online_refresh} buckets); {warm} origins before "
            f"{cfg.min_history} targets were known only warmed it up"
        ),
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


def score(ev: Evaluation, cfg: EvaluateConfig, pairs: Sequence[tuple[str, str]] = ()) -> dict:
    """The report as plain JSON types (NaN written as None). Per model, target and horizon:
    rank IC, direction vs break-even, coverage (overall and by vol regime), MAE, RMSE,
    MASE, pinball; DM tests against naive and, for each (a, b) of ``pairs``, of a against
    b (under ``vs``); leak flags; the threshold signal; skill over time blocks.

    Every DM test of the report is in one Holm family per loss: all models x targets x
    horizons against naive, and every pair, so a report of many models is not a license
    to find one lucky horizon."""
    if NAIVE not in ev.forecasts:
        raise ValueError("score: the evaluation holds no naive forecast to compare against")
    for a, b in pairs:
        if a not in ev.forecasts or b not in ev.forecasts or a == b:
            raise ValueError(f"score: cannot compare {a!r} with {b!r}")
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
        out: dict[str, Any] = {"metrics": {}, "dm": {"pinball": {}, "absolute": {}}, "vs": {}}
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
    for a, b in pairs:
        body[a]["vs"][b] = {"pinball": {}, "absolute": {}}
        for k, target in enumerate(spec.targets):
            for loss in ("pinball", "absolute"):
                body[a]["vs"][b][loss][target] = {}
            for j, h in enumerate(spec.horizons):
                y = ev.truth[:, k, j]
                fa, fb = ev.forecasts[a][:, k, j], ev.forecasts[b][:, k, j]
                ok = np.isfinite(y) & np.isfinite(fa).all(1) & np.isfinite(fb).all(1)
                ts, y, fa, fb = ev.ts[ok], y[ok], fa[ok], fb[ok]
                losses = {
                    "pinball": (m.pinball(y, fa, q).mean(1), m.pinball(y, fb, q).mean(1)),
                    "absolute": (np.abs(y - fa[:, mid]), np.abs(y - fb[:, mid])),
                }
                for loss, (la, lb) in losses.items():
                    _, da = m.mean_by_time(ts, la)
                    _, db = m.mean_by_time(ts, lb)
                    r = m.diebold_mariano(da, db, m.hac_lags(h, step))
                    tests.append(((a, b), loss, target, str(h), r))
    _attach_tests(body, tests)
    report = {"meta": _meta(ev, cfg, step, pairs), "models": {}}
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
            "vs": out["vs"],
            "range_check": ev.ranges.get(label),
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


class Verdict(NamedTuple):
    """One model against another (naive by default), read off a report's corrected tests."""

    better: tuple[str, ...]  # "target h=H" where it is significantly better (primary loss)
    worse: tuple[str, ...]  # "loss target h=H" where it is significantly worse (any loss)

    @property
    def wins(self) -> bool:
        """Significantly better somewhere on the primary loss, and nowhere worse on it or on
        absolute error."""
        return bool(self.better) and not self.worse


def judge(report: dict, model: str, against: str = NAIVE) -> Verdict:
    """The Holm-corrected DM verdict of ``model`` against ``against`` (naive, or a model it
    was paired with in :func:`score`): better where the one-sided adjusted p is below alpha
    on ``promote_on``; worse where the two-sided adjusted p is below alpha and its loss is
    higher, on ``promote_on`` or on absolute error (MAE), at any target and horizon. A pair
    never tested reads as neither better nor worse, with "untested" in ``worse``."""
    alpha = report["meta"]["alpha"]
    primary = report["meta"]["promote_on"]
    body = report["models"][model]
    tests = body["dm"] if against == NAIVE else body.get("vs", {}).get(against)
    if model == against:
        return Verdict((), ())
    if tests is None:
        return Verdict((), (f"untested against {against}",))
    better, worse = [], []
    for loss in dict.fromkeys((primary, "absolute")):
        for target, by_h in tests.get(loss, {}).items():
            for h, r in by_h.items():
                where = f"{target} h={h}"
                if loss == primary and r["p_better_adj"] is not None and r["p_better_adj"] < alpha:
                    better.append(where)
                if (
                    r["p_two_adj"] is not None
                    and r["p_two_adj"] < alpha
                    and (r["mean_diff_bps"] or 0) > 0
                ):
                    worse.append(f"{loss} {where}")
    return Verdict(tuple(better), tuple(worse))


def beats_naive(report: dict, model: str) -> bool:
    """:func:`judge` against naive: significantly better at one horizon at least on the loss
    in ``promote_on`` (Holm over every test of the report), and significantly worse at no
    horizon on that loss or on absolute error."""
    if model == NAIVE:
        return False
    return judge(report, model).wins


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
    """Holm over every test of the report (model x target x horizon against naive, and
    every pair), per loss, per sidedness."""
    for loss in ("pinball", "absolute"):
        mine = [t for t in tests if t[1] == loss]
        two = m.holm(np.array([t[4].p_two for t in mine]))
        better = m.holm(np.array([t[4].p_better for t in mine]))
        for (label, _, target, hk, r), a, b in zip(mine, two, better, strict=True):
            row = {
                "stat": r.stat,
                "p_better": r.p_better,
                "p_better_adj": float(b),
                "p_two": r.p_two,
                "p_two_adj": float(a),
                "mean_diff_bps": r.mean_diff * m.BPS,
                "n": r.n,
                "lags": r.lags,
            }
            if isinstance(label, tuple):
                body[label[0]]["vs"][label[1]][loss][target][hk] = row
            else:
                body[label]["dm"][loss][target][hk] = row


def _spacing(ev: Evaluation) -> int:
    """Buckets between consecutive origin times (the walk-forward step), read off the data
    so the HAC lags are right whatever config scores it."""
    u = np.unique(ev.ts)
    if u.size < 2:
        return 1
    d = np.diff(u) // ev.spec.bucket_ns
    vals, counts = np.unique(d, return_counts=True)
    return max(1, int(vals[np.argmax(counts)]))


def _family(ev: Evaluation, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """What one Holm family holds (per loss): its size and the comparisons in it."""
    cells = len(ev.spec.targets) * len(ev.spec.horizons)
    vs_naive = [label for label in ev.forecasts if label != NAIVE]
    return {
        "holm_family_size": cells * (len(vs_naive) + len(pairs)),
        "against_naive": vs_naive,
        "pairs": [list(p) for p in pairs],
    }


def _meta(
    ev: Evaluation, cfg: EvaluateConfig, step: int, pairs: Sequence[tuple[str, str]] = ()
) -> dict[str, Any]:
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
        "yardstick": ev.yardstick,
        "tests": _family(ev, pairs),
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
