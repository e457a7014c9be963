"""Test-wide settings: metrics off for the processes tests start, MLflow URIs reset.

Every part serves Prometheus metrics on a fixed port by default; tests run many
parts, often at once, so those that start processes get metrics off through the
environment (the metrics tests turn them on with free ports explicitly).
"""

import os
import sys
from collections.abc import Iterator

import pytest

os.environ.setdefault("CCF__METRICS__ENABLED", "false")


@pytest.fixture(scope="module", autouse=True)
def mlflow_uris() -> Iterator[None]:
    """MLflow keeps the tracking and registry URIs our registry sets process-wide (and in
    the environment, for subprocesses): put them back so later tests start clean."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(var, raising=False)
        yield
        mlflow = sys.modules.get("mlflow")  # only where a test used it
        if mlflow is not None:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


# Whole modules that start clusters, build environments or run the pipeline end to end:
# `make test-fast` (pytest -m "not slow") leaves them out; `make test` runs everything.
SLOW_MODULES = (
    "tests/scale/",
    "tests/test_extras.py",
    "tests/test_run.py",
    "tests/test_pipeline.py",
    "tests/ml/test_deep.py",
    "tests/ml/test_tune.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.as_posix()
        if any(f"/{module}" in path for module in SLOW_MODULES):
            item.add_marker(pytest.mark.slow)
