"""`ccf evaluate --from/--to --test all` on the feature store built from the recorded
Binance streams: registered models scored on a time range, every origin of it, in one
report, nothing refitted."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from ccf.config import load_settings
from ccf.features.runner import run_backfill
from ccf.features.spec import feature_set
from ccf.features.store import FeatureStore
from tests.features.test_runner import fill
from tests.ml.test_cli_ml import ccf

COMMON = (
    "symbols=[btcusdt,ethusdt]",
    "log_level=WARNING",
    "features.print_every_s=0",
    "ml.params.lightgbm.n_estimators=20",
    "ml.train.progress_bar=false",
    "ml.train.num_threads=1",
)


def test_registered_models_on_a_time_range_of_the_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = load_settings([f"data_dir={data}", *COMMON], environ={})
    fill(settings)
    run_backfill(settings)
    ts = FeatureStore(settings.features_path, feature_set(settings.features)).frame()["ts"]
    lo, hi = int(ts.min()), int(ts.max())
    cut = lo + (hi - lo) * 2 // 3

    def iso(ns: int) -> str:
        return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat()

    code, out = ccf(
        "train", "--to", iso(cut), "--models", "naive,lightgbm", f"data_dir={data}", *COMMON
    )
    assert code == 0, out
    out_dir = tmp_path / "eval"
    code, out = ccf(
        "evaluate",
        "--from",
        iso(cut),
        "--test",
        "all",
        "--model-uri",
        "models:/ccf-default/1",
        "--model-uri",
        "models:/ccf-default/2",
        "--out",
        str(out_dir),
        f"data_dir={data}",
        *COMMON,
    )
    assert code == 0, out
    report = json.loads((out_dir / "report.json").read_text())
    meta = report["meta"]
    assert set(report["models"]) == {"naive", "lightgbm/v2"}
    assert meta["symbols"] == ["btcusdt", "ethusdt"] and meta["refits"]["lightgbm/v2"] == 0
    assert datetime.fromisoformat(meta["from"]).timestamp() * 1e9 >= cut
    assert meta["tests"]["holm_family_size"] == 3  # one model x 3 horizons against naive
    assert "yardstick: the naive model given" in out and "cov80 (lo/mid/hi)" in out
