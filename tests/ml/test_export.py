"""The deep kinds served through ONNX Runtime: a real small TFT (and NHiTS) trained on the
shipped one-minute BTCUSDT candles forecasts the same through the exported graph as
through eager PyTorch, saved and loaded too; when the export cannot be trusted the
model says so in a warning and keeps forecasting eagerly."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from ccf.config import TrainConfig
from ccf.ml.dataset import Dataset, Origins, Splits
from ccf.ml.models import base, export
from ccf.ml.models.deep import DeepForecaster
from tests.ml.data import candle_dataset, candle_rows, candle_settings

PARAMS = {"tft": {"hidden_size": 8, "attention_head_size": 2}, "nhits": {"hidden_size": 16}}
CFG = TrainConfig(max_epochs=1, batch_size=256, max_train_samples=1024, progress_bar=False)


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, Splits]:
    ds = candle_dataset(candle_rows(), candle_settings("ml.encoder_length=30"))
    sp = ds.split(0.7, 0.15, 0.15)
    return ds, sp._replace(val=sp.val.take(slice(0, 256)))


@pytest.fixture(scope="module")
def fitted(data: tuple[Dataset, Splits]) -> dict[str, DeepForecaster]:
    ds, sp = data
    out = {}
    for kind in PARAMS:
        model = base.create(kind, ds.spec, PARAMS[kind])
        assert isinstance(model, DeepForecaster)
        model.fit(ds, sp.train, sp.val, CFG, seed=3)
        out[kind] = model
    return out


def _both(model: DeepForecaster, ds: Dataset, origins: Origins) -> tuple[np.ndarray, np.ndarray]:
    model.onnx = None
    eager = model.predict(ds, origins)
    assert model.serve_compiled(threads=1), "the export fell back to eager"
    assert model.onnx is not None
    return eager, model.predict(ds, origins)


@pytest.mark.parametrize("kind", PARAMS)
def test_compiled_forecasts_equal_eager(
    kind: str, fitted: dict[str, DeepForecaster], data: tuple[Dataset, Splits]
) -> None:
    ds, sp = data
    model = fitted[kind]
    many = sp.test.take(slice(0, 300))
    eager, onnx = _both(model, ds, many)
    assert eager.shape == onnx.shape == (300, 1, 3, 5)
    assert np.isfinite(onnx).all() and np.abs(eager).max() > 0
    np.testing.assert_allclose(onnx, eager, rtol=0, atol=1e-5)
    # one window, as the live predictor forecasts each bucket
    one = sp.test.take(slice(7, 8))
    model.onnx = None
    eager1 = model.predict(ds, one)
    model.serve_compiled()
    np.testing.assert_allclose(model.predict(ds, one), eager1, rtol=0, atol=1e-5)
    np.testing.assert_allclose(eager1, eager[7:8], rtol=0, atol=1e-9)


def test_a_loaded_model_exports_and_matches(
    fitted: dict[str, DeepForecaster], data: tuple[Dataset, Splits], tmp_path: Path
) -> None:
    ds, sp = data
    fitted["tft"].save(tmp_path / "m")
    loaded = base.load(tmp_path / "m")
    assert isinstance(loaded, DeepForecaster) and loaded.onnx is None
    eager, onnx = _both(loaded, ds, sp.test.take(slice(0, 50)))
    np.testing.assert_allclose(onnx, eager, rtol=0, atol=1e-5)


def test_an_export_that_fails_keeps_eager_with_a_warning(
    fitted: dict[str, DeepForecaster],
    data: tuple[Dataset, Splits],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ds, sp = data
    model = fitted["tft"]
    model.onnx = None
    origins = sp.test.take(slice(0, 20))
    eager = model.predict(ds, origins)
    assert model.net is not None and model.layout is not None
    with caplog.at_level(logging.WARNING, logger="ccf.ml.models.export"):
        # opset 7 has no operator for the network's LSTM masking: the exporter refuses it
        assert export.export(model.net, model.layout, 1, kind="tft", opset=7) is None
        # an exported graph held to zero difference fails its check against eager
        assert export.export(model.net, model.layout, 1, kind="tft", atol=0.0) is None
    text = caplog.text
    assert "onnx export failed" in text and "serving eager" in text
    assert "differs from eager" in text
    assert model.onnx is None
    np.testing.assert_array_equal(model.predict(ds, origins), eager)
