"""Reconnect and retry delays."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_s(
    attempt: int, *, base: float = 0.5, cap: float = 30.0, rng: Callable[[], float] = random.random
) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)].

    Jitter spreads reconnects of many clients after an exchange outage; the cap
    keeps a long outage from pushing the next try out for hours. ``rng`` is
    injectable so tests are deterministic.
    """
    return rng() * min(cap, base * 2 ** min(attempt, 30))
