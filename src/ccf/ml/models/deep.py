"""What the deep kinds (TFT, NHiTS) share: a pytorch-forecasting network behind the
``Forecaster`` interface, trained by Lightning on the tensor windows of
:mod:`ccf.ml.models.windows`, forecasting straight from the arrays.

Both networks learn the volatility-normalized target z at every step 1..max_horizon
with pytorch-forecasting's QuantileLoss over the spec's quantiles; ``predict`` takes
the configured horizons and multiplies by ``vol[t] * sqrt(h)``. Each (symbol, target)
pair is a series of its own (see :mod:`~ccf.ml.models.windows`): one network serves
every target, and nothing tells it which target a window is (no static categoricals:
NHiTS fails on them without time-varying covariates, and the targets of one symbol
behave alike).

A saved model is ``network.json`` (the network's constructor arguments, so loading
rebuilds it without pytorch-forecasting's dataset or any training code) and
``network.pt`` (its state dict, loaded with ``weights_only``).
"""

from __future__ import annotations

import json
import logging
import time
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from ccf.ml.dataset import Dataset, DatasetSpec, Origins
from ccf.ml.models import windows as W
from ccf.ml.models.base import FitResult, Forecaster, sort_quantiles
from ccf.ml.models.trainer import (
    Recorder,
    compiled,
    folder,
    make_trainer,
    quiet,
    seed_everything,
    threads,
)

if TYPE_CHECKING:
    from pytorch_forecasting.models.base import BaseModel

    from ccf.config import TrainConfig
    from ccf.ml.models.export import OnnxNet

log = logging.getLogger(__name__)

PREDICT_BATCH = 4096  # windows per forward pass when forecasting: bounded memory
NET_FILE = "network.pt"
HPARAMS_FILE = "network.json"
_OBJECT_HPARAMS = ("loss", "logging_metrics", "output_transformer", "dataset_parameters")
"""Constructor arguments that are objects: rebuilt on load, never saved as JSON."""


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"deep models: cannot save network argument of type {type(v).__name__}")


class DeepForecaster(Forecaster):
    """A pytorch-forecasting network behind ``Forecaster``; subclasses say which network
    and how its parameters map to the library's arguments."""

    relative_time_idx: ClassVar[bool] = False

    def __init__(self, spec: DatasetSpec, params: dict[str, Any] | None = None) -> None:
        super().__init__(spec, params)
        self.net: BaseModel | None = None
        self.layout: W.Layout | None = None
        self.onnx: OnnxNet | None = None  # set by serve_compiled: the live forward pass

    @staticmethod
    @abstractmethod
    def network_class() -> type[BaseModel]: ...

    @abstractmethod
    def network_kwargs(self) -> dict[str, Any]:
        """The library's constructor arguments from ``self.params`` (no learning rate)."""

    def build(self, learning_rate: float) -> BaseModel:
        """A fresh network for this spec, built the library's way (``from_dataset`` on a
        two-window dataset of zeros: the network only reads its columns from it)."""
        from pytorch_forecasting.metrics import QuantileLoss
        from torch import nn

        tiny = W.timeseries_dataset(W.tiny_frame(self.spec), self.spec, self.relative_time_idx)
        with quiet():
            net = self.network_class().from_dataset(
                tiny,
                loss=QuantileLoss(list(self.spec.quantiles)),
                logging_metrics=nn.ModuleList(),
                learning_rate=learning_rate,
                **self.network_kwargs(),
            )
        self._attach(net)
        return net

    def _attach(self, net: BaseModel) -> None:
        self.net = net
        self.onnx = None  # a new network: any exported graph is of the old one
        self.layout = W.layout_of(net.hparams.x_reals, self.spec, self.relative_time_idx)

    # -- fit -------------------------------------------------------------------------------

    def fit(
        self,
        data: Dataset,
        train: Origins,
        val: Origins,
        cfg: TrainConfig,
        *,
        seed: int = 42,
        warm_start: Forecaster | None = None,
        callbacks: list[Any] | None = None,
        workdir: Path | None = None,
    ) -> FitResult:
        t0 = time.perf_counter()
        tw = W.training_windows(data, train, cfg.max_train_samples)
        vw = W.training_windows(data, val)
        if not len(tw) or not len(vw):
            raise ValueError(
                f"{self.kind}: {len(tw)} training and {len(vw)} validation windows with "
                f"finite targets at every step up to {self.spec.max_horizon}: need more history"
            )
        lr = self.params.get("learning_rate") or cfg.learning_rate
        done = False
        try:
            rec, best, device = self._train(
                data, tw, vw, cfg, lr, seed, warm_start, callbacks, workdir
            )
            done = True
        finally:
            if not done:  # pruned or failed: no half-trained network stays behind
                self.net = self.layout = None
        best_score = best.best_model_score
        self.fit_result = FitResult(
            seconds=time.perf_counter() - t0,
            samples=rec.samples,
            epochs=len(rec.train_loss),
            train_loss=rec.train_loss,
            val_loss=rec.val_loss,
            best_val_loss=float(best_score) if best_score is not None else None,
            checkpoint=(best.best_model_path or None) if workdir is not None else None,
            extra={
                "train_s": rec.train_s,
                "val_s": rec.val_s,
                "train_samples_per_s": rec.samples / rec.train_s if rec.train_s else 0.0,
                "epoch_train_s": rec.epoch_train_s,
                "windows": len(tw),
                "val_windows": len(vw),
                "device": str(device),
            },
        )
        log.info(
            "part=ml model=%s fitted epochs=%d samples=%d seconds=%.1f train_samples_per_s=%.0f "
            "best_val_loss=%s",
            self.kind,
            self.fit_result.epochs,
            rec.samples,
            self.fit_result.seconds,
            self.fit_result.extra["train_samples_per_s"],
            self.fit_result.best_val_loss,
        )
        return self.fit_result

    def _train(
        self,
        data: Dataset,
        tw: W.Windows,
        vw: W.Windows,
        cfg: TrainConfig,
        lr: float,
        seed: int,
        warm_start: Forecaster | None,
        callbacks: list[Any] | None,
        workdir: Path | None,
    ) -> tuple[Recorder, ModelCheckpoint, torch.device]:
        K = len(self.spec.targets)
        warm = self._warm_state(warm_start) if warm_start is not None else None
        with threads(cfg.num_threads), folder(workdir) as wd, quiet():
            seed_everything(seed)
            net = self.build(lr)
            if warm is not None:
                self._warm(net, *warm)
            n_batches = max(1, len(tw) // cfg.batch_size)
            trainer, rec, best = make_trainer(
                cfg, wd, callbacks, self.params.get("gradient_clip"), n_batches
            )
            device = trainer.strategy.root_device
            arrays = W.stack(data).to(device)
            assert self.layout is not None
            train_dl = W.loader(W.WindowBatches(arrays, self.layout, tw, K), cfg.batch_size, True)
            val_dl = W.loader(W.WindowBatches(arrays, self.layout, vw, K), cfg.batch_size, False)
            log.info(
                "part=ml model=%s fit windows=%d val_windows=%d batch=%d device=%s compile=%s",
                self.kind,
                len(tw),
                len(vw),
                cfg.batch_size,
                device,
                cfg.compile,
            )
            with compiled(net, cfg.compile):
                trainer.fit(net, train_dl, val_dl)
            if best.best_model_path:  # our own checkpoint, just written: not weights only
                state = torch.load(best.best_model_path, map_location=device, weights_only=False)
                net.load_state_dict(state["state_dict"])
            net.trainer = None  # drops the trainer, its loaders and their arrays
            net.eval()
        return rec, best, device

    def _warm_state(self, other: Forecaster) -> tuple[W.Layout, dict[str, torch.Tensor]]:
        """The weights a warm start begins from, copied before any network is rebuilt."""
        if not isinstance(other, type(self)) or other.net is None or other.layout is None:
            raise ValueError(f"{self.kind}: warm start needs a fitted {self.kind} model")
        return other.layout, {k: v.detach().clone() for k, v in other.net.state_dict().items()}

    def _warm(self, net: BaseModel, layout: W.Layout, state: dict[str, torch.Tensor]) -> None:
        if layout != self.layout:
            raise ValueError(f"{self.kind}: warm start from a model with other inputs")
        try:
            net.load_state_dict(state)
        except RuntimeError as e:  # shapes differ: other hidden sizes
            raise ValueError(
                f"{self.kind}: warm start from a model with other parameters ({e})"
            ) from e

    def serve_compiled(self, threads: int = 1) -> bool:
        """Forecast through ONNX Runtime from now on (see :mod:`ccf.ml.models.export`);
        False, with a warning logged, when the network cannot be exported: eager stays."""
        from ccf.ml.models import export

        if self.net is None or self.layout is None:
            raise RuntimeError(f"{self.kind}: serve_compiled before fit")
        if self.net.training:
            self.net.eval()
        self.onnx = export.export(
            self.net, self.layout, len(self.spec.targets), threads=threads, kind=self.kind
        )
        return self.onnx is not None

    # -- predict -----------------------------------------------------------------------------

    def predict(self, data: Dataset, origins: Origins) -> np.ndarray:
        if self.net is None or self.layout is None:
            raise RuntimeError(f"{self.kind}: predict before fit")
        K, H, Q = len(self.spec.targets), self.spec.max_horizon, len(self.spec.quantiles)
        n = len(origins)
        h = self.spec.horizon_index()
        if n == 0:
            return np.zeros((0, K, len(h), Q))
        w = W.forecast_windows(data, origins)
        net = self.net
        dev = next(net.parameters()).device
        arrays = W.stack(data, targets=False).to(dev)
        series = torch.as_tensor(w.series, device=dev)
        k = torch.as_tensor(w.target, device=dev)
        t = torch.as_tensor(w.t, device=dev)
        out = np.empty((len(w), H, Q), dtype=np.float32)
        if net.training:  # eval() walks every submodule: not on every live call
            net.eval()
        with torch.inference_mode():
            for lo in range(0, len(w), PREDICT_BATCH):
                sl = slice(lo, lo + PREDICT_BATCH)
                x, _ = W.gather(arrays, self.layout, series[sl], k[sl], t[sl], K)
                if self.onnx is not None:
                    out[sl] = self.onnx(x)
                else:
                    out[sl] = net(x)["prediction"].float().cpu().numpy()
        z = out.reshape(n, K, H, Q)[:, :, h].astype(np.float64)
        return sort_quantiles(z * data.scales(origins)[..., None])

    # -- save / load -------------------------------------------------------------------------

    def _save(self, path: Path) -> None:
        if self.net is None:
            raise RuntimeError(f"{self.kind}: save before fit")
        hp = {k: v for k, v in dict(self.net.hparams).items() if k not in _OBJECT_HPARAMS}
        (path / HPARAMS_FILE).write_text(json.dumps(hp, indent=1, default=_jsonable))
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        torch.save(state, path / NET_FILE)

    @classmethod
    def _load(cls, path: Path, spec: DatasetSpec, params: dict[str, Any]) -> DeepForecaster:
        from pytorch_forecasting.data.encoders import TorchNormalizer
        from pytorch_forecasting.metrics import QuantileLoss
        from torch import nn

        model = cls(spec, params)
        hp = json.loads((path / HPARAMS_FILE).read_text())
        with quiet():
            net = cls.network_class()(
                **hp,
                loss=QuantileLoss(list(spec.quantiles)),
                logging_metrics=nn.ModuleList(),
                output_transformer=TorchNormalizer(method="identity", center=False),
                # forward reads only the target's name from the dataset's parameters
                dataset_parameters={"target": W.TARGET},
            )
        net.load_state_dict(torch.load(path / NET_FILE, map_location="cpu", weights_only=True))
        net.eval()
        model._attach(net)
        return model
