"""Consuming from Kafka: decoded records, partition ends, assignments and manual commits.

:class:`GroupConsumer` is one member of a consumer group (``transport.kafka.groups``):
the group shares the partitions of its topics between its members, and a member that
dies hands its partitions to the others after ``session_timeout_ms``. It never commits
by itself; the part calls :meth:`GroupConsumer.commit` once the output made of the
records is durable, so a crash replays from there and idempotent writes absorb the
replay. :class:`BroadcastReader` reads every partition of its topics with no group
(each feature worker needs all news, not a share of it).

Both return one list per poll, in the order the client delivered them: a record is a
:class:`Received` with the decoded record, the end of a partition one whose record is
:data:`END` (the input holds nothing more *for now*: more may come).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from ccf.config import KafkaConfig
from ccf.secrets import redact
from ccf.transport.client import TransportError, consumer_config, describe, secrets_of
from ccf.transport.codec import DecodeError, decode
from ccf.transport.topics import check_name, ensure_topics, topic_name

log = logging.getLogger(__name__)

END = object()
"""The record of a :class:`Received` that marks the end of its partition."""

# commit errors that mean "the group moved on": the next owner replays, nothing is lost
_STALE_COMMIT = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._NO_OFFSET,
}


class Input(NamedTuple):
    """One partition of one topic."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


class Received(NamedTuple):
    input: Input
    offset: int
    record: Any  # the decoded record, or END


class _Reader:
    """Polling and decoding shared by both kinds of consumer."""

    def __init__(self, cfg: KafkaConfig, kinds: Sequence[str], client_id: str) -> None:
        self.cfg = cfg
        self.kinds = {topic_name(cfg, k): k for k in kinds}  # topic -> kind
        self.partitions = ensure_topics(cfg, self.kinds)  # topic -> partition count
        self.client_id = client_id
        self.undecodable = 0
        self._secrets = secrets_of(cfg)
        self._warned: set[int] = set()  # error codes already logged
        self._inputs: dict[tuple[str, int], Input] = {}
        self._c: Consumer | None = None

    def _on_error(self, err: KafkaError) -> None:
        text = redact(err.str(), *self._secrets)
        if err.fatal():
            raise TransportError(f"Kafka consumer {self.client_id} failed: {text}")
        log.warning("part=transport symbol=- consumer %s: %s", self.client_id, text)

    @property
    def consumer(self) -> Consumer:
        assert self._c is not None, "closed"
        return self._c

    def poll(self, max_messages: int = 10_000, timeout_s: float = 0.1) -> list[Received]:
        """What the client has, up to ``max_messages``, waiting at most ``timeout_s``."""
        out: list[Received] = []
        append = out.append
        kinds, inputs = self.kinds, self._inputs
        for m in self.consumer.consume(max_messages, timeout_s):
            err = m.error()
            if err is None:
                where = (m.topic(), m.partition())
                inp = inputs.get(where) or inputs.setdefault(where, Input(*where))
                try:
                    append(Received(inp, m.offset(), decode(kinds[inp.topic], m.value())))
                except DecodeError as e:
                    self.undecodable += 1
                    log.error(
                        "part=transport symbol=- skipped an undecodable message %s offset=%d: %s",
                        inp,
                        m.offset(),
                        e,
                    )
            elif err.code() == KafkaError._PARTITION_EOF:
                append(Received(Input(m.topic(), m.partition()), m.offset(), END))
            elif err.fatal():
                self._on_error(err)
            elif err.code() not in self._warned:  # repeats while a broker is away
                self._warned.add(err.code())
                self._on_error(err)
        return out

    def close(self) -> None:
        if self._c is not None:
            self._c.close()
            self._c = None


class GroupConsumer(_Reader):
    """One member of ``group`` over the topics of ``kinds``.

    ``on_assign(inputs)`` runs when the group gives this member its partitions and
    ``on_revoke(inputs, lost)`` before it takes them away (``lost``: the member was
    already thrown out, its commits would be refused). Both run inside :meth:`poll`.
    """

    def __init__(
        self,
        cfg: KafkaConfig,
        group: str,
        kinds: Sequence[str],
        *,
        client_id: str,
        on_assign: Callable[[list[Input]], None] | None = None,
        on_revoke: Callable[[list[Input], bool], None] | None = None,
    ) -> None:
        self.group = check_name(group, "group")  # before any broker is asked
        super().__init__(cfg, kinds, client_id)
        self.assignment: list[Input] = []
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        conf = consumer_config(cfg, group, client_id)
        conf["error_cb"] = self._on_error
        self._c = Consumer(conf)
        self._c.subscribe(
            list(self.kinds),
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )
        log.info(
            "part=transport symbol=- consumer %s joins group %s on %s (%s)",
            client_id,
            group,
            ",".join(self.kinds),
            describe(cfg),
        )

    def _assigned(self, _: Consumer, tps: list[TopicPartition]) -> None:
        self.assignment = sorted(Input(tp.topic, tp.partition) for tp in tps)
        log.info(
            "part=transport symbol=- %s assigned %s",
            self.client_id,
            ",".join(map(str, self.assignment)) or "nothing",
        )
        if self._on_assign is not None:
            self._on_assign(list(self.assignment))

    def _revoked(self, _: Consumer, tps: list[TopicPartition], lost: bool = False) -> None:
        gone = sorted(Input(tp.topic, tp.partition) for tp in tps)
        log.info(
            "part=transport symbol=- %s %s %s",
            self.client_id,
            "lost" if lost else "hands back",
            ",".join(map(str, gone)) or "nothing",
        )
        if self._on_revoke is not None:
            self._on_revoke(gone, lost)
        self.assignment = [i for i in self.assignment if i not in set(gone)]

    def _lost(self, c: Consumer, tps: list[TopicPartition]) -> None:
        self._revoked(c, tps, lost=True)

    def commit(self, offsets: Mapping[Input, int]) -> bool:
        """Commit ``offsets`` (the next offset to read, per input) and wait for the broker.
        Returns False when the group has moved on (a rebalance): the next owner replays
        from the previous commit, which idempotent writes absorb."""
        if not offsets:
            return True
        tps = [TopicPartition(i.topic, i.partition, o) for i, o in offsets.items()]
        try:
            result = self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as e:
            err = e.args[0]
            if err.code() in _STALE_COMMIT:
                log.warning("part=transport symbol=- %s commit refused: %s", self.client_id, err)
                return False
            raise TransportError(f"commit failed: {redact(err.str(), *self._secrets)}") from None
        failed = [tp for tp in result or () if tp.error is not None]
        if failed:
            log.warning(
                "part=transport symbol=- %s commit refused for %s",
                self.client_id,
                ", ".join(f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in failed),
            )
            return False
        return True

    def committed(self, inputs: Iterable[Input], timeout_s: float = 10.0) -> dict[Input, int]:
        """The group's committed offsets (inputs with none are left out)."""
        tps = [TopicPartition(i.topic, i.partition) for i in inputs]
        return {
            Input(tp.topic, tp.partition): tp.offset
            for tp in self.consumer.committed(tps, timeout=timeout_s)
            if tp.offset >= 0
        }

    def pause(self, inputs: Iterable[Input]) -> None:
        """Stop fetching ``inputs`` (their buffers are full) until :meth:`resume`."""
        tps = [TopicPartition(i.topic, i.partition) for i in inputs]
        if tps:
            self.consumer.pause(tps)

    def resume(self, inputs: Iterable[Input]) -> None:
        tps = [TopicPartition(i.topic, i.partition) for i in inputs]
        if tps:
            self.consumer.resume(tps)


class BroadcastReader(_Reader):
    """Every partition of the topics of ``kinds``, from the beginning, in no group (it
    never commits: a reader that starts again reads everything again)."""

    def __init__(
        self, cfg: KafkaConfig, kinds: Sequence[str], *, client_id: str, group: str
    ) -> None:
        check_name(group, "group")  # before any broker is asked
        super().__init__(cfg, kinds, client_id)
        conf = consumer_config(cfg, group, client_id)
        conf["error_cb"] = self._on_error
        self._c = Consumer(conf)
        self.inputs = sorted(Input(t, p) for t, n in self.partitions.items() for p in range(n))
        self._c.assign(
            [TopicPartition(i.topic, i.partition, OFFSET_BEGINNING) for i in self.inputs]
        )
