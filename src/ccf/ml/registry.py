"""The model registry: MLflow runs, registered versions and the two aliases.

Every trained model is one MLflow run (parameters, data range, evaluation metrics, the
report as artifacts, the model as a pyfunc) and one version of the registered model
``settings.model_name``. Aliases, never stages, say what each version is for:
``challenger`` the newest candidate, ``champion`` what the live predictor serves. Every
alias move is a log line and tags on the version it lands on (``promoted_at``,
``reason``; ``demoted_at`` on the one it leaves).

Local by default (SQLite under the data dir, artifacts under ``settings.artifact_dir``);
a tracking server (``ccf registry-server``, :mod:`ccf.ml.server`) shared by several
machines works by setting ``ml.registry.tracking_uri=http://host:port``, its credentials
and TLS options under ``ml.registry`` (secrets by reference).
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from ccf.ml import pyfunc
from ccf.ml.models.base import Forecaster
from ccf.ml.prepare import MLError
from ccf.ml.server import configure_client
from ccf.secrets import SecretError

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from ccf.config import Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
_SERVERS = ("http://", "https://", "databricks")
# a unique-key violation as SQLite and PostgreSQL word it through a tracking server
_UNIQUE_RACE = re.compile(r"IntegrityError|UniqueViolation|UNIQUE constraint|duplicate key")


@dataclass(frozen=True, slots=True)
class Version:
    """A registered version as the flows read it."""

    version: str
    run_id: str
    kind: str
    skill: float | None
    beats_naive: bool
    aliases: tuple[str, ...]
    tags: dict[str, str]

    @classmethod
    def of(cls, mv: ModelVersion) -> Version:
        tags = dict(mv.tags or {})
        skill = tags.get("skill")
        return cls(
            version=str(mv.version),
            run_id=mv.run_id or "",
            kind=tags.get("kind", "?"),
            skill=float(skill) if skill not in (None, "", "nan") else None,
            beats_naive=tags.get("beats_naive") == "true",
            aliases=tuple(mv.aliases or ()),
            tags=tags,
        )


@dataclass
class RunRecord:
    """What one run logs; ``artifacts`` are files copied under ``artifact_dir`` of the run."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)  # logged with step = index
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[Path] = field(default_factory=list)
    artifact_dir: str = "report"
    folders: dict[str, Path] = field(default_factory=dict)  # artifact path -> folder logged


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Registry:
    """One tracking store, one experiment and one registered model name.

    MLflow's logging functions read a process-wide tracking URI; it is set here, the one
    place CCF sets it, each time a registry is opened. So are a tracking server's client
    credentials, which MLflow reads from the environment.
    """

    def __init__(self, settings: Settings) -> None:
        self.uri = settings.tracking_uri
        self.name = settings.model_name
        try:
            configure_client(settings)
        except SecretError as e:
            raise MLError(f"ml.registry: {e}") from None
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self.client = MlflowClient(self.uri, self.uri)
        self.experiment_id = self._experiment(settings)

    def _experiment(self, settings: Settings) -> str:
        name = settings.ml.registry.experiment
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        # a server keeps its own artifact root unless one was configured for us
        local = not self.uri.startswith(_SERVERS)
        location = None
        if local or settings.ml.registry.artifact_dir is not None:
            settings.artifact_dir.mkdir(parents=True, exist_ok=True)
            location = settings.artifact_dir.as_uri()
        try:
            eid = self.client.create_experiment(name, artifact_location=location)
        except MlflowException as e:
            # another machine on the same server created it a moment ago
            exp = self.client.get_experiment_by_name(name)
            if e.error_code != "RESOURCE_ALREADY_EXISTS" or exp is None:
                raise
            return exp.experiment_id
        log.info(
            "part=ml registry experiment=%s id=%s artifacts=%s tracking=%s",
            name,
            eid,
            location or "(server default)",
            self.uri,
        )
        return eid

    # -- runs ------------------------------------------------------------------------------

    @contextmanager
    def _run(self, record: RunRecord) -> Iterator[str]:
        """An MLflow run holding the record; yields its id (still active)."""
        with mlflow.start_run(experiment_id=self.experiment_id, run_name=record.name) as run:
            run_id = run.info.run_id
            mlflow.set_tags(record.tags)
            mlflow.log_params({k: _param(v) for k, v in record.params.items()})
            mlflow.log_metrics(finite(record.metrics))
            now = int(time.time() * 1000)
            curve = [
                Metric(key, float(v), now, step)
                for key, values in record.curves.items()
                for step, v in enumerate(values)
                if v is not None and math.isfinite(v)
            ]
            if curve:
                self.client.log_batch(run_id, metrics=curve)
            for path in record.artifacts:
                mlflow.log_artifact(str(path), record.artifact_dir)
            for name, folder in record.folders.items():
                mlflow.log_artifacts(str(folder), name)
            yield run_id

    def log_run(self, record: RunRecord) -> str:
        """A run without a model (an evaluation); returns its id."""
        with self._run(record) as run_id:
            return run_id

    def register(
        self,
        record: RunRecord,
        model: Forecaster,
        model_dir: Path,
        version_tags: Mapping[str, str] | None = None,
    ) -> tuple[str, Version]:
        """A run with the model logged as a pyfunc, registered as a new version."""
        with self._run(record) as run_id, tempfile.TemporaryDirectory(prefix="ccf-code-") as d:
            with warnings.catch_warnings():
                # MLflow asks for an input example; the signature says what rows it takes
                warnings.simplefilter("ignore", UserWarning)
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=str(pyfunc.ENTRY),  # models from code: nothing pickled
                    artifacts={pyfunc.ARTIFACT: str(model_dir)},
                    code_paths=[str(pyfunc.stage_code(Path(d)))],
                    pip_requirements=pyfunc.pip_requirements(model.kind),
                    signature=pyfunc.signature(model.spec),
                )
        mv = mlflow.register_model(info.model_uri, self.name, tags=dict(version_tags or {}))
        log.info(
            "part=ml registry model=%s version=%s kind=%s run=%s",
            self.name,
            mv.version,
            model.kind,
            run_id,
        )
        return run_id, self.version(str(mv.version))

    # -- versions and aliases ----------------------------------------------------------------

    def version(self, version: str) -> Version:
        try:
            return Version.of(self.client.get_model_version(self.name, str(version)))
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise LookupError(f"model {self.name} has no version {version}") from None
            raise

    def find(self, ref: str) -> Version:
        """A version by number or alias; LookupError names what is missing."""
        if ref.isdigit():
            return self.version(ref)
        v = self.alias(ref)
        if v is None:
            raise LookupError(
                f"model {self.name} has no version with alias {ref!r} (the name follows "
                "features.name: give the --config/--candles the model was trained with, or "
                "ml.registry.model_name=...)"
            )
        return v

    def aliases(self) -> dict[str, str]:
        """Alias -> version of the registered model; empty when nothing is registered."""
        found = self.client.search_registered_models(filter_string=f"name = '{self.name}'")
        # some stores give versions as ints: always strings here
        return {a: str(v) for a, v in found[0].aliases.items()} if found else {}

    def alias(self, alias: str) -> Version | None:
        v = self.aliases().get(alias)
        return None if v is None else self.version(v)

    def set_alias(self, alias: str, version: str, reason: str, *, forced: bool = False) -> None:
        """Point ``alias`` at ``version`` and record the move on both versions."""
        old = self.aliases().get(alias)
        stamp = now_iso()
        self._point(alias, str(version))
        at, why = (
            ("promoted_at", "reason") if alias == CHAMPION else (f"{alias}_at", f"{alias}_reason")
        )
        self.client.set_model_version_tag(self.name, str(version), at, stamp)
        self.client.set_model_version_tag(self.name, str(version), why, reason)
        if alias == CHAMPION:
            self.client.set_model_version_tag(
                self.name, str(version), "forced", str(forced).lower()
            )
            if old is not None and old != str(version):
                self.client.set_model_version_tag(self.name, old, "demoted_at", stamp)
        log.info(
            "part=ml registry model=%s alias=%s version=%s previous=%s forced=%s reason=%s",
            self.name,
            alias,
            version,
            old,
            forced,
            reason,
        )

    def _point(self, alias: str, version: str, attempts: int = 3) -> None:
        """Set the alias row. Machines sharing a registry server may set one alias at the
        same instant: MLflow's store then inserts a row the other has just inserted and
        fails on the unique key; tried again, it updates that row (last writer wins)."""
        for attempt in range(1, attempts + 1):
            try:
                self.client.set_registered_model_alias(self.name, alias, version)
                return
            except MlflowException as e:
                if attempt == attempts or not _UNIQUE_RACE.search(e.message):
                    raise
                log.info(
                    "part=ml registry model=%s alias=%s set at once elsewhere: again (%d)",
                    self.name,
                    alias,
                    attempt,
                )
                time.sleep(0.2 * attempt)

    def load(self, ref: str) -> tuple[Forecaster, Version]:
        """The CCF model of a version number or an alias, through its pyfunc."""
        v = self.find(ref)
        return self.load_uri(f"models:/{self.name}/{v.version}"), v

    def load_uri(self, uri: str) -> Forecaster:
        """A CCF forecaster from any pyfunc URI of this tracking store (``models:/name@alias``,
        ``runs:/<run id>/model``); LookupError when it holds none."""
        try:
            wrapped = mlflow.pyfunc.load_model(uri).unwrap_python_model()
        except MlflowException as e:
            raise LookupError(f"cannot load {uri}: {e.message}") from None
        model = getattr(wrapped, "forecaster", None)
        if not isinstance(model, Forecaster):
            raise LookupError(f"{uri} is not a CCF model")
        return model


def load_forecaster(settings: Settings, alias: str = CHAMPION) -> tuple[Forecaster, str]:
    """The registered model under ``alias`` (or a version number) as a CCF forecaster, and
    its version: what the live predictor serves."""
    model, v = Registry(settings).load(alias)
    return model, v.version


def finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Metrics MLflow can store: numbers only, NaN and None left out."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, int | float) and math.isfinite(v):
            out[k] = float(v)
    return out


def _param(v: Any) -> str:
    text = ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
    return text[:6000]  # MLflow's limit on a parameter value
