"""Who serves: the rule that moves the ``champion`` alias, and who is a round's challenger.

The rule (:func:`rule`), on one walk forward of challenger, champion and naive over the
same origins, with every Diebold-Mariano test in one Holm family:

- the challenger must be significantly better than naive AND than the champion on the
  configured primary loss (``ml.evaluate.promote_on``) at one horizon at least;
- it must be significantly worse than neither at any target and horizon, on the primary
  loss or on absolute error (MAE);
- ties go to the simpler model (:data:`COMPLEXITY`): a challenger the tests cannot tell
  from the champion takes over only when it is simpler.

A naive champion is the registered naive model, so it is the yardstick itself.

Fitted models with different normalizers each get their own dataset over the same rows;
their origins are the same because they answer the same question (same feature set,
targets, horizons, window), which is checked first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from ccf.ml import evaluate as ev_mod
from ccf.ml.prepare import MLError, Prepared, mismatch, prepare
from ccf.ml.registry import CHALLENGER, CHAMPION, Registry, Version

if TYPE_CHECKING:
    from ccf.config import Settings
    from ccf.ml.evaluate import Evaluation
    from ccf.ml.models.base import Forecaster
    from ccf.ml.sources import Rows

log = logging.getLogger(__name__)

COMPLEXITY = {"naive": 0, "lightgbm": 1, "nhits": 2, "tft": 3}
"""How simple each kind is (lower: simpler); a kind not listed counts as 1."""

Test = Literal["split", "all"]


def complexity(kind: str) -> int:
    return COMPLEXITY.get(kind, 1)


@dataclass(frozen=True, slots=True)
class Decision:
    challenger: Version
    champion: Version | None
    allowed: bool
    reason: str
    report: dict | None  # labels "challenger", "champion" (when there is one), "naive"


def evaluate_fitted(
    settings: Settings,
    rows: Rows,
    models: Mapping[str, Forecaster],
    *,
    test: Test = "split",
    pairs: Sequence[tuple[str, str]] = (),
    prepared: Sequence[Prepared] = (),
) -> tuple[Evaluation, dict]:
    """Walk fitted models forward on the same origins of ``rows`` and score them in one
    report (one Holm family; ``pairs`` are compared head to head too). ``test="split"``:
    the test split, naive fitted on everything before it unless a model is labelled
    "naive"; ``"all"``: every origin of the rows, nothing refitted (``refit_every`` is
    refused), naive online unless given. ``prepared`` datasets are reused for models
    whose spec they have."""
    if test == "all" and settings.ml.evaluate.refit_every:
        raise MLError(
            "--test all scores registered models as they are: refit_every must be 0 (a "
            "refit needs a past to train on)"
        )
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
    for i, (model, members) in enumerate(groups):
        prep = next((p for p in prepared if p.data.spec == model.spec), None)
        if prep is None:
            prep = prepare(settings, rows, model.spec, whole=test == "all")
        origins = prep.data.origins() if test == "all" else prep.splits.test
        # the yardstick is made once, in the first group, and merged into the others
        yardstick = "none" if i > 0 else "online" if test == "all" else "fit"
        try:
            evs.append(
                ev_mod.walk_forward(
                    members,
                    prep.data,
                    origins,
                    settings.ml.evaluate,
                    train_cfg=settings.ml.train,
                    seed=settings.ml.seed,
                    yardstick=yardstick,
                )
            )
        except ValueError as e:
            raise MLError(str(e)) from None
    ev = _merge(evs)
    return ev, ev_mod.score(ev, settings.ml.evaluate, pairs)


def _merge(evs: list[Evaluation]) -> Evaluation:
    """One evaluation of every group, on the first group's origins (the online naive may
    have left warm-up origins out of it: the other groups are cut to the same)."""
    ev = evs[0]
    for other in evs[1:]:
        keep = np.isin(other.ts, ev.ts)
        same = np.array_equal(ev.ts, other.ts[keep])
        if not (same and np.array_equal(ev.symbols, other.symbols[keep])):
            raise MLError("the models' walk-forward origins differ: cannot compare them")
        ev.forecasts.update({k: v[keep] for k, v in other.forecasts.items() if k != ev_mod.NAIVE})
        ev.refits.update({k: v for k, v in other.refits.items() if k != ev_mod.NAIVE})
        ev.ranges.update(other.ranges)
    return ev


def rule(
    report: dict,
    has_champion: bool,
    *,
    challenger_kind: str = "",
    champion_kind: str = "",
    champion_label: str = CHAMPION,
) -> tuple[bool, str]:
    """The promotion rule (module docstring) on a report holding "challenger" (and the
    champion, tested head to head with it: "champion", or "naive" when the champion is the
    registered naive model and so the yardstick itself)."""
    s = ev_mod.skill(report, CHALLENGER)
    loss = report["meta"]["promote_on"]
    vs_naive = ev_mod.judge(report, CHALLENGER)
    if not vs_naive.wins:
        why = (
            f"it is significantly worse at {', '.join(vs_naive.worse)}"
            if vs_naive.worse
            else f"the corrected Diebold-Mariano test on {loss} loss finds no significant "
            "gain at any horizon"
        )
        return False, f"challenger does not beat naive: skill {s:+.4f}; {why}"
    gain = f"better on {loss} at {', '.join(vs_naive.better)}"
    if not has_champion:
        return True, f"beats naive (DM, {gain}); skill {s:+.4f}; no champion yet"
    c = ev_mod.skill(report, champion_label)
    vs_champ = ev_mod.judge(report, CHALLENGER, champion_label)
    if vs_champ.worse:
        return False, (
            f"challenger is significantly worse than the champion at "
            f"{', '.join(vs_champ.worse)} (skill {s:+.4f} vs {c:+.4f})"
        )
    if vs_champ.better:
        return True, (
            f"beats naive (DM, {gain}) and the champion (DM, better on {loss} at "
            f"{', '.join(vs_champ.better)}): skill {s:+.4f} vs {c:+.4f}"
        )
    if (
        challenger_kind
        and champion_kind
        and complexity(challenger_kind) < complexity(champion_kind)
    ):
        return True, (
            f"beats naive (DM, {gain}) and ties the champion, and a tie goes to the simpler "
            f"model ({challenger_kind} over {champion_kind}): skill {s:+.4f} vs {c:+.4f}"
        )
    return False, (
        f"challenger is not significantly better than the champion on {loss} at any horizon "
        f"(skill {s:+.4f} vs {c:+.4f}): a tie keeps the champion"
        + (f" ({champion_kind}, no more complex)" if champion_kind else "")
    )


def best_of(report: dict, kinds: Mapping[str, str]) -> str | None:
    """Of the labelled models (label -> kind), the one to prefer: the simplest, unless a
    more complex one wins against it (:func:`~ccf.ml.evaluate.judge`, tested as a pair
    in the report), and so on up the order of complexity."""
    order = sorted(kinds, key=lambda label: (complexity(kinds[label]), label))
    if not order:
        return None
    best = order[0]
    for label in order[1:]:
        if ev_mod.judge(report, label, best).wins:
            best = label
    return best


def round_pairs(kinds: Mapping[str, str]) -> list[tuple[str, str]]:
    """The head-to-head tests :func:`best_of` reads: each non-naive model against every
    simpler (or equally simple, earlier named) one."""
    order = sorted(
        (label for label, kind in kinds.items() if kind != ev_mod.NAIVE),
        key=lambda label: (complexity(kinds[label]), label),
    )
    return [(a, b) for i, a in enumerate(order) for b in order[:i]]


def choose(report: dict, kinds: Mapping[str, str]) -> tuple[str | None, str | None, str]:
    """A round's challenger and (while there is none) first champion, as report labels,
    and why. The challenger is the best (:func:`best_of`) of the non-naive models that are
    significantly worse than naive nowhere; None when every one is (the alias then stays
    where it was). The first champion is the best of those that beat naive, else the
    naive model when the round has one."""
    naive = [label for label, kind in kinds.items() if kind == ev_mod.NAIVE]
    others = {label: kind for label, kind in kinds.items() if kind != ev_mod.NAIVE}
    if not others:
        first = naive[0] if naive else None
        return first, first, "no model beats naive, so the naive forecast serves"
    fit = {label: kind for label, kind in others.items() if not ev_mod.judge(report, label).worse}
    challenger = best_of(report, fit)
    winners = {label: kind for label, kind in fit.items() if ev_mod.beats_naive(report, label)}
    if winners:
        return challenger, best_of(report, winners), "beats naive (corrected DM test)"
    return (
        challenger,
        naive[0] if naive else None,
        "no model beats naive, so the naive forecast serves",
    )


def compare(
    settings: Settings, reg: Registry, rows: Rows, ref: str = CHALLENGER, test: Test = "split"
) -> Decision:
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
    # a naive champion is the registered naive: the yardstick itself
    label = ev_mod.NAIVE if champ is not None and champ.kind == ev_mod.NAIVE else CHAMPION
    if champ is not None:
        models[label] = champ_model
    pairs = [(CHALLENGER, CHAMPION)] if champ is not None and label == CHAMPION else []
    _, report = evaluate_fitted(settings, rows, models, test=test, pairs=pairs)
    allowed, reason = rule(
        report,
        champ is not None,
        challenger_kind=chal.kind,
        champion_kind=champ.kind if champ else "",
        champion_label=label,
    )
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
