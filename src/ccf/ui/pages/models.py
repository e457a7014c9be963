"""Models: the registry's versions with their aliases and evaluation reports, and the
promotion of the challenger, which asks first and applies the rule of ``ccf promote``
(it beats naive and the champion on the same origins of the newest data), or says why not.
"""

from __future__ import annotations

import logging

import pandas as pd
import streamlit as st
from mlflow.exceptions import MlflowException

from ccf.config import Settings
from ccf.ml import pipeline, promotion
from ccf.ml.prepare import MLError, Source
from ccf.ml.registry import CHALLENGER, CHAMPION, Registry
from ccf.ml.summary import headline
from ccf.ui import cache
from ccf.ui.common import header, reachable, waiting
from ccf.ui.common import settings as current_settings
from ccf.ui.data.db import Store

log = logging.getLogger(__name__)
DECISION = "models_decision"  # session key: the checked promotion waiting for a yes


def render(settings: Settings) -> None:
    header(settings, "Models")
    try:
        versions = cache.versions(settings)
    except MlflowException as e:
        st.error(f"cannot read the registry at {settings.tracking_uri}: {e.message}")
        return
    if versions.empty:
        waiting(
            f"No model registered yet in {settings.model_name} (`ccf train` trains, evaluates "
            "and registers models; `ccf run` trains a first one by itself)."
        )
        return
    st.dataframe(
        versions.drop(columns=["run_id"]),
        hide_index=True,
        width="stretch",
        column_config={
            "skill": st.column_config.NumberColumn(format="%+.4f"),
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
    )
    st.caption(
        "skill = 1 - pinball / naive pinball on the walk-forward test split; beats naive: the "
        "Holm-corrected Diebold-Mariano test says so at one horizon at least."
    )
    _served(settings)
    _promotion(settings, versions)
    _report(settings, versions)


def _served(settings: Settings) -> None:
    """What the predictor serves now: an alias moves first, the predictor follows at its
    next alias check (``serve.alias_check_s``) from the next bucket on."""
    served = cache.serving(Store(settings, "predictions"))
    if served.empty:
        return
    st.markdown("**Served by the predictor**")
    st.dataframe(
        served,
        hide_index=True,
        width="stretch",
        column_config={
            "loaded": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
            "from_origin": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
    )


def _alias(versions: pd.DataFrame, alias: str) -> str | None:
    hit = versions[versions["aliases"].str.split(", ").map(lambda a: alias in a)]
    return None if hit.empty else str(hit["version"].iloc[0])


def _promotion(settings: Settings, versions: pd.DataFrame) -> None:
    st.subheader("Promotion")
    champ, chal = _alias(versions, CHAMPION), _alias(versions, CHALLENGER)
    if chal is None:
        waiting("No challenger: `ccf train` registers the best model of a round as one.")
        return
    if chal == champ:
        st.info(f"Version {chal} is both challenger and champion: nothing to promote.")
        return
    st.write(
        f"Challenger **version {chal}** against champion "
        + (f"**version {champ}**" if champ else "(none yet)")
        + ": both walk forward on the same origins of the newest data's test split, with the "
        "naive forecast beside them."
    )
    if st.button("Check the challenger", key="models_check"):
        with st.spinner("Walking the models forward ..."):
            try:
                _, decision = pipeline.promote(settings, Source(), CHALLENGER)
            except MLError as e:
                st.error(f"cannot compare: {e}")
                return
        st.session_state[DECISION] = decision
        log.info(
            "part=ui promote check challenger=%s champion=%s allowed=%s reason=%s",
            chal,
            champ,
            decision.allowed,
            decision.reason,
        )
    decision = st.session_state.get(DECISION)
    if decision is None or decision.challenger.version != chal:
        return
    if decision.report is not None:
        labels = [x for x in ("naive", CHAMPION, CHALLENGER) if x in decision.report["models"]]
        st.code(headline(decision.report, labels), language=None)
    if not decision.allowed:
        st.warning(f"Not promoted: {decision.reason}", icon=":material/block:")
        return
    st.success(f"Allowed: {decision.reason}", icon=":material/verified:")
    yes, no = st.columns([1, 4])
    if yes.button(f"Make version {chal} champion", type="primary", key="models_confirm"):
        _apply(settings, decision, champ)
    if no.button("Cancel", key="models_cancel"):
        del st.session_state[DECISION]
        st.rerun()


def _apply(settings: Settings, decision: promotion.Decision, champ: str | None) -> None:
    """Move the alias, unless it moved since the check (then the check is stale)."""
    reg = Registry(settings)
    now = reg.aliases()
    if now.get(CHALLENGER) != decision.challenger.version or now.get(CHAMPION) != champ:
        st.error("The aliases moved since the check: check again.")
        del st.session_state[DECISION]
        return
    promotion.apply(reg, decision)
    log.info(
        "part=ui promote champion=%s previous=%s reason=%s",
        decision.challenger.version,
        champ,
        decision.reason,
    )
    del st.session_state[DECISION]
    cache.versions.clear()
    st.success(f"champion -> version {decision.challenger.version}")


def _report(settings: Settings, versions: pd.DataFrame) -> None:
    st.subheader("Evaluation report")
    labels = [
        f"version {v} ({k})" for v, k in zip(versions["version"], versions["kind"], strict=True)
    ]
    pick = st.selectbox(
        "version", range(len(labels)), format_func=labels.__getitem__, key="models_version"
    )
    row = versions.iloc[pick]
    rep = cache.report(settings, row["run_id"])
    if rep.data is None:
        waiting(f"Run {row['run_name']} logged no evaluation report.")
        return
    st.code(headline(rep.data), language=None)
    names = list(rep.images)
    for i in range(0, len(names), 2):
        cols = st.columns(2)
        for col, name in zip(cols, names[i : i + 2], strict=False):
            col.image(rep.images[name], caption=name.replace("_", " "))
    if rep.html is not None:
        st.download_button(
            "report.html",
            rep.html,
            file_name=f"{row['run_name']}.html",
            mime="text/html",
            key="models_html",
            on_click="ignore",
        )


if __name__ == "__main__":
    reachable(render)(current_settings())
