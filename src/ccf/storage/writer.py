"""A writer thread in front of a store, so the event loop never waits on disk.

Producers hand over whole lists of records (``submit``); the thread writes
them in transactions of up to ``batch_rows`` rows, at least every
``flush_interval_s``. ``close`` drains everything before it returns: a clean
stop loses nothing. A write error stops the writer and is raised again by
the next ``submit``/``close``, so a broken store is never silent.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from ccf.records import Record
from ccf.storage.base import RawStore

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
    ) -> None:
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
        batch: list[Record] = []
        deadline = time.monotonic() + self._interval
        stopping = False
        try:
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
        except BaseException as e:  # reported to the producer by _raise_if_failed
            log.error("part=%s store writer failed: %s", self._part, e)
            self._error = e
        finally:
            store.close()

    def _write(self, store: RawStore, batch: list[Record]) -> None:
        for i in range(0, len(batch), self._batch_rows):
            chunk = batch[i : i + self._batch_rows]
            store.write(chunk)
            self.rows_written += len(chunk)
