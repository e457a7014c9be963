"""``ccf features``: the engine over the raw store, live or over history.

Live (:class:`FeatureRunner`) follows the raw store as the collector writes
it, pushes what is new into one engine, writes the closed rows and keeps
the last ones in memory for a model in the same process. With its rows, at
most every ``features.checkpoint_every`` of event time and on a clean stop, it
writes each symbol's feature state after the last of them (same transaction,
:mod:`ccf.features.checkpoint`). A restart restores the newest one and reads
the raw records from that bucket's end on (recomputing, not rewriting, rows
already stored), so it continues bit-equal after any downtime. Without a usable checkpoint (a store
written before checkpoints, another engine format) it falls back to replaying
``warmup`` of history before the last bucket written, which is exact only for
features whose memory is shorter than the warm-up. Either way it writes only
the buckets after the last one stored. Batch (:func:`run_backfill`) feeds the
same engine from the same reads, merged into the engine's order, so both write
the same rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ccf.config import ConfigError, Settings
from ccf.features.buckets import parse_duration
from ccf.features.checkpoint import Checkpoint, CheckpointError
from ccf.features.engine import FeatureEngine, FeatureRow
from ccf.features.online import OnlineRings
from ccf.features.raw import RawReader, RawTail
from ccf.features.spec import FeatureSet, feature_set
from ccf.features.store import FeatureStore
from ccf.monitoring.metrics import PartMetrics
from ccf.storage import SqliteStore
from ccf.storage.backends import (
    open_feature_store,
    open_raw_store,
    pushes,
    uses_kafka,
    uses_postgres,
)
from ccf.storage.postgres.connect import describe
from ccf.storage.sqlite import connect
from ccf.storage.wake import Waker, Wakeups

if TYPE_CHECKING:
    from ccf.storage.postgres.raw import PgRawStore

log = logging.getLogger(__name__)

PART = "features"
HEARTBEAT_S = 5.0
WRITE_ROWS = 10_000


def require_sqlite_raw(settings: Settings, what: str) -> None:
    """Stop at once where the raw records are not in the SQLite file this reader follows:
    the raw tail and the batch reader read SQLite only."""
    if not uses_postgres(settings):
        return
    if uses_kafka(settings):
        fix = "the Kafka feature worker computes features from the topics instead"
    else:
        fix = "set transport.backend=kafka: the Kafka feature worker follows the topics"
    raise ConfigError(
        f"{what} reads raw records from the SQLite store, but storage.backend=postgres keeps "
        f"them in {describe(settings.storage.postgres)}; {fix}"
    )


def warn_late(symbols: dict[str, dict[str, Any]], logged: Counter[str], lateness: str) -> None:
    """Warn once per new batch of late events a symbol's status shows (``logged`` holds
    what was already said): late events are dropped, and only a warning says so."""
    for sym, d in symbols.items():
        late = d["late"] + d["late_gaps"]
        if late > logged[sym]:
            log.warning(
                "part=features symbol=%s late=%d late_gaps=%d: events that came after their "
                "bucket closed were dropped (their stream had gone idle, or they trailed by "
                "more than the allowed lateness, %s); raise features.idle_timeout or "
                "features.allowed_lateness if this repeats",
                sym,
                d["late"],
                d["late_gaps"],
                lateness,
            )
            logged[sym] = late


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns / 1e9)) + f".{ns // 10**6 % 1000:03d}Z"


class FeatureRunner:
    """The live part: ``await FeatureRunner(settings).run(stop)``."""

    def __init__(
        self, settings: Settings, fs: FeatureSet | None = None, metrics: PartMetrics | None = None
    ) -> None:
        self.settings = settings
        self.fs = fs or feature_set(settings.features)
        # Prometheus; `ccf features` serves it on metrics.ports.features
        self.metrics = metrics or PartMetrics("features", settings)
        self.metrics.add_refresh(self._sync_metrics)
        self.engine = FeatureEngine(self.fs, settings.symbols)
        self.online = OnlineRings(self.fs.float_columns, settings.features.online_rows)
        self.resume: dict[str, int | None] = {}  # first bucket to write, per symbol
        self.restored: dict[str, int] = {}  # symbol -> bucket of the checkpoint it resumed at
        self.checkpointed: dict[str, int] = {}  # symbol -> bucket of its newest checkpoint
        self._checkpoint_ns = parse_duration(settings.features.checkpoint_every)
        self._no_checkpoint: set[str] = set()  # symbols whose state does not pickle
        self.rows_written: Counter[str] = Counter()
        self.last_bucket: dict[str, int] = {}
        self.events = 0
        self.polls = 0
        self.read_s_max = 0.0  # the slowest read of the raw store
        self.caught_up = False  # the last poll read everything the store had
        self._late_logged: Counter[str] = Counter()
        self.started_at = time.time_ns()
        self._waker: Waker | None = None  # wakes the feature store's followers
        self.wakeups = (0, 0)  # (woken, fell back to polling) over the last run

    # -- one poll, in a worker thread -------------------------------------------------------

    def _step(self, tail: RawTail, store: FeatureStore) -> tuple[list[FeatureRow], bool]:
        t0 = time.monotonic()
        poll = tail.poll()
        self.read_s_max = max(self.read_s_max, time.monotonic() - t0)
        engine = self.engine
        rows: list[FeatureRow] = []
        for g in poll.gaps:  # first: they flag the buckets the new events close
            engine.push(g)
        for n in poll.news:  # before market events, which move the watermark past them
            engine.push(n)
        for t in poll.late_trades:  # filled over REST: not in the tail's trade stream
            engine.push(t)
        push = engine.push
        for recs in poll.market.values():
            for r in recs:
                out = push(r)
                if out:
                    rows += out
        resume = self.resume
        rows = [r for r in rows if (resume.get(r.symbol) or r.ts) <= r.ts]
        if rows:
            store.write(rows, self._due_checkpoints(rows))
            if self._waker is not None:
                self._waker.wake()  # the predictor reads them now
        now = time.time_ns()
        observe = self.metrics.observe_lag
        for r in rows:
            self.rows_written[r.symbol] += 1
            self.last_bucket[r.symbol] = r.ts
            observe("feature", (now - r.ts_end) / 1e9, r.symbol)  # exchange time -> row
        self.events += poll.events
        self.polls += 1
        return rows, poll.full

    def _due_checkpoints(self, rows: list[FeatureRow]) -> list[Checkpoint]:
        """The state after each symbol's last row in ``rows`` (the rows' own checkpoint),
        for the symbols whose last one is ``checkpoint_every`` of event time old."""
        out = []
        newest = {r.symbol: r.ts for r in rows}
        for sym, ts in newest.items():
            saved = self.checkpointed.get(sym)
            if saved is not None and ts - saved < self._checkpoint_ns:
                continue  # not due: no pickling
            cp = self._checkpoint(sym)
            if cp is not None:
                out.append(cp)
                self.checkpointed[sym] = cp.ts
        return out

    def _checkpoint(self, sym: str) -> Checkpoint | None:
        """The engine's checkpoint, or None (said once) when a kind's state cannot be
        stored: restarts of this set then fall back to the warm-up."""
        if sym in self._no_checkpoint:
            return None
        try:
            return self.engine.checkpoint(sym)
        except CheckpointError as e:
            self._no_checkpoint.add(sym)
            log.warning(
                "part=features symbol=%s no checkpoints: %s; a restart will replay %s s of "
                "history instead (define the kind's class at module level to fix it)",
                sym,
                e,
                self.fs.warmup_ns / 1e9,
            )
            return None

    def _final_checkpoints(self, store: FeatureStore) -> None:
        """On a clean stop: the state after the last row written, where it is newer than
        the last checkpoint (a restart then replays nothing)."""
        cps = []
        for sym, last in self.last_bucket.items():
            cp = self._checkpoint(sym)
            if cp is not None and cp.ts == last and self.checkpointed.get(sym) != last:
                cps.append(cp)
                self.checkpointed[sym] = last
        store.save_checkpoints(cps)

    # -- lifecycle --------------------------------------------------------------------------

    def _floors(self, store: FeatureStore) -> dict[str, int | None]:
        """Where reading starts per symbol: the end of its checkpoint's bucket, restored
        into the engine, or else ``warmup`` before the first bucket to write."""
        floors: dict[str, int | None] = {}
        bucket = self.fs.bucket_ns
        for sym in self.settings.symbols:
            last = store.last_bucket(sym)
            self.resume[sym] = None if last is None else last + bucket
            floors[sym] = None if last is None else last + bucket - self.fs.warmup_ns
            if last is None:
                continue
            self.last_bucket[sym] = last
            cp = store.checkpoint(sym)
            why = "no checkpoint"
            if cp is not None and cp.ts > last:
                why = f"its checkpoint ({_iso(cp.ts)}) is newer than its rows"
            elif cp is not None:
                try:
                    self.engine.restore(cp)
                except CheckpointError as e:
                    why = f"checkpoint not usable: {e}"
                else:
                    floors[sym] = cp.ts + bucket
                    self.restored[sym] = self.checkpointed[sym] = cp.ts
                    log.info(
                        "part=features symbol=%s resuming after bucket %s from its checkpoint "
                        "at %s (state restored: exact after any downtime)",
                        sym,
                        _iso(last),
                        _iso(cp.ts),
                    )
                    continue
            log.warning(
                "part=features symbol=%s resuming after bucket %s by replaying %s s of "
                "history (%s): features with a longer memory than that may differ from a "
                "batch run",
                sym,
                _iso(last),
                self.fs.warmup_ns / 1e9,
                why,
            )
        return floors

    async def run(self, stop: asyncio.Event) -> None:
        s, fs = self.settings, self.fs
        require_sqlite_raw(s, "`ccf features` (live)")
        raw = open_raw_store(s)  # heartbeats; schema
        store = open_feature_store(s, fs)
        con = connect(s.db_path, readonly=True)
        con.isolation_level = None  # poll() opens its own read transaction
        reader = RawReader(con, fs, s.exchange)
        tail = RawTail(reader, list(s.symbols), self._floors(store), s.features.max_rows_per_poll)
        log.info(
            "part=features set=%s version=%s bucket=%s lateness=%s symbols=%s raw=%s store=%s",
            fs.name,
            fs.version,
            s.features.bucket,
            s.features.allowed_lateness,
            ",".join(s.symbols),
            s.db_path,
            s.features_path,
        )
        next_beat = 0.0
        push = pushes(s)
        wake = Wakeups(s.db_path, PART) if push else None
        self._waker = Waker(s.features_path, PART) if push else None
        try:
            if wake is not None:
                await wake.__aenter__()  # before the first read: no commit goes unseen
            while not stop.is_set():
                rows, full = await asyncio.to_thread(self._step, tail, store)
                self.online.add(rows)  # in the loop's thread: readers never see half a row
                self.caught_up = not full
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + (s.features.print_every_s or HEARTBEAT_S)
                    self._heartbeat(raw, "running")
                    self._forget_old_gaps(tail)
                if full:
                    continue
                if wake is not None:  # the collector's commit, or the fallback interval
                    await wake.wait(stop, s.storage.wake_fallback_s)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), s.features.poll_interval_s)
            self._final_checkpoints(store)
        finally:
            if wake is not None:
                self.wakeups = (wake.received, wake.fallbacks)
                wake.close()
            if self._waker is not None:
                self._waker.close()
            self._heartbeat(raw, "stopped")
            raw.close()
            store.close()
            con.close()
            log.info(
                "part=features stopped: events=%d rows=%d", self.events, self.rows_written.total()
            )

    def _forget_old_gaps(self, tail: RawTail) -> None:
        frontiers = [self.engine.frontier(sym) for sym in self.settings.symbols]
        if all(f > -(2**62) for f in frontiers):
            tail.advance_gap_window(min(frontiers) - self.fs.warmup_ns)

    def _heartbeat(self, raw: SqliteStore | PgRawStore, state: str) -> None:
        detail = self.status()
        warn_late(detail["symbols"], self._late_logged, self.settings.features.allowed_lateness)
        raw.heartbeat(PART, os.getpid(), self.started_at, time.time_ns(), state, json.dumps(detail))
        if state == "running" and self.settings.features.print_every_s:
            for sym, d in detail["symbols"].items():
                log.info(
                    "part=features symbol=%s rows=%d last_bucket=%s lag_s=%s late=%d events=%d",
                    sym,
                    d["rows"],
                    d["last_bucket"],
                    d["lag_s"],
                    d["late"],
                    d["events"],
                )

    def status(self) -> dict[str, Any]:
        now = time.time_ns()
        symbols = {}
        for sym in self.settings.symbols:
            st = self.engine.stats(sym)
            last = self.last_bucket.get(sym)
            symbols[sym] = {
                "rows": self.rows_written[sym],
                "last_bucket": _iso(last),
                "lag_s": None if last is None else round((now - last - self.fs.bucket_ns) / 1e9, 3),
                "events": st.events,
                "late": st.late,
                "late_gaps": st.late_gaps,
                "crossed_rows": st.crossed_rows,
                "restored_from": _iso(self.restored.get(sym)),
            }
        return {
            "feature_set": self.fs.name,
            "version": self.fs.version,
            "caught_up": self.caught_up,
            "polls": self.polls,
            "read_s_max": round(self.read_s_max, 3),
            "symbols": symbols,
            "metrics_url": self.metrics.url,
            "metrics": self.metrics.snapshot(),
        }

    def _sync_metrics(self) -> None:
        m = self.metrics
        for sym in self.settings.symbols:
            m.advance(m.events_in, self.engine.stats(sym).events, sym)  # raw events bucketed
            m.advance(m.events_out, self.rows_written[sym], sym)  # feature rows written


# -- batch ------------------------------------------------------------------------------------


@dataclass
class BackfillSummary:
    feature_set: str
    version: str
    table: str
    rows: Counter[str] = field(default_factory=Counter)  # computed in [start, end)
    new: Counter[str] = field(default_factory=Counter)  # of them, not stored before
    events: Counter[str] = field(default_factory=Counter)
    late: Counter[str] = field(default_factory=Counter)
    span: dict[str, tuple[int, int]] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"feature set {self.feature_set} version {self.version} (table {self.table})"]
        for sym in sorted(set(self.rows) | set(self.events)):
            first, last = self.span.get(sym, (None, None))
            lines.append(
                f"  {sym}: {self.rows[sym]:,} rows ({self.new[sym]:,} new) from "
                f"{self.events[sym]:,} events, buckets {_iso(first) or '-'} .. {_iso(last) or '-'}"
                + (f", {self.late[sym]} late" if self.late[sym] else "")
            )
        return "\n".join(lines)


def compute_rows(
    reader: RawReader,
    fs: FeatureSet,
    symbol: str,
    start_ns: int | None = None,
    end_ns: int | None = None,
    on_rows: Callable[[Sequence[FeatureRow]], None] | None = None,
) -> tuple[list[FeatureRow], FeatureEngine]:
    """One symbol's rows with buckets in [start, end) from the raw store, in batch.

    Reading starts ``warmup`` before ``start`` (features need their history) and
    stops at ``end``; buckets close as far as the store's own watermark allows, so a
    backfill never closes a bucket that live data could still fill. With ``on_rows``
    rows are handed over in chunks instead of returned.
    """
    engine = FeatureEngine(fs, [symbol])
    floor = None if start_ns is None else start_ns - fs.warmup_ns
    for g in reader.gaps([symbol], floor):
        engine.push(g)
    kept: list[FeatureRow] = []
    push = engine.push

    def keep(rows: Sequence[FeatureRow]) -> None:
        kept.extend(r for r in rows if start_ns is None or r.ts >= start_ns)
        if on_rows is not None and len(kept) >= WRITE_ROWS:
            on_rows(kept)
            kept.clear()

    for rec in reader.events(symbol, floor, end_ns):
        out = push(rec)
        if out:
            keep(out)
    last = reader.last_event_ts(symbol)
    if last is not None:
        until = last - fs.lateness_ns
        keep(engine.flush(until if end_ns is None else min(until, end_ns)))
    if on_rows is not None:
        on_rows(kept)
        kept = []
    return kept, engine


def run_backfill(
    settings: Settings,
    start_ns: int | None = None,
    end_ns: int | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> BackfillSummary:
    """``ccf features --from --to``: history into the feature store, same engine as live."""
    require_sqlite_raw(settings, "`ccf features --from/--to`")
    fs = feature_set(settings.features)
    raw = SqliteStore(settings.db_path, readonly=True)  # a clear error when there is none
    raw.close()
    con = connect(settings.db_path, readonly=True)
    store = open_feature_store(settings, fs)
    reader = RawReader(con, fs, settings.exchange)
    summary = BackfillSummary(fs.name, fs.version, fs.table)
    try:
        for sym in settings.symbols:

            def write(rows: Sequence[FeatureRow], sym: str = sym) -> None:
                if not rows:
                    return
                summary.new[sym] += store.write(rows)
                summary.rows[sym] += len(rows)
                first = summary.span.get(sym, (rows[0].ts, 0))[0]
                summary.span[sym] = (first, rows[-1].ts)
                if progress is not None:
                    progress(sym, summary.rows[sym])

            _, engine = compute_rows(reader, fs, sym, start_ns, end_ns, on_rows=write)
            st = engine.stats(sym)
            summary.events[sym] = st.events
            summary.late[sym] = st.late
            log.info(
                "part=features symbol=%s backfill rows=%d new=%d events=%d",
                sym,
                summary.rows[sym],
                summary.new[sym],
                st.events,
            )
    finally:
        store.close()
        con.close()
    return summary
