"""Hyper-parameter search with Optuna over a model kind's ``search_space``.

A study lives in Optuna storage under one name: SQLite under the data dir by default, or
(``ml.tune.storage=postgres``) the PostgreSQL database of ``storage.postgres``, where
``ccf tune`` workers on several machines share one study; the password goes to the driver
as a connect argument, never into the URL.

``ml.tune.trials`` is the study's total of finished (complete or pruned) trials, over all
workers and reruns: an interrupted ``ccf tune`` runs only what is missing. Workers claim
trials under a lock all of them share (a PostgreSQL advisory lock, a file lock beside a
SQLite database): a worker starts a trial only while finished plus running trials are
fewer than ``trials``, so together they end with exactly ``trials`` finished ones. A
worker whose quota is taken by other workers' running trials waits for them: if one
fails (its process died, or it raised), a waiting worker runs a replacement, and every
worker then reads the same best trial. (A storage reached by another URL has no shared
lock: workers starting a trial in the same instant may then add up to one extra each.)

Each trial beats a heartbeat into the storage; a trial left RUNNING by a killed process
stops beating and is marked failed (and does not count) once the grace period has
passed. TPE is seeded per trial (``ml.seed`` + the trial's number), so resumed runs and
parallel workers never repeat each other's suggestions, and a median pruner stops deep
models early through Lightning's callback.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from ccf.ml.dataset import Dataset, Origins, Splits
from ccf.ml.models.base import Forecaster, create, model_class

if TYPE_CHECKING:
    import sqlalchemy

    from ccf.config import Settings

log = logging.getLogger(__name__)

HEARTBEAT_S = 2  # a running trial writes its heartbeat this often...
GRACE_S = 6  # ...and is stale (its process gone) after this long without one
POLL_S = 1.0  # how often a worker whose quota other workers' trials hold looks again
LIGHTNING_KINDS = ("tft", "nhits")  # trained by Lightning: prune on its val_loss
DONE = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER_ATTR = "worker"  # user attribute: which process ran the trial
WORKER = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class TuneResult:
    study: str
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    complete: int
    pruned: int
    failed: int
    ran: int  # trials this call ran


@dataclass(frozen=True, slots=True)
class StudyStorage:
    """Where studies live: a SQLAlchemy URL without a password, and the engine arguments
    that carry it (kept out of ``repr``, so logging this object shows no secret)."""

    url: str
    shown: str  # for logs
    engine_kwargs: dict[str, Any] = field(default_factory=dict, repr=False)


def study_name(settings: Settings, kind: str, feature_set: str, version: str) -> str:
    return settings.ml.tune.study or f"ccf-{kind}-{feature_set}-{version}"


def tunable(kind: str) -> bool:
    """Whether the kind's search space suggests anything (naive's is empty)."""
    try:
        return bool(model_class(kind).search_space(optuna.trial.FixedTrial({})))
    except ValueError:  # FixedTrial: a parameter was asked for
        return True


def study_storage(settings: Settings) -> StudyStorage:
    """The configured storage: ``postgres`` means the database of ``storage.postgres``
    (its schema made, the server checked: a ConnectionError names it, never the
    password); else the URL (default SQLite under the data dir)."""
    if settings.ml.tune.storage == "postgres":
        from ccf.secrets import resolve
        from ccf.storage.postgres.connect import connect, describe, sqlalchemy_url

        pg = settings.storage.postgres
        connect(pg).close()
        password = resolve(pg.password)
        connect_args = {} if password is None else {"password": password}
        # pre-ping: a worker waits for other workers' trials long enough to meet a
        # connection the server has closed
        kwargs = {"connect_args": connect_args, "pool_pre_ping": True}
        return StudyStorage(sqlalchemy_url(pg), describe(pg), kwargs)
    url = settings.optuna_storage
    return StudyStorage(url, _safe_url(url))


class StudyLock:
    """A mutex every worker of the storage shares, for claiming trials and for creating
    Optuna's tables: a PostgreSQL advisory lock (held by a connection of this worker's own,
    so it is freed when the worker dies), a file lock beside a SQLite database, and nothing
    for other storages. ``release`` may be called when not held."""

    def __init__(self, storage: StudyStorage, name: str) -> None:
        import sqlalchemy

        self._key = _lock_key(name)
        self._held = False
        self._conn: sqlalchemy.Connection | None = None
        self._file: int | None = None
        url = sqlalchemy.engine.make_url(storage.url)
        if url.get_backend_name() == "postgresql":
            engine = sqlalchemy.create_engine(
                storage.url,
                poolclass=sqlalchemy.pool.NullPool,
                connect_args=storage.engine_kwargs.get("connect_args", {}),
            )
            self._conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        elif url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            path = Path(f"{url.database}.lock")
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self) -> None:
        if self._conn is not None:
            self._sql("SELECT pg_advisory_lock(:k)")
        elif self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_EX)
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        if self._conn is not None:
            self._sql("SELECT pg_advisory_unlock(:k)")
        elif self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        if self._conn is not None:
            self._conn.close()
            self._conn.engine.dispose()
            self._conn = None
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def _sql(self, sql: str) -> None:
        import sqlalchemy

        assert self._conn is not None
        self._conn.execute(sqlalchemy.text(sql), {"k": self._key})


def _lock_key(name: str) -> int:
    """A stable 64-bit advisory lock key (Python's ``hash`` differs between processes)."""
    digest = hashlib.blake2b(f"ccf-optuna:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def open_study(settings: Settings, name: str, storage: StudyStorage) -> optuna.Study:
    """The study, created or joined, with heartbeats on. Opened under a lock: workers
    starting together on a fresh database would otherwise race to create Optuna's tables."""
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if settings.ml.tune.pruning
        else optuna.pruners.NopPruner()
    )
    tables = StudyLock(storage, "(tables)")  # one for every study: the tables are shared
    tables.acquire()
    try:
        rdb = optuna.storages.RDBStorage(
            storage.url,
            engine_kwargs=storage.engine_kwargs or None,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
        )
        return optuna.create_study(
            storage=rdb, study_name=name, direction="minimize", pruner=pruner, load_if_exists=True
        )
    finally:
        tables.close()


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _fail_orphans(study: optuna.Study) -> None:
    """Fail running trials whose objective never started (no worker attribute a grace period
    after their start): their process died between creating the trial and its first
    heartbeat, so Optuna cannot tell them stale, and they would hold a quota forever."""
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = t.datetime_start.timestamp() if t.datetime_start else now
        if WORKER_ATTR not in t.user_attrs and now - started > GRACE_S + HEARTBEAT_S:
            log.warning(
                "part=ml tune study=%s trial=%d never started its objective: failed",
                study.study_name,
                t.number,
            )
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)


def _tally(study: optuna.Study) -> tuple[int, list[int], int]:
    """Finished trials, the numbers of running ones, and all trials, from one read: two
    reads could see a trial in neither state (running at the first, finished at the
    second) and let a worker start one trial too many."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in DONE for t in trials)
    return done, [t.number for t in trials if t.state == TrialState.RUNNING], len(trials)


def val_pinball(model: Forecaster, data: Dataset, val: Origins) -> float:
    """Mean pinball loss on the validation split in units of vol * sqrt(h), so calm and
    wild stretches, symbols and horizons weigh alike."""
    pred = model.predict(data, val)  # (n, K, H, Q)
    z = (data.targets(val)[..., None] - pred) / data.scales(val)[..., None]
    q = np.asarray(model.spec.quantiles)
    loss = np.maximum(q * z, (q - 1) * z)
    ok = np.isfinite(loss)
    if not ok.any():
        raise ValueError("tune: no validation targets to score: widen the data or ml.split.val")
    return float(loss[ok].mean())


def run_study(
    settings: Settings, kind: str, data: Dataset, splits: Splits, name: str, workdir: Path
) -> TuneResult:
    """Run trials until the study holds ``ml.tune.trials`` finished ones, together with
    any other workers on the study; returns its best trial."""
    storage = study_storage(settings)
    lock = StudyLock(storage, name)
    try:
        study = open_study(settings, name, storage)
        log.info(
            "part=ml tune study=%s kind=%s trials=%d done=%d running=%s worker=%s storage=%s",
            name,
            kind,
            settings.ml.tune.trials,
            *_tally(study)[:2],
            WORKER,
            storage.shown,
        )
        objective = _objective(settings, kind, data, splits, workdir, lock)
        ran = _claim_and_run(settings, study, objective, lock)
    finally:
        lock.close()
    return _result(study, ran)


def _objective(
    settings: Settings, kind: str, data: Dataset, splits: Splits, workdir: Path, lock: StudyLock
) -> Callable[[optuna.Trial], float]:
    """Fit ``kind`` with a trial's parameters; the loss is the validation pinball (deep
    models: Lightning's best val_loss, which the pruner watched)."""
    cfg = settings.ml.tune
    cls = model_class(kind)
    base = dict(settings.ml.params.get(kind, {}))

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, WORKER)
        lock.release()  # the trial is in the storage: other workers count it from now on
        params = {**base, **cls.search_space(trial)}
        model = create(kind, data.spec, params)
        callbacks: list[Any] = []
        if kind in LIGHTNING_KINDS and cfg.pruning:
            from optuna_integration import PyTorchLightningPruningCallback

            callbacks.append(PyTorchLightningPruningCallback(trial, monitor="val_loss"))
        result = model.fit(
            data,
            splits.train,
            splits.val,
            settings.ml.train,
            seed=settings.ml.seed,
            callbacks=callbacks or None,
            workdir=workdir / f"trial-{trial.number}",
        )
        for cb in callbacks:
            cb.check_pruned()
        if kind in LIGHTNING_KINDS and result.best_val_loss is not None:
            return float(result.best_val_loss)
        return val_pinball(model, data, splits.val)

    return objective


def _progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    log.info(
        "part=ml tune study=%s trial=%d state=%s value=%s params=%s worker=%s",
        study.study_name,
        trial.number,
        trial.state.name,
        trial.value,
        trial.params,
        WORKER,
    )


def _claim_and_run(
    settings: Settings,
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    lock: StudyLock,
) -> int:
    """The claim loop of the module docstring: under the lock, count finished and running
    trials and start one (the objective frees the lock once its trial is stored) or wait
    for the other workers'. Returns the trials this worker ran."""
    cfg = settings.ml.tune
    deadline = None if cfg.timeout_s is None else time.monotonic() + cfg.timeout_s
    ran = 0
    waiting_for: list[int] = []
    while deadline is None or time.monotonic() < deadline:
        lock.acquire()
        try:
            _fail_stale(study)
            _fail_orphans(study)
            done, running, number = _tally(study)
            if done >= cfg.trials:
                break
            if done + len(running) < cfg.trials:
                waiting_for = []
                # seeded by the next trial's number: workers and reruns never repeat suggestions
                study.sampler = optuna.samplers.TPESampler(seed=settings.ml.seed + number)
                study.optimize(objective, n_trials=1, callbacks=[_progress], gc_after_trial=True)
                ran += 1
                continue
        finally:
            lock.release()
        if running != waiting_for:
            log.info(
                "part=ml tune study=%s trials %s run elsewhere and fill the quota: waiting for "
                "them (a failed one is run again here)",
                study.study_name,
                running,
            )
            waiting_for = running
        time.sleep(POLL_S)
    return ran


def _result(study: optuna.Study, ran: int) -> TuneResult:
    count = {s: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    if count[TrialState.COMPLETE] == 0:
        raise ValueError(f"tune: study {study.study_name} has no completed trial")
    best = study.best_trial
    return TuneResult(
        study=study.study_name,
        best_params=dict(best.params),
        best_value=float(best.value) if best.value is not None else float("nan"),
        best_trial=best.number,
        complete=count[TrialState.COMPLETE],
        pruned=count[TrialState.PRUNED],
        failed=count[TrialState.FAIL],
        ran=ran,
    )


def _safe_url(url: str) -> str:
    """The storage URL without a password, for logs."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, cred = head.partition("://")
    return f"{scheme}://{cred.split(':')[0]}:***@{tail}"
