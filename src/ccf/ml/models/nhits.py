"""N-HiTS (pytorch-forecasting) on the tensor windows.

The target's past returns (in units of the origin's vol) are the series N-HiTS
backcasts; observed inputs are encoder covariates and calendar inputs decoder
covariates. ``naive_level`` is off: the naive forecast of a return is zero, not the
last return. No static categoricals (the library's NHiTS fails on them when there are
no time-varying covariates).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ccf.ml.models.deep import DeepForecaster

if TYPE_CHECKING:
    import optuna
    from pytorch_forecasting.models.base import BaseModel


class NHiTS(DeepForecaster):
    kind = "nhits"
    relative_time_idx = False  # the library's NHiTS refuses it
    defaults: dict[str, Any] = {
        "hidden_size": 64,
        "n_blocks": [1, 1, 1],
        "n_layers": 2,
        "dropout": 0.1,
        "learning_rate": None,  # None: train.learning_rate
        "weight_decay": 1e-3,
        "gradient_clip": 1.0,
    }

    @staticmethod
    def network_class() -> type[BaseModel]:
        from pytorch_forecasting import NHiTS as Net

        return Net

    def network_kwargs(self) -> dict[str, Any]:
        p = self.params
        return {
            "hidden_size": p["hidden_size"],
            "n_blocks": list(p["n_blocks"]),
            "n_layers": p["n_layers"],
            "dropout": p["dropout"],
            "weight_decay": p["weight_decay"],
            "naive_level": False,
            "backcast_loss_ratio": 0.0,
            "optimizer": "adam",
            "log_interval": -1,
        }

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        return {
            "hidden_size": trial.suggest_categorical("hidden_size", [32, 64, 128]),
            "n_layers": trial.suggest_int("n_layers", 1, 2),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True),
        }
