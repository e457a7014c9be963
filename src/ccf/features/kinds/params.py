"""Reading a kind's config params: each once, by name, checked, with a message that says the fix.

A kind reads every param it takes through one :class:`Params`, then calls
:meth:`Params.finish`, which rejects the keys nobody read (a typo like ``windw`` fails
loudly instead of silently meaning the default). ``build`` prefixes each message with
the entry, e.g. ``features[3] (relative): shift must be ...``.

Output column names put numbers through :func:`label`, so ``alpha: 0.05`` names
``ema_m_p_0p05``: no dots or exponents in column names.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from ccf.features.kinds.base import Feature, glob_columns

REQUIRED: Any = object()
_BOOK = re.compile(r"[ab]_[pq]_(\d+)")
Built = tuple[tuple[str, ...], Callable[[], Feature]]  # what a kind's factory returns


def label(x: float) -> str:
    """A number as a column-name fragment: 5 -> '5', 0.05 -> '0p05', 1e6 -> '1000000'.

    >>> label(5), label(0.05), label(1e6), label(2.5e-5)
    ('5', '0p05', '1000000', '0p000025')
    """
    text = format(Decimal(repr(float(x))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text.replace(".", "p").replace("-", "m")


class Params:
    """One kind's params and the columns available at its place in the feature list."""

    def __init__(self, params: Mapping[str, Any], columns: Sequence[str]) -> None:
        self._params = dict(params)
        self.columns = tuple(columns)
        self._taken: list[str] = []

    def _get(self, name: str, default: Any, example: str) -> Any:
        if name not in self._taken:
            self._taken.append(name)
        value = self._params.get(name, default)
        if value is REQUIRED:
            self._missing(name, example)
        return value

    def _missing(self, name: str, example: str) -> None:
        typo = difflib.get_close_matches(name, [str(k) for k in self._params], n=1)
        hint = f" (is {typo[0]!r} a typo?)" if typo else ""
        raise ValueError(f"missing param {name!r}{hint}, e.g. {example}")

    def finish(self) -> None:
        """Raise on params this kind does not take, suggesting the nearest it does."""
        for key in self._params:
            if key not in self._taken:
                near = difflib.get_close_matches(str(key), self._taken, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                takes = ", ".join(self._taken) or "no params"
                raise ValueError(f"unknown param {key!r}{hint}; this kind takes: {takes}")

    def integer(self, name: str, default: Any = REQUIRED, *, minimum: int = 1) -> Any:
        """An integer >= ``minimum``; None when absent and the default is None (optional)."""
        value = self._get(name, default, f"{name}: {max(minimum, 1)}")
        if value is None and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        return value

    def integers(self, name: str, default: Any = REQUIRED, *, minimum: int = 1) -> tuple[int, ...]:
        """A list of distinct integers (a single integer is a list of one)."""
        value = self._get(name, default, f"{name}: [{minimum}, {minimum * 10 or 10}]")
        return _distinct_integers(name, value, minimum)

    def windows(self, default: Any = REQUIRED, *, minimum: int = 1) -> tuple[int, ...]:
        """Window lengths in buckets: ``window: 10`` or ``windows: [10, 60]``, not both."""
        one = self._get("window", None, "")
        many = self._get("windows", None, "")
        if one is not None and many is not None:
            raise ValueError("give window (one length) or windows (a list), not both")
        if one is not None:
            return _distinct_integers("window", one, minimum)
        if many is None and default is REQUIRED:
            self._missing("windows", "windows: [10, 60] (buckets)")
        return _distinct_integers("windows", default if many is None else many, minimum)

    def number(
        self, name: str, default: Any = REQUIRED, *, above: float = 0.0, at_most: float = math.inf
    ) -> Any:
        """A number in (above, at_most]; None when absent and the default is None (optional)."""
        value = self._get(name, default, f"{name}: 0.1")
        if value is None and default is None:
            return None
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not above < value <= at_most:
            span = f"in ({above:g}, {at_most:g}]" if at_most < math.inf else f"> {above:g}"
            raise ValueError(f"{name} must be a number {span}, got {value!r}")
        return float(value)

    def choice(self, name: str, options: Sequence[str], default: Any = REQUIRED) -> str:
        value = self._get(name, default, f"{name}: {options[0]}")
        if value not in options:
            raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
        return value

    def column(self, name: str, default: Any = REQUIRED) -> Any:
        """One existing column, by exact name; None when absent and the default is None."""
        value = self._get(name, default, f"{name}: m_p")
        if value is None and default is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a column name, got {value!r}")
        self.require(value)
        return value

    def globs(self, name: str = "columns", default: Any = REQUIRED) -> list[str]:
        """Columns matching a glob or a list of globs, in column order within each, no repeats."""
        value = self._get(name, default, f'{name}: "a_p_*"')
        patterns = [value] if isinstance(value, str) else value
        if not isinstance(patterns, list | tuple) or not patterns:
            raise ValueError(f"{name} must be a glob or a list of globs, got {value!r}")
        found: list[str] = []
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise ValueError(f"{name} must be a glob or a list of globs, got {value!r}")
            found += [c for c in glob_columns(pattern, self.columns) if c not in found]
        return found

    def require(self, *names: str) -> None:
        """Raise unless every column in ``names`` exists by now, saying how to get it."""
        missing = [n for n in names if n not in self.columns]
        if not missing:
            return
        levels = [int(m[1]) for n in missing if (m := _BOOK.fullmatch(n))]
        if levels:
            depth = sum(1 for c in self.columns if _BOOK.fullmatch(c) and c.startswith("a_p_"))
            raise ValueError(
                f"needs book level {max(levels)} but the book has {depth} levels "
                f"(a_p_0..a_p_{depth - 1}): ask for fewer levels or collect a deeper book"
            )
        hints = []
        for n in missing:
            if n == "m_p":
                hints.append("m_p comes from {kind: m_p}: put that entry earlier in the list")
            elif near := difflib.get_close_matches(n, self.columns, n=1):
                hints.append(f"did you mean {near[0]!r}?")
        tail = f" ({'; '.join(hints)})" if hints else ""
        raise ValueError(
            f"needs column(s) {missing}, which do not exist at this point of the feature list "
            f"(features run in list order){tail}"
        )


def _distinct_integers(name: str, value: Any, minimum: int) -> tuple[int, ...]:
    many = isinstance(value, list | tuple)
    values = value if many else [value]
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < minimum]
    if not values or bad:
        what = "a list of integers" if many else "an integer"
        raise ValueError(f"{name} must be {what} >= {minimum}, got {value!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} lists a value twice: {value!r}; each names its own column")
    return tuple(values)
