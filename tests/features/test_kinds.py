"""Feature kinds on small hand-made rows: every expected number worked out by hand."""

from __future__ import annotations

import math
import re

import pytest
import yaml

from ccf.features.kinds.base import REGISTRY, build
from tests.features.kinds_rows import KINDS, NAN, NS, base_columns, column, make_row, run

ASK, BID = [(101.0, 1.0), (102.0, 3.0)], [(99.0, 3.0), (98.0, 2.0)]
CROSSED = dict(asks=[(99.0, 1.0)], bids=[(101.0, 3.0)])


def same(got: list[float], want: list[float], rel: float = 1e-12) -> bool:
    """Equal lists, NaN equal to NaN, floats to ``rel``."""
    return len(got) == len(want) and all(
        (math.isnan(g) and math.isnan(w)) or g == pytest.approx(w, rel=rel, abs=1e-15)
        for g, w in zip(got, want, strict=True)
    )


def one(spec: dict, **row) -> dict:
    """The row after ``{kind: m_p}`` and ``spec`` ran on one bucket."""
    return run([{"kind": "m_p"}, spec], [make_row(**row)])[0]


# --- top of book --------------------------------------------------------------------------


def test_mid_spread_micro_price_on_a_normal_book() -> None:
    r = run(
        [{"kind": k} for k in ("m_p", "spread", "rel_spread", "micro_price")],
        [make_row(asks=ASK, bids=BID)],
    )[0]
    assert r["m_p"] == 100.0  # (101 + 99) / 2
    assert r["spread"] == 2.0  # 101 - 99
    assert r["rel_spread"] == 0.02  # 2 / 100
    assert r["micro_price"] == 100.5  # (99·1 + 101·3) / (1 + 3) = 402 / 4


def test_a_crossed_book_passes_through() -> None:
    r = run(
        [{"kind": k} for k in ("m_p", "spread", "rel_spread", "micro_price")], [make_row(**CROSSED)]
    )[0]
    assert r["m_p"] == 100.0  # (99 + 101) / 2
    assert r["spread"] == -2.0  # 99 - 101: negative, not an error
    assert r["rel_spread"] == -0.02
    assert r["micro_price"] == 99.5  # (101·1 + 99·3) / 4 = 398 / 4


def test_no_book_gives_nan_and_zero_sizes_give_nan() -> None:
    kinds = [{"kind": k} for k in ("m_p", "spread", "rel_spread", "micro_price")]
    kinds.append({"kind": "depth_imbalance", "levels": 2})
    empty = run(kinds, [make_row()])[0]  # before the first book: every level NaN
    names = ("m_p", "spread", "rel_spread", "micro_price", "depth_imbalance_0")
    assert all(math.isnan(empty[c]) for c in (*names, "depth_imbalance_cum_2"))
    zero = run(kinds, [make_row(asks=[(101.0, 0.0)], bids=[(99.0, 0.0)])])[0]
    assert math.isnan(zero["micro_price"])  # 0 / 0
    assert math.isnan(zero["depth_imbalance_0"])


def test_depth_imbalance_per_level_and_cumulative() -> None:
    r = one(
        {"kind": "depth_imbalance", "levels": 2}, asks=[(101, 1), (102, 1)], bids=[(99, 3), (98, 1)]
    )
    assert r["depth_imbalance_0"] == 0.5  # (3 - 1) / (3 + 1)
    assert r["depth_imbalance_1"] == 0.0  # (1 - 1) / 2
    assert r["depth_imbalance_cum_2"] == pytest.approx(1 / 3, rel=1e-15)  # (4 - 2) / (4 + 2)
    thin = one({"kind": "depth_imbalance", "levels": 2}, asks=[(101, 1)], bids=[(99, 3)])
    assert thin["depth_imbalance_0"] == 0.5
    assert math.isnan(thin["depth_imbalance_1"])  # level 1 missing
    assert math.isnan(thin["depth_imbalance_cum_2"])  # and so is the sum over it
    assert "depth_imbalance_cum_1" not in one({"kind": "depth_imbalance"}, asks=ASK, bids=BID)


# --- VWAP ---------------------------------------------------------------------------------


def test_vwap_to_a_depth() -> None:
    r = run(
        [
            {"kind": "vwap_ask", "depth": 2},
            {"kind": "vwap_bid", "depth": 2},
            {"kind": "vwap_mid", "depth": 2},
        ],
        [make_row(asks=[(100.0, 1.0), (102.0, 3.0)], bids=[(99.0, 1.0), (98.0, 2.0)])],
    )[0]
    assert r["vwap_ask_2"] == 101.5  # (100·1 + 102·3) / 4 = 406 / 4
    assert r["vwap_bid_2"] == pytest.approx(295 / 3, rel=1e-15)  # (99·1 + 98·2) / 3
    assert r["vwap_mid_2"] == pytest.approx((101.5 + 295 / 3) / 2, rel=1e-15)
    thin = one({"kind": "vwap_ask", "depth": 2}, asks=[(100.0, 1.0)], bids=BID)
    assert math.isnan(thin["vwap_ask_2"])  # level 1 missing: not a silent depth-1 VWAP


def test_vwap_to_a_notional_takes_the_last_level_partly() -> None:
    asks = [(100.0, 1.0), (102.0, 3.0)]
    spec = {"kind": "vwap_ask", "notional": 202}
    assert one(spec, asks=asks)["vwap_ask_n202"] == 101.0  # 100 for 1, then 102 for 1: 202 / 2
    half = one({"kind": "vwap_ask", "notional": 50}, asks=asks)
    assert half["vwap_ask_n50"] == 100.0  # half of the first level: 50 / 0.5
    spec = {"kind": "vwap_ask", "notional": 406.5}  # the book holds 100 + 306 = 406
    assert math.isnan(one(spec, asks=asks)["vwap_ask_n406p5"])  # runs out: cannot fill
    gap = one({"kind": "vwap_ask", "notional": 150}, asks=[(100.0, 1.0), (NAN, NAN), (103.0, 9.0)])
    assert math.isnan(gap["vwap_ask_n150"])  # a missing level stops the walk
    bid = one({"kind": "vwap_bid", "notional": 197}, bids=[(99.0, 1.0), (98.0, 2.0)])
    assert bid["vwap_bid_n197"] == 98.5  # 99 for 1, then 98 for 1: 197 / 2


# --- order-flow imbalance -----------------------------------------------------------------


def test_ofi_between_consecutive_books() -> None:
    books = [
        dict(bids=[(99.0, 2.0)], asks=[(101.0, 3.0)]),
        dict(bids=[(99.0, 5.0)], asks=[(100.0, 1.0)]),  # +5 - 2 (bid same) - 1 (ask down) = 2
        dict(bids=[(100.0, 4.0)], asks=[(100.0, 1.0)]),  # bid up: +4; ask same: -1 + 1 -> 4
        dict(bids=[(99.0, 1.0)], asks=[(101.0, 2.0)]),  # bid down: -4; ask up: +1 -> -3
    ]
    rows = [make_row(t, **b) for t, b in enumerate(books)]
    rows.append(dict(rows[-1], ts=4 * NS, ts_end=5 * NS, carried=1.0, book_updates=0.0))
    out = run([{"kind": "ofi", "windows": [1, 2]}], rows)
    assert same(column(out, "ofi_1"), [NAN, 2.0, 4.0, -3.0, 0.0])  # carried: 5-5 ... = 0
    assert same(column(out, "ofi_2"), [NAN, NAN, 6.0, 1.0, -3.0])  # 2+4, 4-3, -3+0


def test_ofi_over_levels_sums_each_level() -> None:
    rows = [
        make_row(0, bids=[(99.0, 2.0), (98.0, 1.0)], asks=[(101.0, 3.0), (102.0, 1.0)]),
        make_row(1, bids=[(99.0, 5.0), (98.0, 4.0)], asks=[(101.0, 3.0), (102.0, 6.0)]),
    ]
    out = run([{"kind": "ofi", "levels": 2}], rows)
    # level 0: 5 - 2 - 3 + 3 = 3; level 1: 4 - 1 - 6 + 1 = -2; total 1
    assert same(column(out, "ofi_l2_1"), [NAN, 1.0])
    rows[1]["a_p_1"] = NAN  # a missing level makes the multi-level OFI unknown
    assert math.isnan(run([{"kind": "ofi", "levels": 2}], rows)[1]["ofi_l2_1"])


# --- trades -------------------------------------------------------------------------------


def test_trade_flow_imbalance_over_windows() -> None:
    flows = [(3.0, 0.0), (1.0, 2.0), (0.0, 0.0), (0.0, 0.0)]
    rows = [make_row(t, buy_qty=b, sell_qty=s) for t, (b, s) in enumerate(flows)]
    out = run([{"kind": "trade_flow_imbalance", "windows": [1, 2]}], rows)
    # window 1: 3/3, (1-2)/3, no trades -> NaN, NaN
    assert same(column(out, "trade_flow_imbalance_1"), [1.0, -1 / 3, NAN, NAN])
    # window 2: warming up, (4-2)/6, (1-2)/3, nothing in the window -> NaN
    assert same(column(out, "trade_flow_imbalance_2"), [NAN, 1 / 3, -1 / 3, NAN])


def test_time_since_last_trade() -> None:
    rows = [make_row(0), make_row(9, last_trade_ts=7_500_000_000)]
    out = run([{"kind": "time_since_last_trade"}], rows)
    assert same(column(out, "time_since_last_trade"), [NAN, 2.5])  # (10e9 - 7.5e9) / 1e9


# --- candles ------------------------------------------------------------------------------


def test_candle_return_over_periods_and_a_missing_bar() -> None:
    closes = [100.0, 110.0, 121.0, NAN, 121.0]
    rows = [make_row(t, close=c) for t, c in enumerate(closes)]
    out = run([{"kind": "candle_return", "periods": [1, 2]}], rows)
    lr = math.log(1.1)  # 110/100 and 121/110
    assert same(column(out, "candle_return_1"), [NAN, lr, lr, NAN, NAN])
    assert same(column(out, "candle_return_2"), [NAN, NAN, math.log(1.21), NAN, 0.0])


def test_candle_range() -> None:
    r = one({"kind": "candle_range"}, high=105.0, low=100.0, close=104.0)
    assert r["candle_range"] == 5 / 104  # (105 - 100) / 104 = 0.048077
    assert r["candle_log_range"] == math.log(1.05)  # log(105 / 100)
    assert math.isnan(one({"kind": "candle_range"})["candle_range"])  # no candle


def test_volume_zscore() -> None:
    rows = [make_row(t, volume=v) for t, v in enumerate([1.0, 2.0, 6.0, 6.0, 6.0, 6.0])]
    out = run([{"kind": "volume_zscore", "window": 3}], rows)
    # [1, 2, 6]: mean 3, var ((-2)² + (-1)² + 3²) / 2 = 7 -> (6 - 3) / sqrt 7
    # [2, 6, 6]: mean 14/3, var (64/9 + 16/9 + 16/9) / 2 = 16/3 -> (4/3) / sqrt(16/3)
    # [6, 6, 6]: std exactly 0 -> NaN (not a huge number from rounding noise)
    want = [NAN, NAN, 3 / math.sqrt(7), (4 / 3) / math.sqrt(16 / 3), NAN, NAN]
    assert same(column(out, "volume_zscore_3"), want)


# --- news ---------------------------------------------------------------------------------


def test_news_count_and_recency() -> None:
    rows = [make_row(t, news_count=n) for t, n in enumerate([0.0, 2.0, 1.0, 0.0, 0.0])]
    out = run([{"kind": "news_count", "windows": [2]}, {"kind": "news_recency"}], rows)
    assert same(column(out, "news_count_2"), [NAN, 2.0, 3.0, 1.0, 0.0])  # 0+2, 2+1, 1+0, 0+0
    assert same(column(out, "news_recency"), [NAN, 0.0, 0.0, 1.0, 2.0])  # last news ends at 3 s


# --- column transforms --------------------------------------------------------------------


def test_get_selects_and_lags() -> None:
    rows = [make_row(t, asks=[(p, 1.0)], bids=BID) for t, p in enumerate([100.0, 101.0, 103.0])]
    out = run(
        [{"kind": "get", "columns": "a_p_*"}, {"kind": "get", "columns": ["a_p_0"], "shift": 1}],
        rows,
    )
    assert same(column(out, "get_a_p_0"), [100.0, 101.0, 103.0])
    assert same(column(out, "get_a_p_1"), [NAN] * 3)  # missing level stays NaN
    assert same(column(out, "get_a_p_0_1"), [NAN, 100.0, 101.0])


def test_relative_against_a_reference_column() -> None:
    r = one(
        {"kind": "relative", "columns": "a_p_*", "op": "lograt", "reference": "m_p"},
        asks=ASK,
        bids=BID,
    )
    assert r["lograt_a_p_0_m_p"] == math.log(1.01)  # 101 / 100
    assert r["lograt_a_p_1_m_p"] == math.log(1.02)  # 102 / 100
    assert math.isnan(r["lograt_a_p_2_m_p"])  # missing level
    own = one({"kind": "relative", "columns": "a_p_*", "op": "rat", "reference": "a_p_0"}, asks=ASK)
    assert "rat_a_p_0_a_p_0" not in own  # against itself: always 1, skipped
    assert own["rat_a_p_1_a_p_0"] == 102 / 101


def test_relative_against_the_past_and_a_carried_bucket() -> None:
    books = [(101.0, 99.0), (111.0, 109.0), (108.0, 90.0)]  # mids 100, 110, 99
    rows = [make_row(t, asks=[(a, 1.0)], bids=[(b, 1.0)]) for t, (a, b) in enumerate(books)]
    rows.append(dict(rows[-1], ts=3 * NS, ts_end=4 * NS, carried=1.0))
    specs = [
        {"kind": "m_p"},
        {"kind": "relative", "columns": "m_p", "op": "rat", "shift": 1},
        {"kind": "relative", "columns": "m_p", "shift": 2},  # op defaults to lograt
        {"kind": "relative", "columns": "a_p_0", "op": "rat", "reference": "m_p", "shift": 1},
    ]
    out = run(specs, rows)
    assert same(column(out, "rat_m_p_1"), [NAN, 1.1, 0.9, 1.0])  # carried: the same book
    assert same(column(out, "lograt_m_p_2"), [NAN, NAN, math.log(0.99), math.log(0.9)])
    assert same(column(out, "rat_a_p_0_m_p_1"), [NAN, 1.11, 108 / 110, 108 / 99])


def test_relative_undefined_ratios_are_nan() -> None:
    rows = [make_row(0, asks=[(101.0, 0.0)], bids=BID), make_row(1, asks=[(101.0, 2.0)], bids=BID)]
    out = run([{"kind": "relative", "columns": "a_q_0", "shift": 1}], rows)
    assert same(column(out, "lograt_a_q_0_1"), [NAN, NAN])  # log(2 / 0): NaN, not inf or an error
    specs = [{"kind": "spread"}, {"kind": "relative", "columns": "b_p_0", "reference": "spread"}]
    crossed = run(specs, [make_row(**CROSSED)])[0]
    assert crossed["spread"] == -2.0
    assert math.isnan(crossed["lograt_b_p_0_spread"])  # log(101 / -2): NaN, not an error


def test_ema_seeds_on_the_first_value_and_skips_nan() -> None:
    rows = [make_row(t, close=c) for t, c in enumerate([NAN, 10.0, NAN, 20.0, 30.0])]
    out = run([{"kind": "ema", "columns": "close", "alpha": 0.5}], rows)
    # NaN until seeded; 10; NaN leaves it; 10 + 0.5·(20 - 10) = 15; 15 + 0.5·15 = 22.5
    assert same(column(out, "ema_close_0p5"), [NAN, 10.0, 10.0, 15.0, 22.5])


@pytest.mark.parametrize(
    ("agg", "want"),
    [
        ("mean", [1.0, 1.5, 1.5, 4.0, 6.0]),  # (2 + 6) / 2, then 6 / 1: NaNs skipped
        ("sum", [1.0, 3.0, 3.0, 8.0, 6.0]),
        ("min", [1.0, 1.0, 1.0, 2.0, 6.0]),
        ("max", [1.0, 2.0, 2.0, 6.0, 6.0]),
        ("last", [1.0, 2.0, 2.0, 6.0, 6.0]),  # the latest present value in the window
    ],
)
def test_resample_aggregates_the_last_buckets(agg: str, want: list[float]) -> None:
    rows = [make_row(t, close=c) for t, c in enumerate([1.0, 2.0, NAN, 6.0, NAN])]
    out = run([{"kind": "resample", "columns": "close", "agg": agg, "window": 3}], rows)
    assert same(column(out, f"{agg}_close_3"), want)
    strict = run(
        [{"kind": "resample", "columns": "close", "agg": agg, "window": 3, "min_periods": 3}], rows
    )
    assert same(column(strict, f"{agg}_close_3"), [NAN] * 5)  # never 3 present values in a row
    rows.append(make_row(5, close=NAN))
    assert math.isnan(
        run([{"kind": "resample", "columns": "close", "agg": agg, "window": 2}], rows)[-1][
            f"{agg}_close_2"
        ]
    )


def test_realized_vol() -> None:
    books = [(101.0, 99.0), (111.0, 109.0), (100.0, 98.0), (100.0, 98.0)]  # mids 100, 110, 99, 99
    rows = [make_row(t, asks=[(a, 1.0)], bids=[(b, 1.0)]) for t, (a, b) in enumerate(books)]
    out = run([{"kind": "m_p"}, {"kind": "realized_vol", "windows": [1, 2]}], rows)
    r1, r2 = math.log(1.1), math.log(0.9)  # 110/100, 99/110; then 99/99 = 0
    assert same(column(out, "realized_vol_m_p_1"), [NAN, abs(r1), abs(r2), 0.0])
    assert same(column(out, "realized_vol_m_p_2"), [NAN, NAN, math.hypot(r1, r2), abs(r2)])


def test_gap_buckets_neither_reset_nor_crash() -> None:
    """A gap bucket is a bucket like the others: windows run through it (windows.py says why)."""
    rows = [make_row(t, buy_qty=1.0, asks=ASK, bids=BID) for t in range(3)]
    rows[1].update(gap=1.0, buy_qty=0.0, sell_qty=0.0)  # trades missed during the gap
    specs = [{"kind": "trade_flow_imbalance", "window": 2}, {"kind": "ofi"}]
    out = run(specs, rows)
    assert same(column(out, "trade_flow_imbalance_2"), [NAN, 1.0, 1.0])
    assert same(column(out, "ofi_1"), [NAN, 0.0, 0.0])  # the same book on both sides of it


# --- registry and params ------------------------------------------------------------------


def documented_example(name: str) -> dict:
    """The ``Config:`` line of a kind's docstring, as YAML."""
    doc = REGISTRY[name].__doc__ or ""
    found = re.search(r"^\s*Config: (\{.*\})$", doc, re.MULTILINE)
    assert found, f"{name}: docstring has no 'Config: {{kind: {name}, ...}}' line"
    return yaml.safe_load(found.group(1))


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_is_registered_and_its_documented_example_builds(name: str) -> None:
    spec = documented_example(name)
    assert spec["kind"] == name
    specs = [spec] if name == "m_p" else [{"kind": "m_p"}, spec]
    columns, make = build(specs, base_columns())
    added = columns[len(base_columns()) :]
    assert added and len(make()) == len(specs)
    out = run(specs, [make_row(asks=ASK, bids=BID)])[0]
    assert all(isinstance(out[c], float) for c in added)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "m_p", "depth": 1}, r"unknown param 'depth'; this kind takes: no params"),
        ({"kind": "relative", "columns": "a_p_*"}, r"reference: m_p\).*\(shift: 1\)"),
        ({"kind": "relative", "columns": "x_*", "reference": "m_p"}, r"no column matches 'x_\*'"),
        ({"kind": "relative", "columns": "a_p_*", "reference": "mp"}, r"did you mean 'm_p'"),
        ({"kind": "relative", "columns": "m_p", "reference": "m_p"}, r"only the reference"),
        (
            {"kind": "relative", "columns": "a_p_*", "op": "ratio", "shift": 1},
            r"op must be one of \['rat', 'lograt'\]",
        ),
        ({"kind": "relative", "columns": "a_p_*", "shift": -1}, r"shift must be an integer >= 0"),
        ({"kind": "get", "columns": ["a_p_0", 3]}, r"columns must be a glob or a list of globs"),
        ({"kind": "ema", "columns": "m_p"}, r"missing param 'alpha', e\.g\. alpha: 0\.1"),
        ({"kind": "ema", "columns": "m_p", "alpha": 1.5}, r"alpha must be a number in \(0, 1\]"),
        (
            {"kind": "resample", "columns": "m_p", "agg": "median", "window": 3},
            r"agg must be one of",
        ),
        (
            {"kind": "resample", "columns": "m_p", "agg": "max", "window": 3, "min_periods": 4},
            r"never ready",
        ),
        ({"kind": "resample", "columns": "m_p", "agg": "max"}, r"missing param 'windows'"),
        ({"kind": "realized_vol", "windows": [0]}, r"windows must be a list of integers >= 1"),
        ({"kind": "realized_vol", "window": 5, "windows": [5]}, r"not both"),
        (
            {"kind": "realized_vol", "windws": [5]},
            r"missing param 'windows' \(is 'windws' a typo\?\)",
        ),
        ({"kind": "realized_vol", "column": "mid", "windows": [5]}, r"needs column\(s\) \['mid'\]"),
        ({"kind": "ofi", "windows": [1, 1]}, r"lists a value twice"),
        ({"kind": "ofi", "levels": 6}, r"needs book level 5 but the book has 5 levels"),
        ({"kind": "vwap_ask"}, r"exactly one of depth .* or notional"),
        ({"kind": "vwap_bid", "depth": 2, "notional": 100}, r"exactly one of depth"),
        ({"kind": "vwap_mid", "notional": 0}, r"notional must be a number > 0"),
        ({"kind": "vwap_ask", "depth": 9}, r"needs book level 8 but the book has 5 levels"),
        ({"kind": "depth_imbalance", "levels": True}, r"levels must be an integer >= 1, got True"),
        ({"kind": "volume_zscore", "window": 1}, r"window must be an integer >= 2, got 1"),
        ({"kind": "candle_return", "periods": []}, r"periods must be a list of integers"),
        ({"kind": "news_count"}, r"missing param 'windows', e\.g\. windows: \[10, 60\]"),
        (
            {"kind": "ofi", "windows": [1], "levls": 2},
            r"unknown param 'levls' \(did you mean 'levels'\?\)",
        ),
    ],
)
def test_bad_params_say_what_is_wrong(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^features\[1\] \({spec['kind']}\): .*{message}"):
        build([{"kind": "m_p"}, spec], base_columns())


def test_a_kind_needing_m_p_says_to_add_it_first() -> None:
    with pytest.raises(ValueError, match=r"m_p comes from \{kind: m_p\}: put that entry earlier"):
        build([{"kind": "realized_vol", "windows": [5]}], base_columns())
