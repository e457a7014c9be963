"""Which backend a part opens, chosen by config alone.

Parts call these instead of naming a store class, so ``storage.backend`` and
``transport.backend`` switch the whole system between the embedded files and
PostgreSQL/Kafka without a code change. Backends import lazily: a machine runs
only the clients its config names (a collector on Kafka needs no psycopg).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ccf.config import Settings

if TYPE_CHECKING:
    from ccf.features.spec import FeatureSet
    from ccf.features.store import StoredSet
    from ccf.storage.base import RawStore
    from ccf.storage.writer import StoreWriter


def uses_postgres(settings: Settings) -> bool:
    return settings.storage.backend == "postgres"


def uses_kafka(settings: Settings) -> bool:
    return settings.transport.backend == "kafka"


def open_raw_store(settings: Settings, *, readonly: bool = False) -> Any:
    """The raw tables (and the parts' heartbeats): SQLite under data_dir, or PostgreSQL."""
    if uses_postgres(settings):
        from ccf.storage.postgres.raw import PgRawStore

        return PgRawStore(
            settings.storage.postgres, book_depth=settings.collect.book_depth, readonly=readonly
        )
    from ccf.storage.sqlite import SqliteStore

    return SqliteStore(settings.db_path, book_depth=settings.collect.book_depth, readonly=readonly)


def open_record_sink(settings: Settings) -> RawStore:
    """Where a collector sends its records: the raw store, or Kafka's topics; and, with
    ``influx.enabled``, InfluxDB beside it."""
    if uses_kafka(settings):
        from ccf.transport.kafka import KafkaRawSink

        sink: Any = KafkaRawSink(settings)
    else:
        sink = open_raw_store(settings)
    if settings.influx.enabled and "raw" in settings.influx.kinds:
        from ccf.sinks import open_influx

        tee = open_influx(settings)
        assert tee is not None
        return InfluxCopy(sink, tee)
    return sink


class InfluxCopy:
    """A record sink that also hands every batch it stored to InfluxDB. The copy only
    queues lines (InfluxDB being down never slows or stops the collector)."""

    def __init__(self, sink: Any, tee: Any) -> None:
        self._sink = sink
        self._tee = tee

    def write(self, records: Any) -> int:
        n = self._sink.write(records)
        self._tee.raw(records)
        return n

    def close(self) -> None:
        try:
            self._sink.close()
        finally:
            self._tee.close()

    def __getattr__(self, name: str) -> Any:  # heartbeat, summaries, ...: the sink's own
        return getattr(self._sink, name)


def open_feature_store(
    settings: Settings, fs: FeatureSet | StoredSet, *, readonly: bool = False
) -> Any:
    """One feature set's rows: ``features.sqlite``, or a table in PostgreSQL."""
    if uses_postgres(settings):
        from ccf.storage.postgres.features import PgFeatureStore

        return PgFeatureStore(settings.storage.postgres, fs, readonly=readonly)
    from ccf.features.store import FeatureStore

    return FeatureStore(settings.features_path, fs, readonly=readonly)


def list_feature_sets(settings: Settings) -> list[StoredSet]:
    """The feature sets the store holds (oldest first)."""
    if uses_postgres(settings):
        from ccf.storage.postgres.features import list_pg_sets

        return list_pg_sets(settings.storage.postgres)
    from ccf.features.store import list_sets

    return list_sets(settings.features_path)


def open_prediction_store(settings: Settings, *, readonly: bool = False) -> Any:
    if uses_postgres(settings):
        from ccf.storage.postgres.predictions import PgPredictionStore

        return PgPredictionStore(settings.storage.postgres, readonly=readonly)
    from ccf.serving.store import PredictionStore

    return PredictionStore(settings.predictions_path, readonly=readonly)


def open_monitor_store(settings: Settings, *, readonly: bool = False) -> Any:
    if uses_postgres(settings):
        from ccf.storage.postgres.monitor import PgMonitorStore

        return PgMonitorStore(settings.storage.postgres, readonly=readonly)
    from ccf.monitoring.store import MonitorStore

    return MonitorStore(settings.monitor_path, readonly=readonly)


def pushes(settings: Settings) -> bool:
    """Commits to the embedded stores wake their followers (``storage.wake=push``); on
    Kafka the topics carry the records and the consumers block on them instead."""
    return settings.storage.wake == "push" and not uses_postgres(settings)


def record_writer(settings: Settings, part: str = "collect") -> StoreWriter:
    """A writer thread in front of :func:`open_record_sink`: with ``storage.wake=push`` it
    commits whenever its queue runs dry and wakes the raw store's followers; with
    ``poll`` every ``storage.flush_interval_s``."""
    from ccf.storage.wake import Waker
    from ccf.storage.writer import StoreWriter

    push = settings.storage.wake == "push"
    waker = Waker(settings.db_path, part) if pushes(settings) and not uses_kafka(settings) else None
    return StoreWriter(
        lambda: open_record_sink(settings),
        batch_rows=settings.storage.batch_rows,
        flush_interval_s=settings.storage.flush_interval_s,
        part=part,
        group_commit=push,
        waker=waker,
    )
