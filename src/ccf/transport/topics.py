"""Topic names, partitions and creation.

Names come from config (``transport.kafka.topic_prefix`` + the kind) and are checked
here before any client sees them: Kafka's legal characters, at most 249 of them, not
``.``/``..`` and not the ``__`` of the broker's internal topics.

The partition of a record is chosen here, not by the client: ``murmur2(key) % n``, the
hash Kafka's Java clients use, so any client that partitions by key agrees with us. It
depends only on the key and the partition count, so one symbol has the same partition
number in every topic of the same size: a consumer of the ``range`` assignor that owns
partition 3 owns books, trades and gaps of the same symbols. :func:`ensure_topics` makes
every topic with ``transport.kafka.partitions``; a consumer that reads several refuses
topics of different sizes.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from functools import lru_cache

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from ccf.config import KafkaConfig
from ccf.secrets import redact
from ccf.transport.client import TransportError, client_config, secrets_of

log = logging.getLogger(__name__)

_LEGAL = re.compile(r"[A-Za-z0-9._-]{1,249}")


class TopicNameError(ValueError):
    """A topic or group name Kafka would refuse; raised before any broker is asked."""


def check_name(name: str, what: str = "topic") -> str:
    """``name`` if Kafka accepts it as a topic (or group) name; else :class:`TopicNameError`."""
    if not _LEGAL.fullmatch(name) or name in (".", ".."):
        raise TopicNameError(
            f"{what} name {name!r} is not legal in Kafka: use 1 to 249 letters, digits, "
            "'.', '_' or '-' (check transport.kafka.topic_prefix / transport.kafka.groups)"
        )
    if what == "topic" and name.startswith("__"):
        raise TopicNameError(
            f"topic name {name!r} starts with '__', kept for the broker's internal topics: "
            "change transport.kafka.topic_prefix"
        )
    return name


def topic_name(cfg: KafkaConfig, kind: str) -> str:
    """The topic of one record kind: ``{topic_prefix}{kind}``, e.g. ``ccf.trade``."""
    return check_name(f"{cfg.topic_prefix}{kind}")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Java ``Utils.murmur2``) as an unsigned 32-bit int.

    >>> murmur2(b"21") - 2**32   # Kafka's own test vector, signed: -973932308
    -973932308
    """
    m, seed = 0x5BD1E995, 0x9747B28C
    n = len(data)
    h = (seed ^ n) & 0xFFFFFFFF
    for i in range(0, n - n % 4, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail, rest = n & ~3, n % 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


@lru_cache(maxsize=65536)
def partition_for(key: str, partitions: int) -> int:
    """The partition of ``key`` among ``partitions`` (Java's ``toPositive(murmur2) % n``);
    computed once per key and count."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def ensure_topics(
    cfg: KafkaConfig, names: Iterable[str], *, timeout_s: float = 30.0
) -> dict[str, int]:
    """Create the topics that are missing (``partitions`` and ``replication`` from config;
    existing ones are left as they are) and return each topic's partition count."""
    names = sorted({check_name(n) for n in names})
    admin = AdminClient(client_config(cfg, "ccf-admin"))
    have = _partition_counts(cfg, admin, timeout_s)
    missing = [n for n in names if n not in have]
    if missing:
        futures = admin.create_topics(
            [NewTopic(n, cfg.partitions, cfg.replication) for n in missing],
            request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result()
                log.info(
                    "part=transport symbol=- created topic %s partitions=%d replication=%d",
                    name,
                    cfg.partitions,
                    cfg.replication,
                )
            except KafkaException as e:
                err = e.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another process won
                    raise TransportError(
                        f"cannot create topic {name}: {redact(err.str(), *secrets_of(cfg))}"
                    ) from None
    deadline = time.monotonic() + timeout_s
    while True:  # a new topic shows in the metadata a little after it is made
        counts = {n: have[n] for n in names if n in have}
        if len(counts) == len(names):
            return counts
        if time.monotonic() > deadline:
            raise TransportError(
                f"topics {sorted(set(names) - set(counts))} do not show in the metadata of "
                f"{cfg.bootstrap} after {timeout_s} s"
            )
        time.sleep(0.1)
        have = _partition_counts(cfg, admin, timeout_s)


def _partition_counts(cfg: KafkaConfig, admin: AdminClient, timeout_s: float) -> dict[str, int]:
    try:
        md = admin.list_topics(timeout=timeout_s)
    except KafkaException as e:
        raise TransportError(
            f"no Kafka broker answers at {cfg.bootstrap}: "
            f"{redact(e.args[0].str(), *secrets_of(cfg))} (check transport.kafka.bootstrap)"
        ) from None
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def same_partitions(counts: dict[str, int]) -> int:
    """The one partition count of topics read together; differing ones raise, because
    a symbol would then sit at different partition numbers in them."""
    sizes = set(counts.values())
    if len(sizes) != 1:
        raise TransportError(
            f"topics read together must have the same partition count, found {counts}: "
            "recreate or extend them to transport.kafka.partitions"
        )
    return sizes.pop()
