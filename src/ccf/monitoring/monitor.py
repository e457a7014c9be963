"""``ccf monitor``: score forecasts as their truth arrives, roll up accuracy, watch drift.

Each pass reads the predictions stored since the last one (by rowid), joins
every prediction whose target bucket has closed with the feature row at its
``target_ts``, and commits the scores, the unscorable predictions (with their
reason), the ones still waiting and the new rowid in one transaction
(:class:`~ccf.monitoring.store.MonitorStore`). Rolling aggregates are computed
every :data:`AGGREGATE_EVERY_S`; drift and quality reports every
``monitor.drift_every``, on a schedule kept across restarts (the first run comes
at start when none is stored). Drift is measured against the serving champion's
training window; before a champion serves, it is reported (against the first half
of the stored history) but never alerted on: there is no model whose inputs could
have left what it learned from.

Truth comes from the feature set the role's serving model reads (its
DatasetSpec in the prediction store's ``serving`` table), else from the
configured one (``features.*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ccf.config import Settings
from ccf.features.buckets import parse_duration
from ccf.features.spec import feature_set
from ccf.features.store import StoredSet
from ccf.monitoring import drift
from ccf.monitoring.metrics import MonitorMetrics
from ccf.monitoring.scoring import Aggregate, SignalRule, has_forecast, score, unscorable
from ccf.records import Prediction, Score
from ccf.serving.store import ServingInfo
from ccf.sinks import open_influx
from ccf.storage.backends import (
    list_feature_sets,
    open_feature_store,
    open_monitor_store,
    open_prediction_store,
    open_raw_store,
    uses_postgres,
)
from ccf.storage.postgres.connect import describe

if TYPE_CHECKING:
    # the interfaces, named by their embedded classes; storage.backend=postgres hands
    # over their PostgreSQL twins (ccf.storage.postgres), which answer the same calls
    from ccf.features.store import FeatureStore
    from ccf.monitoring.store import MonitorStore
    from ccf.serving.store import PredictionStore
    from ccf.storage.sqlite import SqliteStore

log = logging.getLogger(__name__)

PART = "monitor"
HEARTBEAT_S = 5.0
AGGREGATE_EVERY_S = 10.0
READ_ROWS = 20_000  # predictions per pass at most; a backlog takes several passes


def _with_nans(p: Prediction) -> Prediction:
    """SQLite stores NaN as NULL: a flagged prediction comes back with None forecasts."""
    if p.point is None or p.last_value is None:
        return p._replace(
            point=math.nan if p.point is None else p.point,
            last_value=math.nan if p.last_value is None else p.last_value,
        )
    return p


def _where(settings: Settings, path: Path) -> str:
    """Where a store lives, for logs: its SQLite file, or the PostgreSQL database (no
    password)."""
    return describe(settings.storage.postgres) if uses_postgres(settings) else str(path)


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns / 1e9)) + "Z"


class PassResult(NamedTuple):
    read: int  # predictions read from the prediction store
    scored: int
    unscored: int
    waiting: int  # target bucket not closed yet
    full: bool  # more predictions were waiting to be read


class Monitor:
    """The metrics part: ``await Monitor(settings).run(stop)``, or one step at a time with
    :meth:`open`, :meth:`score_pass`, :meth:`aggregate`, :meth:`check_drift`, :meth:`close`."""

    def __init__(self, settings: Settings, metrics: MonitorMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or MonitorMetrics(settings)
        ev = settings.ml.evaluate
        self.rule = SignalRule(ev.threshold_bps, ev.fee_bps)
        self.windows = [(w, parse_duration(w)) for w in settings.monitor.windows]
        self.drift_every_s = parse_duration(settings.monitor.drift_every) / 1e9
        self.counts: Counter[tuple[str, str]] = Counter()  # (symbol, scored | reason)
        self.last_origin: dict[str, int] = {}
        self.last_drift: dict[str, drift.DriftResult] = {}
        self.started_at = time.time_ns()
        self.influx = open_influx(settings)  # None unless influx.enabled
        self.store: MonitorStore | None = None
        self._preds: PredictionStore | None = None
        self._features: dict[tuple[str, str], FeatureStore] = {}
        self._set_of: dict[str | None, StoredSet] = {}  # serving spec -> its feature set
        self._configured = feature_set(settings.features).version
        self._references: dict[tuple[Any, ...], drift.Rows] = {}
        self._pending: list[Prediction] = []
        self._cursor = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def open(self) -> None:
        """Open the stores and pick up where the last run stopped."""
        s = self.settings
        self.store = open_monitor_store(s)
        self._preds = open_prediction_store(s)  # makes the schema if none yet
        self._cursor = self.store.cursor()
        self._pending = [_with_nans(p) for p in self.store.pending()]
        if self._cursor:
            log.info(
                "part=monitor symbol=- resuming after prediction rowid %d (%d waiting)",
                self._cursor,
                len(self._pending),
            )

    def close(self) -> None:
        if self.influx is not None:
            self.influx.flush(5.0)  # kept open: a monitor may be opened again
        for fs in self._features.values():
            fs.close()
        self._features.clear()
        if self._preds is not None:
            self._preds.close()
            self._preds = None
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- truth ---------------------------------------------------------------------------------

    def _feature_store(self, info: ServingInfo | None) -> FeatureStore | None:
        """The store of the feature set ``info``'s model reads, else the configured set
        (None until it is stored)."""
        spec = info.spec if info is not None else None
        if spec not in self._set_of:
            sets = list_feature_sets(self.settings)
            want: StoredSet | None = None
            if spec:
                d = json.loads(spec)
                key = (d["feature_set"], d["version"])
                want = next((x for x in sets if (x.name, x.version) == key), None)
                if want is not None:
                    self._set_of[spec] = want
            if want is None:
                want = next((x for x in sets if x.version == self._configured), None)
            if want is None:
                return None  # asked again on the next pass
            if not spec:
                self._set_of[spec] = want
        else:
            want = self._set_of[spec]
        key = (want.name, want.version)
        if key not in self._features:
            self._features[key] = open_feature_store(self.settings, want, readonly=True)
        return self._features[key]

    @staticmethod
    def _targets(
        store: FeatureStore, symbol: str, ready: list[Prediction]
    ) -> dict[tuple[str, int], tuple[float, float]]:
        """(target column, bucket) -> (value, gap flag) for the buckets ``ready`` needs."""
        lo = min(p.target_ts for p in ready)
        hi = max(p.target_ts for p in ready)
        df = store.frame([symbol], lo, hi + 1)
        wanted = {p.target_ts for p in ready}
        df = df[df["ts"].isin(wanted)]
        out: dict[tuple[str, int], tuple[float, float]] = {}
        for target in {p.target for p in ready} & set(df.columns):
            for ts, v, g in zip(df["ts"], df[target], df["gap"], strict=True):
                out[(target, int(ts))] = (float(v), float(g))
        return out

    # -- one scoring pass ----------------------------------------------------------------------

    def score_pass(self) -> PassResult:
        """Read what is new, score what can be, commit it with the new cursor."""
        assert self.store is not None and self._preds is not None, "call open() first"
        new, cursor = self._preds.since(self._cursor, READ_ROWS)
        new = [_with_nans(p) for p in new]
        for p in new:
            self.metrics.count_in(p.symbol)
        serving = self._preds.serving()
        now = time.time_ns()
        scored: list[tuple[Prediction, Score]] = []
        unscored: list[tuple[Prediction, str]] = []
        waiting: list[Prediction] = []
        groups: dict[tuple[str, str], list[Prediction]] = defaultdict(list)
        for p in (*self._pending, *new):
            if has_forecast(p):
                groups[(p.role, p.symbol)].append(p)
            else:
                unscored.append((p, "no_forecast"))
        for (role, symbol), preds in groups.items():
            store = self._feature_store(serving.get(role))
            last = None if store is None else store.last_bucket(symbol)
            ready = [p for p in preds if last is not None and p.target_ts <= last]
            waiting += [p for p in preds if last is None or p.target_ts > last]
            if not ready:
                continue
            assert store is not None
            truth = self._targets(store, symbol, ready)
            columns = set(store.set.columns)
            for p in ready:
                if p.target not in columns:
                    unscored.append((p, "unknown_target"))
                    continue
                value, gap = truth.get((p.target, p.target_ts), (None, None))
                why = unscorable(p, value, gap)
                if why is not None:
                    unscored.append((p, why.reason))
                    continue
                assert value is not None
                scored.append((p, score(p, value, self.rule, now)))
                lag = (now - p.target_ts - store.set.bucket_ns) / 1e9
                self.metrics.observe_lag("score", lag, p.symbol)
        self.store.commit(scored, unscored, waiting, cursor, now)
        if self.influx is not None and scored:
            self.influx.scores([s for _, s in scored])
        self._pending, self._cursor = waiting, cursor
        for p, _ in scored:
            self.counts[(p.symbol, "scored")] += 1
            self.metrics.count_out(p.symbol)
            self.last_origin[p.symbol] = max(p.ts, self.last_origin.get(p.symbol, p.ts))
        for p, reason in unscored:
            self.counts[(p.symbol, reason)] += 1
            self.metrics.unscored.labels(p.symbol, reason).inc()
        self.metrics.pending.set(len(waiting))
        return PassResult(len(new), len(scored), len(unscored), len(waiting), len(new) >= READ_ROWS)

    # -- rolling aggregates --------------------------------------------------------------------

    def aggregate(self, now: int | None = None) -> list[Aggregate]:
        """Every window per symbol, role and horizon, ending at the symbol's newest scored
        origin (event time: a replay of old data fills its windows as live data would)."""
        assert self.store is not None, "call open() first"
        now = time.time_ns() if now is None else now
        out: list[Aggregate] = []
        for symbol in self.store.symbols():
            end = self.store.newest_origin(symbol)
            if end is None:
                continue
            for name, length in self.windows:
                out += self.store.aggregate(symbol, name, end - length, end)
        self.store.write_accuracy(now, out)
        self.metrics.set_accuracy(out)
        return out

    # -- drift and quality ---------------------------------------------------------------------

    def _reference(
        self, store: FeatureStore, symbol: str, info: ServingInfo | None
    ) -> drift.Rows | None:
        """The champion's training window; without one (or without rows of it in this
        store), the first half of the stored history, said in the label."""
        rows = self.settings.monitor.drift_rows
        why = "no serving champion"
        if info is not None and info.trained_from is not None and info.trained_to is not None:
            key = (store.set.version, symbol, info.trained_from, info.trained_to)
            if key not in self._references:
                label = (
                    f"training window of the champion {info.model} v{info.version} "
                    f"({_iso(info.trained_from)} .. {_iso(info.trained_to)})"
                )
                self._references[key] = drift.reference_rows(
                    store, symbol, info.trained_from, info.trained_to, rows, label
                )
            if len(self._references[key].frame) >= drift.MIN_ROWS:
                return self._references[key]
            why = f"no rows of the champion's training window in {store.set.table}"
        return drift.first_half(store, symbol, rows, why)

    def check_drift(self, now: int | None = None) -> list[drift.DriftResult]:
        """Drift and quality for every symbol; stores results, writes reports, raises and
        clears alerts."""
        assert self.store is not None and self._preds is not None, "call open() first"
        now = time.time_ns() if now is None else now
        cfg = self.settings.monitor
        champion = self._preds.serving().get("champion")
        store = self._feature_store(champion)
        if store is None:
            log.info("part=monitor symbol=- drift check skipped: no feature rows yet")
            return []
        preferred: tuple[str, ...] = ()
        if champion is not None and champion.spec:
            preferred = tuple(json.loads(champion.spec).get("inputs", ()))
        results = []
        for symbol in self.settings.symbols:
            reference = self._reference(store, symbol, champion)
            current = drift.current_rows(store, symbol, cfg.drift_rows)
            if reference is None or min(len(reference.frame), len(current.frame)) < drift.MIN_ROWS:
                log.info(
                    "part=monitor symbol=%s drift check skipped: too few rows (reference %d, "
                    "current %d)",
                    symbol,
                    0 if reference is None else len(reference.frame),
                    len(current.frame),
                )
                continue
            result, snapshot = drift.check(
                symbol, reference, current, preferred, cfg.drift_share_alert
            )
            html, js = drift.write_reports(result, snapshot, self.settings.reports_dir, now)
            self._record(result, store.set, now, html, js, alerting=champion is not None)
            results.append(result)
        return results

    def _record(
        self,
        r: drift.DriftResult,
        fs: StoredSet,
        now: int,
        html: Any,
        js: Any,
        alerting: bool = True,
    ) -> None:
        """Store and log a drift run; raise or clear its alerts (drift only when
        ``alerting``: a champion serves)."""
        assert self.store is not None
        cfg = self.settings.monitor
        self.store.write_drift(r, f"{fs.name}/{fs.version}", now, html, js)
        self.metrics.set_drift(r)
        self.last_drift[r.symbol] = r
        log.info(
            "part=monitor symbol=%s drift share=%.2f of %d columns (%s) against %s; reports %s",
            r.symbol,
            r.share,
            len(r.drift_columns),
            ",".join(r.drifted) or "none drifted",
            r.reference.label,
            html or js,
        )
        drifted = alerting and r.share >= cfg.drift_share_alert
        if not alerting and r.share >= cfg.drift_share_alert:
            log.info(
                "part=monitor symbol=%s drift share %.2f reported, not alerted: no champion "
                "serves yet",
                r.symbol,
                r.share,
            )
        self._alert(
            r.symbol,
            "drift",
            drifted,
            f"drift share {r.share:.2f} >= {cfg.drift_share_alert} (monitor.drift_share_alert): "
            f"drifted columns {', '.join(r.drifted)} against the {r.reference.label}",
            now,
        )
        missing = drift.newly_missing(r, cfg.missing_alert)
        self._alert(
            r.symbol,
            "missing",
            bool(missing),
            f"missing values above {cfg.missing_alert} (monitor.missing_alert) in columns "
            + ", ".join(f"{c.column} ({c.missing_share:.2f})" for c in missing),
            now,
        )

    def _alert(self, symbol: str, kind: str, on: bool, message: str, now: int) -> None:
        assert self.store is not None
        if on:
            new = self.store.raise_alert(PART, symbol, kind, message, now)
            log.warning("part=monitor symbol=%s alert=%s %s", symbol, kind, message)
            if new:
                self.metrics.alerts.labels(symbol, kind).inc()
            self.metrics.alert_active.labels(symbol, kind).set(1)
        else:
            if self.store.clear_alert(PART, symbol, kind, now):
                log.info("part=monitor symbol=%s alert=%s cleared", symbol, kind)
            self.metrics.alert_active.labels(symbol, kind).set(0)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        self.open()
        raw = open_raw_store(s)  # the heartbeat table
        log.info(
            "part=monitor symbol=%s predictions=%s features=%s monitor=%s windows=%s "
            "drift_every=%s metrics=%s",
            ",".join(s.symbols),
            _where(s, s.predictions_path),
            _where(s, s.features_path),
            _where(s, s.monitor_path),
            ",".join(s.monitor.windows),
            s.monitor.drift_every,
            self.metrics.url or "not served",
        )
        next_beat = next_agg = 0.0
        assert self.store is not None
        last = self.store.last_drift_at()  # the schedule survives restarts
        wait_s = 0.0 if last is None else (last - time.time_ns()) / 1e9 + self.drift_every_s
        next_drift = time.monotonic() + max(0.0, wait_s)
        try:
            while not stop.is_set():
                result = await asyncio.to_thread(self.score_pass)
                t = time.monotonic()
                if t >= next_agg and (result.scored or result.unscored or next_agg == 0):
                    next_agg = t + AGGREGATE_EVERY_S
                    await asyncio.to_thread(self.aggregate)
                if t >= next_drift:
                    done = await asyncio.to_thread(self.check_drift)
                    # nothing to compare yet (a fresh pipeline): look again soon, not in an hour
                    next_drift = t + (self.drift_every_s if done else min(60.0, self.drift_every_s))
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + HEARTBEAT_S
                    self._heartbeat(raw, "running")
                if not result.full:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), s.monitor.poll_interval_s)
        finally:
            if self.store is not None:
                self.aggregate()
            self._heartbeat(raw, "stopped")
            raw.close()
            self.close()
            if self.influx is not None:
                self.influx.close()
            log.info(
                "part=monitor symbol=- stopped: scored=%d unscored=%d waiting=%d",
                sum(n for (_, k), n in self.counts.items() if k == "scored"),
                sum(n for (_, k), n in self.counts.items() if k != "scored"),
                len(self._pending),
            )

    def _heartbeat(self, raw: SqliteStore, state: str) -> None:
        detail = self.status()
        raw.heartbeat(PART, os.getpid(), self.started_at, time.time_ns(), state, json.dumps(detail))
        if state == "running":
            for sym, d in detail["symbols"].items():
                log.info(
                    "part=monitor symbol=%s scored=%d unscored=%s last_origin=%s drift_share=%s",
                    sym,
                    d["scored"],
                    d["unscored"] or 0,
                    d["last_origin"],
                    d["drift_share"],
                )

    def status(self) -> dict[str, Any]:
        """What the heartbeat carries: per symbol counts and drift, alerts, common metrics."""
        symbols = {}
        for sym in sorted({s for s, _ in self.counts} | set(self.settings.symbols)):
            d = self.last_drift.get(sym)
            symbols[sym] = {
                "scored": self.counts[(sym, "scored")],
                "unscored": {
                    k: n for (s, k), n in self.counts.items() if s == sym and k != "scored"
                },
                "last_origin": _iso(self.last_origin.get(sym)),
                "drift_share": None if d is None else round(d.share, 3),
                "drifted": [] if d is None else list(d.drifted),
            }
        active = [] if self.store is None else self.store.alerts(active_only=True)
        return {
            "cursor": self._cursor,
            "waiting": len(self._pending),
            "symbols": symbols,
            "alerts": [f"{a.symbol}:{a.kind}" for a in active],
            "metrics_url": self.metrics.url,
            "metrics": self.metrics.snapshot(),
        }
