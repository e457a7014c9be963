"""Live forecasting: latency from an event's arrival to its prediction being stored, the
serving loop's per-bucket cost and memory, and single-window inference against
pytorch-forecasting's ``model.predict``.

    python bench/bench_predict.py e2e --seconds 90          # 1x and flat-out replay
    python bench/bench_predict.py serve --forecasts 50000   # memory over 50k forecasts
    python bench/bench_predict.py window                    # TFT: model.predict, eager, ONNX

``e2e`` runs the real parts as processes (replay exchange serving the recordings, the
collector, features and the predictor) with a model trained beforehand on the same
feature set and registered in MLflow. A bucket's forecast can be made once the
watermark passes its end plus the allowed lateness: the *closing event* is the first
book or trade event at or past that time, and the latency is the prediction's
``made_at`` minus that event's receive time. Pipeline cost only: the allowed lateness
itself (1 s by default) is a choice, not a cost, and is not in the figure.

``serve`` drives the predictor in-process over the one-minute BTC and ETH candles (one
new feature row per symbol per step, as the live feature part writes them), timing each
step (read the window, build the arrays, forecast every served model, write) and
sampling the process's resident memory.

``window`` times one window through the fast path (``Forecaster.predict`` on the
arrays), eager and through ONNX Runtime (the serving default, ``serve.compiled``), and
through pytorch-forecasting's ``model.predict`` on a one-window TimeSeriesDataSet,
interleaved in the same run.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ccf.config import Settings, load_settings  # noqa: E402
from ccf.features.engine import FeatureRow  # noqa: E402
from ccf.features.spec import feature_set  # noqa: E402
from ccf.features.store import FeatureStore  # noqa: E402
from ccf.ml import dataset, sources  # noqa: E402
from ccf.ml.models import base  # noqa: E402
from ccf.serving.predictor import Predictor  # noqa: E402
from ccf.serving.store import PredictionStore  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


# -- e2e ----------------------------------------------------------------------------------------


def _train_registry(work: Path, kinds: tuple[str, ...]) -> tuple[Settings, object, dict[str, str]]:
    """Feature rows of the recordings, a model per kind trained on them and registered;
    the first kind becomes champion."""
    from tests.features.test_runner import fill

    from ccf.features.runner import run_backfill
    from ccf.ml.pipeline import train_round
    from ccf.ml.prepare import Source
    from ccf.ml.registry import Registry

    s = load_settings([f"data_dir={work / 'train'}", "log_level=WARNING"], environ={})
    fill(s)
    run_backfill(s)
    rnd = train_round(s, Source(), kinds)
    reg = Registry(s)
    by_kind = {t.kind: t.version.version for t in rnd.trained}
    return s, reg, by_kind


def _closing_latencies(
    s: Settings, lateness_ns: int, steady_only: bool = True
) -> dict[str, list[float]]:
    """made_at - receive time of the event that closed the bucket, per symbol (s), for
    the forecasts the model made (not the warm-up's flagged records)."""
    raw = sqlite3.connect(f"file:{s.db_path}?mode=ro", uri=True)
    preds = sqlite3.connect(f"file:{s.predictions_path}?mode=ro", uri=True)
    out: dict[str, list[float]] = {}
    for sym in s.symbols:
        rows = preds.execute(
            "SELECT ts, watermark, min(made_at) FROM predictions WHERE symbol = ? AND "
            "role = 'champion' AND flag IS NULL GROUP BY ts ORDER BY ts",
            (sym,),
        ).fetchall()
        events = raw.execute(
            "SELECT ts_event, ts_recv FROM (SELECT ts_event, ts_recv FROM book WHERE symbol = ? "
            "UNION ALL SELECT ts_event, ts_recv FROM trade WHERE symbol = ?) ORDER BY ts_event",
            (sym, sym),
        ).fetchall()
        ev_ts = np.array([e[0] for e in events], dtype=np.int64)
        ev_recv = np.array([e[1] for e in events], dtype=np.int64)
        # the receive time of the first event at or past each time, as a running minimum
        # from the end (events arrive slightly out of event-time order)
        first_recv = np.minimum.accumulate(ev_recv[::-1])[::-1]
        lat = []
        # the first poll after the predictor starts forecasts the buckets that closed while
        # it loaded its models, all at once: a start-up backlog, not the steady latency
        first = rows[0][2] if rows else None
        for _, watermark, made_at in rows:
            i = np.searchsorted(ev_ts, watermark + lateness_ns)
            if i < len(ev_ts) and (steady_only is False or made_at != first):
                lat.append((made_at - first_recv[i]) / 1e9)
        out[sym] = lat
    raw.close()
    preds.close()
    return out


def _run_pipeline(
    work: Path, trained: Settings, speed: float, seconds: float, port: int
) -> Settings:
    data = work / f"speed{speed:g}"
    shutil.rmtree(data, ignore_errors=True)
    overrides = [
        f"data_dir={data}",
        f"ml.registry.tracking_uri={trained.tracking_uri}",
        f"replay.speed={speed}",
        f"replay.port={port}",
        "replay.loop=false",
        "run.parts=[exchange,collect,features,predict]",
        "run.status_every_s=0",
        "serve.max_input_lag_s=1e9",
        "serve.first_start=oldest",
        "metrics.enabled=false",
        "log_level=WARNING",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccf", "run", *overrides],
        stdout=subprocess.DEVNULL,
        stderr=open(work / f"run-{speed:g}.log", "w"),
    )
    time.sleep(seconds)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return load_settings(overrides, environ={})


def bench_e2e(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="ccf-bench-predict-"))
    kinds = tuple(args.models.split(","))
    print(f"machine: {machine()}")
    print(f"training {', '.join(kinds)} on the recorded feature rows ...")
    trained, reg, versions = _train_registry(work, kinds)
    lateness = feature_set(trained.features).lateness_ns
    head = ("model", "speed", "buckets", "p50 ms", "p90 ms", "p99 ms", "max ms")
    print("\n" + f"{head[0]:<10}" + "".join(f" {h:>8}" for h in head[1:]))
    for kind in kinds:
        reg.set_alias("champion", versions[kind], f"bench: serve {kind}")
        for speed in args.speeds:
            s = _run_pipeline(work, trained, speed, args.seconds, args.port)
            lat = [x * 1e3 for v in _closing_latencies(s, lateness).values() for x in v]
            print(
                f"{kind:<10} {('flat' if speed == 0 else f'{speed:g}x'):>6} {len(lat):>8} "
                f"{pct(lat, 50):>8.0f} {pct(lat, 90):>8.0f} {pct(lat, 99):>8.0f} "
                f"{(max(lat) if lat else float('nan')):>8.0f}"
            )
    print(f"\n(work dir {work})")


# -- serve ----------------------------------------------------------------------------------------


class _Folder:
    """A model source over saved model folders: the registry's cost is not the serving loop's."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def version(self, alias: str) -> str | None:
        return "1" if alias == "champion" else None

    def load(self, alias: str) -> tuple[base.Forecaster, str, str]:
        return base.load(self.path), "bench", "1"


def bench_serve(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="ccf-bench-serve-"))
    s = load_settings(
        [
            f"data_dir={work}",
            "symbols=[btcusdt,ethusdt]",
            "serve.max_input_lag_s=1e12",
            "metrics.enabled=false",
            "log_level=WARNING",
        ],
        files=[sources.CANDLE_PRESET],
        environ={},
    )
    klines = Path(os.environ.get("CCF_SHARED", ROOT.parent / "shared")) / "data" / "klines"
    frames = [sources.from_candles(s, f).frame for f in sorted(klines.glob("*USDT-1m-*.csv.gz"))]
    import pandas as pd

    rows = pd.concat(frames)
    fs = feature_set(s.features)
    spec = dataset.stationary_inputs(
        rows, dataset.make_spec(s.ml, fs.name, fs.version, fs.bucket_ns, fs.float_columns)
    )
    data = dataset.build(rows, spec, (0.3, 0.05, 0.65))
    sp = data.split(0.3, 0.05, 0.65)
    buckets = np.sort(rows.ts.unique())
    start = int(buckets[int(len(buckets) * 0.35)])
    steps = min(args.forecasts // 2, len(buckets) - int(len(buckets) * 0.35) - 1)
    print(f"machine: {machine()}")
    head = ("model", "forecasts", "p50 ms", "p99 ms", "per s", "RSS MB start", "after", "max")
    print(f"{head[0]:<10}" + "".join(f" {h:>9}" for h in head[1:]))
    cols = list(fs.float_columns)
    for kind in args.models.split(","):
        model = base.create(kind, data.spec, _quick(kind))
        model.fit(
            data,
            sp.train,
            sp.val,
            s.ml.train.model_copy(update={"max_epochs": 2, "progress_bar": False}),
        )
        model_dir = model.save(work / kind)
        store_path = work / f"{kind}-features.sqlite"
        s_k = load_settings(
            [
                f"data_dir={work / kind}",
                "symbols=[btcusdt,ethusdt]",
                f"features.path={store_path}",
                "serve.max_input_lag_s=1e12",
                "serve.shadow=false",
                "metrics.enabled=false",
                "log_level=WARNING",
            ],
            files=[sources.CANDLE_PRESET],
            environ={},
        )
        fstore = FeatureStore(store_path, fs)
        head = rows[rows.ts <= start]
        fstore.write(
            [
                FeatureRow(r.symbol, int(r.ts), int(r.ts_end), tuple(r[cols]))
                for _, r in head.iterrows()
            ]
        )
        reader = FeatureStore(store_path, fs, readonly=True)
        preds = PredictionStore(s_k.predictions_path)
        p = Predictor(s_k, _Folder(model_dir))
        p._refresh_models(reader, preds)
        p._resume(reader, preds)
        by_ts = {ts: g for ts, g in rows[rows.ts > start].groupby("ts")}
        proc = psutil.Process()
        gc.collect()
        rss0 = proc.memory_info().rss / 2**20
        rss_max = rss0
        times = []
        for ts in buckets[buckets > start][:steps]:
            g = by_ts[ts]
            fstore.write(
                [
                    FeatureRow(r.symbol, int(r.ts), int(r.ts_end), tuple(r[cols]))
                    for _, r in g.iterrows()
                ]
            )
            t0 = time.perf_counter()
            p.step(reader, preds)
            times.append((time.perf_counter() - t0) * 1e3)
            if len(times) % 2500 == 0:
                rss_max = max(rss_max, proc.memory_info().rss / 2**20)
        gc.collect()
        rss1 = proc.memory_info().rss / 2**20
        n = 2 * len(times)
        print(
            f"{kind:<10} {n:>9} {pct(times, 50):>9.2f} {pct(times, 99):>9.2f} "
            f"{n / (sum(times) / 1e3):>9.0f} {rss0:>9.0f} {rss1:>9.0f} {max(rss_max, rss1):>9.0f}"
        )
        preds.close()
        reader.close()
        fstore.close()


def _quick(kind: str) -> dict:
    return {"lightgbm": {"n_estimators": 100}, "tft": {"hidden_size": 16}}.get(kind, {})


# -- window ---------------------------------------------------------------------------------------


def bench_window(args: argparse.Namespace) -> None:
    import torch

    from ccf.ml.models import windows

    s = load_settings(["log_level=WARNING"], files=[sources.CANDLE_PRESET], environ={})
    klines = Path(os.environ.get("CCF_SHARED", ROOT.parent / "shared")) / "data" / "klines"
    rows = sources.from_candles(s, next(iter(sorted(klines.glob("BTCUSDT-1m-*.csv.gz")))))
    spec = dataset.stationary_inputs(
        rows.frame, dataset.make_spec(s.ml, rows.name, rows.version, rows.bucket_ns, rows.columns)
    )
    data = dataset.build(rows.frame, spec, (0.7, 0.15, 0.15))
    sp = data.split(0.7, 0.15, 0.15)
    model = base.create("tft", data.spec, {"hidden_size": 16})
    quick = s.ml.train.model_copy(update={"max_epochs": 1, "progress_bar": False})
    model.fit(data, sp.train.take(slice(-4000, None)), sp.val, quick)
    # what the predictor reads for one bucket: the window's history rows, as a dataset
    t = int(sp.test.t[0])
    frame = rows.frame.iloc[t - model.spec.history + 1 : t + 1]
    one = dataset.Origins(np.zeros(1, int), np.array([len(frame) - 1]))
    torch.set_num_threads(s.serve.torch_threads)  # as the predictor runs (every path)
    assert model.serve_compiled(s.serve.torch_threads), "the ONNX export fell back to eager"
    onnx = model.onnx
    # the library's dataset needs the decoder's targets to exist (it never feeds them in):
    # the same window with the horizon's rows after it
    ahead = rows.frame.iloc[t - model.spec.history + 1 : t + 1 + model.spec.max_horizon]
    full = dataset.build(ahead, model.spec)
    ref = windows.reference_dataset(full, windows.forecast_windows(full, one), model.layout)
    win = dataset.build(frame, model.spec)
    model.onnx = None
    want = model.predict(win, one)
    model.onnx = onnx
    diff = float(np.abs(model.predict(win, one) - want).max())
    fast, built, comp, slow = [], [], [], []
    cwd = os.getcwd()
    # interleaved (the VM is shared): each repeat runs eager and compiled in turn, in
    # alternating order, and every tenth one model.predict too
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)  # model.predict leaves a lightning_logs folder behind on every call
        try:
            for i in range(args.repeats):
                for path in ("eager", "onnx") if i % 2 else ("onnx", "eager"):
                    model.onnx = onnx if path == "onnx" else None
                    t0 = time.perf_counter()
                    win = dataset.build(frame, model.spec)
                    t1 = time.perf_counter()
                    model.predict(win, one)
                    t2 = time.perf_counter()
                    (comp if path == "onnx" else fast).append((t2 - t1) * 1e3)
                    if path == "eager":
                        built.append((t2 - t0) * 1e3)
                if i % 10 == 0:
                    t0 = time.perf_counter()
                    model.net.predict(
                        ref, mode="quantiles", trainer_kwargs={"enable_progress_bar": False}
                    )
                    slow.append((time.perf_counter() - t0) * 1e3)
            folders = len(list(Path(d).rglob("version_*")))
        finally:
            os.chdir(cwd)
    print(f"machine: {machine()}")
    head = "one TFT window (hidden 16, encoder 60)"
    print(f"{head:<44} {'calls':>6} {'median ms':>10} {'p99 ms':>8} {'/ predict':>10}")
    ref_ms = statistics.median(slow)
    for name, v in (
        ("pytorch-forecasting model.predict", slow),
        ("eager fast path: Forecaster.predict", fast),
        ("eager fast path incl. building the arrays", built),
        ("compiled path: ONNX Runtime", comp),
    ):
        med = statistics.median(v)
        print(f"{name:<44} {len(v):>6} {med:>10.2f} {pct(v, 99):>8.2f} {med / ref_ms:>10.3f}")
    print(
        f"eager / model.predict: {statistics.median(fast) / ref_ms:.3f}; compiled / model.predict:"
        f" {statistics.median(comp) / ref_ms:.3f}; compiled / eager: "
        f"{statistics.median(comp) / statistics.median(fast):.3f}; max |compiled - eager| "
        f"{diff:.2g}; log folders model.predict left: {folders}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="what", required=True)
    e = sub.add_parser("e2e")
    e.add_argument("--models", default="naive,lightgbm")
    e.add_argument("--speeds", type=float, nargs="+", default=[1.0, 0.0])
    e.add_argument("--seconds", type=float, default=90)
    e.add_argument("--port", type=int, default=18811)
    v = sub.add_parser("serve")
    v.add_argument("--models", default="naive,lightgbm,tft")
    v.add_argument("--forecasts", type=int, default=50_000)
    w = sub.add_parser("window")
    w.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    {"e2e": bench_e2e, "serve": bench_serve, "window": bench_window}[args.what](args)


if __name__ == "__main__":
    main()
