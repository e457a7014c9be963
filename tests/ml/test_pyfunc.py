"""A registered model outside CCF: logged from code (no pickle, no CloudPickle warning)
with its CCF modules as code paths, refusing a raw OHLCV frame with a message that says
what to pass, its TensorBoard folder logged with the run, and loaded by alias in a fresh
virtual environment holding only the closure of its own logged requirements (offline)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import textwrap
import warnings
from pathlib import Path

import pandas as pd
import pytest

from ccf.config import Settings, load_settings
from ccf.ml import pipeline, pyfunc
from ccf.ml.prepare import Source
from ccf.ml.sources import CANDLE_PRESET
from tests.ml import fresh_env
from tests.ml.data import BTC

NAME = "ccf-outside"


@pytest.fixture(scope="module")
def candles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("candles") / "BTCUSDT-1m-head.csv"
    pd.read_csv(BTC).iloc[:3000].to_csv(path, index=False)
    return path


def settings_for(root: Path, *extra: str) -> Settings:
    return load_settings(
        [
            f"data_dir={root}",
            f"ml.registry.model_name={NAME}",
            "ml.train.progress_bar=false",
            "ml.train.num_threads=1",
            *extra,
        ],
        [CANDLE_PRESET],
        environ={},
    )


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, candles: Path) -> tuple:
    root = tmp_path_factory.mktemp("outside")
    settings = settings_for(root)
    caught = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record.getMessage())

    handler = Grab(level=logging.DEBUG)
    logging.getLogger().addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            rnd = pipeline.train_round(settings, Source((candles,)), ("naive",))
    finally:
        logging.getLogger().removeHandler(handler)
    return settings, rnd, caught + [str(w.message) for w in warned]


def use_registry(settings: Settings) -> None:
    """Point MLflow's process-wide URIs back at this module's registry (a later
    ``train_round``, as in the TensorBoard test, moves them to its own)."""
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)


def test_logged_from_code_with_its_modules_and_no_pickle(registered) -> None:
    import mlflow

    settings, rnd, messages = registered
    use_registry(settings)
    assert rnd.aliases == {"champion": "1", "challenger": "1"}
    assert not [m for m in messages if "cloudpickle" in m.lower()], messages
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}@champion"))
    assert not (local / "python_model.pkl").exists()
    conf = (local / "MLmodel").read_text()
    assert "model_code_path" in conf and "pyfunc_entry.py" in conf
    code = {p.relative_to(local / "code").as_posix() for p in (local / "code").rglob("*.py")}
    assert {"ccf/__init__.py", "ccf/ml/pyfunc.py", "ccf/ml/dataset.py", "ccf/ml/ranges.py"} <= code
    assert "ccf/ml/models/naive.py" in code and "ccf/cli.py" not in code
    reqs = (local / "requirements.txt").read_text().split()
    assert any(r.startswith("mlflow==") for r in reqs) and not any("ccf" in r for r in reqs)


def test_a_raw_ohlcv_frame_is_refused_with_what_to_pass(registered, candles: Path) -> None:
    import mlflow

    settings, rnd, _ = registered
    use_registry(settings)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    raw = pd.read_csv(candles).iloc[-300:]
    with pytest.raises(Exception, match="raw OHLCV candle frame.*feature rows") as e:
        model.predict(raw)
    assert "from_candles" in str(e.value)
    rows = rnd.rows.frame.iloc[-300:]
    pd.testing.assert_frame_equal(
        model.predict(rows).reset_index(drop=True),
        pyfunc.forecast_frame(rnd.trained[0].model, rows),
    )


def test_the_tensorboard_folder_is_a_run_artifact(tmp_path: Path, candles: Path) -> None:
    from mlflow import MlflowClient

    settings = settings_for(
        tmp_path,
        "ml.train.max_epochs=1",
        "ml.train.max_train_samples=300",
        "ml.params.nhits.hidden_size=8",
    )
    rnd = pipeline.train_round(settings, Source((candles,)), ("nhits",))
    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    run_id = rnd.trained[0].run_id

    def walk(path: str | None) -> list[str]:
        out = []
        for f in client.list_artifacts(run_id, path):
            out += walk(f.path) if f.is_dir else [f.path]
        return out

    files = walk("tensorboard")
    assert any("events.out.tfevents" in f for f in files), files


@pytest.mark.timeout(180)  # offline: a venv, ~180 symlinks, one mlflow import (~15 s)
def test_loads_by_alias_in_a_fresh_venv_from_its_own_requirements(
    registered, tmp_path: Path
) -> None:
    """A venv without CCF (and without the rest of this environment's packages) holding
    exactly the closure of the model's requirements.txt, resolved offline against this
    environment's installed versions (see :mod:`tests.ml.fresh_env`)."""
    import mlflow

    settings, rnd, _ = registered
    use_registry(settings)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}@champion"))
    reqs = (local / "requirements.txt").read_text().split()
    dists = fresh_env.closure(reqs)
    # the naive model needs neither torch nor lightning: both installed here, left out there
    outside = ("torch", "lightning")
    assert all(importlib.util.find_spec(m) for m in outside) and not set(outside) & set(dists)
    venv = tmp_path / "fresh"
    # nothing of this environment leaks in: no PYTHONPATH (it may hold CCF's sources)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    py = fresh_env.fresh_venv(venv, reqs, env)
    rows = rnd.rows.frame.iloc[-300:]
    rows.to_csv(tmp_path / "rows.csv", index=False)  # the fresh venv may lack a Parquet reader
    script = textwrap.dedent(
        f"""
        import importlib.util, json, re, sys
        from importlib import metadata
        import mlflow, pandas as pd
        assert importlib.util.find_spec("ccf") is None, "ccf must not be installed here"
        for name in {outside!r}:
            assert importlib.util.find_spec(name) is None, name + " is outside the closure"
        names = {{d.metadata["Name"] for d in metadata.distributions()}}
        print(json.dumps({{"dists": sorted({{re.sub(r"[-_.]+", "-", n).lower() for n in names}})}}))
        mlflow.set_tracking_uri({settings.tracking_uri!r})
        m = mlflow.pyfunc.load_model("models:/{NAME}@champion")
        rows = pd.read_csv({str(tmp_path / "rows.csv")!r}, dtype={{"symbol": str}})
        out = m.predict(rows)
        out.to_csv({str(tmp_path / "out.csv")!r}, index=False)
        try:
            m.predict(rows[["ts", "open", "high", "low", "close", "volume"]])
        except Exception as e:
            print(json.dumps({{"refused": str(e)}}))
        """
    )
    run = subprocess.run(
        [str(py), "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    said = {}
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            said.update(json.loads(line))
    assert said["dists"] == sorted(dists), "the fresh venv holds exactly the closure"
    assert "raw OHLCV candle frame" in said["refused"]
    got = pd.read_csv(tmp_path / "out.csv", dtype={"symbol": str})
    expected = pyfunc.forecast_frame(rnd.trained[0].model, rows)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
