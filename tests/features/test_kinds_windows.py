"""The rolling-state primitives and exact arithmetic under the kinds, and a robustness sweep."""

from __future__ import annotations

import doctest
import math
import random
from fractions import Fraction

import pytest

from ccf.features.kinds import arith, params, transform, windows
from ccf.features.kinds.arith import two_product
from ccf.features.kinds.windows import Lags, RollingExtreme, RollingLast, RollingSum
from tests.features.kinds_rows import KINDS, NAN, make_row, random_rows, run
from tests.features.test_kinds import documented_example


@pytest.mark.parametrize("module", [arith, params, windows, transform])
def test_docstring_examples_hold(module: object) -> None:
    failed, tried = doctest.testmod(module)  # type: ignore[arg-type]
    assert tried and not failed


def test_two_product_is_exact() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        a = rng.uniform(-1, 1) * 10 ** rng.randint(-8, 8)
        b = rng.uniform(-1, 1) * 10 ** rng.randint(-8, 8)
        p, e = two_product(a, b)
        assert p == a * b and Fraction(p) + Fraction(e) == Fraction(a) * Fraction(b)


def test_an_exact_rolling_sum_stays_small_and_equals_fsum_of_the_window() -> None:
    """Wild magnitudes: a naive running sum would carry a lost 1e12 rounding error forever."""
    rng = random.Random(2)
    xs = [
        rng.choice((-1, 1)) * rng.uniform(1, 10) * 10 ** rng.randint(-12, 12) for _ in range(20_000)
    ]
    w = RollingSum(50)
    longest = 0
    for t, x in enumerate(xs):
        w.push(x)
        longest = max(longest, len(w._sum))
        if t % 97 == 0 or t == len(xs) - 1:
            assert w.total() == math.fsum(xs[max(0, t - 49) : t + 1])
    assert longest <= 40  # bounded state: Shewchuk partials of doubles never exceed ~40


def test_variance_is_exact_even_when_the_mean_dwarfs_the_spread() -> None:
    rng = random.Random(3)
    xs = [1e9 + rng.choice((0.0, 0.25, 0.5, rng.uniform(0, 1))) for _ in range(3000)]
    w = RollingSum(30, squares=True)
    for t, x in enumerate(xs):
        w.push(x)
        if t >= 29:
            win = [Fraction(v) for v in xs[t - 29 : t + 1]]
            exact = (30 * sum(v * v for v in win) - sum(win) ** 2) / (30 * 29)
            assert w.variance() == pytest.approx(float(exact), rel=1e-15, abs=0.0)
    flat = RollingSum(4, squares=True)
    for _ in range(4):
        flat.push(0.1)
    assert flat.variance() == 0.0  # not 1e-33 of rounding noise


def test_extremes_last_and_lags_against_brute_force() -> None:
    rng = random.Random(4)
    xs = [rng.choice((NAN, 1.0, 2.0, 2.0, 3.0, rng.random())) for _ in range(3000)]
    for n in (1, 2, 7, 50):
        hi, lo, last, lags = (RollingExtreme(n, largest=True), RollingExtreme(n, largest=False),
                              RollingLast(n), Lags(n))  # fmt: skip
        for t, x in enumerate(xs):
            oldest = lags.ago(n)
            left = lags.push(x)
            assert left is oldest and lags.ago(1) is x
            assert left is xs[t - n] if t >= n else math.isnan(left)
            for s in (hi, lo, last):
                s.push(x)
            present = [v for v in xs[max(0, t - n + 1) : t + 1] if not math.isnan(v)]
            want = (max(present), min(present), present[-1]) if present else (NAN,) * 3
            got = (hi.value(), lo.value(), last.value())
            assert all(
                g == w or (math.isnan(g) and math.isnan(w)) for g, w in zip(got, want, strict=True)
            )


def nasty_rows() -> list[dict]:
    """Rows no kind should choke on: zeros, negatives, infinities, NaN everywhere."""
    rows = random_rows(60, seed=5)
    odd = [0.0, -1.0, math.inf, -math.inf, NAN]
    rng = random.Random(6)
    for r in rows[30:]:
        for c in r:
            if c not in ("ts", "ts_end") and rng.random() < 0.2:
                r[c] = rng.choice(odd)
    rows.append(make_row(60))  # and a bucket with no book at all
    return rows


@pytest.mark.parametrize("name", KINDS)
def test_no_kind_raises_on_nasty_rows(name: str) -> None:
    spec = documented_example(name)
    specs = [spec] if name == "m_p" else [{"kind": "m_p"}, spec]
    for row in run(specs, nasty_rows()):
        assert all(isinstance(v, float | int) for v in row.values())
