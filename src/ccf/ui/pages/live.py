"""Live: per symbol the last price, the champion's forecast at each horizon with its change
and BUY/SELL/HOLD signal, and the price chart with the fans as they were made: the
intervals served (calibrated online) or, with the toggle, the models' own."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from ccf.config import Settings
from ccf.features.buckets import parse_duration
from ccf.ml.first import needs
from ccf.monitoring.scoring import SignalRule
from ccf.ui import cache
from ccf.ui.charts.forecast import fan
from ccf.ui.common import header, reachable, symbol_picker, waiting, when
from ccf.ui.common import settings as current_settings
from ccf.ui.data.db import Store
from ccf.ui.data.forecasts import bands, latest, model_label

SECOND = 1_000_000_000
SPANS = {"5 min": 300, "10 min": 600, "30 min": 1800, "1 h": 3600}
SIGNAL_COLORS = {"BUY": "green", "SELL": "red", "HOLD": "gray", "-": "gray"}
INTERVALS = {"calibrated": "calibrated", "model's own": "raw"}  # label -> the store's kind


def render(settings: Settings) -> None:
    header(settings, "Live")
    st.fragment(reachable(_live), run_every=settings.ui.refresh_s)(settings)


def _live(settings: Settings) -> None:
    c1, c2, c3, c4 = st.columns([1, 1, 2, 1])
    with c1:
        symbol = symbol_picker(settings, "live_symbol")
    span_s = SPANS[c2.selectbox("window", list(SPANS), key="live_span")]
    with c4:
        shown = (
            st.segmented_control(
                "intervals", list(INTERVALS), default="calibrated", key="live_intervals"
            )
            or "calibrated"
        )
    kind = INTERVALS[shown]
    price = cache.last_price(
        Store(settings, "raw"), settings.exchange, symbol, settings.features.book_source
    )
    predictions = Store(settings, "predictions")
    origin = cache.newest_origin(predictions, symbol)
    if origin is None:
        _price_only(settings, symbol, price)
        return
    preds = cache.predictions(predictions, symbol, origin - span_s * SECOND, origin + 1, kind)
    horizons = sorted(int(h) for h in preds["horizon"].unique())
    with c3:
        horizon = (
            st.segmented_control(
                "fan horizon (buckets)",
                horizons,
                default=horizons[len(horizons) // 2],
                key="live_horizon",
            )
            or horizons[0]
        )
    ev = settings.ml.evaluate
    now = latest(preds, SignalRule(ev.threshold_bps, ev.fee_bps))
    bucket_s = float(((preds["target_ts"] - preds["ts"]) / preds["horizon"]).median()) / SECOND
    _headline(symbol, price, now[now["role"] == "champion"], bucket_s)
    champ = now[now["role"] == "champion"]
    made = champ.iloc[0] if not champ.empty else None
    st.caption(
        f"Signal from the champion's median forecast: **BUY** when the forecast return "
        f"passes +{ev.threshold_bps:g} bps, **SELL** below -{ev.threshold_bps:g} bps, else "
        f"**HOLD** (`ml.evaluate.threshold_bps`); a trade costs {ev.fee_bps:g} bps "
        f"(`fee_bps`). "
        + (
            f"Newest forecast made for the bucket of {when(int(made['ts']))} by "
            f"{model_label(made['model'], made['version'])}."
            if made is not None
            else ""
        )
    )
    max_h = max(horizons)
    realized = cache.realized(
        settings,
        symbol,
        str(preds["target"].iloc[0]),
        origin - span_s * SECOND,
        origin + (max_h + 1) * int(bucket_s * SECOND),
    )
    st.plotly_chart(fan(realized, preds, horizon, ev.threshold_bps), key="live_fan")
    cal = settings.serve.calibration
    st.caption(
        f"Bands: the champion's central intervals for h={horizon} ({horizon * bucket_s:g} s), "
        "each drawn at the time it forecast, as made then"
        + (
            f" and calibrated online (`serve.calibration.method={cal.method}`: conformal, "
            "per volatility tercile, from the forecasts already resolved)"
            if kind == "calibrated"
            else ", as the model made them, before calibration"
        )
        + "; lines: the medians of the "
        "champion, the challenger (shadow) and the naive yardstick. Right: the newest "
        "forecast over every horizon, with the BUY/SELL threshold around its price."
    )
    _table(now, bucket_s)


def _price_only(settings: Settings, symbol: str, price: dict | None) -> None:
    """No forecast yet: say what is missing, from the first part that has nothing."""
    if price is None:
        waiting(
            f"No market data for {symbol.upper()} yet: the collector has written nothing to "
            f"`{Store(settings, 'raw').where}` (start it with `ccf collect` or `ccf run`)."
        )
        return
    st.metric(f"{symbol.upper()} last price", f"{price['price']:,.2f}")
    st.caption(f"{price['what']} at {when(price['ts'])}")
    if cache.newest_bucket(settings, symbol) is None:
        waiting(
            "Waiting for the first closed bucket: the feature store has no rows yet "
            "(`ccf features` writes one per symbol per bucket)."
        )
    else:
        n = cache.stored_buckets(settings, symbol)
        bucket_s = parse_duration(settings.features.bucket) / 1e9
        waiting(first_model_wait(settings, symbol, n, bucket_s))


def first_model_wait(settings: Settings, symbol: str, stored: int, bucket_s: float) -> str:
    """What the first forecast waits for and about how long: buckets for a first model
    (:mod:`ccf.ml.first`), then the training loop and the predictor."""
    need_first, need_full = needs(settings)
    if settings.run.first_model:
        need, what = need_first, "a first model (naive on a short history, `run.first_model`)"
    else:
        need, what = need_full, f"the first models ({', '.join(settings.run.train_models)})"
    head = f"Waiting for the first forecast: {stored} buckets of {symbol.upper()} stored"
    tail = (
        " Then `ccf run`'s training loop fits and registers it (seconds) and the predictor "
        f"loads it (within `serve.alias_check_s` = {settings.serve.alias_check_s:g} s)."
    )
    if stored < need:
        left = (need - stored) * bucket_s
        return f"{head}, {what} needs about {need}: about {left:.0f} s more.{tail}"
    return f"{head}, enough for {what} (about {need}): training it now.{tail}"


def _headline(symbol: str, price: dict | None, champ: pd.DataFrame, bucket_s: float) -> None:
    cols = st.columns(1 + len(champ))
    with cols[0]:
        if price is None:
            st.metric(f"{symbol.upper()} last price", "-")
        else:
            st.metric(f"{symbol.upper()} last price", f"{price['price']:,.2f}")
            st.caption(f"{price['what']} at {when(price['ts'])}")
    for col, (_, r) in zip(cols[1:], champ.iterrows(), strict=True):
        with col:
            label = f"forecast in {int(r['horizon']) * bucket_s:g} s (h={int(r['horizon'])})"
            if math.isnan(r["point"]):
                st.metric(label, "-", help=f"no forecast: {r['flag']}")
            else:
                moved = abs(r["change_pct"]) >= 5e-5  # shows as +0.0000 % below that
                st.metric(
                    label,
                    f"{r['price']:,.2f}",
                    f"{r['change_pct']:+.4f} %",
                    delta_color="normal" if moved else "off",
                )
            sig = r["signal"]
            st.markdown(
                f":{SIGNAL_COLORS[sig]}-badge[{sig}]"
                + (f" `{r['flag']}`" if isinstance(r["flag"], str) else "")
            )


def _table(now: pd.DataFrame, bucket_s: float) -> None:
    wide = bands(now)
    lo, hi, nominal = wide[0] if wide else ("price", "price", 0.0)
    table = pd.DataFrame(
        {
            "role": now["role"],
            "model": [model_label(m, v) for m, v in zip(now["model"], now["version"], strict=True)],
            "horizon": now["horizon"],
            "in (s)": now["horizon"] * bucket_s,
            "forecast": now["price"],
            "change %": now["change_pct"],
            "change bps": now["change_bps"],
            "signal": now["signal"],
            f"{nominal:.0%} low": now[lo],
            f"{nominal:.0%} high": now[hi],
            "flag": now["flag"].fillna(""),
        }
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "forecast": st.column_config.NumberColumn(format="%.2f"),
            "change %": st.column_config.NumberColumn(format="%+.4f"),
            "change bps": st.column_config.NumberColumn(format="%+.2f"),
            f"{nominal:.0%} low": st.column_config.NumberColumn(format="%.2f"),
            f"{nominal:.0%} high": st.column_config.NumberColumn(format="%.2f"),
        },
    )


if __name__ == "__main__":
    render(current_settings())
