"""The ML flows the command line runs: train, tune, evaluate, promote, and the retrain loop.

A round: fit every model on the train split (val for early stopping; checkpoints and
TensorBoard logs under ``<data_dir>/training/<run>``, the TensorBoard folder logged with
the run), walk them all forward together on the test split against naive, write one
report for the round (``<data_dir>/reports/round-...``; one Holm family over every model
x horizon), log an MLflow run per model and register a version. Then
:func:`~ccf.ml.promotion.choose` names the ``challenger`` (the best model significantly
worse than naive nowhere; ties to the simpler) and, while there is no champion, the first
champion (the best that beats naive, else the naive model: it answers the same question,
honestly). From then on only the promotion rule (:mod:`ccf.ml.promotion`) moves
``champion``. Candle files are checked before anything else (:func:`check_source`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccf.ml import evaluate as ev_mod
from ccf.ml import promotion
from ccf.ml.dataset import spec_info
from ccf.ml.models.base import FitResult, Forecaster, create, model_class
from ccf.ml.prepare import (
    MLError,
    Prepared,
    Source,
    check_source,
    load_rows,
    mismatch,
    prepare,
)
from ccf.ml.registry import CHALLENGER, CHAMPION, Registry, RunRecord, Version
from ccf.ml.report import write_report
from ccf.ml.summary import NAIVE, flat_metrics

if TYPE_CHECKING:
    from ccf.config import Settings
    from ccf.ml.sources import Rows
    from ccf.ml.tune import TuneResult

log = logging.getLogger(__name__)


@dataclass
class Trained:
    """One model of a round: fitted, evaluated, reported, registered."""

    kind: str
    model: Forecaster
    run_name: str
    report: dict
    report_paths: list[Path]
    run_id: str
    version: Version

    @property
    def skill(self) -> float:
        return ev_mod.skill(self.report, self.kind)

    @property
    def beats_naive(self) -> bool:
        return ev_mod.beats_naive(self.report, self.kind)


@dataclass
class Round:
    rows: Rows
    trained: list[Trained]
    aliases: dict[str, str] = field(default_factory=dict)
    decision: promotion.Decision | None = None


def check_models(settings: Settings, kinds: tuple[str, ...]) -> None:
    """Fail before any data is read when a model kind or its parameters are unknown."""
    for kind in kinds:
        try:
            cls = model_class(kind)
        except ImportError as e:
            raise MLError(f"ml.models: model {kind!r} is not available here ({e})") from None
        except ValueError as e:
            raise MLError(str(e)) from None
        unknown = set(settings.ml.params.get(kind, {})) - set(cls.defaults)
        if unknown:
            raise MLError(
                f"ml.params.{kind}: unknown keys {sorted(unknown)}; known: {sorted(cls.defaults)}"
            )


def _run_name(kind: str) -> str:
    return f"{kind}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S-%f')[:-3]}"


def _workdir(settings: Settings, run_name: str) -> Path:
    return (settings.data_dir / "training" / run_name).resolve()


def walk_and_score(
    settings: Settings, models: dict[str, Forecaster], prep: Prepared
) -> tuple[ev_mod.Evaluation, dict]:
    """Walk the models forward over the test split against naive and score them."""
    ev = ev_mod.walk_forward(
        models,
        prep.data,
        prep.splits.test,
        settings.ml.evaluate,
        train_cfg=settings.ml.train,
        seed=settings.ml.seed,
    )
    return ev, ev_mod.score(ev, settings.ml.evaluate)


@dataclass
class Fitted:
    """A model fitted in a round, not yet evaluated or registered."""

    kind: str
    model: Forecaster
    fit: FitResult
    run_name: str
    model_dir: Path
    prep: Prepared
    warm: tuple[Forecaster, str] | None


def fit_one(
    settings: Settings,
    prep: Prepared,
    kind: str,
    params: dict[str, Any],
    warm: tuple[Forecaster, str] | None = None,
) -> Fitted:
    """Fit one model on the train split (val for early stopping) and save it."""
    run_name = _run_name(kind)
    workdir = _workdir(settings, run_name)
    model = create(kind, prep.data.spec, params)
    log.info("part=ml train run=%s model=%s warm_start=%s", run_name, model.describe(), bool(warm))
    try:
        fit = model.fit(
            prep.data,
            prep.splits.train,
            prep.splits.val,
            settings.ml.train,
            seed=settings.ml.seed,
            warm_start=warm[0] if warm else None,
            workdir=workdir,
        )
    except ValueError as e:
        raise MLError(f"{kind}: {e}") from None
    ts = prep.data.ts(prep.splits.train)
    model.trained_range = (int(ts.min()), int(ts.max()))  # the drift monitor's reference
    model_dir = model.save(workdir / "model")
    return Fitted(kind, model, fit, run_name, model_dir, prep, warm)


def evaluate_round(
    settings: Settings, rows: Rows, fitted: list[Fitted]
) -> tuple[ev_mod.Evaluation, dict]:
    """Walk a round's models forward on the same test origins and score them in one
    report: one Holm family over every model x target x horizon and the head-to-head
    tests the choice of challenger and champion reads. A fitted naive is the yardstick."""
    kinds = {f.kind: f.kind for f in fitted}
    if len(kinds) != len(fitted):
        raise MLError("ml.models: name each kind once per round")
    return promotion.evaluate_fitted(
        settings,
        rows,
        {f.kind: f.model for f in fitted},
        pairs=promotion.round_pairs(kinds),
        prepared=[f.prep for f in fitted],
    )


def register_one(
    settings: Settings,
    reg: Registry,
    f: Fitted,
    report: dict,
    paths: list[Path],
    *,
    command: str,
    source: Source,
    tags: dict[str, str] | None = None,
) -> Trained:
    """Log one fitted model's run (with the round's report) and register it."""
    kind, model, fit, prep, warm = f.kind, f.model, f.fit, f.prep, f.warm
    spec = prep.data.spec
    all_tags = {
        "ccf.command": command,
        "ccf.kind": kind,
        "ccf.model_name": settings.model_name,
        "ccf.feature_set": spec.feature_set,
        "ccf.feature_version": spec.version,
        "ccf.source": source.describe(),
        **({"ccf.warm_start_from": warm[1]} if warm else {}),
        **(tags or {}),
    }
    metrics = flat_metrics(report, kind)
    tb = _workdir(settings, f.run_name) / "tensorboard"
    record = RunRecord(
        name=f.run_name,
        params={
            "kind": kind,
            "seed": settings.ml.seed,
            **{f"model.{k}": v for k, v in model.params.items()},
            **{f"train.{k}": v for k, v in settings.ml.train.model_dump().items()},
            **{f"eval.{k}": v for k, v in settings.ml.evaluate.model_dump().items()},
            **{f"data.{k}": v for k, v in prep.info().items()},
            **spec_info(spec),
        },
        metrics={
            **metrics,
            "fit_seconds": fit.seconds,
            "fit_samples": fit.samples,
            "fit_samples_per_s": fit.samples_per_s,
            "fit_epochs": fit.epochs,
            **({"best_val_loss": fit.best_val_loss} if fit.best_val_loss is not None else {}),
        },
        curves={"fit_train_loss": fit.train_loss, "fit_val_loss": fit.val_loss},
        tags=all_tags,
        artifacts=paths,
        folders={"tensorboard": tb} if tb.is_dir() else {},
    )
    version_tags = {
        "kind": kind,
        "skill": f"{metrics.get('skill', math.nan):.6g}",
        "beats_naive": str(bool(metrics.get("beats_naive"))).lower(),
        "feature_set": spec.feature_set,
        "feature_version": spec.version,
        "data_to": prep.info()["last_bucket"],
        "run_name": f.run_name,
        "command": command,
        **({"warm_start_from": warm[1]} if warm else {}),
    }
    run_id, version = reg.register(record, model, f.model_dir, version_tags)
    log.info(
        "part=ml train run=%s kind=%s version=%s skill=%+.4f beats_naive=%s report=%s",
        f.run_name,
        kind,
        version.version,
        ev_mod.skill(report, kind),
        ev_mod.beats_naive(report, kind),
        paths[0].parent if paths else None,
    )
    return Trained(kind, model, f.run_name, report, paths, run_id, version)


def train_one(
    settings: Settings,
    reg: Registry,
    prep: Prepared,
    kind: str,
    params: dict[str, Any],
    *,
    command: str,
    source: Source,
    warm: tuple[Forecaster, str] | None = None,
    tags: dict[str, str] | None = None,
) -> Trained:
    """Fit, evaluate, report, log and register one model."""
    f = fit_one(settings, prep, kind, params, warm)
    ev, report = evaluate_round(settings, prep.rows, [f])
    paths = write_report(report, ev, settings.reports_dir / f.run_name)
    return register_one(settings, reg, f, report, paths, command=command, source=source, tags=tags)


def assign_aliases(reg: Registry, trained: list[Trained], command: str) -> dict[str, str]:
    """``challenger`` and (while there is none) ``champion`` by
    :func:`~ccf.ml.promotion.choose` on the round's one report. Returns the aliases
    afterwards."""
    if not trained:
        return reg.aliases()
    report = trained[0].report
    by_kind = {t.kind: t for t in trained}
    chal, champ, why = promotion.choose(report, {t.kind: t.kind for t in trained})
    if chal is None:
        log.warning(
            "part=ml registry model=%s challenger unchanged: every model of the round is "
            "significantly worse than naive (%s)",
            reg.name,
            ", ".join(t.kind for t in trained if t.kind != NAIVE),
        )
    else:
        best = by_kind[chal]
        reg.set_alias(
            CHALLENGER,
            best.version.version,
            f"{command}: best of the round ({best.kind}, skill {best.skill:+.4f}; nowhere "
            "significantly worse than naive, ties to the simpler)",
        )
    if reg.alias(CHAMPION) is None:
        if champ is not None:
            w = by_kind[champ]
            reason = (
                f"first champion: {why}, skill {w.skill:+.4f}"
                if w.kind != NAIVE
                else f"first champion: {why}"
            )
            reg.set_alias(CHAMPION, w.version.version, reason)
        else:
            log.warning(
                "part=ml registry model=%s no champion yet: nothing beats naive; add naive to "
                "ml.models so there is one to serve",
                reg.name,
            )
    return reg.aliases()


def _warm_start(
    settings: Settings, reg: Registry, rows: Rows, fresh: Prepared, kind: str
) -> tuple[Prepared, tuple[Forecaster, str] | None]:
    """The champion to continue from, when it is the same kind and reads the same inputs
    (then its own normalizer is kept); else train from scratch."""
    champ = reg.alias(CHAMPION)
    if champ is None or champ.kind != kind:
        log.info(
            "part=ml train kind=%s warm start: champion is %s: from scratch",
            kind,
            "missing" if champ is None else f"a {champ.kind} model",
        )
        return fresh, None
    model, v = reg.load(champ.version)
    why = mismatch(model.spec, fresh.data.spec, warm=True)
    if why:
        log.info("part=ml train kind=%s warm start refused (%s): from scratch", kind, why)
        return fresh, None
    log.info("part=ml train kind=%s warm start from champion version=%s", kind, v.version)
    return prepare(settings, rows, model.spec), (model, v.version)


def train_round(
    settings: Settings,
    source: Source,
    kinds: tuple[str, ...],
    *,
    warm_start: bool = False,
    command: str = "train",
    reg: Registry | None = None,
) -> Round:
    """Train every kind on fresh rows from ``source``, then assign the aliases."""
    check_source(source)  # at once, before the models load and the registry makes its store
    check_models(settings, kinds)
    reg = reg or Registry(settings)
    rows = load_rows(settings, source)
    fresh = prepare(settings, rows)
    fitted = []
    for kind in kinds:
        prep, warm = fresh, None
        if warm_start:
            prep, warm = _warm_start(settings, reg, rows, fresh, kind)
        # a warm start keeps the champion's parameters: its weights fit only its shape
        params = dict(warm[0].params if warm else settings.ml.params.get(kind, {}))
        fitted.append(fit_one(settings, prep, kind, params, warm))
    ev, report = evaluate_round(settings, rows, fitted)
    paths = write_report(report, ev, settings.reports_dir / _run_name("round"))
    trained = [
        register_one(settings, reg, f, report, paths, command=command, source=source)
        for f in fitted
    ]
    return Round(rows, trained, assign_aliases(reg, trained, command))


def train_loop(
    settings: Settings,
    source: Source,
    kinds: tuple[str, ...],
    *,
    every_s: float,
    stop: threading.Event,
    warm_start: bool = False,
    retry_s: float | None = None,
    on_round: Callable[[int, Round], None] = lambda n, r: None,
    first_model: bool = False,
) -> int:
    """Retrain every ``every_s`` (start to start) on fresh data until ``stop`` is set, which
    is checked between rounds; each round's challenger is promoted by the rule of
    ``ccf promote``. Returns the rounds run.

    With ``retry_s``, a failed round is retried after that long while the registry has
    no champion yet: ``ccf run`` trains its first model as soon as the live data allows.
    With ``first_model`` (and ``retry_s``) that first model is naive on a short spec,
    replaced by the first full round (:mod:`ccf.ml.first`).
    """
    from ccf.ml import first

    if source.end_ns is not None:
        log.warning("part=ml loop --to is fixed: every round reads the same rows")
    check_source(source)  # a candle file that is not there stops the loop at once...
    check_models(settings, kinds)  # ...so does a config mistake; data trouble not
    reg = Registry(settings)
    n = 0
    while not stop.is_set():
        started = time.monotonic()
        n += 1
        soon = False  # the next round at retry pace: the champion is a first model
        try:
            had_champion = reg.alias(CHAMPION) is not None
            replacing = retry_s is not None and first.provisional(reg)
            if first_model and retry_s is not None and not had_champion:
                rnd, soon = first.first_round(settings, source, reg), True
            else:  # no warm start from a first model: its spec is not the configured one
                rnd = train_round(
                    settings,
                    source,
                    kinds,
                    warm_start=warm_start and not replacing,
                    command="loop",
                    reg=reg,
                )
            if replacing:
                rnd.aliases = first.replace_first(reg, rnd)
            elif had_champion:
                rnd.decision = promotion.compare(settings, reg, rnd.rows, CHALLENGER)
                promotion.apply(reg, rnd.decision)
                rnd.aliases = reg.aliases()
        except MLError as e:
            if retry_s is not None and (reg.alias(CHAMPION) is None or first.provisional(reg)):
                log.info(
                    "part=ml loop round=%d: %s (no champion yet: retry in %.0f s)", n, e, retry_s
                )
                if stop.wait(retry_s):
                    break
                continue
            log.error("part=ml loop round=%d failed: %s (next round as scheduled)", n, e)
        else:
            on_round(n, rnd)
            log.info("part=ml loop round=%d done aliases=%s", n, rnd.aliases)
        wait = retry_s if soon and retry_s is not None else every_s
        if stop.wait(max(0.0, wait - (time.monotonic() - started))):
            break
    log.info("part=ml loop stopped after %d round(s)", n)
    return n


def tune(settings: Settings, source: Source, kind: str) -> tuple[TuneResult, Round]:
    """Run (or resume) the study for ``kind``, then train its best parameters with the full
    config and register them as a challenger."""
    from ccf.ml import tune as tune_mod

    check_models(settings, (kind,))
    if not tune_mod.tunable(kind):
        raise MLError(f"{kind} has nothing to tune (its search space is empty): pick another model")
    check_source(source)
    reg = Registry(settings)
    rows = load_rows(settings, source)
    prep = prepare(settings, rows)
    name = tune_mod.study_name(settings, kind, rows.name, rows.version)
    result = tune_mod.run_study(
        settings, kind, prep.data, prep.splits, name, _workdir(settings, name)
    )
    log.info(
        "part=ml tune study=%s best trial=%d value=%.6g params=%s (complete=%d pruned=%d "
        "failed=%d)",
        name,
        result.best_trial,
        result.best_value,
        result.best_params,
        result.complete,
        result.pruned,
        result.failed,
    )
    params = {**settings.ml.params.get(kind, {}), **result.best_params}
    trained = train_one(
        settings,
        reg,
        prep,
        kind,
        params,
        command="tune",
        source=source,
        tags={
            "ccf.study": name,
            "ccf.best_trial": str(result.best_trial),
            "ccf.best_value": f"{result.best_value:.6g}",
        },
    )
    return result, Round(rows, [trained], assign_aliases(reg, [trained], "tune"))


@dataclass
class EvalResult:
    report: dict
    paths: list[Path]
    run_id: str
    labels: list[str]


def evaluate(
    settings: Settings,
    source: Source,
    *,
    model_uris: tuple[str, ...] = (),
    kinds: tuple[str, ...] = (),
    test: promotion.Test = "split",
    out_dir: Path | None = None,
) -> EvalResult:
    """Walk-forward evaluation, written as a report and logged as an MLflow run: of
    registered models (``model_uris``, several on the same origins and in one Holm
    family, never refitted; ``test="all"`` scores every origin of the rows, a new file,
    against the online naive unless one of them is a naive model) or of freshly fitted
    kinds on the test split."""
    if test == "all" and not model_uris:
        raise MLError(
            "--test all scores registered models on all of the data: give them with "
            "--model-uri (fitting --models needs a train split)"
        )
    check_source(source)
    reg = Registry(settings)
    rows = load_rows(settings, source)
    run_name = _run_name("evaluate")
    if model_uris:
        models = _labelled(reg, model_uris)
        labels = list(models)
        fitted = [label for label in labels if label != NAIVE]
        kinds_of = {label: m.kind for label, m in models.items()}
        ev, report = promotion.evaluate_fitted(
            settings,
            rows,
            models,
            test=test,
            pairs=promotion.round_pairs({k: v for k, v in kinds_of.items() if k in fitted}),
        )
        prep_info: dict[str, Any] = {"test": test}
    else:
        check_models(settings, kinds)
        prep = prepare(settings, rows)
        fitted_models = {}
        for kind in kinds:
            m = create(kind, prep.data.spec, dict(settings.ml.params.get(kind, {})))
            try:
                m.fit(
                    prep.data,
                    prep.splits.train,
                    prep.splits.val,
                    settings.ml.train,
                    seed=settings.ml.seed,
                    workdir=_workdir(settings, run_name) / kind,
                )
            except ValueError as e:
                raise MLError(f"{kind}: {e}") from None
            fitted_models[kind] = m
        try:
            ev, report = walk_and_score(settings, fitted_models, prep)
        except ValueError as e:
            raise MLError(str(e)) from None
        prep_info = prep.info()
        labels = list(fitted_models)
    out = (out_dir or settings.reports_dir / run_name).resolve()
    paths = write_report(report, ev, out)
    metrics: dict[str, float] = {}
    for label in labels:
        key = label.replace("@", ":")  # MLflow metric names take no @
        metrics.update({f"{key}.{k}": v for k, v in flat_metrics(report, label).items()})
    record = RunRecord(
        name=run_name,
        params={
            "models": ",".join(labels),
            "model_uri": ",".join(model_uris),
            "seed": settings.ml.seed,
            **{f"eval.{k}": v for k, v in settings.ml.evaluate.model_dump().items()},
            **{f"data.{k}": v for k, v in prep_info.items()},
            **spec_info(ev.spec),
        },
        metrics=metrics,
        tags={
            "ccf.command": "evaluate",
            "ccf.source": source.describe(),
            "ccf.feature_set": ev.spec.feature_set,
            "ccf.feature_version": ev.spec.version,
        },
        artifacts=paths,
    )
    run_id = reg.log_run(record)
    log.info("part=ml evaluate run=%s report=%s", run_name, out)
    return EvalResult(report, paths, run_id, [ev_mod.NAIVE, *[x for x in labels if x != NAIVE]])


def _labelled(reg: Registry, uris: tuple[str, ...]) -> dict[str, Forecaster]:
    """Models by report label: ``kind@alias`` or ``kind/version`` (the URI's tail), the
    first naive model as "naive" (the yardstick)."""
    out: dict[str, Forecaster] = {}
    for uri in uris:
        model = _load_uri(reg, uri)
        if model.kind == NAIVE and NAIVE not in out:
            out[NAIVE] = model
            continue
        name = uri.rstrip("/")
        if Path(uri).is_dir():
            label = f"{model.kind}:{Path(uri).name}"
        elif "@" in name:
            label = f"{model.kind}@{name.rsplit('@', 1)[1]}"
        else:
            tail = name.split("/")[-1]
            label = f"{model.kind}/v{tail}" if tail.isdigit() else f"{model.kind}@{tail}"
        if label in out:
            raise MLError(f"--model-uri {uri} is given twice")
        out[label] = model
    return out


def _load_uri(reg: Registry, uri: str) -> Forecaster:
    """A model from a saved model folder, a version number or alias, or a pyfunc URI."""
    from ccf.ml.models.base import load

    if Path(uri).is_dir():
        return load(Path(uri))
    try:
        if "/" not in uri and ":" not in uri:
            return reg.load(uri)[0]
        return reg.load_uri(uri)
    except LookupError as e:
        raise MLError(str(e)) from None


def promote(
    settings: Settings, source: Source, ref: str = CHALLENGER, test: promotion.Test = "split"
) -> tuple[Registry, promotion.Decision]:
    """The comparison ``ccf promote`` prints before it asks to move the alias."""
    check_source(source)
    reg = Registry(settings)
    rows = load_rows(settings, source)
    return reg, promotion.compare(settings, reg, rows, ref, test)
