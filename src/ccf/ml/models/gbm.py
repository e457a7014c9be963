"""Direct multi-horizon quantile forecasts with LightGBM: one booster per target, horizon
and quantile.

A window becomes one tabular row: the observed inputs at the origin (the feature engine's
rolling features already summarize the past), the known calendar inputs, and the
volatility-normalized one-bucket return at a few lags. Each booster learns one quantile
of the normalized return at one horizon with the quantile (pinball) objective and stops
early on the validation split; forecasts are scaled back by vol * sqrt(h) and sorted
so quantiles never cross.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ccf.ml.dataset import Dataset, DatasetSpec, Origins
from ccf.ml.models.base import FitResult, Forecaster, sort_quantiles

if TYPE_CHECKING:
    import lightgbm as lgb
    import optuna

    from ccf.config import TrainConfig

log = logging.getLogger(__name__)


def tabular(data: Dataset, origins: Origins, lags: tuple[int, ...]) -> np.ndarray:
    """One row per origin: inputs at t, known inputs at t, normalized return at t - lag."""
    ret = data.spec.unknown.index("ret_1")
    n_known = len(data.spec.known)
    out = np.empty((len(origins), len(data.spec.unknown) + n_known + len(lags)), np.float32)
    for i, s in enumerate(data.series):
        m = origins.series == i
        t = origins.t[m]
        lagged = [s.x[np.maximum(t - lag, 0), ret] for lag in lags]
        out[m] = np.column_stack([s.x[t], s.known[t], *lagged]) if len(t) else 0
    return out


def feature_names(spec: DatasetSpec, lags: tuple[int, ...]) -> list[str]:
    return [*spec.unknown, *spec.known, *(f"ret_1_lag{lag}" for lag in lags)]


class LightGBM(Forecaster):
    kind = "lightgbm"
    defaults: dict[str, Any] = {
        "num_leaves": 15,
        "learning_rate": 0.05,
        "n_estimators": 300,
        "min_child_samples": 200,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "lambda_l2": 1.0,
        "max_bin": 63,
        "early_stopping_rounds": 30,
        "lags": [1, 2, 3, 5, 10],
    }

    def __init__(self, spec: DatasetSpec, params: dict[str, Any] | None = None) -> None:
        super().__init__(spec, params)
        self.boosters: dict[tuple[int, int, int], lgb.Booster] = {}  # (target, horizon, q)

    @property
    def lags(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.params["lags"])

    def _lgb_params(self, q: float, seed: int, threads: int | None) -> dict[str, Any]:
        p = self.params
        return {
            "objective": "quantile",
            "alpha": q,
            "num_leaves": p["num_leaves"],
            "learning_rate": p["learning_rate"],
            "min_data_in_leaf": p["min_child_samples"],
            "feature_fraction": p["feature_fraction"],
            "bagging_fraction": p["bagging_fraction"],
            "bagging_freq": 1,
            "lambda_l2": p["lambda_l2"],
            "max_bin": p["max_bin"],
            "seed": seed,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": threads or 0,
            "verbosity": -1,
        }

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
        """Fit every booster; ``warm_start`` continues the given model's boosters.

        ``callbacks`` are LightGBM callbacks, passed to every booster's training.
        """
        import lightgbm as lgb

        if warm_start is not None and not isinstance(warm_start, LightGBM):
            raise TypeError(f"lightgbm: cannot warm-start from a {warm_start.kind} model")
        if cfg.max_train_samples and len(train) > cfg.max_train_samples:
            train = train.take(np.argsort(data.ts(train), kind="stable")[-cfg.max_train_samples :])
        t0 = time.perf_counter()
        x_tr, x_va = tabular(data, train, self.lags), tabular(data, val, self.lags)
        z_tr = data.targets(train) / data.scales(train)
        z_va = data.targets(val) / data.scales(val)
        names = feature_names(self.spec, self.lags)
        result = FitResult()
        rounds = []
        for k in range(len(self.spec.targets)):
            for h, horizon in enumerate(self.spec.horizons):
                ok_tr, ok_va = np.isfinite(z_tr[:, k, h]), np.isfinite(z_va[:, k, h])
                if ok_tr.sum() < 50:
                    raise ValueError(
                        f"lightgbm: {int(ok_tr.sum())} training targets at horizon {horizon}: "
                        "need more history"
                    )

                def data_sets(
                    k: int = k, h: int = h, ok_tr: np.ndarray = ok_tr, ok_va: np.ndarray = ok_va
                ) -> tuple[lgb.Dataset, list[lgb.Dataset]]:
                    dtrain = lgb.Dataset(x_tr[ok_tr], z_tr[ok_tr, k, h], feature_name=names)
                    if not ok_va.any():
                        return dtrain, []
                    return dtrain, [lgb.Dataset(x_va[ok_va], z_va[ok_va, k, h], reference=dtrain)]

                dtrain, valid = data_sets()  # binned once, shared by the quantiles
                for qi, q in enumerate(self.spec.quantiles):
                    init = None
                    if warm_start is not None:
                        # the init model's scores are stored in the data: one set per booster
                        init = warm_start.boosters[(k, h, qi)]
                        dtrain, valid = data_sets()
                    cbs = list(callbacks or [])
                    if valid:
                        cbs.append(
                            lgb.early_stopping(self.params["early_stopping_rounds"], verbose=False)
                        )
                    booster = lgb.train(
                        self._lgb_params(q, seed, cfg.num_threads),
                        dtrain,
                        num_boost_round=int(self.params["n_estimators"]),
                        valid_sets=valid,
                        init_model=init,
                        callbacks=cbs,
                    )
                    self.boosters[(k, h, qi)] = booster
                    rounds.append(booster.best_iteration or booster.current_iteration())
                    if valid:
                        result.val_loss.append(float(booster.best_score["valid_0"]["quantile"]))
                    log.info(  # progress: a long fit says where it is, booster by booster
                        "part=ml model=lightgbm fit booster %d/%d target=%s h=%d q=%g "
                        "rounds=%d val_loss=%s elapsed=%.1f s",
                        len(self.boosters),
                        len(self.spec.targets) * len(self.spec.horizons) * len(self.spec.quantiles),
                        self.spec.targets[k],
                        horizon,
                        q,
                        rounds[-1],
                        f"{result.val_loss[-1]:.5g}" if valid else "-",
                        time.perf_counter() - t0,
                    )
        result.seconds = time.perf_counter() - t0
        result.samples = len(train)
        result.epochs = 1
        result.best_val_loss = float(np.mean(result.val_loss)) if result.val_loss else None
        result.extra = {"boosters": len(self.boosters), "mean_rounds": float(np.mean(rounds))}
        self.fit_result = result
        log.info(
            "part=ml model=lightgbm fitted %d boosters on %d windows in %.1f s (mean %.0f rounds)",
            len(self.boosters),
            len(train),
            result.seconds,
            result.extra["mean_rounds"],
        )
        return result

    def predict(self, data: Dataset, origins: Origins) -> np.ndarray:
        if not self.boosters:
            raise RuntimeError("lightgbm: predict before fit")
        x = tabular(data, origins, self.lags)
        K, H, Q = len(self.spec.targets), len(self.spec.horizons), len(self.spec.quantiles)
        z = np.empty((len(origins), K, H, Q))
        for (k, h, q), booster in self.boosters.items():
            z[:, k, h, q] = booster.predict(x, num_iteration=booster.best_iteration or None)
        return sort_quantiles(z) * data.scales(origins)[..., None]

    def importance(self) -> dict[str, float]:
        """Total gain per input over all boosters, largest first."""
        names = feature_names(self.spec, self.lags)
        total = np.zeros(len(names))
        for b in self.boosters.values():
            total += b.feature_importance("gain")
        order = np.argsort(-total)
        return {names[i]: float(total[i]) for i in order}

    @staticmethod
    def search_space(trial: optuna.Trial) -> dict[str, Any]:
        return {
            "num_leaves": trial.suggest_int("num_leaves", 4, 63, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 20, 1000, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        }

    def _save(self, path: Path) -> None:
        boosters = {
            f"{k},{h},{q}": b.model_to_string(num_iteration=b.best_iteration or None)
            for (k, h, q), b in self.boosters.items()
        }
        (path / "lightgbm.json").write_text(json.dumps(boosters))

    @classmethod
    def _load(cls, path: Path, spec: DatasetSpec, params: dict[str, Any]) -> LightGBM:
        import lightgbm as lgb

        m = cls(spec, params)
        for key, text in json.loads((path / "lightgbm.json").read_text()).items():
            k, h, q = (int(v) for v in key.split(","))
            m.boosters[(k, h, q)] = lgb.Booster(model_str=text)
        return m
