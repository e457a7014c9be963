"""``ccf predict`` over Kafka: predictor workers in one group share the symbols.

Each worker of the group ``transport.kafka.groups.predict`` is given some partitions of
the ``feature`` topic and so the symbols keyed to them (``exchange:symbol``, placed by
:func:`~ccf.transport.topics.partition_for`). It forecasts those symbols and no other,
with the :class:`~ccf.serving.predictor.Predictor`'s own code over its ``owned`` set. A
feature message only wakes it up: the rows are read from the feature store as in
embedded mode, so a model sees the same window either way. (The store is also polled
every ``serve.poll_interval_s``, and a message that came before its row reached the
store, as the feature worker publishes before it stores, is kept until the row is
forecast.)

The committed offset of an input is its first message whose bucket is not forecast yet:
offsets move only once the predictions of the rows before them are stored. On every
assignment each owned symbol resumes after the newest origin the champion forecast
(:meth:`~ccf.serving.predictor.Predictor._resume`), so a worker that takes a dead one's
symbols over forecasts every bucket once: none missing, none doubled (and the
prediction store's key makes a bucket written twice impossible anyway).

    await KafkaPredictorWorker(settings).run(stop)
    python -m ccf.serving.stream key=value ...    # one worker, without the CLI
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from ccf.config import Settings
from ccf.monitoring.metrics import PartMetrics
from ccf.serving.predictor import HEARTBEAT_S, PART, ModelSource, Predictor, _where
from ccf.storage.backends import open_feature_store, open_prediction_store, open_raw_store
from ccf.transport.client import describe
from ccf.transport.consumer import END, GroupConsumer, Input, Received
from ccf.transport.part import member_name, run_in_thread
from ccf.transport.topics import partition_for, same_partitions

log = logging.getLogger(__name__)

COMMIT_S = 1.0  # how often progress is committed (and always before a rebalance and a stop)
POLL_MAX = 10_000  # messages per poll
WAITING_S = 0.05  # the poll while a message's row is not in the feature store yet


class KafkaPredictorWorker:
    """One member of the predictor group; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        source: ModelSource | None = None,
        metrics: PartMetrics | None = None,
    ) -> None:
        if source is None:
            from ccf.serving.source import RegistrySource

            source = RegistrySource(settings)
        self.settings = settings
        self.cfg = settings.transport.kafka
        self.group = self.cfg.groups.get("predict", "ccf-predict")
        self.name = member_name(PART)
        self.predictor = Predictor(settings, source, metrics)
        self.predictor.owned = set()  # nothing until the group hands it partitions
        self.partitions: list[int] = []  # owned partition numbers of the feature topic
        self.received = 0  # feature messages
        self.commits = 0
        self.rebalances = 0
        self._partition_of: dict[str, int] = {}
        # per owned input: (offset, symbol, bucket) of the messages not forecast yet
        self._pending: dict[Input, deque[tuple[int, str, int]]] = {}
        self._next: dict[Input, int] = {}  # the offset after the last message seen
        self._committed: dict[Input, int] = {}
        self._consumer: GroupConsumer | None = None
        self._last: dict[str, Any] | None = None  # the status when the loop stopped
        self._features: Any = None
        self._preds: Any = None
        self._raw: Any = None

    # -- assignment -------------------------------------------------------------------------

    def _assigned(self, inputs: list[Input]) -> None:
        """Own the symbols of the new partitions; each resumes from the prediction store."""
        self.rebalances += 1
        self.partitions = sorted({i.partition for i in inputs})
        mine = {s for s, p in self._partition_of.items() if p in self.partitions}
        self.predictor.owned = mine
        self.predictor._resume(self._features, self._preds, mine)
        for sym in sorted(mine):
            log.info(
                "part=predict symbol=%s partition=%d owned by %s",
                sym,
                self._partition_of[sym],
                self.name,
            )
        # what was not committed comes again, from the committed offsets
        self._pending = {i: deque() for i in inputs}
        self._next, self._committed = {}, {}

    def _revoked(self, inputs: list[Input], lost: bool) -> None:
        if not lost:  # still a member: leave the next owner as little to redo as it can
            self._commit()
        gone = {i.partition for i in inputs}
        for sym in sorted(self.predictor.owned):
            if self._partition_of[sym] in gone:
                log.info(
                    "part=predict symbol=%s partition=%d %s",
                    sym,
                    self._partition_of[sym],
                    "lost" if lost else "handed back",
                )
        self.predictor.owned = {
            s for s in self.predictor.owned if self._partition_of[s] not in gone
        }
        self.partitions = [p for p in self.partitions if p not in gone]
        for i in inputs:
            self._pending.pop(i, None)
            self._next.pop(i, None)
            self._committed.pop(i, None)

    # -- messages and offsets ---------------------------------------------------------------

    def _poll(self, wait_s: float) -> list[Received]:
        """What the client holds now; else the first message within ``wait_s`` and what
        came with it (a batch poll would wait its whole timeout for a full batch)."""
        assert self._consumer is not None
        got = self._consumer.poll(POLL_MAX, 0.0)
        if not got:
            got = self._consumer.poll(1, wait_s)
            if got:
                got += self._consumer.poll(POLL_MAX, 0.0)
        return got

    def _note(self, got: Iterable[Received]) -> bool:
        """Keep the messages of owned inputs until their buckets are forecast; True when
        one came (a wake-up)."""
        woken = False
        for m in got:
            if m.record is END:
                continue
            q = self._pending.get(m.input)
            if q is None:  # not (or no longer) this member's
                continue
            q.append((m.offset, m.record.symbol, m.record.ts))
            self._next[m.input] = m.offset + 1
            self.received += 1
            woken = True
        return woken

    def _done(self, symbol: str, ts: int) -> bool:
        """Whether the bucket a message announced needs nothing more from this worker."""
        if symbol not in self.predictor.owned:  # a symbol not served here (not configured)
            return True
        next_ts = self.predictor.state[symbol].next_ts
        return next_ts is not None and ts < next_ts

    def _settle(self) -> bool:
        """Drop the messages whose buckets are forecast; True while some still wait."""
        waiting = False
        for q in self._pending.values():
            while q and self._done(q[0][1], q[0][2]):
                q.popleft()
            waiting |= bool(q)
        return waiting

    def _commit(self) -> None:
        """Commit, per input, the first message not forecast yet (or the end of what came)."""
        if self._consumer is None:
            return
        self._settle()
        offsets: dict[Input, int] = {}
        for inp, q in self._pending.items():
            off = q[0][0] if q else self._next.get(inp)
            if off is not None and off > self._committed.get(inp, -1):
                offsets[inp] = off
        if offsets and self._consumer.commit(offsets):
            self.commits += 1
            self._committed.update(offsets)

    # -- the loop ---------------------------------------------------------------------------

    def run_blocking(self, stop: threading.Event) -> None:
        """Consume, forecast and commit until ``stop`` is set (models already loaded)."""
        s, p = self.settings, self.predictor
        features, preds = self._features, self._preds
        try:
            self._consumer = GroupConsumer(
                self.cfg,
                self.group,
                ("feature",),
                client_id=self.name,
                on_assign=self._assigned,
                on_revoke=self._revoked,
            )
            n = same_partitions(self._consumer.partitions)
            self._partition_of = {sym: partition_for(f"{s.exchange}:{sym}", n) for sym in s.symbols}
            every = s.serve.print_every_s or HEARTBEAT_S
            now = time.monotonic()
            next_alias = now + s.serve.alias_check_s  # the models were just loaded
            next_poll = next_commit = next_beat = 0.0
            waiting = False
            while not stop.is_set():
                woken = self._note(self._poll(WAITING_S if waiting else s.serve.poll_interval_s))
                now = time.monotonic()
                if now >= next_alias:
                    next_alias = now + s.serve.alias_check_s
                    p._refresh_models(features, preds)
                if woken or waiting or now >= next_poll:
                    next_poll = now + s.serve.poll_interval_s
                    p.step(features, preds)
                waiting = self._settle()
                if now >= next_commit:
                    next_commit = now + COMMIT_S
                    self._commit()
                if now >= next_beat:
                    next_beat = now + every
                    p._heartbeat(self._raw, "running", self.status(), self.name)
            self._commit()
        finally:
            self._last = self.status()  # what it owned: the last heartbeat says so
            if self._consumer is not None:
                self._consumer.close()  # hands the partitions back at once

    async def run(self, stop: asyncio.Event) -> None:
        """Load the served models, then join the group and forecast in a thread of its own
        (the client blocks) until ``stop``."""
        s, p = self.settings, self.predictor
        if not await p._features_ready(stop):
            return
        self._features = open_feature_store(s, p.fs, readonly=True)
        self._preds = open_prediction_store(s)
        self._raw = open_raw_store(s)  # heartbeats
        try:
            if not await p._first_models(self._features, self._preds, stop):
                return
            log.info(
                "part=predict symbol=- member %s of group %s serving %s; store=%s from %s",
                self.name,
                self.group,
                ", ".join(f"{r}={m.name}@{m.version}" for r, m in p.served.items()),
                _where(s, s.predictions_path),
                describe(self.cfg),
            )
            await run_in_thread(self.run_blocking, stop)
        finally:
            p._heartbeat(self._raw, "stopped", self._last or self.status(), self.name)
            self._raw.close()
            self._preds.close()
            self._features.close()
            if p.influx is not None:
                p.influx.close()
            log.info(
                "part=predict symbol=- stopped: received=%d predictions=%d commits=%d switches=%d",
                self.received,
                p.written,
                self.commits,
                p.switches,
            )

    # -- what it did ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        detail = self.predictor.status()
        for sym, d in detail["symbols"].items():
            d["partition"] = self._partition_of.get(sym)
        return {
            "member": self.name,
            "group": self.group,
            "partitions": list(self.partitions),
            "received": self.received,
            "waiting": sum(len(q) for q in self._pending.values()),
            "commits": self.commits,
            "committed": {str(i): o for i, o in self._committed.items()},
            "rebalances": self.rebalances,
            "undecodable": self._consumer.undecodable if self._consumer else 0,
            **detail,
        }


def main(argv: Iterable[str]) -> None:
    """``python -m ccf.serving.stream key=value ...``: one worker, without the CLI."""
    from ccf.cli import run_until_stopped
    from ccf.config import load_settings
    from ccf.logs import setup_logging

    settings = load_settings(list(argv))
    setup_logging(settings.log_level)
    run_until_stopped(KafkaPredictorWorker(settings).run)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
