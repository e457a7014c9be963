"""The Kafka transport: records between parts as topics, one per record kind.

- :mod:`.codec`: records <-> bytes, kinds, keys (``exchange:symbol``)
- :mod:`.topics`: topic names (checked before any broker sees them), partitions, creation
- :mod:`.client`: librdkafka settings from ``transport.kafka``, credentials resolved
- :mod:`.kafka`: :class:`Publisher` and :class:`KafkaRawSink` (a collector's store)
- :mod:`.consumer`: group members and group-less readers, manual commits
- :mod:`.align`, :mod:`.checkpoints`: event-time order across topics; safe commits
- :mod:`.sink`: ``ccf sink``, the raw topics into the raw store

The feature and predictor workers over Kafka are :mod:`ccf.features.stream` and
:mod:`ccf.serving.stream`. Nothing here imports the
client until used: ``import ccf.transport`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ccf.transport.client import TransportError
    from ccf.transport.kafka import KafkaRawSink, Publisher
    from ccf.transport.sink import KafkaSink, run_sink

__all__ = ["KafkaRawSink", "KafkaSink", "Publisher", "TransportError", "run_sink"]

_WHERE = {
    "KafkaRawSink": "ccf.transport.kafka",
    "Publisher": "ccf.transport.kafka",
    "TransportError": "ccf.transport.client",
    "KafkaSink": "ccf.transport.sink",
    "run_sink": "ccf.transport.sink",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'ccf.transport' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
