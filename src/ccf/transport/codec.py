"""Records <-> Kafka messages: one topic per record kind, keyed by ``exchange:symbol``.

A record travels as a MessagePack array of its fields in declaration order (msgspec:
about 0.1 us to encode a trade, 0.2 us to decode one). Floats are float64, so every
value, NaN included, comes back bit for bit; the decoder checks types (a ``side`` that
is not ``buy``/``sell`` is an error, not a record). A field appended to a record with a
default still decodes older messages; a reader older than the writer rejects the longer
array, so deploy readers first.

The key decides the partition (see :func:`ccf.transport.topics.partition_for`), hence
what stays in order: everything of one symbol on one exchange. News is keyed by its
feed, a feed's status by the feed's name.

>>> from ccf.records import Trade
>>> t = Trade("binance", "btcusdt", 7, 61000.5, 0.01, "buy", 1723161253000000000, 0)
>>> KINDS["trade"].key(t, ""), decode("trade", encode(t)) == t
('binance:btcusdt', True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

from ccf.features.engine import FeatureRow
from ccf.records import (
    AggTrade,
    Book,
    Candle,
    DeadLetter,
    FeedStatus,
    Gap,
    NewsItem,
    NewsSource,
    Prediction,
    Quote,
    Score,
    Trade,
)


class Kind(NamedTuple):
    """One record kind on the wire: its topic suffix, record type, key and event time."""

    name: str
    type: type
    key: Callable[[Any, str], str]  # (record, exchange for records that carry none) -> key
    time: Callable[[Any], int]  # event time, ns: the order the aligner releases records in


def _market_key(r: Any, _: str) -> str:
    return f"{r.exchange}:{r.symbol}"


def _feature_key(r: Any, exchange: str) -> str:
    return f"{exchange}:{r.symbol}"  # a feature row names no exchange: the publisher's


def _ts_event(r: Any) -> int:
    return r.ts_event


_KIND_LIST = (
    Kind("book", Book, _market_key, _ts_event),
    Kind("trade", Trade, _market_key, _ts_event),
    Kind("agg_trade", AggTrade, _market_key, _ts_event),
    Kind("quote", Quote, _market_key, _ts_event),
    # a candle is known at its close: ordered there, as the feature engine orders it
    Kind("candle", Candle, _market_key, lambda r: r.close_time),
    # a gap orders at its start, so it comes before the records it flags
    Kind("gap", Gap, _market_key, lambda r: r.start_ts),
    Kind("dead_letter", DeadLetter, _market_key, lambda r: r.ts_recv),
    Kind("news", NewsItem, lambda r, _: r.source, lambda r: r.ingested_at),
    Kind("news_source", NewsSource, lambda r, _: r.source, lambda r: r.seen_at),
    Kind("feed_status", FeedStatus, lambda r, _: r.feed, lambda r: r.updated_at),
    Kind("feature", FeatureRow, _feature_key, lambda r: r.ts_end),
    Kind("prediction", Prediction, _market_key, lambda r: r.ts),
    Kind("score", Score, _market_key, lambda r: r.ts),
)
KINDS: dict[str, Kind] = {k.name: k for k in _KIND_LIST}
KIND_OF: dict[type, Kind] = {k.type: k for k in _KIND_LIST}

RAW_KINDS = (
    "book",
    "trade",
    "agg_trade",
    "quote",
    "candle",
    "gap",
    "dead_letter",
    "news",
    "news_source",
    "feed_status",
)
"""What collectors write (the raw store's tables): the topics ``ccf sink`` stores."""

_ENCODER = msgspec.msgpack.Encoder()
_DECODERS = {k.name: msgspec.msgpack.Decoder(k.type) for k in _KIND_LIST}

DecodeError = msgspec.DecodeError  # ValidationError (a wrong type) is one too


def kind_of(record: Any) -> Kind:
    """The kind of ``record``; a type with no topic raises TypeError naming it."""
    kind = KIND_OF.get(type(record))
    if kind is None:
        raise TypeError(
            f"no Kafka topic carries {type(record).__name__} records; known kinds: "
            f"{', '.join(KINDS)}"
        )
    return kind


def encode(record: Any) -> bytes:
    """A record as MessagePack bytes (the array of its fields)."""
    return _ENCODER.encode(record)


def decode(kind: str, data: bytes) -> Any:
    """A ``kind`` record from bytes; raises :data:`DecodeError` on bytes that are not one."""
    return _DECODERS[kind].decode(data)
