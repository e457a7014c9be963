"""Stateful kinds, streamed one bucket at a time, equal a straightforward batch computation.

The batch side is plain Python over the whole column (no numpy in the venv): slice the
window, drop missing values, aggregate with ``math.fsum`` (or exact fractions). Where
the arithmetic is the same the results are bit-equal; elsewhere within 1e-12 relative.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from fractions import Fraction

import pytest

from ccf.features.kinds.base import build
from ccf.features.kinds.params import label
from tests.features.kinds_rows import NAN, NS, base_columns, column, random_rows, run

N = 400
ROWS = random_rows(N, seed=7)


def bit_equal(got: Sequence[float], want: Sequence[float]) -> None:
    assert len(got) == len(want)
    for t, (g, w) in enumerate(zip(got, want, strict=True)):
        assert (math.isnan(g) and math.isnan(w)) or g == w, f"bucket {t}: {g!r} != {w!r}"


def close(got: Sequence[float], want: Sequence[float], rel: float = 1e-12) -> None:
    assert len(got) == len(want)
    for t, (g, w) in enumerate(zip(got, want, strict=True)):
        ok = (math.isnan(g) and math.isnan(w)) or abs(g - w) <= rel * max(abs(g), abs(w))
        assert ok, f"bucket {t}: {g!r} != {w!r}"


def rolling(
    xs: Sequence[float], n: int, agg: Callable[[list[float]], float], min_periods: int | None = None
) -> list[float]:
    """pandas' rolling(n, min_periods) by brute force: NaN (and ±inf) are missing."""
    need = n if min_periods is None else min_periods
    out = []
    for t in range(len(xs)):
        present = [x for x in xs[max(0, t - n + 1) : t + 1] if math.isfinite(x)]
        out.append(agg(present) if len(present) >= need else NAN)
    return out


def lag(xs: Sequence[float], k: int) -> list[float]:
    return [xs[t - k] if t >= k else NAN for t in range(len(xs))]


def log_ratio(x: float, y: float) -> float:
    return math.log(x / y) if y and x / y > 0 else NAN


def ratio(x: float, y: float) -> float:
    return x / y if y and not math.isnan(y) else NAN


def mids(rows: Sequence[dict]) -> list[float]:
    return [(r["a_p_0"] + r["b_p_0"]) / 2 for r in rows]


def test_the_random_stream_exercises_the_edge_cases() -> None:
    assert sum(r["carried"] for r in ROWS) > 10 and sum(r["gap"] for r in ROWS) > 5
    assert sum(r["a_p_0"] < r["b_p_0"] for r in ROWS) > 3  # crossed books
    assert sum(math.isnan(r["a_p_4"]) for r in ROWS) > 10  # missing levels
    assert sum(math.isnan(r["close"]) for r in ROWS) > 3  # missing bars
    assert sum(r["buy_qty"] + r["sell_qty"] == 0 for r in ROWS) > 50  # quiet buckets


@pytest.mark.parametrize("shift", [0, 1, 3])
def test_get(shift: int) -> None:
    out = run([{"kind": "get", "columns": "b_q_*", "shift": shift}], ROWS)
    for i in range(5):
        suffix = f"_{shift}" if shift else ""
        bit_equal(column(out, f"get_b_q_{i}{suffix}"), lag(column(ROWS, f"b_q_{i}"), shift))


@pytest.mark.parametrize("op", ["rat", "lograt"])
@pytest.mark.parametrize("shift", [1, 2, 17])
def test_relative_to_own_past_and_a_lagged_reference(op: str, shift: int) -> None:
    fn = ratio if op == "rat" else log_ratio
    specs = [
        {"kind": "m_p"},
        {"kind": "relative", "columns": ["m_p", "a_q_*"], "op": op, "shift": shift},
        {"kind": "relative", "columns": "a_p_*", "op": op, "reference": "m_p", "shift": shift},
    ]
    out = run(specs, ROWS)
    m = mids(ROWS)
    bit_equal(
        column(out, f"{op}_m_p_{shift}"), [fn(x, y) for x, y in zip(m, lag(m, shift), strict=True)]
    )
    for i in range(5):
        q = column(ROWS, f"a_q_{i}")
        bit_equal(
            column(out, f"{op}_a_q_{i}_{shift}"),
            [fn(x, y) for x, y in zip(q, lag(q, shift), strict=True)],
        )
        p = column(ROWS, f"a_p_{i}")
        want = [fn(x, y) for x, y in zip(p, lag(m, shift), strict=True)]
        bit_equal(column(out, f"{op}_a_p_{i}_m_p_{shift}"), want)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.05])
def test_ema_equals_its_closed_form(alpha: float) -> None:
    out = run([{"kind": "ema", "columns": ["close", "a_q_4"], "alpha": alpha}], ROWS)
    for col in ("close", "a_q_4"):
        want = []
        for t in range(N):
            seen = [x for x in column(ROWS, col)[: t + 1] if math.isfinite(x)]
            k = len(seen) - 1  # s = (1-a)^k·x0 + Σ_j a·(1-a)^(k-j)·x_j
            terms = [(1 - alpha) ** k * seen[0]] if seen else []
            terms += [alpha * (1 - alpha) ** (k - j) * seen[j] for j in range(1, k + 1)]
            want.append(math.fsum(terms) if seen else NAN)
        close(column(out, f"ema_{col}_{label(alpha)}"), want)


AGGS: dict[str, Callable[[list[float]], float]] = {
    "sum": math.fsum,
    "mean": lambda w: math.fsum(w) / len(w),
    "min": min,
    "max": max,
    "last": lambda w: w[-1],
}


@pytest.mark.parametrize("agg", list(AGGS))
@pytest.mark.parametrize("min_periods", [1, 3])
def test_resample(agg: str, min_periods: int) -> None:
    windows = [3, 17, 60]
    spec = {"kind": "resample", "columns": ["close", "a_q_4"], "agg": agg, "windows": windows}
    out = run([dict(spec, min_periods=min_periods)], ROWS)
    for col in ("close", "a_q_4"):
        for w in windows:
            want = rolling(column(ROWS, col), w, AGGS[agg], min_periods)
            bit_equal(column(out, f"{agg}_{col}_{w}"), want)


def ofi_batch(rows: Sequence[dict], levels: int) -> list[float]:
    """e_n as the paper writes it, with indicators as 0/1 factors, summed over levels."""
    out = [NAN]
    for prev, now in zip(rows, rows[1:], strict=False):
        e = 0.0
        for m in range(levels):
            pb0, qb0, pa0, qa0 = (prev[f"{c}_{m}"] for c in ("b_p", "b_q", "a_p", "a_q"))
            pb, qb, pa, qa = (now[f"{c}_{m}"] for c in ("b_p", "b_q", "a_p", "a_q"))
            if any(math.isnan(v) for v in (pb0, qb0, pa0, qa0, pb, qb, pa, qa)):
                e += NAN
                continue
            e += (pb >= pb0) * qb - (pb <= pb0) * qb0 - (pa <= pa0) * qa + (pa >= pa0) * qa0
        out.append(e)
    return out


@pytest.mark.parametrize("levels", [1, 3])
def test_ofi(levels: int) -> None:
    windows = [1, 2, 30]
    out = run([{"kind": "ofi", "levels": levels, "windows": windows}], ROWS)
    e = ofi_batch(ROWS, levels)
    prefix = "ofi" if levels == 1 else f"ofi_l{levels}"
    for w in windows:
        bit_equal(column(out, f"{prefix}_{w}"), rolling(e, w, math.fsum))
    assert sum(math.isfinite(x) for x in column(out, f"{prefix}_30")) > 50  # not all NaN


def test_trade_flow_imbalance() -> None:
    windows = [1, 5, 50]
    out = run([{"kind": "trade_flow_imbalance", "windows": windows}], ROWS)
    buys, sells = column(ROWS, "buy_qty"), column(ROWS, "sell_qty")
    for w in windows:
        b, s = rolling(buys, w, math.fsum), rolling(sells, w, math.fsum)
        bit_equal(
            column(out, f"trade_flow_imbalance_{w}"),
            [ratio(x - y, x + y) for x, y in zip(b, s, strict=True)],
        )


def test_realized_vol() -> None:
    windows = [1, 10, 100]
    out = run([{"kind": "m_p"}, {"kind": "realized_vol", "windows": windows}], ROWS)
    m = mids(ROWS)
    squares = [r * r for r in (log_ratio(x, y) for x, y in zip(m, lag(m, 1), strict=True))]
    for w in windows:
        want = rolling(squares, w, lambda v: math.sqrt(math.fsum(v)))
        bit_equal(column(out, f"realized_vol_m_p_{w}"), want)
    assert sum(math.isfinite(x) for x in column(out, "realized_vol_m_p_100")) > 10


def test_candle_return_and_range() -> None:
    periods = [1, 2, 24]
    out = run([{"kind": "candle_return", "periods": periods}, {"kind": "candle_range"}], ROWS)
    closes = column(ROWS, "close")
    for p in periods:
        bit_equal(
            column(out, f"candle_return_{p}"),
            [log_ratio(x, y) for x, y in zip(closes, lag(closes, p), strict=True)],
        )
    want = [ratio(r["high"] - r["low"], r["close"]) for r in ROWS]
    bit_equal(column(out, "candle_range"), want)


def zscore_exact(window: list[float]) -> float:
    """(x - mean) / std with the variance computed in exact fractions, then rounded once."""
    k, x = len(window), window[-1]
    exact = k * sum(Fraction(v) ** 2 for v in window) - sum(Fraction(v) for v in window) ** 2
    std = math.sqrt(float(exact) / (k * (k - 1)))
    return (x - math.fsum(window) / k) / std if std else NAN


@pytest.mark.parametrize("large", [False, True])
def test_volume_zscore(large: bool) -> None:
    """Volumes ~1e6 with a spread of ~3 (large) stress cancellation in Σx² − (Σx)²/n."""
    rows = ROWS if large else [dict(r, volume=r["volume"] - 1e6) for r in ROWS]
    windows = [2, 20, 150]
    out = run([{"kind": "volume_zscore", "windows": windows}], rows)
    volumes = column(rows, "volume")
    for w in windows:
        got = column(out, f"volume_zscore_{w}")
        bit_equal(got, rolling(volumes, w, zscore_exact))
        simple = rolling(volumes, w, lambda v: (v[-1] - statistics.fmean(v)) / statistics.stdev(v))
        close(got, simple, rel=1e-9)  # statistics' own float rounding of mean and stdev


def test_volume_zscore_of_a_long_flat_stretch_is_nan_not_noise() -> None:
    rows = [dict(r, volume=0.1 if 100 <= t < 200 else r["volume"]) for t, r in enumerate(ROWS)]
    got = column(run([{"kind": "volume_zscore", "window": 20}], rows), "volume_zscore_20")
    assert all(math.isnan(x) for x in got[119:200])  # a window of twenty 0.1s: std is exactly 0


def test_news_count_and_recency() -> None:
    windows = [1, 7, 120]
    out = run([{"kind": "news_count", "windows": windows}, {"kind": "news_recency"}], ROWS)
    counts = column(ROWS, "news_count")
    for w in windows:
        bit_equal(column(out, f"news_count_{w}"), rolling(counts, w, math.fsum))
    want = []
    for t in range(N):
        with_news = [j for j in range(t + 1) if counts[j] > 0]
        want.append((ROWS[t]["ts_end"] - ROWS[with_news[-1]]["ts_end"]) / NS if with_news else NAN)
    bit_equal(column(out, "news_recency"), want)


def test_time_since_last_trade() -> None:
    out = run([{"kind": "time_since_last_trade"}], ROWS)
    want = [(r["ts_end"] - r["last_trade_ts"]) / NS for r in ROWS]
    bit_equal(column(out, "time_since_last_trade"), want)


def test_two_symbols_do_not_share_state() -> None:
    """``make()`` gives each symbol fresh state: interleaving two streams changes nothing."""
    specs = [
        {"kind": "m_p"},
        {"kind": "ofi", "window": 5},
        {"kind": "ema", "columns": "m_p", "alpha": 0.3},
    ]
    _, make = build(specs, base_columns())
    a, b = make(), make()
    other = random_rows(N, seed=8)
    mixed = []
    for x, y in zip(ROWS, other, strict=True):
        for feats, row in ((a, dict(x)), (b, dict(y))):
            for f in feats:
                f.step(row)
            if feats is a:
                mixed.append(row)
    alone = run(specs, ROWS)
    for name in ("ofi_5", "ema_m_p_0p3"):
        bit_equal(column(mixed, name), column(alone, name))
