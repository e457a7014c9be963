"""Does the perpetual help forecast spot? A spot-only model against spot + perpetual
inputs, on the same walk-forward origins of the overlapping real recordings.

Binance spot BTCUSDT and the USD-M perpetual overlap for 5.7 minutes (2024-08-08
23:54:15 to 23:59:59): about 340 one-second buckets. Each venue's records go through
its own feature engine; spot rows are joined with the perpetual's
(:class:`ccf.features.cross.VenueJoin`) and get basis, mid deviation and lead-lag
returns. Two LightGBM quantile models (``ccf.ml``, leaves of at least 20 origins) are
trained on the first 60% of the overlap, validated on the next 20%, and walked forward
over the last 20% against naive, with the same origins: inputs
``rel_spread, spot_ret_5`` versus those plus ``basis, mid_dev_bps, perp_ret_5``.
Prints pinball skill vs naive and MAE per horizon. With ~65 test origins per
horizon, differences are noise unless the Diebold-Mariano p-value says otherwise.

    python bench/eval_cross_venue.py
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from ccf.config import load_settings, shared_dir
from ccf.features.cross import VenueJoin
from ccf.features.engine import FeatureEngine
from ccf.features.spec import feature_set
from ccf.ml import dataset as ds
from ccf.ml import evaluate as ev_mod
from ccf.ml.models.base import create
from ccf.records import Book, Gap, Record, Trade
from ccf.sources import venues
from ccf.sources.recording import read_frames

CROSS = [
    {"kind": "rel_spread"},
    {"kind": "lead_lag_return", "col": "m_p", "k": 5, "name": "spot_ret_5"},
    {"kind": "basis", "perp": "perp.m_p", "spot": "m_p"},
    {"kind": "mid_deviation", "of": "perp.m_p", "ref": "m_p"},
    {"kind": "lead_lag_return", "col": "perp.m_p", "k": 5, "name": "perp_ret_5"},
]
SPOT_ONLY = ("rel_spread", "spot_ret_5")
# the default min_child_samples (200) exceeds the 169 training origins: no tree would split
SMALL = {"min_child_samples": 20, "num_leaves": 4}
WITH_PERP = (*SPOT_ONLY, "basis", "mid_dev_bps", "perp_ret_5")


def records(venue: str, streams: tuple[str, ...], files: list[str]) -> list[Record]:
    feed = venues.get(venue).make_feed(("btcusdt",), streams)
    out: list[Record] = []
    for name in files:
        for ts, frame in read_frames(shared_dir() / "data" / "binance" / name):
            if frame.startswith('{"lastUpdateId"'):
                feed.on_snapshot("btcusdt", frame, ts, out)
            else:
                feed.handle(frame, ts, out)
    return [r for r in out if type(r) in (Book, Trade, Gap)]


def joined_frame() -> pd.DataFrame:
    s = load_settings(["features.bucket=1s", "features.features=[{kind: m_p}]"], environ={})
    fs = feature_set(s.features)
    spot = records(
        "binance",
        ("depth@100ms", "trade", "bookTicker"),
        ["spot_btcusdt_20240808.jsonl.gz", "spot_btcusdt_20240809.jsonl.gz"],
    )
    perp = records(
        "binance_usdm", ("depth@0ms", "trade", "bookTicker"), ["usdm_btcusdt_20240808.jsonl.gz"]
    )
    rows_of = []
    for recs in (spot, perp):
        eng = FeatureEngine(fs, ["btcusdt"])
        rows = [row for r in recs for row in eng.push(r)]
        rows_of.append(rows + eng.flush(max(r.ts_event for r in recs) + 1))
    join = VenueJoin(fs.float_columns, fs.float_columns, "perp", CROSS, take=("m_p",))
    out = [j for row in rows_of[0] for j in join.push_target(row)]
    out += [j for row in rows_of[1] for j in join.push_reference(row)]
    out += join.flush()
    frame = pd.DataFrame([r.values for r in out], columns=list(join.columns))
    frame.insert(0, "ts", [r.ts for r in out])
    frame.insert(0, "symbol", "btcusdt")
    # the overlap only: buckets where both venues have a book and the 5-bucket returns exist
    keep = frame[["perp.m_p", "perp_ret_5", "spot_ret_5"]].notna().all(axis=1)
    return frame[keep].reset_index(drop=True), fs.bucket_ns, tuple(join.columns)


def _f(x: float | None) -> str:
    return "nan" if x is None else f"{x:.3f}"


def main() -> int:
    frame, bucket_ns, columns = joined_frame()
    settings = load_settings(
        [
            "ml.horizons=[1,5]",
            "ml.encoder_length=10",
            "ml.train.progress_bar=false",
            # the evaluator rightly refuses a naive yardstick fitted on fewer than 1000
            # origins; the whole overlap has 340: lowered here, and said in the output
            "ml.evaluate.min_history=100",
        ],
        environ={},
    )
    ml = settings.ml
    print(
        f"eval_cross_venue: {len(frame)} one-second buckets where spot and perp overlap "
        f"(ml.evaluate.min_history lowered to {ml.evaluate.min_history}: too little data)"
    )
    results = {}
    for label, inputs in (("spot only", SPOT_ONLY), ("spot + perp", WITH_PERP)):
        spec = ds.make_spec(
            ml.model_copy(update={"inputs": inputs}), "cross", "0", bucket_ns, columns
        )
        data = ds.build(frame, spec, split=(0.6, 0.2, 0.2))
        splits = data.split(0.6, 0.2, 0.2)
        model = create("lightgbm", data.spec, dict(SMALL))
        model.fit(data, splits.train, splits.val, ml.train, seed=ml.seed)
        ev = ev_mod.walk_forward(
            {"lightgbm": model}, data, splits.test, ml.evaluate, train_cfg=ml.train
        )
        report = ev_mod.score(ev, ml.evaluate)
        results[label] = (report, len(splits.train), len(splits.val), len(splits.test), ev.ts)
    same_origins = np.array_equal(results["spot only"][4], results["spot + perp"][4])
    for label, (report, ntr, nva, nte, _) in results.items():
        m = report["models"]["lightgbm"]
        print(
            f"  {label:12s} origins train/val/test {ntr}/{nva}/{nte}: pinball skill vs naive "
            f"{m['skill']:+.4f}"
        )
        for h, cell in m["metrics"]["m_p"].items():
            dm = m["dm"]["pinball"]["m_p"][h]
            base = report["models"]["naive"]["metrics"]["m_p"][h]
            print(
                f"    h={h}: n={cell['n']} MAE {_f(cell['mae_bps'])} bp (naive "
                f"{_f(base['mae_bps'])}), pinball {_f(cell['pinball_bps']['mean'])} bp (naive "
                f"{_f(base['pinball_bps']['mean'])}), IC {_f(cell['ic'])}, "
                f"DM p(better)={_f(dm['p_better'])}"
            )
    print(f"  same test origins in both: {same_origins}")
    return 0 if same_origins else 1


if __name__ == "__main__":
    sys.exit(main())
