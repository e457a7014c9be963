"""``ccf collect``: one venue's market data into the raw store.

The collector names no venue: it gets the feed, REST client, stream names,
URLs and limits from the :mod:`ccf.sources.venues` entry its
:class:`~ccf.config.VenueConfig` names (``ccf collect`` runs one collector
per configured venue in the same loop). One asyncio loop owns everything: a
:class:`StreamConnection` per group of at most ``max_streams_per_connection`` streams, a few
snapshot workers answering the feed's resync requests over REST, a drain task handing records
to the store's writer thread, and a progress task. Stopping (Ctrl-C,
SIGTERM) closes the connections, emits pending books, and waits for the
writer to commit everything.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

import aiohttp
from prometheus_client import Counter as MetricCounter

from ccf.config import Settings, VenueConfig
from ccf.monitoring.metrics import PartMetrics
from ccf.records import Book, Candle, DeadLetter, Gap, Quote, Record, Trade
from ccf.sources import venues
from ccf.sources.backoff import backoff_s
from ccf.sources.binance.connection import StreamConnection
from ccf.sources.binance.history import NoProgress, trades_by_id
from ccf.sources.binance.rest import RestError
from ccf.sources.recorder import Recorder
from ccf.sources.venues.base import FeedCallbacks, RestClient
from ccf.storage import StoreWriter
from ccf.storage.backends import open_raw_store, record_writer, uses_postgres
from ccf.storage.postgres.connect import describe

if TYPE_CHECKING:
    from ccf.storage.postgres.raw import PgRawStore
    from ccf.storage.sqlite import SqliteStore

log = logging.getLogger(__name__)

SNAPSHOT_WORKERS = 2
MAX_LIVE_TRADE_FILL = 50_000  # larger holes are left to `ccf backfill` (weight 25 per 1000)
DRAIN_ROWS = 20_000
_KIND_NAMES = {
    Book: "book",
    Trade: "trade",
    Quote: "quote",
    Candle: "candle",
    Gap: "gap",
    DeadLetter: "dead_letter",
}


def plan_connections(
    symbols: tuple[str, ...], streams: tuple[str, ...], max_per_connection: int
) -> list[tuple[tuple[str, ...], list[str]]]:
    """Group symbols so each connection carries whole symbols and at most the limit."""
    per_symbol = len(streams)
    if per_symbol > max_per_connection:
        raise ValueError(
            f"{per_symbol} streams per symbol exceed {max_per_connection} per connection"
        )
    group = max(1, max_per_connection // per_symbol)
    plan = []
    for i in range(0, len(symbols), group):
        syms = symbols[i : i + group]
        plan.append((syms, [f"{s}@{st}" for s in syms for st in streams]))
    return plan


class Collector:
    def __init__(
        self,
        settings: Settings,
        *,
        record: bool = False,
        metrics: PartMetrics | None = None,
        venue: VenueConfig | None = None,
        group: list[Collector] | None = None,
    ) -> None:
        """``group``: the collectors sharing ``metrics`` (one per venue, ``ccf collect``):
        the part-wide counters (gaps, resyncs, ...) count the sum over the group."""
        self.settings = settings
        self.venue_cfg = venue or settings.venue_list()[0]
        self.venue = venues.get(self.venue_cfg.name)
        self.symbols = self.venue_cfg.symbols
        cfg = settings.collect
        self.streams = self.venue_cfg.streams or cfg.streams
        # the default venue keeps its old names: part "collect", metric labels = symbols
        self._primary = self.venue.name == settings.exchange
        self.part = "collect" if self._primary else f"collect:{self.venue.name}"
        # Prometheus; `ccf collect` serves it on metrics.ports.collect
        self.metrics = metrics or PartMetrics("collect", settings)
        self.metrics.add_refresh(self._sync_metrics)
        self._group = group if group is not None else []
        self._group.append(self)
        # one per metrics registry: the group's first collector makes it, the others share it
        self._dead_letter_kinds = (
            self._group[0]._dead_letter_kinds
            if len(self._group) > 1
            else MetricCounter(
                "ccf_dead_letter_reasons",
                "Dead letters by the kind of their reason (invalid_value, id_jump, ...)",
                ["reason"],
                registry=self.metrics.registry,
            )
        )
        self.feed = self.venue.make_feed(
            self.symbols,
            self.streams,
            book_depth=cfg.book_depth,
            book_cadence=cfg.book_cadence,
            callbacks=FeedCallbacks(
                request_snapshot=self._request_snapshot,
                on_server_shutdown=self._server_shutdown,
                on_trade_gap=self._on_trade_gap,
            ),
            max_id_jump=cfg.max_id_jump,
        )
        self.recorder = Recorder(settings.recordings_dir, self.venue.name) if record else None
        # venues whose books resync by resubscribing queue messages for the connection to send
        self._resubscribes = hasattr(self.feed, "take_outgoing")
        self.connections: list[StreamConnection] = []
        self._conn_of: dict[str, StreamConnection] = {}
        self._current: StreamConnection | None = None
        self._out: list[Record] = []
        self._snapshots: asyncio.Queue[str] = asyncio.Queue()
        self._trade_fills: asyncio.Queue[tuple[str, int, int, Gap]] = asyncio.Queue()
        self._epoch: Counter[str] = Counter()  # bumps on disconnect: late snapshots are dropped
        self.counts: Counter[tuple[str, str]] = Counter()  # (symbol, kind) -> records
        self._latency_ms: deque[float] = deque(maxlen=2000)  # recent trades' recv - event
        self.writer: StoreWriter | None = None
        self.rest: RestClient | None = None
        self.started_at = time.time_ns()

    # -- callbacks from the feed and the connections ----------------------------------------

    def _request_snapshot(self, symbol: str) -> None:
        self._snapshots.put_nowait(symbol)

    def _on_trade_gap(self, symbol: str, first: int, last: int, gap: Gap) -> None:
        self._trade_fills.put_nowait((symbol, first, last, gap))

    def _server_shutdown(self) -> None:
        if self._current is not None:
            self._current.request_reconnect("the exchange announced serverShutdown")

    def _on_frame(self, conn: StreamConnection, frame: str, ts_recv: int) -> None:
        if self.recorder is not None:
            self.recorder.frame(ts_recv, frame)
        self._current = conn
        self.feed.handle(frame, ts_recv, self._out)
        if self._resubscribes and self.feed.outgoing:  # OKX, Coinbase, Kraken: resync one book
            conn.outbox.extend(self.feed.take_outgoing())
        if len(self._out) >= DRAIN_ROWS:
            self._drain()

    def _on_down(self, conn: StreamConnection, why: str, was_live: bool) -> None:
        symbols = tuple(s for s in self.symbols if self._conn_of[s] is conn)
        for s in symbols:
            self._epoch[s] += 1
        if was_live:
            self.feed.on_disconnect(symbols, time.time_ns(), self._out, detail=why)
            self._drain()

    # -- tasks ------------------------------------------------------------------------------

    async def _snapshot_worker(self, rest: RestClient) -> None:
        limit = self.settings.collect.snapshot_limit
        refusals: Counter[str] = Counter()  # symbol -> refused answers in a row
        while True:
            symbol = await self._snapshots.get()
            epoch = self._epoch[symbol]
            try:
                body, ts_recv = await rest.depth(symbol, limit)
            except RestError as e:
                log.error(
                    "part=collect exchange=%s symbol=%s snapshot failed: %s; retrying in 5 s",
                    self.venue.name,
                    symbol,
                    e,
                )
                await asyncio.sleep(5)
                self._snapshots.put_nowait(symbol)
                continue
            if epoch != self._epoch[symbol]:
                continue  # the connection dropped meanwhile; the next diff asks again
            if self.recorder is not None:
                self.recorder.snapshot(symbol, ts_recv, body.decode("utf-8", "replace"))
            outcome = self.feed.on_snapshot(symbol, body, ts_recv, self._out)
            if outcome == "refused":  # logged and kept as a dead letter by the feed
                refusals[symbol] += 1
                await asyncio.sleep(backoff_s(refusals[symbol], base=0.25, cap=30.0))
                self._snapshots.put_nowait(symbol)
                continue
            refusals[symbol] = 0
            if outcome == "stale":
                await asyncio.sleep(0.25)
                self._snapshots.put_nowait(symbol)

    async def _trade_fill_worker(self, rest: RestClient) -> None:
        """Fetch trades missed across a gap over REST and mark the gap filled."""
        while True:
            symbol, first, last, gap = await self._trade_fills.get()
            wanted = last - first + 1
            if wanted > MAX_LIVE_TRADE_FILL:
                self._out.append(
                    gap._replace(
                        detail=f"{gap.detail}; too many to fetch live: run `ccf backfill aggtrades`"
                    )
                )
                continue
            got, error = 0, ""
            try:
                async for page in trades_by_id(
                    rest,  # type: ignore[arg-type]
                    symbol,
                    first,
                    last,
                    exchange=self.venue.name,
                ):
                    self._out.extend(page)
                    got += len(page)
            except (RestError, NoProgress) as e:
                error = f" ({e})"
            self.feed.stats["trades_backfilled"] += got
            log.log(
                logging.INFO if got == wanted else logging.WARNING,
                "part=collect exchange=%s symbol=%s backfilled %d of %d missing trades "
                "(ids %d..%d)%s",
                self.venue.name,
                symbol,
                got,
                wanted,
                first,
                last,
                error,
            )
            self._out.append(
                gap._replace(
                    filled=got == wanted,
                    detail=f"{gap.detail}; backfilled {got} of {wanted} over REST{error}",
                )
            )

    async def _drain_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.storage.flush_interval_s / 2)
            self._drain()
            if self.recorder is not None:
                self.recorder.flush()

    def _drain(self) -> None:
        batch, self._out = self._out, []
        if not batch or self.writer is None:
            return
        counts = self.counts
        for r in batch:
            counts[(r.symbol, _KIND_NAMES[type(r)])] += 1
        observe = self.metrics.observe_lag
        for r in batch[-200:]:
            if type(r) is Trade:
                self._latency_ms.append((r.ts_recv - r.ts_event) / 1e6)
                observe("receive", (r.ts_recv - r.ts_event) / 1e9, self._label(r.symbol))
        self.writer.submit(batch)

    async def _progress_loop(self, store: SqliteStore | PgRawStore) -> None:
        every = self.settings.collect.print_every_s
        last: Counter[tuple[str, str]] = Counter()
        while True:
            await asyncio.sleep(every or 5.0)
            detail = self.status()
            store.heartbeat(
                self.part,
                os.getpid(),
                self.started_at,
                time.time_ns(),
                "running",
                json.dumps(detail),
            )
            if every:
                for sym in self.symbols:
                    parts = [
                        f"{k}={self.counts[(sym, k)] - last[(sym, k)]}"
                        for k in ("book", "trade", "quote", "candle")
                        if self.counts[(sym, k)]
                    ]
                    log.info(
                        "part=collect exchange=%s symbol=%s last %.0fs: %s open_gaps=%d "
                        "dead_letters=%d",
                        self.venue.name,
                        sym,
                        every,
                        " ".join(parts) or "nothing yet",
                        sum(1 for (s, _) in self.feed.open_gaps if s == sym),
                        self.counts[(sym, "dead_letter")],
                    )
                last = self.counts.copy()

    def _sync_metrics(self) -> None:
        """The running counts into the Prometheus counters (events in: exchange events per
        symbol; out: every record handed to the store, gaps and dead letters too)."""
        m = self.metrics
        for sym in self.symbols:
            market = sum(self.counts[(sym, k)] for k in ("book", "trade", "quote", "candle"))
            m.advance(m.events_in, market, self._label(sym))
            written = market + self.counts[(sym, "gap")] + self.counts[(sym, "dead_letter")]
            m.advance(m.events_out, written, self._label(sym))
        if self._group[0] is not self:
            return  # the group's first collector counts the part-wide totals for all
        group = self._group
        for key in ("gaps", "resyncs", "dead_letters"):
            m.advance(getattr(m, key), sum(c.feed.stats[key] for c in group))
        reconnects = sum(max(0, n.connects - 1) for c in group for n in c.connections)
        m.advance(m.reconnects, reconnects)
        kinds: Counter[str] = Counter()
        for c in group:
            kinds.update(c.feed.dead_letter_kinds)
        for kind, n in kinds.items():
            m.advance(self._dead_letter_kinds, n, kind)

    def _label(self, symbol: str) -> str:
        """The metrics' symbol label: ``venue:symbol`` beside the default venue."""
        return symbol if self._primary else f"{self.venue.name}:{symbol}"

    def status(self) -> dict[str, Any]:
        lat = self._latency_ms
        return {
            "venue": self.venue.name,
            "frames": self.feed.frames,
            "feed": dict(self.feed.stats),
            "rest": dict(self.rest.stats) if self.rest else {},
            "rows_written": self.writer.rows_written if self.writer else 0,
            "connections": [
                {
                    "name": c.name,
                    "streams": len(c.streams),
                    "connects": c.connects,
                    "disconnects": c.disconnects,
                    "live": c.live,
                }
                for c in self.connections
            ],
            "open_gaps": [f"{s}:{k}" for (s, k) in self.feed.open_gaps],
            "trade_latency_ms_p50": statistics.median(lat) if lat else None,
            "metrics_url": self.metrics.url,
            "metrics": self.metrics.snapshot(),
        }

    # -- lifecycle --------------------------------------------------------------------------

    def _resume_from_store(self, store: SqliteStore | PgRawStore) -> None:
        """After a restart: a gap from what the store last holds to what comes next."""
        now = time.time_ns()
        kinds = {self.venue.stream_kind(st) for st in self.streams}
        for summary in store.summaries():
            kind = summary.kind
            if (
                summary.symbol in self.feed.state
                and kind in kinds
                and summary.last_ts
                and summary.exchange == self.venue.name
            ):
                last_id = None
                if kind == "trade":
                    last_id = store.query(
                        "SELECT max(trade_id) FROM trade WHERE exchange=? AND symbol=?",
                        (summary.exchange, summary.symbol),
                    )[0][0]
                self.feed.resume_from(
                    summary.symbol, kind, summary.last_ts, now, self._out, last_trade_id=last_id
                )

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        cfg = s.collect
        store = open_raw_store(s)  # heartbeats, and where to resume from
        self._resume_from_store(store)
        self.writer = record_writer(s)
        ws_url, rest_url = s.venue_urls(self.venue_cfg)
        log.info(
            "part=collect exchange=%s source=%s ws=%s rest=%s symbols=%s streams=%s store=%s",
            self.venue.name,
            s.source,
            ws_url,
            rest_url,
            ",".join(self.symbols),
            ",".join(self.streams),
            describe(s.storage.postgres) if uses_postgres(s) else s.db_path,
        )
        try:
            async with aiohttp.ClientSession() as session:
                self.rest = self.venue.make_rest(
                    session,
                    rest_url,
                    weight_limit=cfg.rest_weight_limit,
                    timeout_s=cfg.rest_timeout_s,
                )
                per_conn = min(
                    cfg.max_streams_per_connection, self.venue.rules.max_streams_per_connection
                )
                prefix = "ws" if self._primary else f"{self.venue.name}-ws"
                for n, (syms, streams) in enumerate(
                    plan_connections(self.symbols, self.streams, per_conn)
                ):
                    conn = StreamConnection(
                        f"{prefix}{n}",
                        session,
                        ws_url,
                        streams,
                        cfg,
                        on_frame=self._on_frame,
                        on_down=self._on_down,
                        venue=self.venue,
                    )
                    self.connections.append(conn)
                    for sym in syms:
                        self._conn_of[sym] = conn
                await self._run_tasks(stop, store)
        finally:
            self.feed.flush(self._out)
            self.feed.release_held(self._out)
            self._drain()
            self.writer.close()
            store.heartbeat(
                self.part,
                os.getpid(),
                self.started_at,
                time.time_ns(),
                "stopped",
                json.dumps(self.status()),
            )
            store.close()
            if self.recorder is not None:
                self.recorder.close()
            log.info(
                "part=collect exchange=%s stopped: frames=%d rows_written=%d",
                self.venue.name,
                self.feed.frames,
                self.writer.rows_written,
            )

    async def _run_tasks(self, stop: asyncio.Event, store: SqliteStore | PgRawStore) -> None:
        assert self.rest is not None
        helpers = [
            asyncio.create_task(self._snapshot_worker(self.rest), name=f"snapshot{i}")
            for i in range(SNAPSHOT_WORKERS)
        ]
        helpers.append(asyncio.create_task(self._trade_fill_worker(self.rest), name="trade-fill"))
        helpers.append(asyncio.create_task(self._drain_loop(), name="drain"))
        helpers.append(asyncio.create_task(self._progress_loop(store), name="progress"))
        conns = [asyncio.create_task(c.run(stop), name=c.name) for c in self.connections]
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait(
                [*conns, *helpers, stopper], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not stopper and not task.cancelled() and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            stop.set()
            for task in [*conns, *helpers, stopper]:
                task.cancel()
            await asyncio.gather(*conns, *helpers, stopper, return_exceptions=True)
