"""Checkpoints of one symbol's feature state, so a restart continues bit-equal.

A feature's memory is not bounded by a warm-up: an EMA depends on every value
since the stream began, so replaying ``warmup`` of raw history rebuilds it
only approximately. Instead the live runner stores, with each batch of rows
and in the same SQLite transaction, the state each symbol's features had right
after the last of those rows closed, plus what the open bucket carries over
(the last book, the last trade, the last close). A restart restores that
state and replays the raw records from that bucket's end on: the rows after
it are the ones an uninterrupted run (or a batch run) writes, bit for bit,
whatever the downtime.

The state is the features' own objects, pickled (``step`` keeps its state on
the object; see ``kinds/base.py``). A checkpoint belongs to one feature-set
version, whose hash includes ``ENGINE_FORMAT``: bump that when a kind changes
what its state means. A blob that does not fit (another format, other kinds)
raises :class:`CheckpointError` and the runner warms up from raw instead.
The blob is read only from the project's own feature store (pickle runs code:
never restore a checkpoint from a file you did not write).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any, NamedTuple

FORMAT = 1  # of the pickled tuple below


class CheckpointError(ValueError):
    """A stored checkpoint that does not fit the running feature set."""


class Checkpoint(NamedTuple):
    """A symbol's state after the bucket starting at ``ts`` (ns) closed."""

    symbol: str
    ts: int
    state: bytes


def encode_state(features: Sequence[Any], carry: tuple[Any, ...]) -> bytes:
    """The blob; a CheckpointError when a kind's state does not pickle (a class defined
    inside its factory, a lambda kept on the object)."""
    try:
        return pickle.dumps((FORMAT, list(features), carry), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        raise CheckpointError(f"the feature state does not pickle ({e})") from None


def decode_state(blob: bytes, fresh: Sequence[Any]) -> tuple[list[Any], tuple[Any, ...]]:
    """The features and carried values in ``blob``; ``fresh`` (the set's new feature
    objects) says which kinds, in which order, it must hold."""
    try:
        fmt, features, carry = pickle.loads(blob)  # our own store only (see above)
    except (pickle.UnpicklingError, AttributeError, ImportError, EOFError, TypeError) as e:
        raise CheckpointError(f"unreadable checkpoint ({type(e).__name__}: {e})") from None
    except ValueError as e:  # unpacking a tuple of another shape
        raise CheckpointError(f"unreadable checkpoint ({e})") from None
    if fmt != FORMAT:
        raise CheckpointError(f"checkpoint format {fmt}, this engine writes {FORMAT}")
    want = [type(f) for f in fresh]
    got = [type(f) for f in features]
    if got != want or len(carry) != 4:
        raise CheckpointError(
            f"checkpoint holds kinds {[t.__name__ for t in got]}, the set has "
            f"{[t.__name__ for t in want]}"
        )
    return features, carry
