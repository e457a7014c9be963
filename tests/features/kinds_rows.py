"""Base rows for feature-kind tests, built as ``kinds/base.py`` documents them, and a runner.

Importing this module registers the kinds under test (``kinds/__init__`` may not yet).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ccf.features import spec
from ccf.features.kinds import (  # noqa: F401  (imported to register their kinds)
    book,
    candles,
    news,
    ofi,
    resample,
    trades,
    transform,
    volatility,
    vwap,
)
from ccf.features.kinds.base import Row, build

NAN = math.nan
NS = 1_000_000_000
DEPTH = 5
KINDS = (
    "m_p get relative resample ema vwap_ask vwap_bid vwap_mid spread rel_spread micro_price "
    "depth_imbalance ofi trade_flow_imbalance realized_vol time_since_last_trade "
    "candle_return candle_range volume_zscore news_count news_recency"
    " basis mid_deviation lead_lag_return"
).split()
TRADES = ("buy_count", "buy_qty", "buy_notional", "sell_count", "sell_qty", "sell_notional")


def base_columns(depth: int = DEPTH) -> tuple[str, ...]:
    """The engine's own base columns: kinds are tested against what they will get."""
    return spec.base_columns(depth)


def make_row(
    t: int = 0,
    *,
    asks: Iterable[tuple[float, float]] = (),
    bids: Iterable[tuple[float, float]] = (),
    depth: int = DEPTH,
    **fields: float,
) -> Row:
    """Bucket ``t`` (1 s buckets): book levels from ``asks``/``bids`` [(price, qty)], the
    rest NaN; no trades, no news, no candle unless ``fields`` says otherwise."""
    row: Row = dict.fromkeys(base_columns(depth), NAN)
    row.update(ts=t * NS, ts_end=(t + 1) * NS, book_updates=1.0, carried=0.0, gap=0.0)
    row.update(dict.fromkeys(TRADES, 0.0), news_count=0.0)
    for side, levels in (("a", asks), ("b", bids)):
        for i, (p, q) in enumerate(levels):
            row[f"{side}_p_{i}"], row[f"{side}_q_{i}"] = p, q
    row.update(fields)
    return row


def run(specs: Sequence[Mapping[str, Any]], rows: Iterable[Row], depth: int = DEPTH) -> list[Row]:
    """Every row after the features of ``specs`` stepped over it, in order (one symbol)."""
    _, make = build(specs, base_columns(depth))
    features = make()
    out = []
    for row in rows:
        row = dict(row)
        for feature in features:
            feature.step(row)
        out.append(row)
    return out


def column(rows: Sequence[Row], name: str) -> list[float]:
    return [r[name] for r in rows]


def random_rows(n: int, seed: int, depth: int = DEPTH) -> list[Row]:
    """A rough but adversarial stream: a tick-grid book (ties exercise OFI's branches),
    no book at first, carried and gap buckets, missing deep levels, crossed books, quiet
    buckets without trades, missing candles, and near-constant large volumes."""
    rng = random.Random(seed)
    mid, close, last_trade = 10_000, 100.0, NAN
    rows: list[Row] = []
    for t in range(n):
        row = make_row(t, depth=depth)
        if t < 2:
            pass  # no book yet: every book level NaN
        elif rng.random() < 0.1 and rows:
            for c in row:
                if c[:2] in ("a_", "b_"):
                    row[c] = rows[-1][c]
            row.update(carried=1.0, book_updates=0.0)
        else:
            mid += rng.randint(-2, 2)
            half = rng.choice((1, 1, 2)) * (-1 if rng.random() < 0.03 else 1)  # crossed
            shown = depth - (rng.randint(1, 2) if rng.random() < 0.1 else 0)
            for i in range(shown):
                row[f"a_p_{i}"] = (mid + half + 2 * i) / 100
                row[f"b_p_{i}"] = (mid - half - 2 * i) / 100
                row[f"a_q_{i}"] = rng.choice((0.5, 1.0, rng.uniform(0.01, 5)))
                row[f"b_q_{i}"] = rng.choice((0.5, 1.0, rng.uniform(0.01, 5)))
        row["gap"] = 1.0 if rng.random() < 0.05 else 0.0
        if rng.random() < 0.6:
            row["buy_qty"] = rng.choice((0.0, rng.uniform(0, 3)))
            row["sell_qty"] = rng.choice((0.0, rng.uniform(0, 3)))
            last_trade = row["ts"] + rng.randint(0, NS - 1)
        row["last_trade_ts"] = last_trade
        row["news_count"] = float(rng.choice((0, 0, 0, 0, 0, 1, 2)))
        if rng.random() > 0.03:
            open_ = close
            close *= math.exp(rng.gauss(0, 0.01))
            row.update(
                open=open_,
                close=close,
                high=max(open_, close) * (1 + rng.uniform(0, 0.01)),
                low=min(open_, close) * (1 - rng.uniform(0, 0.01)),
                volume=1e6 + rng.uniform(0, 10),
            )
        rows.append(row)
    return rows
