"""A CCF model as an MLflow pyfunc, so ``mlflow.pyfunc.load_model("models:/ccf-x@champion")``
serves it with nothing but this package and the model's library installed.

The pyfunc holds the saved model folder as its ``model`` artifact and loads it with
:func:`ccf.ml.models.base.load`. ``predict`` takes feature rows (``symbol``, ``ts`` and
the spec's columns, as the feature store gives them) and forecasts at every origin that
has a full window; the newest origin per symbol is the live forecast. Quantiles are log
returns from the origin's price to the price ``horizon`` buckets later; ``last`` is that
price at the origin, so ``last * exp(q0.5)`` is the median price forecast.
"""

import logging
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from ccf.ml import dataset
from ccf.ml.models.base import Forecaster, load

log = logging.getLogger(__name__)

ARTIFACT = "model"
# the libraries a kind needs at load time, beside mlflow, numpy and pandas
_KIND_LIBS = {
    "lightgbm": ("lightgbm",),
    "tft": ("torch", "lightning", "pytorch-forecasting"),
    "nhits": ("torch", "lightning", "pytorch-forecasting"),
}


def quantile_column(q: float) -> str:
    return f"q{q:g}"


def forecast_frame(model: Forecaster, rows: pd.DataFrame) -> pd.DataFrame:
    """Forecasts from feature rows: one row per (symbol, origin ts, target, horizon)."""
    spec = model.spec
    need = ["symbol", "ts", *spec.targets, *spec.inputs]
    missing = [c for c in dict.fromkeys(need) if c not in rows.columns]
    if missing:
        raise ValueError(
            f"feature rows lack columns {missing}: pass rows of feature set {spec.feature_set} "
            f"version {spec.version}"
        )
    data = dataset.build(rows, spec)
    origins = data.origins()
    q = model.predict(data, origins) if len(origins) else np.zeros((0, 1, 1, 1))
    n, K, H = len(origins), len(spec.targets), len(spec.horizons)
    sym = np.array([data.series[i].symbol for i in origins.series], dtype=object)
    ts = data.ts(origins)
    last = np.empty((n, K))
    for i, s in enumerate(data.series):
        m = origins.series == i
        last[m] = np.exp(s.level[origins.t[m]])
    # row order: origin, then target, then horizon
    out = pd.DataFrame(
        {
            "symbol": np.repeat(sym, K * H),
            "ts": np.repeat(ts, K * H),
            "target": np.tile(np.repeat(np.asarray(spec.targets, dtype=object), H), n),
            "horizon": np.tile(np.asarray(spec.horizons, dtype=np.int64), n * K),
            "last": np.repeat(last.reshape(-1), H),
        }
    )
    flat = q.reshape(n * K * H, -1) if n else np.zeros((0, len(spec.quantiles)))
    for j, x in enumerate(spec.quantiles):
        out[quantile_column(x)] = flat[:, j]
    out["point"] = out[quantile_column(0.5)]
    return out


class CCFModel(mlflow.pyfunc.PythonModel):
    """The pyfunc face of a saved CCF model (its folder is the ``model`` artifact)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.forecaster = load(Path(context.artifacts[ARTIFACT]))
        log.info("part=ml pyfunc loaded %s", self.forecaster.describe())

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        return forecast_frame(self.forecaster, model_input)


def signature(spec: dataset.DatasetSpec) -> ModelSignature:
    """Feature rows in (the columns the model reads are required, the feature set's others
    optional), forecasts out."""
    need = {*spec.targets, *spec.inputs}
    inputs = [ColSpec("string", "symbol"), ColSpec("long", "ts")]
    inputs += [ColSpec("double", c, required=c in need) for c in spec.columns]
    outputs = [
        ColSpec("string", "symbol"),
        ColSpec("long", "ts"),
        ColSpec("string", "target"),
        ColSpec("long", "horizon"),
        ColSpec("double", "last"),
        *(ColSpec("double", quantile_column(q)) for q in spec.quantiles),
        ColSpec("double", "point"),
    ]
    return ModelSignature(Schema(inputs), Schema(outputs))


def pip_requirements(kind: str) -> list[str]:
    """Pinned requirements of a model kind, from the running environment: passing them
    spares MLflow its slow inference of them."""
    libs = ("mlflow", "numpy", "pandas", "pydantic", "pyyaml", *_KIND_LIBS.get(kind, ()))
    out = []
    for lib in libs:
        try:
            out.append(f"{lib}=={metadata.version(lib)}")
        except metadata.PackageNotFoundError:
            out.append(lib)
    return out
