"""Who serves: the rule that moves the ``champion`` alias.

A challenger takes ``champion`` only when, walked forward on the same origins (the
newest data's test split), the corrected Diebold-Mariano test says it beats the naive
forecast and its skill (1 - pinball / naive pinball) is above the champion's. Fitted
models with different normalizers each get their own dataset over the same rows; their
origins are the same because they answer the same question (same feature set, targets,
horizons, window), which is checked first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ccf.ml import evaluate as ev_mod
from ccf.ml.prepare import MLError, mismatch, prepare
from ccf.ml.registry import CHALLENGER, CHAMPION, Registry, Version

if TYPE_CHECKING:
    from ccf.config import Settings
    from ccf.ml.evaluate import Evaluation
    from ccf.ml.models.base import Forecaster
    from ccf.ml.sources import Rows

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    challenger: Version
    champion: Version | None
    allowed: bool
    reason: str
    report: dict | None  # labels "challenger", "champion" (when there is one), "naive"


def evaluate_fitted(
    settings: Settings, rows: Rows, models: Mapping[str, Forecaster]
) -> tuple[Evaluation, dict]:
    """Walk fitted models forward on the test split of ``rows``, on the same origins."""
    groups: list[tuple[Forecaster, dict[str, Forecaster]]] = []
    for label, model in models.items():
        for first, members in groups:
            if first.spec == model.spec:
                members[label] = model
                break
        else:
            groups.append((model, {label: model}))
    first = groups[0][0]
    for other, _ in groups[1:]:
        why = mismatch(first.spec, other.spec)
        if why:
            raise MLError(f"the models are not comparable on the same origins: {why}")
    evs = []
    for model, members in groups:
        prep = prepare(settings, rows, model.spec)
        evs.append(
            ev_mod.walk_forward(
                members,
                prep.data,
                prep.splits.test,
                settings.ml.evaluate,
                train_cfg=settings.ml.train,
                seed=settings.ml.seed,
            )
        )
    ev = _merge(evs)
    return ev, ev_mod.score(ev, settings.ml.evaluate)


def _merge(evs: list[Evaluation]) -> Evaluation:
    ev = evs[0]
    for other in evs[1:]:
        if not (np.array_equal(ev.ts, other.ts) and np.array_equal(ev.symbols, other.symbols)):
            raise MLError("the models' walk-forward origins differ: cannot compare them")
        ev.forecasts.update({k: v for k, v in other.forecasts.items() if k != ev_mod.NAIVE})
        ev.refits.update({k: v for k, v in other.refits.items() if k != ev_mod.NAIVE})
    return ev


def rule(report: dict, has_champion: bool) -> tuple[bool, str]:
    """The promotion rule on a report holding "challenger" (and "champion")."""
    s = ev_mod.skill(report, CHALLENGER)
    loss = report["meta"]["promote_on"]
    if not ev_mod.beats_naive(report, CHALLENGER):
        return False, (
            f"challenger does not beat naive: skill {s:+.4f}, and the corrected "
            f"Diebold-Mariano test on {loss} loss finds no significant gain at any horizon "
            "(or finds it worse at one)"
        )
    if not has_champion:
        return True, f"beats naive (DM, {loss}); skill {s:+.4f}; no champion yet"
    c = ev_mod.skill(report, CHAMPION)
    if not s > c:
        return False, f"challenger skill {s:+.4f} is not above the champion's {c:+.4f}"
    return True, f"beats naive (DM, {loss}) and the champion: skill {s:+.4f} vs {c:+.4f}"


def compare(settings: Settings, reg: Registry, rows: Rows, ref: str = CHALLENGER) -> Decision:
    """Evaluate the challenger (or version ``ref``), the champion and naive on the same
    origins of ``rows`` and apply :func:`rule`."""
    try:
        chal_model, chal = reg.load(ref)
    except LookupError:
        raise MLError(f"model {reg.name} has no {ref}: run `ccf train` first") from None
    champ = reg.alias(CHAMPION)
    if champ is not None and champ.version == chal.version:
        return Decision(chal, champ, False, f"version {chal.version} is already champion", None)
    models = {CHALLENGER: chal_model}
    if champ is not None:
        champ_model, _ = reg.load(champ.version)
        why = mismatch(chal_model.spec, champ_model.spec)
        if why:
            return Decision(
                chal,
                champ,
                False,
                f"the champion answers a different question ({why}): no comparison on the "
                "same origins; promote with --force if that is intended",
                None,
            )
        models[CHAMPION] = champ_model
    _, report = evaluate_fitted(settings, rows, models)
    allowed, reason = rule(report, champ is not None)
    return Decision(chal, champ, allowed, reason, report)


def apply(reg: Registry, decision: Decision) -> bool:
    """Move ``champion`` when the decision allows it; True when it moved."""
    if not decision.allowed:
        log.info(
            "part=ml promote refused version=%s champion=%s reason=%s",
            decision.challenger.version,
            decision.champion.version if decision.champion else None,
            decision.reason,
        )
        return False
    reg.set_alias(CHAMPION, decision.challenger.version, decision.reason)
    return True


def force(reg: Registry, ref: str) -> Version:
    """Make version ``ref`` (or the alias' version) champion without the skill check."""
    try:
        v = reg.find(ref)
    except LookupError as e:
        raise MLError(str(e)) from None
    reg.set_alias(CHAMPION, v.version, "forced: skill check skipped (--force)", forced=True)
    return v
