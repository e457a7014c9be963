"""Logging set-up for the command line (library modules only get loggers)."""

from __future__ import annotations

import logging
import os
import sys
import warnings

VERBOSE_ENV = "CCF_VERBOSE"  # "1": `ccf --verbose`, inherited by the parts `ccf run` starts
# Libraries whose info messages, warnings and progress bars fill every part's log (MLflow
# prints a bar per artifact it downloads): shown only with --verbose.
LIBRARY_LOGGERS = (
    "mlflow",
    "alembic",
    "urllib3",
    "git",
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "optuna",
    "matplotlib",
    "fsspec",
    "httpx",
    "numexpr",
)
_WARNING_MODULES = (
    "mlflow|lightning|pytorch_lightning|pytorch_forecasting|torch|optuna|sklearn|pandas|"
    "pydantic|alembic|sqlalchemy"
)
_LIBRARY_WARNINGS = rf"({_WARNING_MODULES})(\.|$)"


def setup_logging(level: str = "INFO", verbose: bool | None = None) -> None:
    """Our loggers at ``level``; libraries at WARNING (their Python warnings and MLflow's
    progress bars off) unless ``verbose`` (default: ``$CCF_VERBOSE == "1"``)."""
    if verbose is None:
        verbose = os.environ.get(VERBOSE_ENV) == "1"
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if verbose:
        return
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", module=_LIBRARY_WARNINGS)
