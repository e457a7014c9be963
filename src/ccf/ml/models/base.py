"""The one interface every forecaster has: fit, predict, save, load.

A forecaster answers one question: given the window up to origin t, the
quantiles of each target's log return at each horizon. ``predict`` returns
them as an array (n origins, K targets, H horizons, Q quantiles) in log-return
units, quantiles non-decreasing; the point forecast is the 0.5 quantile.

A saved model is a folder: ``ccf_model.json`` (kind, parameters, the dataset
spec with its fitted normalizer, fit summary) plus the model's own files.
:func:`load` needs only this package and the model's library: no dataset, no
training code, no config.
"""

from __future__ import annotations

import importlib
import json
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ccf.ml.dataset import Dataset, DatasetSpec, Origins

if TYPE_CHECKING:
    import optuna

    from ccf.config import TrainConfig

META = "ccf_model.json"

KINDS = {
    "naive": "ccf.ml.models.naive:Naive",
    "lightgbm": "ccf.ml.models.gbm:LightGBM",
    "tft": "ccf.ml.models.tft:TFT",
    "nhits": "ccf.ml.models.nhits:NHiTS",
}
"""Model kinds by config name; imported on use so torch loads only where a deep model runs."""


@dataclass
class FitResult:
    """What a fit did: the figures the registry logs and the benchmark prints."""

    seconds: float = 0.0
    samples: int = 0  # training windows seen, all epochs together
    epochs: int = 0
    train_loss: list[float] = field(default_factory=list)  # per epoch
    val_loss: list[float] = field(default_factory=list)
    best_val_loss: float | None = None
    checkpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


class Forecaster(ABC):
    """Base of every model kind. Subclasses set ``kind`` and implement the four methods."""

    kind: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: DatasetSpec, params: dict[str, Any] | None = None) -> None:
        unknown = set(params or {}) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"ml.params.{self.kind}: unknown keys {sorted(unknown)}; known: "
                f"{sorted(self.defaults)}"
            )
        self.spec = spec
        self.params: dict[str, Any] = {**self.defaults, **(params or {})}
        self.fit_result: FitResult | None = None
        # first and last training origin (ns): set by the training pipeline, saved with the
        # model; the drift monitor's reference window
        self.trained_range: tuple[int, int] | None = None
        self.saved_at: int | None = None  # wall clock ns, once saved or loaded

    @abstractmethod
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
        """Learn from the training origins; ``val`` drives early stopping.

        ``warm_start`` (a fitted model of the same kind and spec) starts from its
        weights instead of from scratch. ``callbacks`` go to the trainer (Optuna's
        pruning callback, for one) where the kind has one. ``workdir`` is where
        checkpoints and TensorBoard logs go (a temporary folder when None).
        """

    @abstractmethod
    def predict(self, data: Dataset, origins: Origins) -> np.ndarray:
        """Quantiles of log returns, (n, K, H, Q), for windows ending at ``origins``."""

    @abstractmethod
    def _save(self, path: Path) -> None: ...

    @classmethod
    @abstractmethod
    def _load(cls, path: Path, spec: DatasetSpec, params: dict[str, Any]) -> Forecaster: ...

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        """Parameters Optuna tries for this kind; none by default."""
        return {}

    def describe(self) -> str:
        return f"{self.kind}({', '.join(f'{k}={v}' for k, v in sorted(self.params.items()))})"

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._save(path)
        meta = {
            "kind": self.kind,
            "params": self.params,
            "spec": json.loads(self.spec.to_json()),
            "fit": asdict(self.fit_result) if self.fit_result else None,
            "trained_range": list(self.trained_range) if self.trained_range else None,
            "saved_at": time.time_ns(),
        }
        self.saved_at = meta["saved_at"]
        (path / META).write_text(json.dumps(meta, indent=1, default=float))
        return path


def model_class(kind: str) -> type[Forecaster]:
    if kind not in KINDS:
        raise ValueError(f"ml.models: unknown model {kind!r}; known: {', '.join(KINDS)}")
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def create(kind: str, spec: DatasetSpec, params: dict[str, Any] | None = None) -> Forecaster:
    return model_class(kind)(spec, params)


def load(path: Path) -> Forecaster:
    """A saved model from its folder."""
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} holds no CCF model ({META} is missing)") from None
    spec = DatasetSpec.from_json(json.dumps(meta["spec"]))
    model = model_class(meta["kind"])._load(path, spec, meta["params"])
    if meta.get("fit"):
        model.fit_result = FitResult(**meta["fit"])
    model.saved_at = meta.get("saved_at")
    if meta.get("trained_range"):
        model.trained_range = tuple(meta["trained_range"])
    return model


def sort_quantiles(q: np.ndarray) -> np.ndarray:
    """Quantiles that cross are put in order (rearrangement: never worse in pinball loss)."""
    return np.sort(q, axis=-1)
