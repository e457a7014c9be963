"""Column transforms of the original system: ``get``, ``relative`` and ``ema`` over globbed columns.

Each takes ``columns``, a glob (``"a_p_*"``) or a list of globs and names, matched
against the columns that exist at its place in the feature list (base columns and
everything earlier entries added), and adds one output per matched column, named
``<op>_<column>[_<reference>][_<n>]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ccf.features.kinds.arith import NAN, log_ratio, ratio
from ccf.features.kinds.base import Row, kind
from ccf.features.kinds.params import Built, Params, label
from ccf.features.kinds.windows import Lags


@kind("get")
def get(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Select columns as model inputs, optionally lagged: get_<col> = col[t - shift].

    The engine's row carries every base column, but a model config can pick exactly the
    feature columns (``get_*`` among them), which is how the original system chose raw
    columns to feed the model. ``shift`` N >= 1 gives the value N buckets back (NaN for
    the first N buckets), a plain lag feature.

    Config: {kind: get, columns: "a_p_*", shift: 0}
    Columns: get_<col> (shift 0), get_<col>_<shift>
    Example: a_p_0 = 101 -> get_a_p_0 = 101; shift 1, a_p_0 100 then 101 -> get_a_p_0_1 = NaN, 100.
    """
    p = Params(params, columns)
    found = p.globs()
    shift = p.integer("shift", 0, minimum=0)
    p.finish()
    suffix = f"_{shift}" if shift else ""
    pairs = tuple((c, f"get_{c}{suffix}") for c in found)
    names = tuple(out for _, out in pairs)
    if not shift:
        return names, lambda: _Get(pairs)
    return names, lambda: _Lagged(pairs, shift)


class _Get:
    __slots__ = ("_pairs",)

    def __init__(self, pairs: tuple[tuple[str, str], ...]) -> None:
        self._pairs = pairs

    def step(self, row: Row) -> None:
        for src, out in self._pairs:
            row[out] = row[src]


class _Lagged:
    __slots__ = ("_pairs", "_lags")

    def __init__(self, pairs: tuple[tuple[str, str], ...], shift: int) -> None:
        self._pairs = pairs
        self._lags = tuple(Lags(shift) for _ in pairs)

    def step(self, row: Row) -> None:
        for (src, out), lags in zip(self._pairs, self._lags, strict=True):
            row[out] = lags.push(row[src])


OPS = {"rat": ratio, "lograt": log_ratio}


@kind("relative")
def relative(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Columns against a reference: ``op`` rat = x / ref, lograt = log(x / ref).

    ref is ``reference[t - shift]`` when a ``reference`` column is given (shift defaults
    to 0: the same bucket), else the column's own value ``shift`` >= 1 buckets back. NaN
    for the first ``shift`` buckets and where the ratio is undefined (NaN, ÷0, or
    non-positive under log). A column against itself in the same bucket (always 1) is
    skipped, so ``columns: "a_p_*", reference: a_p_0`` yields a_p_1.. only. A carried
    bucket repeats the book, so its shift-1 ``lograt`` is 0.

    Config: {kind: relative, columns: "a_p_*", op: lograt, reference: m_p}
    Columns: <op>_<col>_<reference> (shift 0), <op>_<col>_<shift> (own past),
    <op>_<col>_<reference>_<shift> (reference shift buckets back)
    Example: a_p_0 = 101, m_p = 100 -> lograt_a_p_0_m_p = log(1.01) = 0.00995;
    m_p 100 then 110, shift 1 -> rat_m_p_1 = 1.1.
    """
    p = Params(params, columns)
    found = p.globs()
    op = p.choice("op", tuple(OPS), "lograt")
    shift = p.integer("shift", 0, minimum=0)
    reference = p.column("reference", None)
    p.finish()
    if reference is None and not shift:
        raise ValueError(
            "compare against a column (reference: m_p) or the column's own past (shift: 1)"
        )
    if reference is not None and not shift:
        found = [c for c in found if c != reference]
        if not found:
            raise ValueError(f"columns match only the reference {reference!r} itself")
    tail = "_".join(str(x) for x in (reference, shift or None) if x is not None)
    pairs = tuple((c, f"{op}_{c}_{tail}") for c in found)
    names = tuple(out for _, out in pairs)
    return names, lambda: _Relative(pairs, OPS[op], reference, shift)


class _Relative:
    __slots__ = ("_pairs", "_op", "_reference", "_lags")

    def __init__(
        self,
        pairs: tuple[tuple[str, str], ...],
        op: Callable[[float, float], float],
        reference: str | None,
        shift: int,
    ) -> None:
        self._pairs, self._op, self._reference = pairs, op, reference
        # Own past: a ring per column; a lagged reference: one ring; else no state.
        n_rings = len(pairs) if reference is None else int(shift > 0)
        self._lags = tuple(Lags(shift) for _ in range(n_rings))

    def step(self, row: Row) -> None:
        op = self._op
        if self._reference is None:
            for (src, out), lags in zip(self._pairs, self._lags, strict=True):
                x = row[src]
                row[out] = op(x, lags.push(x))
            return
        ref = row[self._reference]
        if self._lags:
            ref = self._lags[0].push(ref)
        for src, out in self._pairs:
            row[out] = op(row[src], ref)


def ema_step(value: float, x: float, alpha: float) -> float:
    """The next EMA: the first finite ``x`` seeds it; a missing ``x`` leaves it unchanged.

    >>> nan = float("nan")
    >>> ema_step(nan, 10.0, 0.5), ema_step(10.0, 20.0, 0.5), ema_step(15.0, nan, 0.5)
    (10.0, 15.0, 15.0)
    """
    if not math.isfinite(x):
        return value
    if value != value:
        return x
    return value + alpha * (x - value)


@kind("ema")
def ema(params: Mapping[str, Any], columns: Sequence[str]) -> Built:
    """Exponential moving average: s_t = s_t-1 + alpha·(x_t - s_t-1), seeded by the first value.

    NaN-aware: NaN until the first finite value, which seeds it; a NaN (or ±inf) input
    leaves it unchanged (pandas ``ewm(alpha, adjust=False, ignore_na=True)``).
    ``alpha`` in (0, 1]: larger forgets faster (span s ~ alpha = 2 / (s + 1)).

    Config: {kind: ema, columns: m_p, alpha: 0.1}
    Columns: ema_<col>_<alpha> (alpha 0.1 -> ema_m_p_0p1)
    Example: alpha 0.5, x = 10, NaN, 20 -> 10, 10, 15.
    """
    p = Params(params, columns)
    found = p.globs()
    alpha = p.number("alpha", at_most=1.0)
    p.finish()
    pairs = tuple((c, f"ema_{c}_{label(alpha)}") for c in found)
    return tuple(out for _, out in pairs), lambda: _Ema(pairs, alpha)


class _Ema:
    __slots__ = ("_pairs", "_alpha", "_values")

    def __init__(self, pairs: tuple[tuple[str, str], ...], alpha: float) -> None:
        self._pairs, self._alpha = pairs, alpha
        self._values = [NAN] * len(pairs)

    def step(self, row: Row) -> None:
        values, alpha = self._values, self._alpha
        for i, (src, out) in enumerate(self._pairs):
            values[i] = ema_step(values[i], row[src], alpha)
            row[out] = values[i]
