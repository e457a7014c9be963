"""``ccf features`` over Kafka: workers in one group share the symbols.

Each worker of the group ``transport.kafka.groups.features`` gets some partition numbers
(the ``range`` assignor gives it the same numbers in the book, trade and gap topics, or
candle and gap), and so the symbols keyed to them. Per partition number (a *lane*) it
keeps one :class:`~ccf.features.engine.FeatureEngine` over the lane's configured
symbols, fed by the :class:`~ccf.transport.align.Aligner` in event-time order; every lane
also reads all the news (a group-less reader over every news partition).

Closed rows are published to the ``feature`` topic, then written to the feature store,
then the inputs' offsets are committed, each step only after the one before is durable.
The committed offset is where a new owner must *start replaying*
(:class:`~ccf.transport.checkpoints.Checkpoints`): ``warmup`` before the first bucket
not yet stored. A worker that takes partitions over resumes exactly like ``ccf
features`` after a restart: from the feature store's last bucket per symbol, replaying
from the committed offset and writing only the buckets after it. So whichever worker
dies, no row is lost and none is written twice. (A row published but not yet stored when
a worker died is published again by the next owner: consumers of the topic key rows by
symbol and bucket.)

Every change of assignment rebuilds every lane from the committed offsets: the group
takes all partitions back before it hands them out again, and rebuilding is the same
path a new owner takes, so it is the one path there is.

    await KafkaFeatureWorker(settings).run(stop)
    python -m ccf.features.stream key=value ...   # one worker, without the CLI
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ccf.config import Settings
from ccf.features.engine import FeatureEngine, FeatureRow
from ccf.features.runner import PART, _iso, warn_late
from ccf.features.spec import FeatureSet, feature_set
from ccf.monitoring.metrics import PartMetrics
from ccf.records import NewsItem
from ccf.sinks import open_influx
from ccf.storage.backends import open_feature_store, open_raw_store
from ccf.transport.align import Aligner
from ccf.transport.checkpoints import Checkpoints
from ccf.transport.client import describe
from ccf.transport.codec import KIND_OF
from ccf.transport.consumer import END, BroadcastReader, GroupConsumer, Input, Received
from ccf.transport.kafka import Publisher
from ccf.transport.part import member_name, run_in_thread
from ccf.transport.topics import partition_for, same_partitions

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
COMMIT_S = 1.0  # how often durable progress is committed (and always before a rebalance)
POLL_MAX = 20_000  # messages per poll
MAX_HELD = 50_000  # records held per input before its fetching pauses (a book: ~2.5 kB)
# An input at its end holds the others back to its newest event time this long (wall
# clock): its end may be reported early, and a backlog of the others released past it at
# once would make its next records late. Well under any allowed lateness.
EOF_GRACE_S = 0.5


@dataclass
class _Lane:
    """One owned partition number: its symbols, engine and input offsets."""

    number: int
    symbols: tuple[str, ...]
    engine: FeatureEngine
    checkpoints: dict[Input, Checkpoints]
    committed: dict[Input, int] = field(default_factory=dict)


class KafkaFeatureWorker:
    """One member of the feature group; see the module docstring."""

    def __init__(
        self, settings: Settings, fs: FeatureSet | None = None, metrics: PartMetrics | None = None
    ) -> None:
        self.settings = settings
        self.fs = fs or feature_set(settings.features)
        self.cfg = settings.transport.kafka
        self.group = self.cfg.groups.get("features", "ccf-features")
        candles = self.fs.source == "candle"
        self.kinds = ("candle", "gap") if candles else ("book", "trade", "gap")
        # gaps of the streams the engine reads; others flag no row
        self._gap_streams = ("candle",) if candles else ("book", "trade")
        self.name = member_name(PART)
        self.metrics = metrics or PartMetrics("features", settings)
        self.metrics.add_refresh(self._sync_metrics)
        self.lanes: dict[int, _Lane] = {}
        self.resume: dict[str, int | None] = {}  # first bucket to write, per symbol
        self.last_bucket: dict[str, int] = {}  # newest stored bucket, per symbol
        self.rows_written: Counter[str] = Counter()
        self.events = 0  # records handed to the engines
        self.rebuilds = 0
        self.commits = 0
        self.started_at = time.time_ns()
        self._aligner = Aligner(grace_s=EOF_GRACE_S)
        self._paused: set[Input] = set()
        self._late_logged: Counter[str] = Counter()
        self._lane_of: dict[str, int] = {}
        self._store: Any = None
        self._influx: Any = None  # the InfluxDB copy, when influx.enabled
        self._consumer: GroupConsumer | None = None
        self._news: BroadcastReader | None = None

    # -- assignment -------------------------------------------------------------------------

    def _assigned(self, inputs: list[Input]) -> None:
        """Build a lane per partition number, resuming each symbol from the store."""
        self.rebuilds += 1
        by_lane: dict[int, list[Input]] = {}
        for i in inputs:
            by_lane.setdefault(i.partition, []).append(i)
        self.lanes = {}
        self.resume, self.last_bucket = {}, {}
        bucket, warmup = self.fs.bucket_ns, self.fs.warmup_ns
        for p, lane_inputs in sorted(by_lane.items()):
            symbols = tuple(s for s in self.settings.symbols if self._lane_of[s] == p)
            self.lanes[p] = _Lane(
                p,
                symbols,
                FeatureEngine(self.fs, symbols),
                {i: Checkpoints(symbols, gap_streams=self._gap_streams) for i in lane_inputs},
            )
            for sym in symbols:
                last = self._store.last_bucket(sym)
                self.resume[sym] = None if last is None else last + bucket
                if last is not None:
                    self.last_bucket[sym] = last
                log.info(
                    "part=features symbol=%s partition=%d %s",
                    sym,
                    p,
                    "from the start"
                    if last is None
                    else f"resuming after bucket {_iso(last)} (replaying {warmup / 1e9} s)",
                )
        # every lane needs the news since its floor: read all of it again
        if self._news is not None:
            self._news.close()
            self._news = None
        if self.lanes:
            self._news = BroadcastReader(
                self.cfg, ("news",), client_id=f"{self.name}/news", group=f"{self.group}.news"
            )
        news_inputs = self._news.inputs if self._news is not None else []
        self._paused = set()
        self._aligner.reset(
            {p: [*lane.checkpoints, *news_inputs] for p, lane in self.lanes.items()}
        )

    def _revoked(self, inputs: list[Input], lost: bool) -> None:
        if not lost:  # still a member: leave the next owner as little to replay as it can
            self._commit()
        self.lanes = {}
        self._aligner.reset({})

    # -- one poll ---------------------------------------------------------------------------

    def _feed(self, got: list[Received], news: list[Received]) -> None:
        aligner, lanes = self._aligner, self.lanes
        for m in got:
            if m.input.partition not in lanes:
                continue
            if m.record is END:
                aligner.end(m.input.partition, m.input)
            else:
                rec = m.record
                aligner.add(m.input.partition, m.input, m.offset, KIND_OF[type(rec)].time(rec), rec)
        for m in news:
            for p in lanes:
                if m.record is END:
                    aligner.end(p, m.input)
                else:
                    aligner.add(p, m.input, m.offset, m.record.ingested_at, m.record)

    def _compute(self) -> list[FeatureRow]:
        """Release what the aligner allows into the lanes' engines; the rows they close."""
        exchange = self.settings.exchange
        rows: list[FeatureRow] = []
        for p, lane in self.lanes.items():
            push, checkpoints = lane.engine.push, lane.checkpoints
            owned = set(lane.symbols)
            for inp, offset, rec in self._aligner.release(p):
                if type(rec) is NewsItem or (rec.exchange == exchange and rec.symbol in owned):
                    out = push(rec)
                    self.events += 1
                    if out:
                        rows += out
                cp = checkpoints.get(inp)
                if cp is not None:
                    cp.seen(offset, rec)
        resume = self.resume
        return [r for r in rows if (resume.get(r.symbol) or r.ts) <= r.ts]

    def _store_rows(self, rows: list[FeatureRow], publisher: Publisher) -> None:
        """Publish, then store: a row in the store is always in the topic too."""
        publisher.publish(rows)
        self._store.write(rows)
        if self._influx is not None:
            self._influx.features(self.fs.float_columns, rows, feature_set=self.fs.table)
        now = time.time_ns()
        observe = self.metrics.observe_lag
        for r in rows:
            self.rows_written[r.symbol] += 1
            self.last_bucket[r.symbol] = r.ts
            observe("feature", (now - r.ts_end) / 1e9, r.symbol)

    def _commit(self) -> None:
        """Commit, per input, where a new owner would have to start replaying."""
        if self._consumer is None:
            return
        bucket, warmup = self.fs.bucket_ns, self.fs.warmup_ns
        offsets: dict[Input, int] = {}
        for lane in self.lanes.values():
            floors = {
                s: self.last_bucket[s] + bucket - warmup
                for s in lane.symbols
                if s in self.last_bucket
            }
            for inp, cp in lane.checkpoints.items():
                off = cp.safe_offset(floors)
                if off is not None and off > lane.committed.get(inp, -1):
                    offsets[inp] = off
        if offsets and self._consumer.commit(offsets):
            self.commits += 1
            for inp, off in offsets.items():
                lane = self.lanes[inp.partition]
                lane.committed[inp] = off
                lane.checkpoints[inp].forget_before(off)

    def _backpressure(self) -> None:
        """Pause inputs that ran far ahead of the others; resume them once they drained."""
        assert self._consumer is not None
        full, drained = [], []
        for p, lane in self.lanes.items():
            for inp in lane.checkpoints:
                held = self._aligner.held(p, inp)
                if inp not in self._paused and held > MAX_HELD:
                    full.append(inp)
                elif inp in self._paused and held < MAX_HELD // 2:
                    drained.append(inp)
        self._consumer.pause(full)
        self._consumer.resume(drained)
        self._paused = (self._paused | set(full)) - set(drained)

    # -- the loop ---------------------------------------------------------------------------

    def run_blocking(self, stop: threading.Event) -> None:
        """Consume, compute, publish, store and commit until ``stop`` is set."""
        s, fs = self.settings, self.fs
        with contextlib.ExitStack() as opened:
            self._store = open_feature_store(s, fs)
            opened.callback(self._store.close)
            self._influx = open_influx(s)  # None unless influx.enabled
            if self._influx is not None:
                opened.callback(self._influx.close)
            raw = open_raw_store(s)  # heartbeats
            opened.callback(raw.close)
            publisher = Publisher(
                s,
                ("feature",),
                client_id=f"{self.name}/out",
                headers=[("ccf-set", fs.name.encode()), ("ccf-version", fs.version.encode())],
            )
            opened.callback(publisher.close)
            log.info(
                "part=features symbol=- member %s of group %s set=%s version=%s inputs=%s from %s",
                self.name,
                self.group,
                fs.name,
                fs.version,
                ",".join(self.kinds),
                describe(self.cfg),
            )
            try:
                self._loop(stop, raw, publisher)
            finally:
                last = self.status()  # what it owned: the last heartbeat says so
                if self._consumer is not None:
                    self._consumer.close()  # hands the partitions back at once
                if self._news is not None:
                    self._news.close()
                self._heartbeat(raw, "stopped", last)
                log.info(
                    "part=features symbol=- stopped: events=%d rows=%d commits=%d",
                    self.events,
                    self.rows_written.total(),
                    self.commits,
                )

    def _loop(self, stop: threading.Event, raw: Any, publisher: Publisher) -> None:
        s = self.settings
        self._consumer = GroupConsumer(
            self.cfg,
            self.group,
            self.kinds,
            client_id=self.name,
            on_assign=self._assigned,
            on_revoke=self._revoked,
        )
        n = same_partitions(self._consumer.partitions)
        self._lane_of = {sym: partition_for(f"{s.exchange}:{sym}", n) for sym in s.symbols}
        every = s.features.print_every_s or HEARTBEAT_S
        next_beat = next_commit = 0.0
        idle = False
        while not stop.is_set():
            got = self._consumer.poll(POLL_MAX, 0.1 if idle else 0.0)
            news = self._news.poll(POLL_MAX, 0.0) if self._news is not None else []
            idle = not got and not news
            self._feed(got, news)
            rows = self._compute()
            if rows:
                self._store_rows(rows, publisher)
            self._backpressure()
            if time.monotonic() >= next_commit:
                next_commit = time.monotonic() + COMMIT_S
                self._commit()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + every
                self._heartbeat(raw, "running")
        self._commit()

    async def run(self, stop: asyncio.Event) -> None:
        """The worker's loop in a thread of its own (the client blocks), until ``stop``."""
        await run_in_thread(self.run_blocking, stop)

    # -- what it did ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.time_ns()
        symbols = {}
        for lane in self.lanes.values():
            for sym in lane.symbols:
                st = lane.engine.stats(sym)
                last = self.last_bucket.get(sym)
                symbols[sym] = {
                    "partition": lane.number,
                    "rows": self.rows_written[sym],
                    "last_bucket": _iso(last),
                    "lag_s": None
                    if last is None
                    else round((now - last - self.fs.bucket_ns) / 1e9, 3),
                    "events": st.events,
                    "late": st.late,
                    "late_gaps": st.late_gaps,
                    "crossed_rows": st.crossed_rows,
                }
        return {
            "member": self.name,
            "group": self.group,
            "feature_set": self.fs.name,
            "version": self.fs.version,
            "partitions": sorted(self.lanes),
            "caught_up": bool(self.lanes) and self._aligner.caught_up(),
            "rebuilds": self.rebuilds,
            "commits": self.commits,
            "committed": {
                str(i): o for lane in self.lanes.values() for i, o in lane.committed.items()
            },
            "paused": sorted(map(str, self._paused)),
            "symbols": symbols,
            "metrics_url": self.metrics.url,
            "metrics": self.metrics.snapshot(),
        }

    def _heartbeat(self, raw: Any, state: str, detail: dict[str, Any] | None = None) -> None:
        detail = detail or self.status()
        warn_late(detail["symbols"], self._late_logged, self.settings.features.allowed_lateness)
        raw.heartbeat(
            self.name, os.getpid(), self.started_at, time.time_ns(), state, json.dumps(detail)
        )
        if state == "running" and self.settings.features.print_every_s:
            for sym, d in detail["symbols"].items():
                log.info(
                    "part=features symbol=%s partition=%d rows=%d last_bucket=%s lag_s=%s "
                    "late=%d events=%d",
                    sym,
                    d["partition"],
                    d["rows"],
                    d["last_bucket"],
                    d["lag_s"],
                    d["late"],
                    d["events"],
                )

    def _sync_metrics(self) -> None:
        m = self.metrics
        for lane in list(self.lanes.values()):
            for sym in lane.symbols:
                m.advance(m.events_in, lane.engine.stats(sym).events, sym)
                m.advance(m.events_out, self.rows_written[sym], sym)


def main(argv: Iterable[str]) -> None:
    """``python -m ccf.features.stream key=value ...``: one worker, without the CLI."""
    from ccf.cli import run_until_stopped
    from ccf.config import load_settings
    from ccf.logs import setup_logging

    settings = load_settings(list(argv))
    setup_logging(settings.log_level)
    run_until_stopped(KafkaFeatureWorker(settings).run)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
