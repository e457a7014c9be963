"""The contract between the engine and feature kinds.

The engine closes a bucket into a ``Row``: a dict of the bucket's *base
columns* (below), then runs the configured features over it in order. Each
feature, for one symbol, keeps whatever state it needs between buckets and
adds its own columns to the row; later features can read earlier ones, which
is how the original system's ``pre_features``/``post_features`` lists compose
(``m_p`` first, then ``relative`` against ``m_p``).

Base columns of every row (floats; NaN where unknown):

- ``ts``: bucket start, ns; ``ts_end``: bucket end, ns (exclusive)
- ``a_p_i``, ``a_q_i``, ``b_p_i``, ``b_q_i`` for ``i < depth``: the book's last state
  in the bucket (carried from earlier buckets when none came in)
- ``book_updates``: book records in the bucket; ``carried``: 1.0 when the book was
  carried forward; ``gap``: 1.0 when the bucket overlaps a gap record
- ``buy_count``, ``buy_qty``, ``buy_notional``, ``sell_count``, ``sell_qty``,
  ``sell_notional`` (taker side; 0 when no trades); ``last_trade_ts``,
  ``last_trade_price`` (ns / price of the latest trade so far, NaN before any)
- ``open``, ``high``, ``low``, ``close``, ``volume``: the bucket's candle when the
  source is candles (one-minute bars), NaN otherwise
- ``news_count``: news items *ingested* in the bucket (never by publish time)

A kind is a factory ``(params, base_columns) -> (columns, make)``, where
``make()`` returns a fresh :class:`Feature` for one symbol. Register it with
``@kind("name")``; a config entry ``{kind: name, ...params}`` then uses it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

Row = dict[str, float]


class Feature(Protocol):
    """One configured feature for one symbol, stateful across buckets."""

    def step(self, row: Row) -> None:
        """Add this feature's columns to ``row`` (a closed bucket), in O(1)."""
        ...


Factory = Callable[
    [Mapping[str, Any], Sequence[str]], tuple[tuple[str, ...], Callable[[], Feature]]
]
REGISTRY: dict[str, Factory] = {}


def kind(name: str) -> Callable[[Factory], Factory]:
    """Register a feature kind under ``name`` (its config ``kind:`` value)."""

    def register(factory: Factory) -> Factory:
        if name in REGISTRY:
            raise ValueError(f"feature kind {name!r} is registered twice")
        REGISTRY[name] = factory
        return factory

    return register


def glob_columns(pattern: str, columns: Sequence[str]) -> list[str]:
    """Columns matching a glob like ``a_p_*``, in their order; an error if none do."""
    found = [c for c in columns if fnmatch.fnmatchcase(c, pattern)]
    if not found:
        raise ValueError(f"no column matches {pattern!r}")
    return found


def build(
    specs: Sequence[Mapping[str, Any]], base_columns: Sequence[str]
) -> tuple[tuple[str, ...], Callable[[], list[Feature]]]:
    """All output columns of a feature list and a maker of one symbol's feature objects.

    Raises ValueError naming the entry (``features[3] (relative): ...``) when a spec is
    unknown or does not fit the columns available at its place in the list.
    """
    columns = list(base_columns)
    makers: list[Callable[[], Feature]] = []
    for i, spec in enumerate(specs):
        name = spec.get("kind")
        if name not in REGISTRY:
            raise ValueError(f"features[{i}]: unknown kind {name!r}; known: {sorted(REGISTRY)}")
        params = {k: v for k, v in spec.items() if k != "kind"}
        try:
            added, make = REGISTRY[name](params, tuple(columns))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"features[{i}] ({name}): {e}") from e
        clash = [c for c in added if c in columns]
        if clash:
            raise ValueError(f"features[{i}] ({name}): columns {clash} already exist")
        columns += added
        makers.append(make)
    return tuple(columns), lambda: [make() for make in makers]
