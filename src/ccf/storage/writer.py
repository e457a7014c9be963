"""A writer thread in front of a store, so the event loop never waits on disk.

Producers hand over whole lists of records (``submit``); the thread writes
them in transactions of up to ``batch_rows`` rows. With ``group_commit`` (the
default, ``storage.wake=push``) it commits as soon as its queue is empty: one
record waits only for the transaction before it, and under load what queued
up meanwhile goes into the next one (group commit). Without it, it commits at
least every ``flush_interval_s`` (the old polling path). After each commit
``waker`` wakes the store's followers (:mod:`ccf.storage.wake`). ``close`` drains
everything before it returns: a clean stop loses nothing. A write error stops
the writer and is raised again by the next ``submit``/``close``, so a broken
store is never silent.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from ccf.records import Record
from ccf.storage.base import RawStore
from ccf.storage.wake import Waker

log = logging.getLogger(__name__)
_STOP = None


class StoreWriter:
    def __init__(
        self,
        open_store: Callable[[], RawStore],
        *,
        batch_rows: int = 5000,
        flush_interval_s: float = 0.25,
        part: str = "collect",
        group_commit: bool = False,
        waker: Waker | None = None,
    ) -> None:
        self._group = group_commit
        self._waker = waker
        self.commits = 0
        self._open_store = open_store
        self._batch_rows = batch_rows
        self._interval = flush_interval_s
        self._part = part
        self._queue: queue.SimpleQueue[Sequence[Record] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self.rows_written = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{part}-store-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        self._raise_if_failed()

    def submit(self, records: Sequence[Record]) -> None:
        """Queue a list of records; the caller must not change it afterwards."""
        self._raise_if_failed()
        if records:
            self._queue.put(records)

    def close(self) -> None:
        """Write everything queued, then stop."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError(
                f"part={self._part} store writer failed: {self._error}"
            ) from self._error

    def _run(self) -> None:
        try:
            store = self._open_store()
        except BaseException as e:  # reported to the producer by _raise_if_failed
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            if self._group:
                self._run_group(store)
            else:
                self._run_interval(store)
        except BaseException as e:  # reported to the producer by _raise_if_failed
            log.error("part=%s store writer failed: %s", self._part, e)
            self._error = e
        finally:
            store.close()
            if self._waker is not None:
                self._waker.close()

    def _run_group(self, store: RawStore) -> None:
        """Commit whatever is queued the moment the queue runs dry."""
        q = self._queue
        while True:
            item = q.get()
            if item is _STOP:
                return
            batch = list(item)
            stopping = False
            while len(batch) < self._batch_rows:
                try:
                    more = q.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stopping = True
                    break
                batch.extend(more)
            self._write(store, batch)
            if stopping:
                return

    def _run_interval(self, store: RawStore) -> None:
        batch: list[Record] = []
        deadline = time.monotonic() + self._interval
        stopping = False
        while not stopping:
            timeout = max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = []
            if item is _STOP:
                stopping = True
            else:
                batch.extend(item)
            if batch and (
                stopping or len(batch) >= self._batch_rows or time.monotonic() >= deadline
            ):
                self._write(store, batch)
                batch = []
            if time.monotonic() >= deadline:
                deadline = time.monotonic() + self._interval

    def _write(self, store: RawStore, batch: list[Record]) -> None:
        for i in range(0, len(batch), self._batch_rows):
            chunk = batch[i : i + self._batch_rows]
            store.write(chunk)
            self.rows_written += len(chunk)
        self.commits += 1
        if self._waker is not None:
            self._waker.wake()
