"""Live forecasting: latency from an event's arrival to its prediction being stored, the
serving loop's per-bucket cost and memory, and single-window inference against
pytorch-forecasting's ``model.predict``.

    python bench/bench_predict.py e2e --seconds 90          # 1x and flat-out replay
    python bench/bench_predict.py serve --forecasts 50000   # memory over 50k forecasts
    python bench/bench_predict.py window                    # TFT: model.predict, eager, ONNX

``e2e`` runs the real parts as processes (replay exchange serving the recordings, the
collector, features and the predictor) with a model trained beforehand on the same
feature set and registered in MLflow, once per path, interleaved: ``old`` (fixed
flush and poll intervals, the watermark a whole allowed lateness behind the newest
event) and ``new`` (wake-ups, per-stream watermarks). Per run: the delay from each
bucket's end to its stored champion forecast on the event clock (the store's
``delay_s``), the delay from the receipt of the record that closed the bucket (found
by running the same engine over the stored records in receive order) to the stored
forecast, the forecasts stored after their target bucket closed, and the CPU seconds
of each part process.

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


def _closing_recv(s: Settings, sym: str) -> dict[int, int]:
    """Bucket start -> receive time of the record that closed it, found by running the
    same engine over the stored records in receive order (live and batch decide alike, so
    this is the record that closed it live)."""
    from ccf.features.engine import FeatureEngine
    from ccf.features.raw import RawReader

    fs = feature_set(s.features)
    con = sqlite3.connect(f"file:{s.db_path}?mode=ro", uri=True)
    try:
        engine = FeatureEngine(fs, [sym])
        closed: dict[int, int] = {}
        for rec in RawReader(con, fs, s.exchange).events(sym, None, None):
            for row in engine.push(rec):
                closed[row.ts] = rec.ts_recv
    finally:
        con.close()
    return closed


def _figures(s: Settings) -> dict[str, list[float] | dict[int, int]]:
    """From a run's stores: per steady forecast (not the start-up backlog, which the
    first store write after the predictor starts holds), the event-clock delay from the
    bucket end to the stored champion forecast (ms), the delay from the receipt of the
    closing record to the stored forecast (ms), and per horizon the forecasts stored
    after their target bucket had closed."""
    delay: list[float] = []
    closing: list[float] = []
    after: dict[int, int] = {}
    if not s.predictions_path.exists():  # no forecast within the run (too short)
        return {"delay": delay, "closing": closing, "after": after}
    preds = sqlite3.connect(f"file:{s.predictions_path}?mode=ro", uri=True)
    try:
        for sym in s.symbols:
            rows = preds.execute(
                "SELECT ts, horizon, made_at, delay_s, horizon_left FROM predictions "
                "WHERE symbol = ? AND role = 'champion' AND flag IS NULL ORDER BY made_at",
                (sym,),
            ).fetchall()
            if not rows:
                continue
            first = rows[0][2]
            closed = _closing_recv(s, sym)
            seen: set[int] = set()
            for ts, horizon, made_at, d, left in rows:
                if made_at == first:
                    continue
                if left is not None and left <= 0:
                    after[horizon] = after.get(horizon, 0) + 1
                after.setdefault(horizon, 0)
                if ts in seen:
                    continue
                seen.add(ts)
                if d is not None:
                    delay.append(d * 1e3)
                if ts in closed:
                    closing.append((made_at - closed[ts]) / 1e6)
    finally:
        preds.close()
    return {"delay": delay, "closing": closing, "after": after}


PATHS = {  # the old polling path and the new one, selectable by config
    "old": ["storage.wake=poll", "features.watermark=lateness"],
    "new": ["storage.wake=push", "features.watermark=streams"],
}


def _run_pipeline(
    work: Path, trained: Settings, speed: float, seconds: float, port: int, path: str = "new"
) -> tuple[Settings, dict[str, float]]:
    """One ``ccf run`` for ``seconds``; returns its settings and the CPU seconds each part
    process used (user + system)."""
    data = work / f"speed{speed:g}-{path}"
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
        *PATHS[path],
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccf", "run", *overrides],
        stdout=subprocess.DEVNULL,
        stderr=open(work / f"run-{speed:g}-{path}.log", "w"),
    )
    time.sleep(seconds)
    cpu: dict[str, float] = {}
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            argv = child.cmdline()
            t = child.cpu_times()
        except psutil.Error:
            continue
        if "-m" in argv and argv.index("-m") + 2 < len(argv):
            part = argv[argv.index("-m") + 2]
            cpu[part] = cpu.get(part, 0.0) + t.user + t.system
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return load_settings(overrides, environ={}), cpu


def bench_e2e(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="ccf-bench-predict-"))
    kinds = tuple(args.models.split(","))
    paths = args.paths.split(",")
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.1f}")
    print(f"training {', '.join(kinds)} on the recorded feature rows ...")
    trained, reg, versions = _train_registry(work, kinds)
    head = (
        "model",
        "path",
        "speed",
        "rep",
        "load",
        "buckets",
        "end p50",
        "end p99",
        "recv p50",
        "recv p99",
        "after target",
    )
    print("\nend: bucket end -> stored champion forecast (event clock, ms); recv: receipt of")
    print("the record that closed the bucket -> stored (ms); after target: forecasts stored")
    print("after their target bucket closed, per horizon (steady state, not the start-up)")
    print(f"{head[0]:<9}" + "".join(f" {h:>8}" for h in head[1:-1]) + f"  {head[-1]}")
    cpu_rows = []
    for kind in kinds:
        reg.set_alias("champion", versions[kind], f"bench: serve {kind}")
        for speed in args.speeds:
            for rep in range(args.repeats):
                for path in paths:  # interleaved: the machine's load hits both alike
                    load = os.getloadavg()[0]
                    s, cpu = _run_pipeline(work, trained, speed, args.seconds, args.port, path)
                    f = _figures(s)
                    d, c, after = f["delay"], f["closing"], f["after"]
                    assert isinstance(d, list) and isinstance(c, list) and isinstance(after, dict)
                    late = " ".join(f"h{h}:{n}" for h, n in sorted(after.items()))
                    print(
                        f"{kind:<9} {path:>8} {('flat' if speed == 0 else f'{speed:g}x'):>8} "
                        f"{rep:>8} {load:>8.1f} {len(d):>8} {pct(d, 50):>8.0f} "
                        f"{pct(d, 99):>8.0f} {pct(c, 50):>8.1f} {pct(c, 99):>8.1f}  {late}",
                        flush=True,
                    )
                    cpu_rows.append((kind, path, speed, rep, cpu))
    print(f"\nCPU seconds per part over {args.seconds:g} s (user + system)")
    parts = ("exchange", "collect", "features", "predict")
    print(f"{'model':<9} {'path':>5} {'speed':>6} {'rep':>4}" + "".join(f" {p:>9}" for p in parts))
    for kind, path, speed, rep, cpu in cpu_rows:
        print(
            f"{kind:<9} {path:>5} {('flat' if speed == 0 else f'{speed:g}x'):>6} {rep:>4}"
            + "".join(f" {cpu.get(p, float('nan')):>9.1f}" for p in parts)
        )
    print(f"\nload average at the end {os.getloadavg()[0]:.1f} (work dir {work})")


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
    e.add_argument("--speeds", type=float, nargs="+", default=[1.0])
    e.add_argument("--seconds", type=float, default=300)  # the first forecast takes ~160 s
    e.add_argument("--paths", default="old,new", help="old: polling + lateness; new: push")
    e.add_argument("--repeats", type=int, default=1)
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
