"""The first model of ``ccf run``: a forecast within a minute of the first data.

The configured models need ``encoder_length`` buckets of history per window plus the
volatility warm-up and enough windows for three time splits: 120 one-second buckets
with the defaults, two minutes before training can even start. The naive forecast
reads no encoder and needs only a volatility estimate, so while the registry has no
champion the loop first trains naive alone on a short spec (``run.first_encoder_length``,
``run.first_vol_halflife``): about 50 buckets. It is registered like any model, with
``command=first`` on its version, and becomes champion so the predictor starts. The
loop's next rounds then come every ``run.first_train_retry`` until the full
configuration trains; that round's pick replaces the first model by the first-champion
rule (the best that beats naive, else the full-spec naive), and the schedule goes on
as ``run.retrain_every``.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the dashboard imports this module for :func:`needs`: no MLflow here
    from ccf.config import Settings
    from ccf.ml.pipeline import Round
    from ccf.ml.prepare import Source
    from ccf.ml.registry import Registry

log = logging.getLogger(__name__)

FIRST = "first"
"""The ``command`` tag of a first model's version."""
NAIVE = "naive"
FEATURE_WARMUP = 5
"""Buckets the live features take to be finite (rolling inputs): part of the estimate."""
NAIVE_MIN_TARGETS = 10  # what Naive.fit needs per horizon


def first_settings(settings: Settings) -> Settings:
    """The settings of a first model: naive on the short spec."""
    run = settings.run
    ml = settings.ml.model_copy(
        update={
            "encoder_length": run.first_encoder_length,
            "vol_halflife": run.first_vol_halflife,
            "models": (NAIVE,),
        }
    )
    return settings.model_copy(update={"ml": ml})


def buckets_needed(encoder_length: int, vol_halflife: int, max_horizon: int, train: float) -> int:
    """About how many buckets per symbol a round needs: the first valid origin (encoder
    full, vol and features warm), then enough training origins before the embargo."""
    first_valid = max(encoder_length, vol_halflife) + FEATURE_WARMUP
    return math.ceil((first_valid + max_horizon + NAIVE_MIN_TARGETS) / train)


def needs(settings: Settings) -> tuple[int, int]:
    """Buckets per symbol for (a first model, the configured models)."""
    ml, run = settings.ml, settings.run
    h, train = max(ml.horizons), ml.split.train
    return (
        buckets_needed(run.first_encoder_length, run.first_vol_halflife, h, train),
        buckets_needed(ml.encoder_length, ml.vol_halflife, h, train),
    )


def provisional(reg: Registry) -> bool:
    """The champion is a first model, to be replaced by the first full round."""
    from ccf.ml.registry import CHAMPION

    champ = reg.alias(CHAMPION)
    return champ is not None and champ.tags.get("command") == FIRST


def first_round(settings: Settings, source: Source, reg: Registry) -> Round:
    """Train and register the first model; it becomes champion (there is none yet)."""
    from ccf.ml.pipeline import train_round

    rnd = train_round(first_settings(settings), source, (NAIVE,), command=FIRST, reg=reg)
    log.info(
        "part=ml loop first model: naive (encoder %d, vol half-life %d) on %d rows is "
        "champion until the configured models train",
        settings.run.first_encoder_length,
        settings.run.first_vol_halflife,
        len(rnd.rows.frame),
    )
    return rnd


def replace_first(reg: Registry, rnd: Round) -> dict[str, str]:
    """The full round's pick takes over from the first model, by the first-champion rule
    (:func:`ccf.ml.promotion.choose`: the best that beats naive, else this round's
    naive). Returns the aliases afterwards."""
    from ccf.ml import promotion
    from ccf.ml.registry import CHAMPION

    if not rnd.trained:
        return reg.aliases()
    by_kind = {t.kind: t for t in rnd.trained}
    _, pick, why = promotion.choose(rnd.trained[0].report, {k: k for k in by_kind})
    if pick is None:
        log.warning(
            "part=ml loop model=%s the first model stays champion: nothing beats naive and "
            "naive is not in run.train_models",
            reg.name,
        )
        return reg.aliases()
    t = by_kind[pick]
    reason = f"replaces the first model: {why}" + (
        f", skill {t.skill:+.4f}" if t.kind != NAIVE else ""
    )
    reg.set_alias(CHAMPION, t.version.version, reason)
    log.info("part=ml loop champion %s (%s): %s", t.version.version, t.kind, reason)
    return reg.aliases()
