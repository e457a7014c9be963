"""Joining two venues' feature rows bucket by bucket, then cross-venue features.

Each venue's records go through their own :class:`~ccf.features.engine.FeatureEngine`
(rows keyed by that venue's symbol, venue = the records' ``exchange``). A
:class:`VenueJoin` takes the *target* venue's rows (the instrument being
forecast, e.g. Binance spot ``btcusdt``) and the *reference* venue's rows
(e.g. the USD-M perpetual ``btcusdt``), and for each target bucket adds the
reference row of the same bucket, its columns prefixed with ``alias.``
(``perp.m_p``); then it runs the cross features (``kinds/cross.py``: basis,
mid deviation, lead-lag returns, or any kind) over the joined row.

Live = batch: a target row is joined once the reference has passed its bucket
(a reference row with the same or a later start has arrived; a bucket the
reference has no row for joins NaN), or at ``flush``. The output depends only
on the two row sequences, never on how their arrivals interleave, and both
engines' rows are already live = batch; so are the joined rows. ``checkpoint``
pickles the join's state (cross features and the rows waiting) like the
engine's feature checkpoints, and ``restore`` continues bit-equal.
"""

from __future__ import annotations

import math
import pickle
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from ccf.features.engine import FeatureRow
from ccf.features.kinds.base import Feature, build

FORMAT = 1  # of the pickled state


class VenueJoin:
    """One target instrument joined with one reference instrument of another venue."""

    def __init__(
        self,
        target_columns: Sequence[str],
        ref_columns: Sequence[str],
        alias: str,
        features: Sequence[Mapping[str, Any]],
        take: Sequence[str] | None = None,
    ) -> None:
        """``*_columns``: the float columns of each side's rows (``FeatureSet.float_columns``);
        ``take``: the reference columns joined (default all)."""
        import ccf.features.kinds  # noqa: F401  (registers the kinds)

        self.target_columns = tuple(target_columns)
        self.ref_columns = tuple(ref_columns)
        take = tuple(take) if take is not None else self.ref_columns
        unknown = [c for c in take if c not in self.ref_columns]
        if unknown:
            raise ValueError(f"reference columns {unknown} are not in the reference rows")
        self._take = [(self.ref_columns.index(c), f"{alias}.{c}") for c in take]
        joined = (*self.target_columns, *(name for _, name in self._take))
        self.columns, make = build(features, joined)
        self.cross_columns = self.columns[len(joined) :]
        self.features: list[Feature] = make()
        self._make = make
        self._targets: deque[FeatureRow] = deque()
        self._refs: deque[FeatureRow] = deque()
        self._ref_ts = -(2**63)  # the newest reference bucket start seen

    def push_target(self, row: FeatureRow) -> list[FeatureRow]:
        self._targets.append(row)
        return self._release(final=False)

    def push_reference(self, row: FeatureRow) -> list[FeatureRow]:
        self._refs.append(row)
        self._ref_ts = max(self._ref_ts, row.ts)
        return self._release(final=False)

    def flush(self) -> list[FeatureRow]:
        """No more rows will come: join what waits (NaN where the reference has none)."""
        return self._release(final=True)

    def _release(self, final: bool) -> list[FeatureRow]:
        out: list[FeatureRow] = []
        targets, refs = self._targets, self._refs
        while targets and (final or targets[0].ts <= self._ref_ts):
            t = targets.popleft()
            while refs and refs[0].ts < t.ts:
                refs.popleft()  # reference buckets no target row asked for
            ref = refs[0] if refs and refs[0].ts == t.ts else None
            out.append(self._join(t, ref))
        return out

    def _join(self, t: FeatureRow, ref: FeatureRow | None) -> FeatureRow:
        row = dict(zip(self.target_columns, t.values, strict=True))
        for i, name in self._take:
            row[name] = ref.values[i] if ref is not None else math.nan
        for f in self.features:
            f.step(row)
        return FeatureRow(t.symbol, t.ts, t.ts_end, tuple(row[c] for c in self.columns))

    def checkpoint(self) -> bytes:
        state = (FORMAT, self.features, list(self._targets), list(self._refs), self._ref_ts)
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, blob: bytes) -> None:
        """Continue from ``checkpoint()``'s state (our own blobs only: pickle runs code)."""
        fmt, features, targets, refs, ref_ts = pickle.loads(blob)
        if fmt != FORMAT or len(features) != len(self.features):
            raise ValueError(f"a join checkpoint of format {fmt} does not fit this join")
        self.features = features
        self._targets, self._refs = deque(targets), deque(refs)
        self._ref_ts = ref_ts
