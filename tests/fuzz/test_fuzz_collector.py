"""Hypothesis over mutated real frames, snapshots and REST bodies (issue 17).

The property of each target: nothing escapes the part, and every valid frame
still gives exactly the records of the independent rebuild (``hostile.play``
answers snapshots from a plain-dict rebuild of the clean frames). Each target
runs both book implementations, which must agree record for record, dead
letters included. The budget here is small (a few seconds a target, in
``make test``); ``bench/bench_fuzz.py`` runs the same targets for long.
"""

from __future__ import annotations

import json
import math
import random
from functools import cache

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccf.records import Book, DeadLetter, Trade
from ccf.sources.binance.book import IMPLEMENTATIONS
from ccf.sources.binance.feed import dead_letter_kind
from ccf.sources.binance.history import _decode_trades
from ccf.sources.binance.rest import MAX_RETRY_AFTER_S, RestError, retry_after_s
from ccf.sources.binance.schemas import TradeMsg
from tests.fuzz import hostile
from tests.fuzz.hostile import Run, play

FRAMES = 1500  # ~130 diffs, ~230 trades, ~1,100 quotes of the real BTCUSDT stream
BUDGET = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
BOUND = 1_000_000


@cache
def clean() -> Run:
    run = play(hostile.real(FRAMES))
    assert not run.dead and run.snapshots["synced"] == 1
    assert run.of(Book) and run.of(Trade)
    assert hostile.problems(run, run) == []
    return run


def test_the_clean_run_equals_the_rebuild() -> None:
    """The reference itself: every book equals the plain-dict rebuild, and the trades are
    every trade frame's, once."""
    run = clean()
    trades = [json.loads(f)["data"]["t"] for f in hostile.real(FRAMES).frames if "@trade" in f]
    assert [t.trade_id for t in run.of(Trade)] == trades
    books = run.of(Book)
    assert len(books) >= 0.9 * len(run.ref.tops)
    for impl in IMPLEMENTATIONS:
        assert play(hostile.real(FRAMES), impl=impl).records == run.records


positions = st.lists(st.integers(0, FRAMES - 1), min_size=1, max_size=40)


def both(inject: dict[int, list[str]], **kw: object) -> Run:
    """The run with each book implementation; they must give the same records."""
    runs = [play(hostile.real(FRAMES), inject, impl=impl, **kw) for impl in IMPLEMENTATIONS]
    for other in runs[1:]:
        assert other.records == runs[0].records, "the C and Python books disagree"
    return runs[0]


@BUDGET
@given(st.randoms(use_true_random=False), positions)
def test_invalid_frames_are_dead_letters_and_change_nothing(
    rng: random.Random, at: list[int]
) -> None:
    frames = hostile.real(FRAMES).frames
    inject: dict[int, list[str]] = {}
    expected: list[str] = []
    for i in sorted(at):  # the order the dead letters come in
        bad, kinds = hostile.invalid_frame(rng, frames[rng.randrange(FRAMES)])
        inject.setdefault(i, []).append(bad)
        expected.append(kinds)
    run = both(inject)
    letters = [r for r in run.records if type(r) is DeadLetter]
    assert len(letters) == len(expected)  # one each, and nothing else refused
    for letter, kinds in zip(letters, expected, strict=True):
        assert dead_letter_kind(letter.reason) in kinds.split("|"), letter
    assert run.market() == clean().market()  # every valid frame: exactly its records


@BUDGET
@given(st.randoms(use_true_random=False), positions)
def test_any_mutation_is_taken_or_refused_never_a_crash(rng: random.Random, at: list[int]) -> None:
    frames = hostile.real(FRAMES).frames
    inject: dict[int, list[str]] = {}
    for i in at:
        inject.setdefault(i, []).append(hostile.any_frame(rng, frames[rng.randrange(FRAMES)]))
    run = both(inject)  # no exception escapes; C and Python agree
    assert hostile.out_of_range(run) == []
    assert all(r.reason.split(":")[0] in DEAD_KINDS for r in run.of(DeadLetter))


DEAD_KINDS = {
    "malformed_json",
    "too_deep",
    "unexpected_stream",
    "unexpected_frame",
    "bad_payload",
    "invalid_value",
    "id_jump",
    "bad_snapshot",
}


@BUDGET
@given(st.randoms(use_true_random=False), positions)
def test_id_jumps_are_dead_letters_gaps_and_resyncs_never_wrong_records(
    rng: random.Random, at: list[int]
) -> None:
    frames = hostile.real(FRAMES).frames
    inject: dict[int, list[str]] = {}
    jumps = 0
    first_trade = next(i for i, f in enumerate(frames) if "@trade" in f[:30])
    for k, i in enumerate(sorted(at)):
        # after the first trade: the first, with no last id to hold it against, is taken
        i = max(i, first_trade + 1)
        frame = frames[rng.randrange(FRAMES)]
        if hostile.kind_of(frame) == "bookTicker":
            continue
        # jumps 3 bounds apart: no two bogus ids look like one stream that moved
        inject.setdefault(i, []).append(hostile.jump_frame(rng, frame, BOUND, (3 * k + 2) * BOUND))
        jumps += 1
    run = both(inject, max_id_jump=BOUND)
    assert hostile.problems(run, clean()) == []  # books = the rebuild's, trades exact
    assert run.dead["id_jump"] == jumps and sum(run.dead.values()) == jumps
    assert set(hostile.gap_kinds(run)) <= {"id_jump"}


@BUDGET
@given(st.randoms(use_true_random=False), st.integers(1, 3))
def test_bad_snapshots_are_refused_and_the_next_good_one_syncs(
    rng: random.Random, n_bad: int
) -> None:
    snap = hostile.real(FRAMES).snapshot
    bad = {n: hostile.invalid_snapshot(rng, snap) for n in range(n_bad)}
    run = both({}, snapshots=bad)
    assert run.snapshots["refused"] == n_bad and run.snapshots["synced"] == 1
    assert run.dead["bad_snapshot"] == n_bad and sum(run.dead.values()) == n_bad
    assert hostile.problems(run, clean()) == []  # never a book from a bad snapshot


@BUDGET
@given(st.randoms(use_true_random=False))
def test_any_snapshot_body_is_taken_or_refused_never_a_crash(rng: random.Random) -> None:
    body = hostile.any_snapshot(rng, hostile.real(FRAMES).snapshot)
    run = both({}, snapshots={0: body})
    assert hostile.out_of_range(run) == []


historical = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.integers(-(2**65), 2**65),
            "price": st.one_of(st.floats(), st.text(max_size=8), st.integers()).map(str),
            "qty": st.one_of(st.floats(), st.sampled_from(["0", "-1", "1e400", "0.5"])).map(str),
            "quoteQty": st.just("1.0"),
            "time": st.integers(-(2**65), 2**65),
            "isBuyerMaker": st.booleans(),
            "isBestMatch": st.booleans(),
        }
    ),
    max_size=5,
)


@settings(max_examples=200, deadline=None, database=None)
@given(st.one_of(historical.map(json.dumps), st.text(max_size=200)))
def test_a_historical_trades_body_is_rows_in_range_or_a_rest_error(body: str) -> None:
    try:
        rows = _decode_trades(body.encode())
    except RestError as e:
        assert "historicalTrades answer refused" in str(e)
        return
    for r in rows:
        assert 0 <= r.id < 2**63 and 0 < r.time < 2**63 // 1_000_000
        assert math.isfinite(r.price) and r.price > 0 and math.isfinite(r.qty) and r.qty > 0


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(st.none(), st.text(max_size=40), st.floats().map(repr)), st.integers(0, 50))
def test_retry_after_is_always_a_bounded_wait(header: str | None, attempt: int) -> None:
    wait = retry_after_s(header, attempt)
    assert math.isfinite(wait) and 0 <= wait <= MAX_RETRY_AFTER_S


def test_the_decoders_refuse_what_the_fuzzers_send() -> None:
    """The hostile values the fuzzers use are refused by the schemas one by one (so a
    passing fuzz run is not a run of frames that never reached the checks)."""
    decode = msgspec.json.Decoder(TradeMsg, strict=False).decode
    frame = next(f for f in hostile.real(FRAMES).frames if "@trade" in f)
    for field, values in (
        ("p", hostile.BAD_PRICES),
        ("q", hostile.BAD_QTYS),
        ("t", hostile.BAD_INTS),
    ):
        for value in values:
            bad = hostile._with_raw(frame, (field,), value)
            with pytest.raises(msgspec.ValidationError):
                decode(bad[bad.index('"data":') + 7 : -1])
