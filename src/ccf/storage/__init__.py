"""Storage behind one small interface: :class:`RawStore`.

The embedded backend (:mod:`ccf.storage.sqlite`) is the default; scale-out
backends (Kafka, PostgreSQL) implement the same protocol.
"""

from ccf.storage.base import RawStore, StreamSummary
from ccf.storage.sqlite import SqliteStore, open_store
from ccf.storage.writer import StoreWriter

__all__ = ["RawStore", "SqliteStore", "StoreWriter", "StreamSummary", "open_store"]
