"""Training throughput and time to a trained model, per model kind, on the one-minute
BTCUSDT candles; and pytorch-forecasting's default pipeline beside the fast path.

In one run, on ``$CCF_SHARED/data/klines/BTCUSDT-1m-*.csv.gz`` through the feature
engine (``conf/candles.yaml``, horizons 1, 5, 10, encoder 60):

- each model kind fitted through ``Forecaster.fit`` on the newest ``--samples``
  training windows: samples/s in training batches (windows seen / time in training
  batches, validation excluded) and the fit's wall time (windows, validation,
  checkpoints included);
- for the deep kinds, the library's default pipeline on exactly the same windows and
  network: ``TimeSeriesDataSet`` + ``to_dataloader`` + ``Trainer.fit``, same seed,
  same Trainer; both loss curves are printed;
- per batch, the library's and the fast path's batches taking turns on one network
  (``--turns`` each): making the batch, and batch + training step. Turns see the same
  moment of the machine, so their ratio survives a shared, noisy VM better than whole
  runs do.

Run: ``python bench/bench_train.py [--models naive,lightgbm,tft,nhits] [--epochs 3]
[--samples 8192] [--batch 1024] [--reference tft,nhits] [--repeat 2] [--compile]``.
The deep pipelines run ``--repeat`` times, interleaved, and the best run of each is
shown (the dev VM is shared: single runs vary a lot).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ccf.config import TrainConfig, load_settings, shared_dir
from ccf.ml import dataset, sources
from ccf.ml.models import base
from ccf.ml.models import windows as W
from ccf.ml.models.deep import DeepForecaster
from ccf.ml.models.trainer import make_trainer, quiet, seed_everything, threads

CANDLES = shared_dir() / "data" / "klines" / "BTCUSDT-1m-2026-03-23_2026-04-11.csv.gz"
PARAMS: dict[str, dict[str, Any]] = {"tft": {"hidden_size": 16}, "nhits": {}}
"""The issue's reference TFT: hidden 16 (encoder 60, horizon 10, batch 1024 by default)."""


def data() -> tuple[dataset.Dataset, dataset.Splits]:
    s = load_settings(
        ["ml.horizons=[1,5,10]", "ml.encoder_length=60"],
        files=[sources.CANDLE_PRESET],
        environ={},
    )
    rows = sources.from_candles(s, CANDLES)
    spec = dataset.make_spec(s.ml, rows.name, rows.version, rows.bucket_ns, rows.columns)
    spec = dataset.stationary_inputs(rows.frame, spec)
    sp = s.ml.split
    ds = dataset.build(rows.frame, spec, (sp.train, sp.val, sp.test))
    return ds, ds.split(sp.train, sp.val, sp.test)


def fast(kind: str, ds: dataset.Dataset, sp: dataset.Splits, cfg: TrainConfig) -> dict[str, Any]:
    model = base.create(kind, ds.spec, PARAMS.get(kind, {}))
    with tempfile.TemporaryDirectory() as d:
        r = model.fit(ds, sp.train, sp.val, cfg, seed=42, workdir=Path(d))
    train_s = r.extra.get("train_s", r.seconds)
    return {
        "name": f"{kind}" + (" (fast path)" if isinstance(model, DeepForecaster) else ""),
        "samples": r.samples,
        "epochs": r.epochs,
        "train_s": train_s,
        "epoch_s": r.extra.get("epoch_train_s", []),
        "fit_s": r.seconds,
        "val": r.best_val_loss,
        "train_loss": r.train_loss,
        "val_loss": r.val_loss,
        "model": model,
    }


def reference(
    kind: str, ds: dataset.Dataset, sp: dataset.Splits, cfg: TrainConfig
) -> dict[str, Any]:
    """pytorch-forecasting's own pipeline over the same windows, network and Trainer."""
    from pytorch_forecasting.metrics import QuantileLoss
    from torch import nn

    model = base.create(kind, ds.spec, PARAMS.get(kind, {}))
    assert isinstance(model, DeepForecaster)
    t0 = time.perf_counter()
    model.build(cfg.learning_rate)  # for its layout only
    assert model.layout is not None
    tw = W.training_windows(ds, sp.train, cfg.max_train_samples)
    vw = W.training_windows(ds, sp.val)
    with quiet(), threads(cfg.num_threads), tempfile.TemporaryDirectory() as d:
        train_set = W.reference_dataset(ds, tw, model.layout)
        val_set = W.reference_dataset(ds, vw, model.layout)
        built = time.perf_counter() - t0
        seed_everything(42)
        net = model.network_class().from_dataset(
            train_set,
            loss=QuantileLoss(list(ds.spec.quantiles)),
            logging_metrics=nn.ModuleList(),
            learning_rate=cfg.learning_rate,
            **model.network_kwargs(),
        )
        trainer, rec, _ = make_trainer(
            cfg,
            Path(d),
            None,
            model.params.get("gradient_clip"),
            max(1, len(tw) // cfg.batch_size),
        )
        trainer.fit(
            net,
            train_set.to_dataloader(train=True, batch_size=cfg.batch_size),
            val_set.to_dataloader(train=False, batch_size=cfg.batch_size),
        )
    return {
        "name": f"{kind} (pytorch-forecasting default)",
        "samples": rec.samples,
        "epochs": len(rec.train_loss),
        "train_s": rec.train_s,
        "epoch_s": rec.epoch_train_s,
        "fit_s": time.perf_counter() - t0,
        "build_s": built,
        "val": min(rec.val_loss) if rec.val_loss else None,
        "train_loss": rec.train_loss,
        "val_loss": rec.val_loss,
        "sets": (train_set, tw, model),
    }


def endless(make: Callable[[], Iterable[Any]]) -> Iterator[Any]:
    """Batches from a loader made again whenever an epoch ends."""
    while True:
        yield from make()


def interleaved(
    ds: dataset.Dataset, ref: dict[str, Any], cfg: TrainConfig, n: int
) -> dict[str, list[float]]:
    """Seconds per training batch, the library's and the fast path's batches taking turns
    on one network (Adam step, no Lightning): both see the same moment of a shared VM.
    Keys: lib/fast (batch + step), lib_batch/fast_batch (making the batch alone)."""
    train_set, tw, model = ref["sets"]
    torch.manual_seed(0)
    net = model.build(cfg.learning_rate)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)
    batches = W.WindowBatches(W.stack(ds), model.layout, tw, len(ds.spec.targets))
    its = {
        "lib": endless(lambda: train_set.to_dataloader(train=True, batch_size=cfg.batch_size)),
        "fast": endless(lambda: W.loader(batches, cfg.batch_size, train=True)),
    }
    out: dict[str, list[float]] = {k: [] for k in ("lib", "fast", "lib_batch", "fast_batch")}
    with threads(cfg.num_threads):
        for i in range(n + 1):  # the first turn warms up and is not counted
            for name, it in its.items():
                t0 = time.perf_counter()
                x, y = next(it)
                t1 = time.perf_counter()
                loss = net.loss(net(x)["prediction"], y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if i:
                    out[name].append(time.perf_counter() - t0)
                    out[f"{name}_batch"].append(t1 - t0)
    return out


def forecast_speed(kind: str, model: Any, ds: dataset.Dataset, sp: dataset.Splits) -> None:
    """``predict`` straight from the arrays: one live origin, and the whole val split."""
    one = sp.val.take(slice(-1, None))
    model.predict(ds, one)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        model.predict(ds, one)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    model.predict(ds, sp.val)
    every = time.perf_counter() - t0
    print(
        f"{kind} predict: one origin {np.median(times) * 1e3:.1f} ms (median of 20), "
        f"{len(sp.val):,} origins {every:.2f} s ({every / len(sp.val) * 1e6:.0f} us each)"
    )


def row(r: dict[str, Any], base_rate: float | None) -> None:
    rate = r["samples"] / r["train_s"] if r["train_s"] else float("nan")
    steady = r["epoch_s"][1:] or r["epoch_s"]
    per_epoch = r["samples"] / max(1, r["epochs"])
    steady_rate = per_epoch / float(np.median(steady)) if steady else float("nan")
    vs = f"{rate / base_rate:6.2f}x" if base_rate else ""
    val = f"{r['val']:.4f}" if r["val"] is not None else "-"
    print(
        f"{r['name']:<36} {r['samples']:>8,} {r['epochs']:>3} {r['train_s']:>8.2f} "
        f"{rate:>10,.0f} {steady_rate:>10,.0f} {r['fit_s']:>8.2f} {val:>8} {vs}"
    )


def curves(a: dict[str, Any], b: dict[str, Any]) -> None:
    print(f"\n{a['name']} vs {b['name']}: loss per epoch")
    print(f"{'epoch':>5} {'train fast':>12} {'train lib':>12} {'val fast':>12} {'val lib':>12}")

    def at(xs: list[float], e: int) -> str:
        return f"{xs[e]:12.6f}" if e < len(xs) else f"{'-':>12}"

    for e in range(max(len(a["train_loss"]), len(b["train_loss"]))):
        print(
            f"{e:>5} {at(a['train_loss'], e)} {at(b['train_loss'], e)} "
            f"{at(a['val_loss'], e)} {at(b['val_loss'], e)}"
        )
    diffs = [
        abs(x - y)
        for xs, ys in ((a["train_loss"], b["train_loss"]), (a["val_loss"], b["val_loss"]))
        for x, y in zip(xs, ys, strict=False)
    ]
    print(f"largest difference between the curves: {max(diffs) if diffs else float('nan'):.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="naive,lightgbm,tft,nhits")
    ap.add_argument("--reference", default="tft,nhits", help="deep kinds also run the library way")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=8192, help="newest training windows")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each deep pipeline; best shown")
    ap.add_argument("--turns", type=int, default=6, help="interleaved batches per pipeline")
    ap.add_argument("--compile", action="store_true", help="also the fast TFT with torch.compile")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cfg = TrainConfig(
        max_epochs=args.epochs,
        batch_size=args.batch,
        patience=args.epochs,  # no early stop: every run trains the same epochs
        max_train_samples=args.samples,
        progress_bar=False,
        num_threads=args.threads,
    )
    t0 = time.perf_counter()
    ds, sp = data()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {args.threads or torch.get_num_threads()} threads, cuda: "
        f"{torch.cuda.is_available()}; data {time.perf_counter() - t0:.1f} s: "
        f"{len(sp.train):,} train / {len(sp.val):,} val origins, inputs {len(ds.spec.unknown)} "
        f"observed + {len(ds.spec.known)} known, horizons {ds.spec.horizons}"
    )
    print(
        f"\n{'model':<36} {'samples':>8} {'ep':>3} {'train s':>8} {'samples/s':>10} "
        f"{'steady/s':>10} {'fit s':>8} {'val loss':>8}"
    )
    results: dict[str, dict[str, Any]] = {}
    for kind in args.models.split(","):
        try:
            base.model_class(kind)
        except ModuleNotFoundError as e:
            print(f"{kind:<36} not available here ({e})")
            continue
        if kind in ("tft", "nhits"):  # untimed: the first fit in a process pays warm-ups
            fast(kind, ds, sp, cfg.model_copy(update={"max_epochs": 1, "max_train_samples": 1}))
        runs, refs, compiled = [], [], []
        deep = kind in args.reference.split(",")
        compiles = args.compile and kind == "tft"
        for _ in range(args.repeat if deep or compiles else 1):  # interleaved: the VM is noisy
            runs.append(fast(kind, ds, sp, cfg))
            if deep:
                refs.append(reference(kind, ds, sp, cfg))
            if compiles:
                compiled.append(fast(kind, ds, sp, cfg.model_copy(update={"compile": True})))
        results[kind] = min(runs, key=lambda r: r["train_s"])
        ref = min(refs, key=lambda r: r["train_s"]) if refs else None
        if ref:
            results[f"{kind}-ref"] = ref
        lib_rate = ref["samples"] / ref["train_s"] if ref else None
        row(results[kind], lib_rate)
        if ref:
            row(ref, lib_rate)
            print(f"{'':<36} (its TimeSeriesDataSets took {ref['build_s']:.2f} s to build)")
        if compiled:
            compiled[0]["name"] = "tft (fast, torch.compile, 1st fit)"
            row(compiled[0], lib_rate)
            c = min(compiled, key=lambda r: r["train_s"])
            c["name"] = "tft (fast, torch.compile, best)"
            row(c, lib_rate)
    print()
    for kind in ("tft", "nhits"):
        if kind in results:
            forecast_speed(kind, results[kind]["model"], ds, sp)
    for kind in ("tft", "nhits"):
        if kind in results and f"{kind}-ref" in results:
            a, b = results[kind], results[f"{kind}-ref"]
            curves(a, b)
            turns = interleaved(ds, b, cfg, args.turns)
            med = {k: float(np.median(v)) for k, v in turns.items()}
            print(
                f"per batch of {args.batch}, {args.turns} interleaved turns (median): library "
                f"batch {med['lib_batch'] * 1e3:.1f} ms + step = {med['lib'] * 1e3:.0f} ms; fast "
                f"gather {med['fast_batch'] * 1e3:.2f} ms + step = {med['fast'] * 1e3:.0f} ms: "
                f"{med['lib'] / med['fast']:.2f}x (best turns {min(turns['lib']) * 1e3:.0f} vs "
                f"{min(turns['fast']) * 1e3:.0f} ms)"
            )


if __name__ == "__main__":
    main()
