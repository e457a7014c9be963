"""``ccf sink``: the raw topics into the raw store (PostgreSQL in scale-out, or SQLite).

Members of the group ``transport.kafka.groups.sink`` share the raw topics' partitions.
Each member gathers what it consumes into batches (``storage.batch_rows`` rows, or what
came within ``storage.flush_interval_s``), writes a batch in one transaction and only
then commits the offsets after it. A sink killed at any point restarts (or its
partitions move to another member) from the last commit: the batch it was writing is
written again, and the store's idempotent writes (keyed by exchange, symbol and event
id) keep one row per record. Before partitions move in a rebalance, the member writes
and commits what it holds, so the next owner replays nothing it has already stored.

    await KafkaSink(settings).run(stop)      # or: await run_sink(settings, stop)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import Counter
from typing import Any

from ccf.config import Settings
from ccf.monitoring.metrics import PartMetrics
from ccf.storage.backends import open_raw_store
from ccf.transport.client import describe
from ccf.transport.codec import KIND_OF, RAW_KINDS
from ccf.transport.consumer import END, GroupConsumer, Input
from ccf.transport.part import member_name, run_in_thread

log = logging.getLogger(__name__)

PART = "sink"
HEARTBEAT_S = 5.0


class KafkaSink:
    """One member of the sink group; see the module docstring."""

    def __init__(
        self, settings: Settings, *, part: str = PART, metrics: PartMetrics | None = None
    ) -> None:
        self.settings = settings
        # Prometheus; `ccf sink` serves it on metrics.ports.sink
        self.metrics = metrics or PartMetrics("sink", settings)
        self.cfg = settings.transport.kafka
        self.group = self.cfg.groups.get("sink", "ccf-sink")
        self.name = member_name(part)
        self.started_at = time.time_ns()
        self.rows: Counter[str] = Counter()  # records stored, per kind
        self.changed = 0  # rows the store reported as new or changed
        self.batches = 0
        self.commits = 0
        self.received = 0
        self.owned: list[Input] = []
        self.ended: set[Input] = set()
        self._pending: list[Any] = []
        self._offsets: dict[Input, int] = {}  # next offset per input, of what is pending
        self._first_at = 0.0  # when the oldest pending record came
        self._store: Any = None
        self._consumer: GroupConsumer | None = None

    # -- batches ----------------------------------------------------------------------------

    def _flush(self) -> None:
        """Write what is pending, then commit the offsets after it (never before)."""
        if self._pending:
            self.changed += self._store.write(self._pending)
            stored: Counter[str] = Counter()
            for r in self._pending:
                self.rows[KIND_OF[type(r)].name] += 1
                stored[getattr(r, "symbol", "-")] += 1
            for symbol, n in stored.items():
                self.metrics.count_out(symbol, n)
            self.batches += 1
            self._pending = []
        if self._offsets and self._consumer is not None:
            if self._consumer.commit(self._offsets):
                self.commits += 1
            self._offsets = {}

    def _assigned(self, inputs: list[Input]) -> None:
        self.owned = inputs
        self.ended = set()

    def _revoked(self, inputs: list[Input], lost: bool) -> None:
        if lost:  # no longer a member: the commit would be refused, the next owner replays
            self._pending, self._offsets = [], {}
        else:
            self._flush()
        self.owned = [i for i in self.owned if i not in set(inputs)]

    # -- the loop ---------------------------------------------------------------------------

    def run_blocking(self, stop: threading.Event) -> None:
        """Consume, store and commit until ``stop`` is set; then store what is held."""
        s = self.settings
        batch_rows, interval = s.storage.batch_rows, s.storage.flush_interval_s
        self._store = open_raw_store(s)
        next_beat = 0.0
        clean = False
        log.info(
            "part=sink symbol=- member %s of group %s from %s into %s",
            self.name,
            self.group,
            describe(self.cfg),
            "postgres" if s.storage.backend == "postgres" else s.db_path,
        )
        try:
            self._consumer = GroupConsumer(
                self.cfg,
                self.group,
                RAW_KINDS,
                client_id=self.name,
                on_assign=self._assigned,
                on_revoke=self._revoked,
            )
            while not stop.is_set():
                room = batch_rows - len(self._pending)
                for m in self._consumer.poll(room, min(interval, 0.2)):
                    if m.record is END:
                        self.ended.add(m.input)
                        continue
                    if not self._pending:
                        self._first_at = time.monotonic()
                    self._pending.append(m.record)
                    self.metrics.count_in(getattr(m.record, "symbol", "-"))
                    self._offsets[m.input] = m.offset + 1
                    self.ended.discard(m.input)
                    self.received += 1
                if len(self._pending) >= batch_rows or (
                    self._pending and time.monotonic() - self._first_at >= interval
                ):
                    self._flush()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + HEARTBEAT_S
                    self._heartbeat("running")
            self._flush()
            clean = True
        finally:
            if not clean:  # what failed is not retried on the way out, nor committed
                self._pending, self._offsets = [], {}
            last = self.status()  # what it owned: the last heartbeat says so
            if self._consumer is not None:
                self._consumer.close()  # hands the partitions back at once (no timeout)
            self._heartbeat("stopped", last)
            self._store.close()
            log.info(
                "part=sink symbol=- stopped: received=%d stored=%d batches=%d commits=%d",
                self.received,
                self.rows.total(),
                self.batches,
                self.commits,
            )

    async def run(self, stop: asyncio.Event) -> None:
        """The part's loop in a thread of its own (the client blocks), until ``stop``."""
        await run_in_thread(self.run_blocking, stop)

    # -- what it did ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "member": self.name,
            "group": self.group,
            "partitions": [str(i) for i in self.owned],
            "caught_up": bool(self.owned) and set(self.owned) <= self.ended,
            "received": self.received,
            "stored": dict(self.rows),
            "changed": self.changed,
            "batches": self.batches,
            "commits": self.commits,
            "pending": len(self._pending),
            "undecodable": self._consumer.undecodable if self._consumer else 0,
        }

    def _heartbeat(self, state: str, detail: dict[str, Any] | None = None) -> None:
        detail = detail or self.status()
        self._store.heartbeat(
            self.name, os.getpid(), self.started_at, time.time_ns(), state, json.dumps(detail)
        )
        if state == "running":
            log.info(
                "part=sink symbol=- partitions=%d received=%d stored=%d pending=%d caught_up=%s",
                len(self.owned),
                self.received,
                self.rows.total(),
                len(self._pending),
                detail["caught_up"],
            )


async def run_sink(settings: Settings, stop: asyncio.Event) -> None:
    """``ccf sink``: one member of the sink group until ``stop`` is set."""
    await KafkaSink(settings).run(stop)


def main(argv: list[str]) -> None:
    """``python -m ccf.transport.sink key=value ...``: the part without the CLI."""
    from ccf.cli import run_until_stopped
    from ccf.config import load_settings
    from ccf.logs import setup_logging

    settings = load_settings(argv)
    setup_logging(settings.log_level)
    run_until_stopped(KafkaSink(settings).run)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
