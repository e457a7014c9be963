"""Temporal Fusion Transformer (pytorch-forecasting) on the tensor windows.

Observed inputs and the target's past returns feed the encoder; calendar inputs and
``relative_time_idx`` (the step's position) feed both encoder and decoder. Defaults
are small: one-minute returns are mostly noise, and a 16-wide network is what the
benchmark's reference configuration trains.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ccf.ml.models.deep import DeepForecaster

if TYPE_CHECKING:
    import optuna
    from pytorch_forecasting.models.base import BaseModel


class TFT(DeepForecaster):
    kind = "tft"
    relative_time_idx = True
    defaults: dict[str, Any] = {
        "hidden_size": 16,
        "attention_head_size": 4,
        "hidden_continuous_size": 8,
        "lstm_layers": 1,
        "dropout": 0.1,
        "learning_rate": None,  # None: train.learning_rate
        "weight_decay": 0.0,
        "gradient_clip": 0.1,
    }

    @staticmethod
    def network_class() -> type[BaseModel]:
        from pytorch_forecasting import TemporalFusionTransformer

        return TemporalFusionTransformer

    def network_kwargs(self) -> dict[str, Any]:
        p = self.params
        return {
            "hidden_size": p["hidden_size"],
            "attention_head_size": p["attention_head_size"],
            "hidden_continuous_size": min(p["hidden_continuous_size"], p["hidden_size"]),
            "lstm_layers": p["lstm_layers"],
            "dropout": p["dropout"],
            "weight_decay": p["weight_decay"],
            "optimizer": "adam",
            "log_interval": -1,
        }

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        return {
            "hidden_size": trial.suggest_categorical("hidden_size", [8, 16, 32]),
            "attention_head_size": trial.suggest_categorical("attention_head_size", [1, 2, 4]),
            "hidden_continuous_size": trial.suggest_categorical("hidden_continuous_size", [4, 8]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "gradient_clip": trial.suggest_float("gradient_clip", 0.01, 1.0, log=True),
        }
