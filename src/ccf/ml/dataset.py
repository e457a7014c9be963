"""Forecasting datasets: feature rows in, windows, targets and time splits out.

One function, :func:`build`, turns feature rows (from the feature store, or
from a candle file run through the same feature engine) into a
:class:`Dataset`; the live predictor calls it on the online store's last rows,
so a model sees the same window online as in training.

Targets are log returns of each target column from the forecast origin t to
t + h, for every h up to the longest horizon. Models learn them divided by
``vol[t] * sqrt(h)``, where ``vol`` is an EWMA of the one-bucket log return's
square known at t: a volatility-normalized target has about the same scale in
calm and wild markets. A target that spans a bucket flagged as a gap, a
missing bucket or a missing price is NaN and never trained on or scored.

Inputs are scale-free by default (:func:`stationary_inputs`): price levels are dropped,
columns that are returns, log ratios, z-scores, imbalances or counts (:data:`SCALE_FREE`)
pass as they are, and every other column (volumes, quantities, notionals, order-flow
imbalance, spreads in price units) enters relative to its own recent level: a
non-negative one as ``log1p(x / mean of the last REL rows)``, a signed one as
``x / mean |x|`` over them (REL = 2 * vol_halflife rows, inside the live history). A
volume in quote instead of base units then gives the same inputs. The training range of
every input is saved with the spec (``lo``/``hi``) for :mod:`ccf.ml.ranges`.

Splits are by time only. Between train and validation, and validation and
test, lies an embargo as long as the longest horizon, so no target window
straddles two splits.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from ccf.config import MLConfig

DERIVED_INPUTS = ("ret_1", "log_vol")
"""Inputs every dataset has: the last one-bucket return in units of vol, and log vol."""
KNOWN = {"time_of_day": ("tod_sin", "tod_cos"), "day_of_week": ("dow_sin", "dow_cos")}
_NEVER_INPUTS = ("ts", "ts_end", "last_trade_ts", "available_at")
_CLIP = 10.0  # normalized inputs beyond +-10 sd are clipped: one bad print must not dominate
SCALE_FREE = (
    "lograt_*",
    "ema_lograt_*",
    "candle_return_*",
    "candle_range",
    "candle_log_range",
    "rel_spread",
    "*zscore*",
    "depth_imbalance*",
    "trade_flow_imbalance*",
    "realized_vol_*",
    "*_count",
    "book_updates",
    "carried",
    "gap",
    "time_since_last_trade",
)
"""Columns without units (returns, log ratios, z-scores, imbalances, counts, seconds)."""
RAW, LOGREL, REL = "raw", "logrel", "rel"  # how a column enters (see the module docstring)
_DAY_NS = 86_400 * 10**9


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """Everything that turns feature rows into a model's arrays; saved with every model.

    ``center``/``scale`` hold the input normalizer fitted on the training split
    (None until fitted). ``columns`` are the feature-store columns it reads.
    """

    feature_set: str
    version: str
    bucket_ns: int
    columns: tuple[str, ...]
    targets: tuple[str, ...]
    horizons: tuple[int, ...]
    encoder_length: int
    inputs: tuple[str, ...]
    known: tuple[str, ...]
    quantiles: tuple[float, ...]
    vol_halflife: int
    normalizer: str = "standard"
    center: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None
    transforms: tuple[str, ...] | None = None  # per input: raw | logrel | rel (None: all raw)
    lo: tuple[float, ...] | None = None  # per unknown input: the training minimum...
    hi: tuple[float, ...] | None = None  # ...and maximum, before normalization

    @property
    def unknown(self) -> tuple[str, ...]:
        """Names of the observed-only inputs, in array order: feature columns, then derived."""
        return (*self.inputs, *DERIVED_INPUTS)

    @property
    def max_horizon(self) -> int:
        return self.horizons[-1]

    @property
    def history(self) -> int:
        """Rows a live forecast reads: the encoder plus enough to warm the vol EWMA."""
        return self.encoder_length + 5 * self.vol_halflife

    def horizon_index(self) -> np.ndarray:
        """Positions of the configured horizons among steps 1..max_horizon."""
        return np.asarray(self.horizons) - 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DatasetSpec:
        d = json.loads(text)
        for k in ("columns", "targets", "horizons", "inputs", "known", "quantiles"):
            d[k] = tuple(d[k])
        for k in ("center", "scale", "transforms", "lo", "hi"):
            d[k] = None if d.get(k) is None else tuple(d[k])
        return cls(**d)

    def transform_of(self, column: str) -> str:
        if self.transforms is None:
            return RAW
        return self.transforms[self.inputs.index(column)]

    @property
    def rel_window(self) -> int:
        """Rows of a relative input's reference level."""
        return 2 * self.vol_halflife


def make_spec(
    cfg: MLConfig, feature_set: str, version: str, bucket_ns: int, columns: tuple[str, ...]
) -> DatasetSpec:
    """A spec from the ``ml`` config and a feature set's columns; ValueError names the key."""
    missing = [t for t in cfg.targets if t not in columns]
    if missing:
        raise ValueError(
            f"ml.targets: {missing} not in feature set {feature_set} (columns: "
            f"{', '.join(columns[:12])}, ...)"
        )
    inputs = _resolve_inputs(cfg.inputs, columns, cfg.targets)
    known = tuple(n for k in cfg.known_inputs for n in KNOWN[k])
    return DatasetSpec(
        feature_set=feature_set,
        version=version,
        bucket_ns=bucket_ns,
        columns=columns,
        targets=cfg.targets,
        horizons=cfg.horizons,
        encoder_length=cfg.encoder_length,
        inputs=inputs,
        known=known,
        quantiles=cfg.quantiles,
        vol_halflife=cfg.vol_halflife,
        normalizer=cfg.normalizer,
    )


def _resolve_inputs(
    patterns: tuple[str, ...], columns: tuple[str, ...], targets: tuple[str, ...]
) -> tuple[str, ...]:
    if patterns:
        out: list[str] = []
        for p in patterns:
            hits = [c for c in columns if fnmatch.fnmatchcase(c, p)]
            if not hits:
                raise ValueError(f"ml.inputs: {p!r} matches no column of the feature set")
            out += [c for c in hits if c not in out]
        return tuple(out)
    return tuple(c for c in columns if c not in _NEVER_INPUTS)


def stationary_inputs(
    frame: pd.DataFrame, spec: DatasetSpec, units: str = "relative"
) -> DatasetSpec:
    """Drop price-level columns from the default inputs: a column whose median is within a
    factor of two of the first target's median is a price (asks, bids, mid, close, EMAs of
    them), which never repeats its range and so cannot generalize. Columns that are NaN
    or constant throughout (book columns in a candle set) carry nothing and go too.

    ``units`` says what becomes of a column with units (not in :data:`SCALE_FREE`):
    ``relative`` (default) enters it relative to its recent level (module docstring),
    ``drop`` leaves it out, ``raw`` passes it as it is (the old behaviour: a change of
    units between training and serving then changes the forecasts)."""
    ref = float(np.nanmedian(frame[spec.targets[0]].to_numpy(dtype=float)))
    keep, how = [], []
    for c in spec.inputs:
        v = frame[c].to_numpy(dtype=float)
        finite = v[np.isfinite(v)]
        if finite.size == 0 or finite.min() == finite.max():
            continue
        med = float(np.nanmedian(np.abs(v)))
        if ref > 0 and 0.5 * ref <= med <= 2 * ref:
            continue
        if units == RAW or any(fnmatch.fnmatchcase(c, p) for p in SCALE_FREE):
            keep.append(c)
            how.append(RAW)
        elif units != "drop":
            keep.append(c)
            how.append(LOGREL if finite.min() >= 0 else REL)
    return replace(spec, inputs=tuple(keep), transforms=tuple(how))


def _trailing_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Mean of the last ``w`` values up to and including each row (NaNs skipped; NaN with
    fewer than w/2 values)."""
    ok = np.isfinite(x)
    csum = np.concatenate([[0.0], np.cumsum(np.where(ok, x, 0.0))])
    ccnt = np.concatenate([[0], np.cumsum(ok)])
    i = np.arange(1, len(x) + 1)
    lo = np.maximum(i - w, 0)
    n = ccnt[i] - ccnt[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (csum[i] - csum[lo]) / n
    out[n < max(1, w // 2)] = np.nan
    return out


def transform(x: np.ndarray, how: str, w: int) -> np.ndarray:
    """One input column as a model reads it, before normalization (module docstring)."""
    if how == RAW:
        return x
    with np.errstate(invalid="ignore", divide="ignore"):
        if how == LOGREL:
            m = _trailing_mean(x, w)
            out = np.log1p(x / m)
            out[~(m > 0)] = np.nan
            return out
        m = _trailing_mean(np.abs(x), w)
        out = x / m
        out[~(m > 0)] = np.nan
        return out


class Series(NamedTuple):
    """One symbol's arrays, rows in time order (a row per bucket)."""

    symbol: str
    ts: np.ndarray  # int64 bucket starts, (T,)
    x: np.ndarray  # float32 normalized unknown inputs, (T, U); NaN -> 0
    known: np.ndarray  # float32 known inputs, (T + max_horizon, N): rows past the end too
    level: np.ndarray  # float64 log of each target, (T, K)
    vol: np.ndarray  # float64 EWMA vol of each target's one-bucket log return, (T, K)
    y: np.ndarray  # float64 log return t -> t+k for k = 1..max_horizon, (T, K, H); NaN unknown
    valid: np.ndarray  # bool, (T,): a window can be made at t (full encoder, vol known)
    raw: np.ndarray | None = None  # float64 (T, U) inputs before normalization (range check)


class Origins(NamedTuple):
    """Forecast origins: which series, which row."""

    series: np.ndarray  # int
    t: np.ndarray  # int

    def __len__(self) -> int:
        return len(self.t)

    def take(self, idx: np.ndarray | slice) -> Origins:
        return Origins(self.series[idx], self.t[idx])


class Splits(NamedTuple):
    train: Origins
    val: Origins
    test: Origins
    bounds_ns: tuple[int, int, int, int]  # start, train end, val end, test end


@dataclass
class Dataset:
    spec: DatasetSpec
    series: list[Series]

    @property
    def symbols(self) -> list[str]:
        return [s.symbol for s in self.series]

    def origins(self, start_ns: int | None = None, end_ns: int | None = None) -> Origins:
        """Every valid origin with bucket start in [start, end), series by series."""
        si, ti = [], []
        for i, s in enumerate(self.series):
            ok = s.valid.copy()
            if start_ns is not None:
                ok &= s.ts >= start_ns
            if end_ns is not None:
                ok &= s.ts < end_ns
            t = np.flatnonzero(ok)
            si.append(np.full(len(t), i))
            ti.append(t)
        if not ti:
            return Origins(np.zeros(0, int), np.zeros(0, int))
        return Origins(np.concatenate(si), np.concatenate(ti))

    def ts(self, o: Origins) -> np.ndarray:
        out = np.empty(len(o), dtype=np.int64)
        for i, s in enumerate(self.series):
            m = o.series == i
            out[m] = s.ts[o.t[m]]
        return out

    def raw_inputs(self, o: Origins) -> np.ndarray:
        """Unknown inputs before normalization at the origins, (n, U)."""
        out = np.full((len(o), len(self.spec.unknown)), np.nan)
        for i, s in enumerate(self.series):
            m = o.series == i
            if s.raw is not None:
                out[m] = s.raw[o.t[m]]
        return out

    def targets(self, o: Origins) -> np.ndarray:
        """Realized log returns at the configured horizons, (n, K, len(horizons)); NaN unknown."""
        h = self.spec.horizon_index()
        out = np.full((len(o), len(self.spec.targets), len(h)), np.nan)
        for i, s in enumerate(self.series):
            m = o.series == i
            out[m] = s.y[o.t[m]][:, :, h]
        return out

    def scales(self, o: Origins) -> np.ndarray:
        """``vol[t] * sqrt(h)`` at the configured horizons, (n, K, len(horizons))."""
        root = np.sqrt(np.asarray(self.spec.horizons, dtype=float))
        out = np.empty((len(o), len(self.spec.targets), len(root)))
        for i, s in enumerate(self.series):
            m = o.series == i
            out[m] = s.vol[o.t[m]][:, :, None] * root
        return out

    def split(self, train: float, val: float, test: float) -> Splits:
        """Origins by time, with an embargo of ``max_horizon`` buckets between splits."""
        lo = min(int(s.ts[0]) for s in self.series if len(s.ts))
        hi = max(int(s.ts[-1]) for s in self.series if len(s.ts)) + self.spec.bucket_ns
        span = hi - lo
        c1 = lo + int(span * train)
        c2 = c1 + int(span * val)
        c3 = min(hi, c2 + int(span * test)) if train + val + test < 1 - 1e-9 else hi
        emb = self.spec.max_horizon * self.spec.bucket_ns
        return Splits(
            self.origins(lo, c1 - emb),
            self.origins(c1, c2 - emb),
            self.origins(c2, c3),
            (lo, c1, c2, c3),
        )


# -- building ---------------------------------------------------------------------------------


def ewma_vol(ret: np.ndarray, halflife: int) -> np.ndarray:
    """EWMA of squared log returns, square-rooted; row t uses returns up to t only.

    NaN returns (gaps) leave it unchanged. NaN until ``halflife`` returns were seen;
    it starts from their mean square.
    """
    alpha = 1 - 0.5 ** (1 / halflife)
    out = np.full(len(ret), np.nan)
    var = 0.0
    seen = 0
    acc = 0.0
    for i, r in enumerate(ret):
        if r == r:  # not NaN
            if seen < halflife:
                acc += r * r
                seen += 1
                if seen == halflife:
                    var = acc / halflife
            else:
                var = (1 - alpha) * var + alpha * r * r
        if seen >= halflife:
            out[i] = math.sqrt(var)
    return out


def known_inputs(ts: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Calendar covariates of bucket starts (known any time ahead)."""
    cols = []
    day = (ts % _DAY_NS) / _DAY_NS * 2 * np.pi
    week = ((ts // _DAY_NS + 3) % 7) / 7 * 2 * np.pi  # 1970-01-01 was a Thursday: Monday = 0
    for n in names:
        cols.append(
            {
                "tod_sin": np.sin(day),
                "tod_cos": np.cos(day),
                "dow_sin": np.sin(week),
                "dow_cos": np.cos(week),
            }[n]
        )
    return np.stack(cols, axis=1).astype(np.float32) if cols else np.zeros((len(ts), 0), np.float32)


def forward_returns(
    level: np.ndarray, ts: np.ndarray, gap: np.ndarray, bucket_ns: int, steps: int
) -> np.ndarray:
    """log level[t+k] - level[t] for k = 1..steps, (T, K, steps); NaN past the end, across a
    missing bucket, or when any bucket in [t, t+k] is flagged as a gap."""
    T, K = level.shape
    out = np.full((T, K, steps), np.nan)
    # prefix count of gap buckets: a window [t, t+k] is clean when the count does not change
    gaps = np.concatenate([[0], np.cumsum(gap.astype(np.int64))])
    for k in range(1, steps + 1):
        if k >= T:
            break
        contiguous = ts[k:] - ts[:-k] == k * bucket_ns
        clean = gaps[k + 1 :] - gaps[: T - k] == 0
        r = level[k:] - level[:-k]
        r[~(contiguous & clean)] = np.nan
        out[: T - k, :, k - 1] = r
    return out


def _raw_inputs(frame: pd.DataFrame, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Unknown inputs before normalization, and the target levels (logs)."""
    level = np.log(frame[list(spec.targets)].to_numpy(dtype=float))
    w = spec.rel_window
    cols = [transform(frame[c].to_numpy(dtype=float), spec.transform_of(c), w) for c in spec.inputs]
    ret = np.diff(level[:, 0], prepend=np.nan)
    return np.stack(cols, axis=1) if cols else np.zeros((len(frame), 0)), np.column_stack(
        [level, ret]
    )


def fit_normalizer(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-column center and scale from training rows (NaNs ignored; constant -> scale 1)."""
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if kind == "standard":
                c, s = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
            elif kind == "robust":
                q1, c, q3 = np.nanpercentile(x, [25, 50, 75], axis=0)
                s = (q3 - q1) / 1.349
            else:
                c, s = np.zeros(x.shape[1]), np.ones(x.shape[1])
    c = np.where(np.isfinite(c), c, 0.0)
    s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
    return c, s


def training_range(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column minimum and maximum of the training rows (NaNs ignored; none: 0, 0)."""
    ok = np.isfinite(x)
    lo = np.where(ok.any(axis=0), np.min(np.where(ok, x, np.inf), axis=0), 0.0)
    hi = np.where(ok.any(axis=0), np.max(np.where(ok, x, -np.inf), axis=0), 0.0)
    return lo, hi


def raw_inputs(frame: pd.DataFrame, spec: DatasetSpec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per symbol: bucket starts and the unknown inputs before normalization (after the
    scale-free transforms), rows in time order: what the range check reads."""
    out = {}
    for symbol, rows in frame.groupby("symbol", sort=True):
        s, raw = _series(rows.sort_values("ts"), str(symbol), spec)
        out[str(symbol)] = (s.ts, raw)
    return out


def _series(frame: pd.DataFrame, symbol: str, spec: DatasetSpec) -> tuple[Series, np.ndarray]:
    """A symbol's arrays; inputs still raw (normalized later). Returns (series, raw x)."""
    ts = frame["ts"].to_numpy(dtype=np.int64)
    raw, lv = _raw_inputs(frame, spec)
    level = lv[:, : len(spec.targets)]
    gap = frame["gap"].to_numpy(dtype=float) > 0 if "gap" in frame else np.zeros(len(ts), bool)
    rets = np.diff(level, axis=0, prepend=np.nan)
    contiguous = np.diff(ts, prepend=ts[0] - spec.bucket_ns) == spec.bucket_ns
    rets[~contiguous | gap] = np.nan
    vol = np.column_stack([ewma_vol(rets[:, k], spec.vol_halflife) for k in range(level.shape[1])])
    y = forward_returns(level, ts, gap, spec.bucket_ns, spec.max_horizon)
    with np.errstate(all="ignore"):
        prev_vol = np.concatenate([[np.nan], vol[:-1, 0]])
        ret_1 = np.clip(rets[:, 0] / prev_vol, -_CLIP, _CLIP)
        log_vol = np.log(vol[:, 0])
    raw = np.column_stack([raw, ret_1, log_vol])
    future = ts[-1] + spec.bucket_ns * np.arange(1, spec.max_horizon + 1) if len(ts) else ts
    known = known_inputs(np.concatenate([ts, future]), spec.known)
    valid = np.isfinite(vol[:, 0]) & np.isfinite(level).all(axis=1) & (vol[:, 0] > 0)
    # a full encoder of contiguous rows ending at t
    run = np.zeros(len(ts), dtype=np.int64)
    for i in range(len(ts)):
        run[i] = run[i - 1] + 1 if i and contiguous[i] else 1
    valid &= run >= spec.encoder_length
    empty = np.zeros((len(ts), raw.shape[1]), np.float32)
    return Series(symbol, ts, empty, known, level, vol, y, valid), raw


def build(
    frame: pd.DataFrame, spec: DatasetSpec, split: tuple[float, float, float] | None = None
) -> Dataset:
    """A dataset from feature rows (columns: symbol, ts and the spec's columns).

    With an unfitted spec the input normalizer is fitted on the rows before the
    training split's end (``split`` gives the fractions; default all rows).
    """
    parts = []
    for symbol, rows in frame.groupby("symbol", sort=True):
        rows = rows.sort_values("ts")
        parts.append(_series(rows, str(symbol), spec))
    if not parts:
        raise ValueError("no feature rows to build a dataset from")
    if spec.center is None:
        lo = min(int(s.ts[0]) for s, _ in parts if len(s.ts))
        hi = max(int(s.ts[-1]) for s, _ in parts if len(s.ts)) + spec.bucket_ns
        cut = lo + int((hi - lo) * (split[0] if split else 1.0))
        fit_rows = np.concatenate([raw[s.ts < cut] for s, raw in parts])
        c, sc = fit_normalizer(fit_rows, spec.normalizer)
        lo, hi = training_range(fit_rows)
        spec = replace(
            spec,
            center=tuple(map(float, c)),
            scale=tuple(map(float, sc)),
            lo=tuple(map(float, lo)),
            hi=tuple(map(float, hi)),
        )
    center = np.asarray(spec.center)
    scale = np.asarray(spec.scale)
    series = []
    for s, raw in parts:
        with np.errstate(invalid="ignore"):
            x = np.clip((raw - center) / scale, -_CLIP, _CLIP)
        x = np.nan_to_num(x, nan=0.0).astype(np.float32)
        series.append(s._replace(x=x, raw=raw))
    return Dataset(spec, series)


def spec_info(spec: DatasetSpec) -> dict[str, Any]:
    """What a registry run logs about the data a model saw."""
    return {
        "feature_set": spec.feature_set,
        "feature_version": spec.version,
        "targets": ",".join(spec.targets),
        "horizons": ",".join(map(str, spec.horizons)),
        "encoder_length": spec.encoder_length,
        "inputs": len(spec.unknown),
        "bucket_s": spec.bucket_ns / 1e9,
    }
