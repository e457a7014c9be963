"""Drift and data quality of a symbol's newest feature rows against a reference.

The reference is the serving champion's training window (what the model
learned from); without one, the first half of the stored history. Evidently
compares the two on a few columns: the model's inputs first, then the raw book
and trade columns of the rows, leaving out price levels (a price never repeats
its range, so it would always "drift"), flags, times and constant columns.
The quality checks (missing values, constant columns, values outside the
reference's range) are plain pandas over every column.

Evidently's normed Wasserstein distance divides by ``max(std, 0.001)``, which
blinds it to columns in log-return units (std ~1e-5): both frames are
standardized by the reference's mean and std first, so the score is the
distance in reference standard deviations for every column alike.

A market's features are autocorrelated (a rolling volatility, an EMA, a book
quantity change slowly), so two honest stretches of the same market differ by far
more than two independent samples would: a fixed threshold on the distance cries
wolf. A column drifts only when all three hold:

- enough independent information on both sides: at least :data:`MIN_EFFECTIVE`
  effective rows (rows over the integrated autocorrelation time);
- an effect worth a word: a distance of at least :data:`THRESHOLD` reference stds;
- a distance the reference itself does not produce: above the ``1 - ALPHA``
  quantile of the distances between two moving-block bootstrap samples of the
  reference (blocks of about twice its autocorrelation time, the sizes of the two
  compared frames), which keeps the autocorrelation in the null.

The threshold is kept per column with the check.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from ccf.features.store import FeatureStore


METHOD = "wasserstein"  # Evidently's normed Wasserstein distance
THRESHOLD = 0.1  # Evidently's default for it: a tenth of a reference std
MAX_COLUMNS = 16  # keeps one Evidently run around a second
MIN_ROWS = 10
MIN_EFFECTIVE = 30  # effective (independent) rows each side needs before a column can drift
ALPHA = 0.01  # the block bootstrap's false-alarm rate per column
DRAWS = 200  # bootstrap pairs per column
CHUNKS = 10  # a long reference window is sampled in this many runs of consecutive rows
KEEP_REPORTS = 10  # per symbol: older HTML/JSON reports are deleted
RAW_COLUMNS = (
    "a_q_0",
    "b_q_0",
    "buy_count",
    "sell_count",
    "buy_qty",
    "sell_qty",
    "book_updates",
    "spread",
)
_BOOK_LEVEL = re.compile(r"^[ab]_[pq]_\d+$")
NOT_DATA = frozenset(
    {"symbol", "ts", "ts_end", "available_at", "gap", "carried", "news_count", "last_trade_ts"}
)


class Rows(NamedTuple):
    """Feature rows of one symbol and where they came from."""

    frame: pd.DataFrame
    label: str  # says what the rows are, for the report
    start: int | None
    end: int | None


class ColumnCheck(NamedTuple):
    column: str
    drift_score: float  # NaN: not among the drift columns
    drifted: bool | None
    missing_share: float
    ref_missing_share: float
    constant: bool  # in the current rows
    out_of_range_share: float  # of the current values, outside the reference's [min, max]
    threshold: float = math.nan  # the score it had to reach (effect size and block bootstrap)


class DriftResult(NamedTuple):
    symbol: str
    reference: Rows
    current: Rows
    columns: tuple[ColumnCheck, ...]
    share: float  # of the drift columns, drifted
    drifted: tuple[str, ...]
    report: dict[str, Any]  # Evidently's snapshot as a dict

    @property
    def drift_columns(self) -> tuple[str, ...]:
        return tuple(c.column for c in self.columns if not math.isnan(c.drift_score))


# -- which rows --------------------------------------------------------------------------------


def reference_rows(
    store: FeatureStore, symbol: str, start: int, end: int, rows: int, label: str
) -> Rows:
    """Rows with bucket start in [start, end]; a window longer than ``rows`` buckets is
    sampled as :data:`CHUNKS` evenly spaced runs of consecutive rows (a bounded read)."""
    import pandas as pd

    bucket = store.set.bucket_ns
    span = end - start + bucket
    if span <= rows * bucket:
        df = store.frame([symbol], start, end + bucket)
    else:
        run = max(1, rows // CHUNKS) * bucket
        starts = np.linspace(start, end + bucket - run, CHUNKS).astype(np.int64)
        starts -= starts % bucket
        df = pd.concat([store.frame([symbol], int(t), int(t) + run) for t in starts])
        df = df.drop_duplicates("ts").reset_index(drop=True)
    return Rows(df, label, start, end)


def first_half(store: FeatureStore, symbol: str, rows: int, why: str) -> Rows | None:
    """The reference without a serving model: the first half of the stored history."""
    span = {s: (a, b) for s, _, a, b in store.summary()}.get(symbol)
    if span is None:
        return None
    first, last = span
    mid = first + (last - first) // 2
    return reference_rows(
        store, symbol, first, mid, rows, f"first half of the stored history ({why})"
    )


def current_rows(store: FeatureStore, symbol: str, rows: int) -> Rows:
    """The newest ``rows`` rows of ``symbol``."""
    import pandas as pd

    w = store.last(symbol, rows)
    df = pd.DataFrame(w.values, columns=list(w.columns))
    df.insert(0, "ts", w.ts)
    start, end = (int(w.ts[0]), int(w.ts[-1])) if len(w.ts) else (None, None)
    return Rows(df, f"newest {len(df)} rows", start, end)


# -- pure checks -------------------------------------------------------------------------------


def _values(df: pd.DataFrame, c: str) -> np.ndarray:
    return df[c].to_numpy(dtype=float)


def usable(v: np.ndarray) -> bool:
    """Enough finite values, and not all the same."""
    f = v[np.isfinite(v)]
    return f.size >= MIN_ROWS and f.min() != f.max()


def is_price_level(v: np.ndarray, price: float) -> bool:
    """Within a factor of two of the symbol's price: asks, bids, mids, their averages."""
    med = float(np.nanmedian(np.abs(v))) if np.isfinite(v).any() else math.nan
    return price > 0 and 0.5 * price <= med <= 2 * price


def drift_columns(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    preferred: Sequence[str] = (),
    limit: int = MAX_COLUMNS,
) -> list[str]:
    """The columns worth a drift test: ``preferred`` (the model's inputs), then the raw book
    and trade columns, then the other features; never times, flags, price levels or
    columns constant (or nearly empty) on either side."""
    price = float(np.nanmedian(_values(reference, "m_p"))) if "m_p" in reference else math.nan
    # book levels beyond the first come last: sixteen columns of one kind say little
    levels = [c for c in reference.columns if _BOOK_LEVEL.match(c)]
    rest = [c for c in reference.columns if not _BOOK_LEVEL.match(c)]
    candidates = [*preferred, *RAW_COLUMNS, *rest, *levels]
    out: list[str] = []
    for c in dict.fromkeys(candidates):
        if len(out) >= limit:
            break
        if c in NOT_DATA or c not in reference or c not in current:
            continue
        ref, cur = _values(reference, c), _values(current, c)
        if usable(ref) and usable(cur) and not is_price_level(ref, price):
            out.append(c)
    return out


def quality(
    reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str]
) -> dict[str, tuple[float, float, bool, float]]:
    """Per column: (missing share, the reference's missing share, constant in the current
    rows, share of current values outside the reference's range)."""
    out = {}
    for c in columns:
        cur = _values(current, c)
        ref = _values(reference, c) if c in reference else np.full(0, math.nan)
        finite = cur[np.isfinite(cur)]
        ref_finite = ref[np.isfinite(ref)]
        missing = float(np.mean(~np.isfinite(cur))) if cur.size else math.nan
        ref_missing = float(np.mean(~np.isfinite(ref))) if ref.size else math.nan
        constant = finite.size == 0 or bool(finite.min() == finite.max())
        if finite.size and ref_finite.size:
            outside = (finite < ref_finite.min()) | (finite > ref_finite.max())
            out_of_range = float(outside.mean())
        else:
            out_of_range = math.nan
        out[c] = (missing, ref_missing, constant, out_of_range)
    return out


def standardized(reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str]):
    """Both frames in reference standard deviations from the reference's mean."""
    ref = reference[list(columns)].astype(float)
    cur = current[list(columns)].astype(float)
    mean, std = ref.mean(), ref.std(ddof=0)
    return (ref - mean) / std, (cur - mean) / std


# -- autocorrelation-aware thresholds ----------------------------------------------------------


def autocorrelation_time(v: np.ndarray) -> float:
    """The integrated autocorrelation time ``1 + 2 sum(rho_k)``, summed while the
    autocorrelation stays above 0.05 (1 for white noise, ~2/(1-phi) for an AR(1))."""
    x = v[np.isfinite(v)]
    n = x.size
    if n < 3 or x.std() == 0:
        return 1.0
    x = x - x.mean()
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n] / (x @ x)
    below = np.flatnonzero(acf[1:] < 0.05)
    k = int(below[0]) if below.size else n - 1
    return float(max(1.0, 1 + 2 * acf[1 : k + 1].sum()))


def runs(ts: np.ndarray) -> list[slice]:
    """Stretches of consecutive buckets (the reference is read as a few such runs)."""
    if ts.size == 0:
        return []
    step = np.median(np.diff(ts)) if ts.size > 1 else 1
    cuts = np.flatnonzero(np.diff(ts) != step) + 1
    edges = [0, *cuts.tolist(), ts.size]
    return [slice(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


def _w1(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(a, b))


def block_sample(
    pieces: Sequence[np.ndarray], size: int, block: int, rng: np.random.Generator
) -> np.ndarray:
    """``size`` values made of random blocks of ``block`` consecutive values of ``pieces``
    (a moving-block bootstrap that never joins two runs)."""
    starts = [(i, j) for i, p in enumerate(pieces) for j in range(max(1, p.size - block + 1))]
    out: list[np.ndarray] = []
    n = 0
    while n < size:
        i, j = starts[int(rng.integers(len(starts)))]
        b = pieces[i][j : j + block]
        out.append(b)
        n += b.size
    return np.concatenate(out)[:size]


def null_threshold(
    reference: np.ndarray,
    ref_ts: np.ndarray,
    current_size: int,
    seed: int = 0,
    draws: int = DRAWS,
    alpha: float = ALPHA,
) -> float:
    """The ``1 - alpha`` quantile of the distance between two block-bootstrap samples of
    the (standardized) reference, of the reference's and the current frame's sizes."""
    pieces = [reference[s] for s in runs(ref_ts)]
    pieces = [p[np.isfinite(p)] for p in pieces]
    pieces = [p for p in pieces if p.size]
    if not pieces:
        return math.inf
    tau = autocorrelation_time(max(pieces, key=len))
    block = int(min(max(p.size for p in pieces), max(1, round(2 * tau))))
    rng = np.random.default_rng(seed)
    n_ref = sum(p.size for p in pieces)
    d = [
        _w1(
            block_sample(pieces, current_size, block, rng),
            block_sample(pieces, n_ref, block, rng),
        )
        for _ in range(draws)
    ]
    return float(np.quantile(d, 1 - alpha))


def effective_rows(v: np.ndarray) -> float:
    """Finite values over their autocorrelation time."""
    return float(np.isfinite(v).sum()) / autocorrelation_time(v)


def drift_decision(
    reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str]
) -> dict[str, tuple[float, float, bool]]:
    """Per column: (distance in reference stds, the threshold it had to reach, drifted).

    The threshold is infinite where either side has fewer than :data:`MIN_EFFECTIVE`
    effective rows: too little information to tell a drift from the market's own swings.
    """
    ref, cur = standardized(reference, current, columns)
    ref_ts = reference["ts"].to_numpy() if "ts" in reference else np.arange(len(reference))
    out = {}
    for i, c in enumerate(columns):
        r, k = ref[c].to_numpy(dtype=float), cur[c].to_numpy(dtype=float)
        rf, kf = r[np.isfinite(r)], k[np.isfinite(k)]
        score = _w1(rf, kf) if rf.size and kf.size else math.nan
        if min(effective_rows(r), effective_rows(k)) < MIN_EFFECTIVE:
            threshold = math.inf
        else:
            threshold = max(THRESHOLD, null_threshold(r, ref_ts, int(kf.size), seed=i))
        out[c] = (score, threshold, bool(score >= threshold))
    return out


# -- Evidently ---------------------------------------------------------------------------------


def evidently_drift(
    reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str], drift_share: float
) -> tuple[float, dict[str, float], Any]:
    """(share of drifted columns, score per column, the Evidently snapshot)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref, cur = standardized(reference, current, columns)
    definition = DataDefinition(numerical_columns=list(columns))
    report = Report(
        [
            DataDriftPreset(
                columns=list(columns), method=METHOD, threshold=THRESHOLD, drift_share=drift_share
            )
        ]
    )
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    metrics = snapshot.dict()["metrics"]
    share = float(metrics[0]["value"]["share"])
    scores = {
        m["config"]["column"]: float(m["value"])
        for m in metrics[1:]
        if m["config"].get("type", "").endswith("ValueDrift")
    }
    return share, scores, snapshot


def check(
    symbol: str,
    reference: Rows,
    current: Rows,
    preferred: Sequence[str],
    drift_share: float,
) -> tuple[DriftResult, Any]:
    """Drift on a few columns, quality on every data column; returns the result and the
    Evidently snapshot (for the HTML report: Evidently's own verdicts use its fixed
    threshold; the result's are :func:`drift_decision`'s)."""
    ref, cur = reference.frame, current.frame
    data = [c for c in cur.columns if c not in NOT_DATA]
    cols = drift_columns(ref, cur, preferred)
    decided: dict[str, tuple[float, float, bool]] = {}
    if cols:
        _, _, snapshot = evidently_drift(ref, cur, cols, drift_share)
        decided = drift_decision(ref, cur, cols)
        share = sum(d for _, _, d in decided.values()) / len(cols)
    else:
        share, snapshot = math.nan, None
    checks = []
    for c, (missing, ref_missing, constant, outside) in quality(ref, cur, data).items():
        score, threshold, hit = decided.get(c, (math.nan, math.nan, None))
        drifted = None if c not in decided else hit
        checks.append(
            ColumnCheck(c, score, drifted, missing, ref_missing, constant, outside, threshold)
        )
    drifted_cols = tuple(c.column for c in checks if c.drifted)
    report = snapshot.dict() if snapshot is not None else {}
    return DriftResult(symbol, reference, current, tuple(checks), share, drifted_cols, report), (
        snapshot
    )


def newly_missing(result: DriftResult, limit: float) -> list[ColumnCheck]:
    """Columns missing more often than ``limit`` where the reference was not: a column
    the feature set never fills (candle columns in a book set) is no news."""
    return [
        c for c in result.columns if c.missing_share > limit and not (c.ref_missing_share > limit)
    ]


# -- reports -----------------------------------------------------------------------------------


def write_reports(
    result: DriftResult, snapshot: Any, reports_dir: Path, now_ns: int, keep: int = KEEP_REPORTS
) -> tuple[Path | None, Path]:
    """The Evidently HTML and a JSON summary (with Evidently's metrics) under
    ``reports_dir``; keeps the newest ``keep`` of each per symbol."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    stamp = (
        time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns / 1e9)) + f"{now_ns // 10**6 % 1000:03d}Z"
    )
    base = reports_dir / f"drift_{result.symbol}_{stamp}"
    html = None
    if snapshot is not None:
        html = base.with_suffix(".html")
        snapshot.save_html(str(html))
    summary = {
        "symbol": result.symbol,
        "computed_at": now_ns,
        "reference": {
            "what": result.reference.label,
            "from": result.reference.start,
            "to": result.reference.end,
            "rows": len(result.reference.frame),
        },
        "current": {
            "what": result.current.label,
            "from": result.current.start,
            "to": result.current.end,
            "rows": len(result.current.frame),
        },
        "method": (
            f"{METHOD} on standardized values >= max({THRESHOLD}, the reference's "
            f"block-bootstrap {1 - ALPHA:g} quantile), with >= {MIN_EFFECTIVE} effective rows"
        ),
        "drift_share": None if math.isnan(result.share) else result.share,
        "drifted": list(result.drifted),
        "columns": [
            {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in c._asdict().items()
            }
            for c in result.columns
        ],
        "evidently": result.report,
    }
    js = base.with_suffix(".json")
    js.write_text(json.dumps(summary, indent=1, default=str))
    for suffix in (".html", ".json"):
        old = sorted(reports_dir.glob(f"drift_{result.symbol}_*{suffix}"))[:-keep]
        for f in old:
            f.unlink(missing_ok=True)
    return html, js
