"""The live predictor: the registry's champion forecasts every closed bucket.

It follows the feature store. For each symbol, every bucket that closed since
the last one it forecast becomes a forecast origin, in order, none skipped:
the window up to it is read from the store (the model's encoder plus the
volatility warm-up), turned into arrays by the same ``dataset.build`` that made
the training set, and forecast by each served model in one batched call:
the champion, the naive yardstick (always), and the challenger in shadow.

Models change only between two polls, so a promotion never splits a bucket:
the new version forecasts from the next origin on, and the store's key
(symbol, target, origin, horizon, role) makes a bucket forecast twice
impossible. A restart resumes after the newest origin the champion forecast.

It forecasts the symbols in ``owned``: all of them, unless a group hands it a share
(:mod:`ccf.serving.stream`, where symbols come and go with the Kafka partitions).

Each served model's quantiles are calibrated online (:mod:`ccf.serving.calibration`,
``serve.calibration``): a record's ``quantiles`` are the calibrated ones, and the
store keeps the model's own beside them.

A window the model should not trust gives a flagged record with the reason
(``gap_in_window``, ``warming_up``: no forecast; ``stale_input``,
``stale_model``: a forecast, flagged), never a silent forecast. An input far outside
what the model saw in training (:mod:`ccf.ml.ranges`, ``ml.evaluate.range_sd``) flags the
forecast ``input_out_of_range:<columns>``, logs a warning (once per symbol, column and model
version) and counts in ``ccf_input_out_of_range_total``; the monitor raises an alert on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np
import pandas as pd
from prometheus_client import Counter as PromCounter

from ccf.config import Settings
from ccf.features.buckets import parse_duration
from ccf.features.spec import feature_set
from ccf.ml import dataset, ranges
from ccf.ml.models.base import Forecaster
from ccf.ml.models.naive import Naive
from ccf.monitoring.metrics import PartMetrics
from ccf.records import Prediction
from ccf.serving.calibration import OnlineCalibration
from ccf.serving.lead import EventClock, lead, lead_summary
from ccf.serving.store import ServingInfo
from ccf.sinks import open_influx
from ccf.storage.backends import (
    list_feature_sets,
    open_feature_store,
    open_prediction_store,
    open_raw_store,
    pushes,
    uses_postgres,
)
from ccf.storage.postgres.connect import describe
from ccf.storage.wake import Wakeups

if TYPE_CHECKING:
    # the interfaces, named by their embedded classes; storage.backend=postgres hands
    # over their PostgreSQL twins (ccf.storage.postgres), which answer the same calls
    from ccf.features.store import FeatureStore
    from ccf.serving.store import PredictionStore
    from ccf.storage.sqlite import SqliteStore

log = logging.getLogger(__name__)

PART = "predict"
MAX_ORIGINS = 5_000  # per symbol and poll while catching up
LEAD_KEPT = 1000  # recent lead times per symbol behind the heartbeat's percentiles
HEARTBEAT_S = 5.0


class ModelSource(Protocol):
    """Where served models come from (the MLflow registry in production)."""

    def version(self, alias: str) -> str | None:
        """The version an alias points to now; None when the alias is not set."""

    def load(self, alias: str) -> tuple[Forecaster, str, str]:
        """(model, registered name, version) behind an alias."""


class Served(NamedTuple):
    role: str
    model: Forecaster
    name: str
    version: str


@dataclass
class _SymbolState:
    next_ts: int | None = None  # the next origin to forecast
    origins: int = 0
    flagged: Counter[str] = field(default_factory=Counter)
    last_origin: int | None = None
    last_lag_s: float | None = None  # event clock at the store minus the input watermark
    # lead times of the last forecasts stored (champion): seconds after the origin's end,
    # and how many were stored after their target bucket had closed, per horizon
    delays: deque[float] = field(default_factory=lambda: deque(maxlen=LEAD_KEPT))
    late: Counter[int] = field(default_factory=Counter)
    left_min: float | None = None


def window_flags(
    frame: pd.DataFrame, t: np.ndarray, encoder_length: int, valid: np.ndarray
) -> list[str | None]:
    """Why a window at row t cannot be forecast (None when it can).

    A gap-flagged bucket inside the encoder, or rows missing from it, make the
    window untrustworthy; too little history is ``warming_up``.
    """
    gap = frame["gap"].to_numpy(dtype=float) > 0 if "gap" in frame else np.zeros(len(frame), bool)
    gaps = np.concatenate([[0], np.cumsum(gap)])
    out: list[str | None] = []
    for i in t:
        lo = max(i - encoder_length + 1, 0)
        if gaps[i + 1] - gaps[lo] > 0:
            out.append("gap_in_window")
        elif not valid[i]:
            out.append("warming_up" if i < encoder_length - 1 else "gap_in_window")
        else:
            out.append(None)
    return out


def _where(settings: Settings, path: Path) -> str:
    """Where a store lives, for logs: its SQLite file, or the PostgreSQL database (no
    password)."""
    return describe(settings.storage.postgres) if uses_postgres(settings) else str(path)


def _limit_torch_threads(n: int) -> None:
    """A deep model forecasts a window or two per bucket: one thread beats two that wait
    on each other (7.5 against 12.4 ms for one TFT window on the 2-core VM)."""
    torch = sys.modules.get("torch")  # only loaded when a deep model is served
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


class Predictor:
    """``ccf predict``: see the module docstring."""

    def __init__(
        self, settings: Settings, source: ModelSource, metrics: PartMetrics | None = None
    ) -> None:
        self.settings = settings
        self.source = source
        # Prometheus; `ccf predict` serves it on metrics.ports.predict
        self.metrics = metrics or PartMetrics("predict", settings)
        self.influx = open_influx(settings)  # None unless influx.enabled
        self.fs = feature_set(settings.features)
        self.bucket = self.fs.bucket_ns
        self.state = {s: _SymbolState() for s in settings.symbols}
        # the symbols it forecasts: all, unless a group shares them out (ccf.serving.stream)
        self.owned: set[str] = set(settings.symbols)
        self.served: dict[str, Served] = {}
        self.calibration = OnlineCalibration(settings.serve.calibration, self.bucket)
        self.switches = 0
        # forecasts with an input far outside the model's training range, per input column
        self.out_of_range = PromCounter(
            "ccf_input_out_of_range",
            "Forecasts with an input far outside the model's training range (ml.evaluate."
            "range_sd), per symbol, role and input column",
            ["symbol", "role", "column"],
            registry=self.metrics.registry,
        )
        self._range_warned: set[tuple[str, str, str, str, str]] = set()
        self.started_at = time.time_ns()
        self.written = 0
        self.wakeups = (0, 0)  # (woken, fell back to polling) over the last run
        self.clock: EventClock | None = None  # set by run(): lead times need the raw store
        self._max_age_ns = (
            parse_duration(settings.serve.max_model_age) if settings.serve.max_model_age else None
        )

    # -- models ---------------------------------------------------------------------------------

    def _refresh_models(self, features: FeatureStore, preds: PredictionStore) -> None:
        """Load the champion (and challenger) when their alias moved; refit naive with them."""
        cfg = self.settings.serve
        changed = False
        for role, alias in (("champion", cfg.alias), ("challenger", "challenger")):
            if role == "challenger" and not cfg.shadow:
                continue
            version = self.source.version(alias)
            have = self.served.get(role)
            if version is None:
                if role == "champion" and have is None:
                    raise LookupError(
                        f"the registry has no model with alias {alias!r}: train one with "
                        "`ccf train` (or `ccf run`, which trains a first model)"
                    )
                if have is not None and role == "challenger":
                    del self.served[role]
                continue
            if have is not None and have.version == version:
                continue
            model, name, version = self.source.load(alias)
            if have is not None and role == "champion":
                self.switches += 1
                log.info(
                    "part=predict %s %s -> version %s from the next bucket on",
                    role,
                    have.version,
                    version,
                )
            serve_compiled = getattr(model, "serve_compiled", None)  # the deep kinds
            if cfg.compiled and serve_compiled is not None:
                serve_compiled(cfg.torch_threads)  # False: it logged why, and eager stays
            self.served[role] = Served(role, model, name, version)
            _limit_torch_threads(cfg.torch_threads)
            changed |= role == "champion"
            self._record_serving(preds, self.served[role])
        if changed or "naive" not in self.served:
            self.served["naive"] = self._fit_naive(features)
            self._record_serving(preds, self.served["naive"])

    def _fit_naive(self, features: FeatureStore) -> Served:
        """The yardstick, fitted on the stored history with the champion's spec."""
        spec = self.served["champion"].model.spec
        n = self.settings.serve.naive_history
        frames = []
        for sym in self.settings.symbols:
            last = features.last_bucket(sym)
            if last is not None:
                frames.append(features.frame([sym], last - n * self.bucket, last + 1))
        data = dataset.build(pd.concat(frames), spec) if frames else None
        model = Naive(spec)
        origins = data.origins() if data is not None else None
        if (
            data is None
            or origins is None
            or not np.isfinite(data.targets(origins)).any(axis=0).all()
        ):
            raise LookupError(
                "not enough feature history to fit the naive yardstick: wait for more buckets"
            )
        model.fit(data, origins, origins, self.settings.ml.train)
        model.trained_range = (int(data.ts(origins).min()), int(data.ts(origins).max()))
        return Served("naive", model, "naive", "live")

    def _record_serving(self, preds: PredictionStore, s: Served) -> None:
        nexts = [
            st.next_ts
            for sym, st in self.state.items()
            if sym in self.owned and st.next_ts is not None
        ]
        tr = s.model.trained_range
        preds.set_serving(
            ServingInfo(
                s.role,
                s.name,
                s.version,
                s.model.kind,
                tr[0] if tr else None,
                tr[1] if tr else None,
                time.time_ns(),
                min(nexts) if nexts else None,
                s.model.spec.to_json(),
            )
        )

    # -- forecasting ----------------------------------------------------------------------------

    def _resume(
        self,
        features: FeatureStore,
        preds: PredictionStore,
        symbols: Iterable[str] | None = None,
    ) -> None:
        """Where each of ``symbols`` (default: the owned ones) goes on: after the newest
        origin the champion forecast, else where ``serve.first_start`` says."""
        wanted = self.owned if symbols is None else set(symbols)
        self.calibration.forget(wanted)  # rebuilt from the stores at the next forecast
        for sym, st in self.state.items():
            if sym not in wanted:
                continue
            last = preds.last_ts(sym, "champion")
            if last is not None:
                st.next_ts = last + self.bucket
                log.info("part=predict symbol=%s resuming after origin %d", sym, last)
            elif self.settings.serve.first_start == "oldest":
                st.next_ts = features.first_bucket(sym)
            else:
                st.next_ts = features.last_bucket(sym)  # from the newest bucket on

    def step(self, features: FeatureStore, preds: PredictionStore) -> int:
        """One poll over every owned symbol; returns how many predictions were stored."""
        stored = 0
        for sym, st in self.state.items():
            if sym not in self.owned:
                continue
            newest = features.last_bucket(sym)
            if newest is None:
                continue
            if st.next_ts is None:  # the store was empty at the start
                oldest = self.settings.serve.first_start == "oldest"
                st.next_ts = features.first_bucket(sym) if oldest else newest
            if newest < st.next_ts:
                continue
            end = min(newest, st.next_ts + (MAX_ORIGINS - 1) * self.bucket)
            stored += self._forecast(sym, st, features, preds, end)
        return stored

    def _forecast(
        self, sym: str, st: _SymbolState, features: FeatureStore, preds: PredictionStore, end: int
    ) -> int:
        assert st.next_ts is not None
        history = max(m.model.spec.history for m in self.served.values())
        frame = features.frame([sym], st.next_ts - history * self.bucket, end + 1)
        now = time.time_ns()
        rows: list[Prediction] = []
        raws: list[tuple[float, ...]] = []  # the models' own quantiles, row by row
        by_spec: dict[str, tuple[dataset.Dataset, np.ndarray]] = {}
        ts = frame["ts"].to_numpy()
        t = np.flatnonzero(ts >= st.next_ts)
        watermark = frame["ts_end"].to_numpy()[t]
        stale_input = (now - watermark) / 1e9 > self.settings.serve.max_input_lag_s
        for served in self.served.values():
            m = served.model
            key = m.spec.to_json()
            if key not in by_spec:
                data = dataset.build(frame, m.spec)
                by_spec[key] = (
                    data,
                    np.asarray(
                        window_flags(frame, t, m.spec.encoder_length, data.series[0].valid),
                        dtype=object,
                    ),
                )
            data, flags = by_spec[key]
            out_of_range = ranges.flags_at(data, t, self.settings.ml.evaluate.range_sd)
            self._note_out_of_range(sym, served, out_of_range)
            ok = np.array([f is None for f in flags], dtype=bool)
            q = np.full(
                (len(t), len(m.spec.targets), len(m.spec.horizons), len(m.spec.quantiles)), np.nan
            )
            if ok.any():
                origins = dataset.Origins(np.zeros(int(ok.sum()), int), t[ok])
                q[ok] = m.predict(data, origins)
            self.calibration.rebuild(
                served.role, served.version, sym, m.spec, preds, features, st.next_ts
            )
            cq = self.calibration.calibrate(
                served.role, served.version, sym, m.spec, frame, data, t, ok, q
            )
            stale_model = self._stale(m, now)
            levels = tuple(m.spec.quantiles)
            mid = levels.index(0.5)
            last_values = np.exp(data.series[0].level[t])  # (n, K)
            for i, ti in enumerate(t):
                flag = (
                    flags[i]
                    or ("stale_model" if stale_model else None)
                    or ("stale_input" if stale_input[i] else None)
                    or out_of_range[i]
                )
                for k, target in enumerate(m.spec.targets):
                    for h, horizon in enumerate(m.spec.horizons):
                        qs = cq[i, k, h]
                        raws.append(tuple(q[i, k, h].tolist()))
                        rows.append(
                            Prediction(
                                self.settings.exchange,
                                sym,
                                target,
                                int(ts[ti]),
                                horizon,
                                int(ts[ti]) + horizon * self.bucket,
                                served.role,
                                served.name,
                                served.version,
                                now,
                                int(watermark[i]),
                                float(last_values[i, k]),
                                float(q[i, k, h, mid]),
                                levels,
                                tuple(qs.tolist()),
                                flag,
                            )
                        )
            if served.role == "champion":
                for f in flags:
                    if f is not None:
                        st.flagged[f] += 1
                if n_out := sum(f is not None for f in out_of_range):
                    st.flagged[ranges.FLAG] += n_out

        rows, event_now = self._with_lead(sym, rows, st)
        n = preds.write(rows, raws)
        if self.influx is not None:
            self.influx.predictions(rows)
        done = time.time_ns() if event_now is None else event_now
        self.metrics.count_in(sym, len(t))
        self.metrics.count_out(sym, n)
        self.metrics.observe_lags("prediction", ((done - watermark) / 1e9).tolist(), sym)
        st.origins += len(t)
        st.last_origin = int(ts[t[-1]]) if len(t) else st.last_origin
        st.last_lag_s = (done - int(watermark[-1])) / 1e9 if len(t) else st.last_lag_s
        st.next_ts = end + self.bucket
        self.written += n
        return n

    def _note_out_of_range(self, sym: str, served: Served, flags: list[str | None]) -> None:
        """Count each out-of-range input; warn once per symbol, column and model version."""
        for f in flags:
            if f is None:
                continue
            for column in f.split(":", 1)[1].split(","):
                self.out_of_range.labels(sym, served.role, column).inc()
                key = (sym, served.role, served.name, served.version, column)
                if key in self._range_warned:
                    continue
                self._range_warned.add(key)
                log.warning(
                    "part=predict symbol=%s %s %s@%s: input %s far outside its training "
                    "range (> %s training sds, ml.evaluate.range_sd): forecasts flagged %s",
                    sym,
                    served.role,
                    served.name,
                    served.version,
                    column,
                    self.settings.ml.evaluate.range_sd,
                    ranges.FLAG,
                )

    def _with_lead(
        self, sym: str, rows: list[Prediction], st: _SymbolState
    ) -> tuple[list[Prediction], int | None]:
        """The rows with their lead time on the event clock, read just before the write
        (:mod:`ccf.serving.lead`); unchanged (NaN) where the clock is unknown."""
        event_now = self.clock.now(sym) if self.clock is not None else None
        if event_now is None or not rows:
            return rows, event_now
        bucket = self.bucket
        out = []
        observe = self.metrics.observe_lead
        first_h = min(r.horizon for r in rows)
        for r in rows:
            delay, left = lead(event_now, r.ts + bucket, r.horizon * bucket)
            out.append(r._replace(delay_s=delay, horizon_left=left))
            if r.role == "champion":
                observe(sym, r.horizon, delay, left)
                if r.horizon == first_h:  # one per origin
                    st.delays.append(delay)
                if left <= 0:
                    st.late[r.horizon] += 1
                st.left_min = left if st.left_min is None else min(st.left_min, left)
        return out, event_now

    def _stale(self, m: Forecaster, now: int) -> bool:
        saved = getattr(m, "saved_at", None)
        return self._max_age_ns is not None and saved is not None and now - saved > self._max_age_ns

    # -- the loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        if not await self._features_ready(stop):
            return
        features = open_feature_store(s, self.fs, readonly=True)
        preds = open_prediction_store(s)
        raw = open_raw_store(s)  # heartbeats; the event clock for lead times
        self.clock = EventClock(s, raw)
        next_alias = next_beat = 0.0
        # the feature runner's commits wake it; without push (or a lost wake-up) it polls
        wake = Wakeups(s.features_path, "predict") if pushes(s) else None
        try:
            if wake is not None:
                await wake.__aenter__()
            if not await self._first_models(features, preds, stop):
                return
            self._resume(features, preds)
            log.info(
                "part=predict serving %s; symbols=%s store=%s",
                ", ".join(f"{r}={m.name}@{m.version}" for r, m in self.served.items()),
                ",".join(s.symbols),
                _where(s, s.predictions_path),
            )
            while not stop.is_set():
                if time.monotonic() >= next_alias:
                    next_alias = time.monotonic() + s.serve.alias_check_s
                    await asyncio.to_thread(self._refresh_models, features, preds)
                n = await asyncio.to_thread(self.step, features, preds)
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + (s.serve.print_every_s or HEARTBEAT_S)
                    self._heartbeat(raw, "running")
                if n == 0 and wake is not None:
                    await wake.wait(stop, s.storage.wake_fallback_s)
                elif n == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), s.serve.poll_interval_s)
        finally:
            if wake is not None:
                self.wakeups = (wake.received, wake.fallbacks)
                wake.close()
            self._heartbeat(raw, "stopped")
            raw.close()
            preds.close()
            features.close()
            if self.influx is not None:
                self.influx.close()
            log.info(
                "part=predict stopped: predictions=%d switches=%d", self.written, self.switches
            )

    async def _features_ready(self, stop: asyncio.Event) -> bool:
        """The feature set's table exists; with serve.wait_for_model, wait for it."""
        s = self.settings
        while not stop.is_set():
            if any(v.version == self.fs.version for v in list_feature_sets(s)):
                return True
            if not s.serve.wait_for_model:
                raise FileNotFoundError(
                    f"no rows of feature set {self.fs.name} version {self.fs.version} in "
                    f"{_where(s, s.features_path)}: run `ccf features` first"
                )
            log.info("part=predict waiting for feature set %s rows", self.fs.version)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), s.serve.alias_check_s)
        return False

    async def _first_models(
        self, features: FeatureStore, preds: PredictionStore, stop: asyncio.Event
    ) -> bool:
        """Load the served models; with serve.wait_for_model, wait until there are some
        (``ccf run`` starts the predictor before its first model is trained)."""
        said = False
        while not stop.is_set():
            try:
                await asyncio.to_thread(self._refresh_models, features, preds)
                return True
            except LookupError as e:
                if not self.settings.serve.wait_for_model:
                    raise
                if not said:
                    log.info("part=predict waiting: %s", e)
                    said = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.serve.alias_check_s)
        return False

    def status(self) -> dict[str, Any]:
        return {
            "served": {r: {"model": m.name, "version": m.version} for r, m in self.served.items()},
            "switches": self.switches,
            "written": self.written,
            "calibration": {
                "method": self.calibration.params.method,
                "resolved": self.calibration.resolved,
            },
            "metrics_url": self.metrics.url,
            "metrics": self.metrics.snapshot(),
            "symbols": {
                sym: {
                    "origins": st.origins,
                    "last_origin": st.last_origin,
                    "lag_s": st.last_lag_s,
                    "flagged": dict(st.flagged),
                    "lead": lead_summary(st.delays, st.late, st.left_min),
                }
                for sym, st in self.state.items()
                if sym in self.owned
            },
        }

    def _heartbeat(
        self,
        raw: SqliteStore,
        state: str,
        detail: dict[str, Any] | None = None,
        part: str = PART,
    ) -> None:
        import json

        detail = detail or self.status()
        raw.heartbeat(part, os.getpid(), self.started_at, time.time_ns(), state, json.dumps(detail))
        if state == "running" and self.settings.serve.print_every_s:
            for sym, d in detail["symbols"].items():
                log.info(
                    "part=predict symbol=%s origins=%d last_origin=%s lag_s=%s flagged=%s",
                    sym,
                    d["origins"],
                    d["last_origin"],
                    None if d["lag_s"] is None else round(d["lag_s"], 3),
                    d["flagged"] or 0,
                )
