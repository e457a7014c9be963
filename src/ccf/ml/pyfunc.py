"""A CCF model as an MLflow pyfunc, so ``mlflow.pyfunc.load_model("models:/ccf-x@champion")``
serves it anywhere: in a fresh virtual environment built from the model's own logged
requirements (``requirements.txt``), without CCF installed.

The model is logged "from code" (:data:`ENTRY`, no pickle) with the few CCF modules a
forecast needs as its ``code_paths`` (:func:`stage_code`: the dataset builder and the
model kinds, pure numpy plus the kind's library), and the saved model folder as its
``model`` artifact, loaded with :func:`ccf.ml.models.base.load`.

``predict`` takes FEATURE ROWS, not candles: a pandas frame with ``symbol`` (str), ``ts``
(bucket start, int64 ns) and the feature set's columns the model reads (the signature
lists them; the feature store's rows, or a candle file run through the feature engine
with :func:`ccf.ml.sources.from_candles`), one row per bucket, at least ``encoder_length``
+ ``5 * vol_halflife`` rows per symbol. A raw OHLCV frame is refused with a message that
says so. It forecasts at every origin that has a full window; the newest origin per
symbol is the live forecast. Quantiles are log returns from the origin's price to the
price ``horizon`` buckets later; ``last`` is that price at the origin, so
``last * exp(q0.5)`` is the median price forecast.
"""

import logging
import shutil
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
ENTRY = Path(__file__).with_name("pyfunc_entry.py")
"""The file MLflow runs to build the pyfunc (models from code)."""
_PACKAGE = Path(__file__).resolve().parents[1]  # src/ccf
# what a forecast imports: the package roots, the pyfunc, the dataset builder, the kinds
_CODE = (
    "__init__.py",
    "ml/__init__.py",
    "ml/pyfunc.py",
    "ml/dataset.py",
    "ml/ranges.py",
    "ml/models",
)
_OHLCV = {"open", "high", "low", "close", "volume"}
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
    if missing and _OHLCV <= set(rows.columns):
        raise ValueError(
            "this looks like a raw OHLCV candle frame: the model reads feature rows "
            f"(symbol, ts and {', '.join(spec.inputs[:6])}, ...) of feature set "
            f"{spec.feature_set} version {spec.version}. Run the candles through the feature "
            "engine first (ccf.ml.sources.from_candles(settings, file).frame, or read the "
            f"feature store); missing: {missing[:8]}"
        )
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


def stage_code(root: Path) -> Path:
    """A copy of the CCF modules the pyfunc imports, as ``root/ccf`` (MLflow's
    ``code_paths`` puts its parent first on ``sys.path`` where CCF is not installed; where
    it is, the imported package keeps serving)."""
    dst = root / "ccf"
    for rel in _CODE:
        src = _PACKAGE / rel
        if src.is_dir():
            shutil.copytree(src, dst / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def signature(spec: dataset.DatasetSpec) -> ModelSignature:
    """Feature rows in, forecasts out. Every input column is optional to MLflow so that
    :func:`forecast_frame` checks them and says what to pass (MLflow would only name a
    missing column); those the model reads are listed in the signature all the same."""
    inputs = [ColSpec("string", "symbol", required=False), ColSpec("long", "ts", required=False)]
    inputs += [ColSpec("double", c, required=False) for c in spec.columns]
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
    libs = ("mlflow", "numpy", "pandas", *_KIND_LIBS.get(kind, ()))
    out = []
    for lib in libs:
        try:
            out.append(f"{lib}=={metadata.version(lib)}")
        except metadata.PackageNotFoundError:
            out.append(lib)
    return out
