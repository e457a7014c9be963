"""Producing to Kafka: :class:`Publisher` for any record kind, :class:`KafkaRawSink` as a
collector's store.

A publish is durable when it returns: every record is handed to the idempotent producer
(keyed, partitioned by :func:`~ccf.transport.topics.partition_for`), the producer is
flushed, and a single failed delivery raises :class:`TransportError`. A collector's
:class:`~ccf.storage.writer.StoreWriter` therefore moves on only once the brokers hold
the batch, exactly as it would after a database commit; a failure stops it loudly.

    sink = KafkaRawSink(settings)        # what open_record_sink() returns for kafka
    sink.write(records)                  # -> len(records), once all are acknowledged
    sink.close()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from ccf.config import Settings
from ccf.secrets import redact
from ccf.storage.base import StreamSummary
from ccf.transport.client import TransportError, describe, producer_config, secrets_of
from ccf.transport.codec import RAW_KINDS, encode, kind_of
from ccf.transport.topics import ensure_topics, partition_for, topic_name

log = logging.getLogger(__name__)

FLUSH_WARN_S = 10.0  # say so when the brokers take this long to acknowledge a batch


class Publisher:
    """Records of any kind to their topics; :meth:`publish` returns once they are durable.

    Topics of ``kinds`` are made at start (so consumers can subscribe before the first
    record); a record of another kind makes its topic on first use. A record the brokers
    have not acknowledged after ``delivery_timeout_s`` (retried meanwhile) fails the
    publish: the caller stops instead of moving on without it.
    """

    def __init__(
        self,
        settings: Settings,
        kinds: Iterable[str] = (),
        *,
        client_id: str = "ccf",
        headers: Sequence[tuple[str, bytes]] | None = None,
        delivery_timeout_s: float = 300.0,
    ) -> None:
        self.cfg = settings.transport.kafka
        self.exchange = settings.exchange
        self.headers = list(headers) if headers else None
        self._secrets = secrets_of(self.cfg)
        self._topics: dict[str, tuple[str, int]] = {}  # kind -> (topic, partitions)
        self._errors: list[str] = []
        self._fatal: str | None = None
        self.published = 0
        self._add_topics(kinds)
        conf = producer_config(self.cfg, client_id)
        # a record the brokers have not acknowledged by then fails the publish
        conf["message.timeout.ms"] = int(delivery_timeout_s * 1000)
        conf["on_delivery"] = self._on_delivery
        conf["error_cb"] = self._on_error
        self._producer = Producer(conf)
        log.info("part=transport symbol=- producer %s to %s", client_id, describe(self.cfg))

    def _add_topics(self, kinds: Iterable[str]) -> None:
        names = {kind: topic_name(self.cfg, kind) for kind in kinds if kind not in self._topics}
        if names:
            counts = ensure_topics(self.cfg, names.values())
            for kind, name in names.items():
                self._topics[kind] = (name, counts[name])

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:  # only failures are reported (delivery.report.only.error)
            self._errors.append(f"{msg.topic()}: {err.str()}")

    def _on_error(self, err: KafkaError) -> None:
        text = redact(err.str(), *self._secrets)
        if err.fatal():  # e.g. the idempotent producer lost its sequence: nothing is safe
            self._fatal = text
            log.error("part=transport symbol=- producer fatal error: %s", text)
        else:  # brokers down, retried by the client; a lost record still fails delivery
            log.warning("part=transport symbol=- producer: %s", text)

    def publish(self, records: Sequence[Any]) -> int:
        """Send ``records`` and wait until the brokers acknowledged all of them; returns how
        many. Raises :class:`TransportError` if any one was not delivered."""
        if self._fatal is not None:
            raise TransportError(f"the Kafka producer failed for good: {self._fatal}")
        if not records:
            return 0
        produce, poll, exchange, headers = (
            self._producer.produce,
            self._producer.poll,
            self.exchange,
            self.headers,
        )
        kind = None
        topic = ""
        partitions = 1
        for r in records:
            k = kind_of(r)
            if k is not kind:
                kind = k
                if k.name not in self._topics:
                    self._add_topics([k.name])
                topic, partitions = self._topics[k.name]
            key = k.key(r, exchange)
            value = encode(r)
            while True:
                try:
                    produce(
                        topic,
                        value,
                        key.encode(),
                        partition=partition_for(key, partitions),
                        headers=headers,
                    )
                    break
                except BufferError:  # the client's queue is full: let it send some first
                    poll(0.05)
        self._flush()
        if self._errors or self._fatal:
            errors, self._errors = self._errors, []
            why = self._fatal or f"{len(errors)} of {len(records)} failed, first: {errors[0]}"
            raise TransportError(f"records not delivered to Kafka: {redact(why, *self._secrets)}")
        self.published += len(records)
        return len(records)

    def _flush(self) -> None:
        started = time.monotonic()
        warned = started
        while self._producer.flush(1.0) > 0:
            if self._fatal is not None:
                return
            if time.monotonic() - warned > FLUSH_WARN_S:
                warned = time.monotonic()
                log.warning(
                    "part=transport symbol=- waiting %.0f s for %s to acknowledge a batch",
                    warned - started,
                    describe(self.cfg),
                )

    def close(self) -> None:
        """Send what is queued (nothing is, after a publish returned)."""
        self._flush()


class KafkaRawSink(Publisher):
    """A collector's :class:`~ccf.storage.base.RawStore` that writes to Kafka's raw topics.

    ``ccf sink`` moves the records on into the raw tables. The sink itself holds nothing:
    its summaries are empty and it has no dead-letter counts (``ccf status`` reads the
    tables the sink part writes). Collectors only call :meth:`write` and :meth:`close` on
    their writer's store; their heartbeats go to the raw store, not here.
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, RAW_KINDS, client_id="ccf-collect")

    def write(self, records: Sequence[Any]) -> int:
        """Publish a batch; returns once it is durable. Raises :class:`TransportError` else.
        Replaying a batch is harmless: the tables behind ``ccf sink`` are idempotent."""
        return self.publish(records)

    def summaries(self) -> list[StreamSummary]:
        return []

    def dead_letter_counts(self) -> dict[str, int]:
        return {}
