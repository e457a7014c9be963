"""The Lightning side of a deep fit: the Trainer, a callback that records what a fit
did, and the process settings a fit changes only for its own duration.

The benchmark trains pytorch-forecasting's default pipeline through the same
:func:`make_trainer`, so the two differ only in where their batches come from.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch import seed_everything as _seed_everything
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pytorch_forecasting.models.base import BaseModel

    from ccf.config import TrainConfig

_NOISE = (
    r"Attribute '.*' is an instance of `nn.Module`",  # pytorch-forecasting's save_hyperparameters
    r".*does not have many workers.*",  # the fast loader needs none: batches are gathered
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # lightning 2.6 on torch 2.13
)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the warnings Lightning and pytorch-forecasting raise on every fit here."""
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        yield


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads for the block only (``train.num_threads``)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def folder(workdir: Path | None) -> Iterator[Path]:
    """Where checkpoints and logs go: ``workdir``, or a temporary folder removed after."""
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        yield Path(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="ccf-fit-") as d:
        yield Path(d)


class Recorder(Callback):
    """Per-epoch losses, windows seen, and the time spent in training batches and in
    validation (the benchmark's samples/s counts training batches only)."""

    def __init__(self) -> None:
        self.train_loss: list[float] = []
        self.val_loss: list[float] = []
        self.samples = 0
        self.train_s = 0.0
        self.val_s = 0.0
        self.epoch_train_s: list[float] = []  # per epoch: the first one pays the warm-up
        self._epoch: list[tuple[float, int]] = []
        self._t: float | None = None
        self._v = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._t = time.perf_counter()
        self._epoch = []

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        n = len(batch[0]["decoder_lengths"])
        self.samples += n
        self._epoch.append((float(outputs["loss"]), n))

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        self._v = time.perf_counter()
        if self._t is not None:
            self.epoch_train_s.append(self._v - self._t)
            self.train_s += self._v - self._t
            self._t = None

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        self.val_s += time.perf_counter() - self._v
        self.val_loss.append(float(trainer.callback_metrics["val_loss"]))

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        if self._t is not None:  # no validation ran in this epoch
            self.epoch_train_s.append(time.perf_counter() - self._t)
            self.train_s += self.epoch_train_s[-1]
            self._t = None
        seen = sum(n for _, n in self._epoch)
        self.train_loss.append(sum(v * n for v, n in self._epoch) / seen if seen else float("nan"))
        log.info(  # progress with or without the bar: one line per epoch
            "part=ml model=%s fit epoch %d/%d train_loss=%.5g val_loss=%s windows=%d train_s=%.1f",
            type(pl_module).__name__,
            trainer.current_epoch + 1,
            trainer.max_epochs or 0,
            self.train_loss[-1],
            f"{self.val_loss[-1]:.5g}" if self.val_loss else "-",
            self.samples,
            self.train_s,
        )


def make_trainer(
    cfg: TrainConfig,
    workdir: Path,
    callbacks: list[Any] | None,
    gradient_clip: float | None,
    batches_per_epoch: int,
) -> tuple[Trainer, Recorder, ModelCheckpoint]:
    """The Trainer every deep fit uses (and the benchmark's library pipeline too):
    early stopping on val_loss, the best checkpoint and TensorBoard logs under workdir."""
    rec = Recorder()
    best = ModelCheckpoint(
        dirpath=workdir / "checkpoints", filename="best", monitor="val_loss", mode="min"
    )
    stop = EarlyStopping(monitor="val_loss", patience=cfg.patience, mode="min")
    trainer = Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=1,
        callbacks=[rec, stop, best, *(callbacks or [])],
        logger=TensorBoardLogger(workdir, name="tensorboard"),
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=gradient_clip,
        log_every_n_steps=max(1, min(50, batches_per_epoch)),
        default_root_dir=workdir,
    )
    return trainer, rec, best


def seed_everything(seed: int) -> None:
    _seed_everything(seed, verbose=False)


@contextmanager
def compiled(net: BaseModel, on: bool) -> Iterator[None]:
    """``train.compile``: the training forward pass through torch.compile (fixed shapes:
    the training loader drops its last short batch); validation stays eager, so its
    short last batch costs no second compilation."""
    if not on:
        yield
        return
    eager = net.forward
    fast = torch.compile(eager, dynamic=False)

    def forward(x: dict[str, torch.Tensor], **kw: Any) -> Any:
        return fast(x, **kw) if net.training else eager(x, **kw)

    net.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        del net.forward
