"""Hyper-parameter search with Optuna over a model kind's ``search_space``.

A study lives in ``settings.optuna_storage`` (SQLite under the data dir by default, a
PostgreSQL URL for several workers) under one name, and ``ml.tune.trials`` is its total:
rerunning an interrupted ``ccf tune`` runs only what is missing. Each trial beats a
heartbeat into the storage; a trial left RUNNING by a killed process stops beating and
is marked failed (and does not count) once the grace period has passed. TPE is seeded
(offset by the trials already in the study, so a resumed run does not repeat the first
suggestions) and a median pruner stops deep models early through Lightning's callback.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from ccf.ml.dataset import Dataset, Origins, Splits
from ccf.ml.models.base import Forecaster, create, model_class

if TYPE_CHECKING:
    from ccf.config import Settings

log = logging.getLogger(__name__)

HEARTBEAT_S = 2  # a running trial writes its heartbeat this often...
GRACE_S = 6  # ...and is stale (its process gone) after this long without one
LIGHTNING_KINDS = ("tft", "nhits")  # trained by Lightning: prune on its val_loss
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


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


def study_name(settings: Settings, kind: str, feature_set: str, version: str) -> str:
    return settings.ml.tune.study or f"ccf-{kind}-{feature_set}-{version}"


def tunable(kind: str) -> bool:
    """Whether the kind's search space suggests anything (naive's is empty)."""
    try:
        return bool(model_class(kind).search_space(optuna.trial.FixedTrial({})))
    except ValueError:  # FixedTrial: a parameter was asked for
        return True


def open_study(settings: Settings, name: str) -> optuna.Study:
    """The study, created or resumed, with heartbeats on and stale trials failed."""
    storage = optuna.storages.RDBStorage(
        settings.optuna_storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
    )
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        if settings.ml.tune.pruning
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        storage=storage, study_name=name, direction="minimize", pruner=pruner, load_if_exists=True
    )
    settle_running(study)
    study.sampler = optuna.samplers.TPESampler(seed=settings.ml.seed + len(study.trials))
    return study


def settle_running(study: optuna.Study) -> None:
    """Fail trials whose process died. A trial still RUNNING may be a killed run's whose
    heartbeat is not stale yet, or another worker's: wait out one grace period, after
    which only live workers' trials are still running. (A process killed in the instant
    between creating a trial and its first heartbeat leaves a trial Optuna cannot judge:
    it stays RUNNING, but running trials never count towards ``trials``.)"""
    _fail_stale(study)
    running = _running(study)
    if not running:
        return
    log.info(
        "part=ml tune study=%s %d trial(s) running: waiting up to %d s, a killed run's are "
        "failed once their heartbeat is stale",
        study.study_name,
        running,
        GRACE_S + HEARTBEAT_S,
    )
    deadline = time.monotonic() + GRACE_S + HEARTBEAT_S
    while _running(study) and time.monotonic() < deadline:
        time.sleep(0.5)
        _fail_stale(study)


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


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
    """Run the trials the study still lacks; returns its best trial."""
    cls = model_class(kind)
    cfg = settings.ml.tune
    study = open_study(settings, name)
    done = len(study.get_trials(deepcopy=False, states=DONE))
    # trials still running belong to other workers: MaxTrialsCallback stops this one once
    # the study's total is reached, so they are not subtracted here
    todo = max(0, cfg.trials - done)
    log.info(
        "part=ml tune study=%s kind=%s trials=%d done=%d running=%d to_run=%d storage=%s",
        name,
        kind,
        cfg.trials,
        done,
        _running(study),
        todo,
        _safe_url(settings.optuna_storage),
    )
    base = dict(settings.ml.params.get(kind, {}))

    def objective(trial: optuna.Trial) -> float:
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

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.info(
            "part=ml tune study=%s trial=%d state=%s value=%s params=%s",
            study.study_name,
            trial.number,
            trial.state.name,
            trial.value,
            trial.params,
        )

    ran = 0
    if todo:
        before = len(study.trials)
        study.optimize(
            objective,
            n_trials=todo,
            timeout=cfg.timeout_s,
            callbacks=[
                optuna.study.MaxTrialsCallback(cfg.trials, states=DONE),
                progress,
            ],
            gc_after_trial=True,
        )
        ran = len(study.trials) - before
    return _result(study, ran)


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
