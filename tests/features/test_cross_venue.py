"""Cross-venue features on the overlapping real recordings: Binance spot BTCUSDT and the
USD-M perpetual BTCUSDT, 2024-08-08 23:54:15 to 23:59:59 in both.

Each venue's records go through its own feature engine, the spot rows are joined with
the perpetual's (``perp.*``), and basis, mid deviation and lead-lag returns run on the
joined rows. Checked against a hand computation from the raw book records, and live
(records interleaved as they were received, the join restarted from a checkpoint
midway) against batch (each venue whole, one after the other)."""

from __future__ import annotations

import math
from functools import cache

from ccf.config import load_settings, shared_dir
from ccf.features.cross import VenueJoin
from ccf.features.engine import FeatureEngine, FeatureRow
from ccf.features.spec import feature_set
from ccf.records import Book, Gap, Record, Trade
from ccf.sources import venues
from ccf.sources.recording import read_frames
from tests.features.helpers import bits
from tests.features.test_runner import recorded_records

S = 1_000_000_000
K = 5
CROSS = [
    {"kind": "basis", "perp": "perp.m_p", "spot": "m_p"},
    {"kind": "mid_deviation", "of": "perp.m_p", "ref": "m_p"},
    {"kind": "lead_lag_return", "col": "perp.m_p", "k": K, "name": "perp_ret_5"},
]


@cache
def perp_records() -> tuple[Record, ...]:
    feed = venues.get("binance_usdm").make_feed(("btcusdt",), ("depth@0ms", "trade"))
    out: list[Record] = []
    path = shared_dir() / "data" / "binance" / "usdm_btcusdt_20240808.jsonl.gz"
    for ts, frame in read_frames(path):
        if frame.startswith('{"lastUpdateId"'):
            feed.on_snapshot("btcusdt", frame, ts, out)
        else:
            feed.handle(frame, ts, out)
    return tuple(r for r in out if type(r) in (Book, Trade, Gap))


@cache
def spot_records() -> tuple[Record, ...]:
    return tuple(recorded_records("btcusdt"))


def fset():
    s = load_settings(["features.bucket=1s", "features.features=[{kind: m_p}]"], environ={})
    return feature_set(s.features)


def ends() -> tuple[int, int]:
    """Where each venue's history ends (the batch flush point), the same in both runs."""
    return (
        max(r.ts_event for r in spot_records()) + 1,
        max(r.ts_event for r in perp_records()) + 1,
    )


def new_join(fs) -> VenueJoin:
    return VenueJoin(fs.float_columns, fs.float_columns, "perp", CROSS, take=("m_p",))


def batch() -> list[FeatureRow]:
    fs = fset()
    spot_end, perp_end = ends()
    spot, perp = FeatureEngine(fs, ["btcusdt"]), FeatureEngine(fs, ["btcusdt"])
    spot_rows = [row for r in spot_records() for row in spot.push(r)] + spot.flush(spot_end)
    perp_rows = [row for r in perp_records() for row in perp.push(r)] + perp.flush(perp_end)
    join = new_join(fs)
    out = [j for row in spot_rows for j in join.push_target(row)]
    out += [j for row in perp_rows for j in join.push_reference(row)]
    return out + join.flush()


def live() -> list[FeatureRow]:
    """Both venues' records in receive order; the join is checkpointed and restored
    into a fresh one halfway."""
    fs = fset()
    spot_end, perp_end = ends()
    spot, perp = FeatureEngine(fs, ["btcusdt"]), FeatureEngine(fs, ["btcusdt"])
    tagged = [(r.ts_recv, 0, r) for r in spot_records()] + [
        (r.ts_recv, 1, r) for r in perp_records()
    ]
    tagged.sort(key=lambda x: (x[0], x[1]))
    join = new_join(fs)
    out: list[FeatureRow] = []
    for n, (_, venue, r) in enumerate(tagged):
        if venue == 0:
            for row in spot.push(r):
                out += join.push_target(row)
        else:
            for row in perp.push(r):
                out += join.push_reference(row)
        if n == len(tagged) // 2:
            blob = join.checkpoint()
            join = new_join(fs)
            join.restore(blob)
    for row in perp.flush(perp_end):
        out += join.push_reference(row)
    for row in spot.flush(spot_end):
        out += join.push_target(row)
    return out + join.flush()


def mids(records) -> tuple[list[int], list[float]]:
    books = [r for r in records if type(r) is Book]
    return [b.ts_event for b in books], [(b.levels[0] + b.levels[40]) / 2 for b in books]


def mid_at(times: list[int], values: list[float], end: int) -> float:
    """The mid of the last book before ``end`` (a bucket's last book), by hand."""
    import bisect

    i = bisect.bisect_left(times, end) - 1
    return values[i] if i >= 0 else math.nan


def test_cross_venue_features_equal_a_hand_computation() -> None:
    rows = batch()
    cols = new_join(fset()).columns
    at = {c: cols.index(c) for c in ("m_p", "perp.m_p", "basis", "mid_dev_bps", "perp_ret_5")}
    st, sv = mids(spot_records())
    pt, pv = mids(perp_records())
    perp_start = min(pt) // S * S  # the perpetual's first bucket
    checked = 0
    for r in rows:
        if not (perp_start <= r.ts and r.ts_end <= max(pt)):
            continue
        spot_mid, perp_mid = mid_at(st, sv, r.ts_end), mid_at(pt, pv, r.ts_end)
        assert r.values[at["m_p"]] == spot_mid
        assert r.values[at["perp.m_p"]] == perp_mid
        assert r.values[at["basis"]] == (perp_mid - spot_mid) / spot_mid
        assert r.values[at["mid_dev_bps"]] == 1e4 * (perp_mid - spot_mid) / spot_mid
        back = r.ts - K * S
        if back >= perp_start:
            then = mid_at(pt, pv, back + S)
            assert r.values[at["perp_ret_5"]] == math.log(perp_mid / then)
        checked += 1
    assert checked > 300  # 5.7 minutes of one-second buckets
    basis = [r.values[at["basis"]] for r in rows if not math.isnan(r.values[at["basis"]])]
    # the perpetual traded a few basis points below spot during the recording (-3.6 bp)
    assert -0.001 < sorted(basis)[len(basis) // 2] < -0.0001
    # outside the perpetual's recording the joined columns are NaN, not invented
    before = [r for r in rows if r.ts < perp_start]
    assert before and all(math.isnan(r.values[at["perp.m_p"]]) for r in before)


def test_live_equals_batch_bit_for_bit() -> None:
    b, lv = batch(), live()
    assert len(b) > 600
    assert bits(lv) == bits(b)
