"""News from RSS/Atom feeds into the store, beside the market data of ``ccf collect``.

Each feed has its own task and schedule; a semaphore bounds the requests in
flight. A poll fetches (conditional GET), parses in a worker thread (feedparser
is pure Python and would stall the market-data websockets), deduplicates on
the loop, and hands the new stories, their sightings and the feed's status to
the store writer in one list, so a status whose ETag is committed never
outruns the stories of that body. A broken feed only changes its own status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from ccf.config import FeedConfig, Settings
from ccf.records import FeedStatus, Record
from ccf.sources.news.dedupe import DedupeIndex, Sighting, assign
from ccf.sources.news.health import (
    condition,
    initial_status,
    next_delay_s,
    on_failure,
    on_success,
)
from ccf.sources.news.parse import parse_feed
from ccf.sources.news.poller import FetchError, fetch_feed
from ccf.storage.backends import open_raw_store, record_writer, uses_postgres
from ccf.storage.postgres.connect import describe

if TYPE_CHECKING:
    from ccf.storage.postgres.raw import PgRawStore
    from ccf.storage.sqlite import SqliteStore

log = logging.getLogger(__name__)

NS = 1_000_000_000
HEARTBEAT_S = 5.0
SUMMARY_EVERY_S = 60.0


class Writer(Protocol):
    """Where records go: :class:`~ccf.storage.StoreWriter` or anything alike."""

    def submit(self, records: Sequence[Record]) -> None: ...

    def close(self) -> None: ...


def store_writer(settings: Settings) -> Writer:
    """The default writer: a writer thread of its own on the settings' store."""
    return record_writer(settings, part="news")


def news_wanted(settings: Settings) -> bool:
    """Whether ``ccf collect`` should run a :class:`NewsCollector`."""
    return settings.news.enabled and bool(settings.news.feeds)


class NewsCollector:
    """Polls ``settings.news.feeds`` until ``stop`` is set.

    ``writer_factory`` builds the writer when ``run`` starts, and ``run`` closes it
    when it ends (flushing everything); pass a factory of a wrapper whose ``close``
    does nothing to share a writer. ``statuses`` holds each feed's health.
    """

    def __init__(
        self,
        settings: Settings,
        writer_factory: Callable[[Settings], Writer] = store_writer,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.cfg = settings.news
        self._writer_factory = writer_factory
        self._rng = rng
        self.index = DedupeIndex(int(self.cfg.title_window_s * NS))
        self.statuses: dict[str, FeedStatus] = {}
        self.new_stories = 0
        self.new_sightings = 0
        self.polls = 0
        self.writer: Writer | None = None
        self.started_at = time.time_ns()
        self._logged: dict[str, str] = {}

    # -- one poll -------------------------------------------------------------------------

    async def poll(self, feed: FeedConfig, session: aiohttp.ClientSession) -> FeedStatus:
        """Fetch, parse and deduplicate one feed; updates and returns its status."""
        cfg = self.cfg
        st = self.statuses[feed.name]
        records: list[Record] = []
        retry_after = None
        try:
            got = await fetch_feed(
                session,
                feed.url,
                etag=st.etag,
                last_modified=st.last_modified,
                timeout_s=cfg.timeout_s,
                max_bytes=cfg.max_body_bytes,
                max_redirects=cfg.max_redirects,
                user_agent=cfg.user_agent,
            )
        except FetchError as e:
            new = on_failure(st, now=time.time_ns(), error=str(e), http_status=e.http_status)
            retry_after = e.retry_after_s
        else:
            now = time.time_ns()
            if got.status == 304:
                new = on_success(
                    st,
                    now=now,
                    http_status=304,
                    items_seen=None,
                    new_items=0,
                    bozo="",
                    etag=got.etag,
                    last_modified=got.last_modified,
                )
            else:
                parsed = await asyncio.to_thread(
                    parse_feed,
                    got.body,
                    source=feed.name,
                    url=got.url,
                    ingested_at=now,
                    content_type=got.content_type,
                    future_tolerance_ns=int(cfg.future_tolerance_s * NS),
                )
                if not parsed.entries and (not parsed.version or parsed.bozo):
                    what = got.content_type.split(";")[0] or "no content type"
                    error = f"not a feed: {what}, {len(got.body)} bytes"
                    if parsed.bozo:
                        error += f"; {parsed.bozo}"
                    new = on_failure(st, now=now, error=error, http_status=got.status)
                else:
                    out = assign(self.index, parsed.entries, now)
                    records = [*out.items, *out.sources]
                    self.new_stories += len(out.items)
                    self.new_sightings += len(out.sources)
                    new = on_success(
                        st,
                        now=now,
                        http_status=got.status,
                        items_seen=len(parsed.entries),
                        new_items=len(out.items),
                        bozo=parsed.bozo,
                        etag=got.etag,
                        last_modified=got.last_modified,
                    )
        delay = next_delay_s(
            new,
            interval_s=feed.interval_s or cfg.interval_s,
            jitter=cfg.jitter,
            backoff=cfg.backoff,
            retry_after_s=retry_after,
            rng=self._rng,
        )
        new = new._replace(next_poll_at=new.updated_at + int(delay * NS))
        self.statuses[feed.name] = new
        self.polls += 1
        self._log_change(new, delay)
        if self.writer is not None:
            self.writer.submit([*records, new])
        return new

    def _log_change(self, st: FeedStatus, delay: float) -> None:
        """One line per change of a feed's condition, none per poll."""
        now = condition(st)
        before = self._logged.get(st.feed, "pending")
        if now == before:
            log.debug("part=news feed=%s %s new=%d next=%.0fs", st.feed, now, st.new_items, delay)
            return
        self._logged[st.feed] = now
        if st.state == "failing":
            log.warning(
                "part=news feed=%s failing: %s failures=%d next_try_s=%.1f",
                st.feed,
                st.last_error,
                st.consecutive_failures,
                delay,
            )
        elif st.bozo:
            log.warning("part=news feed=%s parsed with problems: %s", st.feed, st.bozo)
        elif before.startswith("failing"):
            log.info(
                "part=news feed=%s recovered items=%d new=%d", st.feed, st.items_seen, st.new_items
            )
        else:
            log.info("part=news feed=%s ok items=%d new=%d", st.feed, st.items_seen, st.new_items)

    # -- tasks ----------------------------------------------------------------------------

    async def _feed_loop(
        self, feed: FeedConfig, session: aiohttp.ClientSession, slots: asyncio.Semaphore
    ) -> None:
        while True:
            wait_s = (self.statuses[feed.name].next_poll_at or 0) / NS - time.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            async with slots:
                await self.poll(feed, session)

    async def _heartbeat_loop(self, store: SqliteStore | PgRawStore) -> None:
        last_summary = time.monotonic()
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            await self._heartbeat(store, "running")
            if time.monotonic() - last_summary >= SUMMARY_EVERY_S:
                last_summary = time.monotonic()
                s = self.status()
                log.info(
                    "part=news feeds=%d ok=%d failing=%d new_stories=%d sightings=%d polls=%d",
                    s["feeds"],
                    s["ok"],
                    s["failing"],
                    s["new_stories"],
                    s["new_sightings"],
                    s["polls"],
                )

    async def _heartbeat(self, store: SqliteStore | PgRawStore, state: str) -> None:
        detail = json.dumps(self.status())
        await asyncio.to_thread(
            store.heartbeat, "news", os.getpid(), self.started_at, time.time_ns(), state, detail
        )

    def status(self) -> dict[str, Any]:
        states = [s.state for s in self.statuses.values()]
        return {
            "feeds": len(states),
            "ok": states.count("ok"),
            "failing": states.count("failing"),
            "pending": states.count("pending"),
            "new_stories": self.new_stories,
            "new_sightings": self.new_sightings,
            "polls": self.polls,
            "known_sightings": len(self.index),
        }

    # -- lifecycle ------------------------------------------------------------------------

    def _load(self, store: SqliteStore | PgRawStore) -> dict[str, FeedStatus]:
        """Known stories (for deduplication) and stored feed statuses, read in a thread."""
        days = self.cfg.dedupe_days
        since = 0 if days == 0 else time.time_ns() - int(days * 86400 * NS)
        self.index.load(Sighting(*row) for row in store.news_keys(since))
        return {s.feed: s for s in store.feed_statuses()}

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every feed until ``stop`` is set; then flush and close the writer."""
        s, cfg = self.settings, self.cfg
        if not news_wanted(s):
            log.info("part=news off: set news.enabled=true and list news.feeds to collect news")
            return
        store = await asyncio.to_thread(open_raw_store, s)
        try:
            stored = await asyncio.to_thread(self._load, store)
            now = time.time_ns()
            for feed in cfg.feeds:
                self.statuses[feed.name] = initial_status(feed, now, stored.get(feed.name))
            self.writer = self._writer_factory(s)
            log.info(
                "part=news feeds=%d known_sightings=%d interval_s=%g store=%s",
                len(cfg.feeds),
                len(self.index),
                cfg.interval_s,
                describe(s.storage.postgres) if uses_postgres(s) else s.db_path,
            )
            try:
                await self._run_tasks(stop, store)
            finally:
                self.writer.close()
                log.info(
                    "part=news stopped polls=%d new_stories=%d new_sightings=%d",
                    self.polls,
                    self.new_stories,
                    self.new_sightings,
                )
        finally:
            await self._heartbeat(store, "stopped")
            await asyncio.to_thread(store.close)

    async def _run_tasks(self, stop: asyncio.Event, store: SqliteStore | PgRawStore) -> None:
        slots = asyncio.Semaphore(self.cfg.concurrency)
        async with aiohttp.ClientSession() as session:
            tasks = [
                asyncio.create_task(self._feed_loop(f, session, slots), name=f"news:{f.name}")
                for f in self.cfg.feeds
            ]
            tasks.append(asyncio.create_task(self._heartbeat_loop(store), name="news:heartbeat"))
            stopper = asyncio.create_task(stop.wait(), name="news:stop")
            try:
                done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is not stopper and not task.cancelled() and task.exception():
                        raise task.exception()  # type: ignore[misc]  # a bug: surface it
            finally:
                for task in [*tasks, stopper]:
                    task.cancel()
                await asyncio.gather(*tasks, stopper, return_exceptions=True)
