"""The local order book: exact against an independent rebuild of the real recordings.

The reference book here is written from Binance's procedure alone, with plain
dicts and ``float()`` of each decimal string: snapshot, drop diffs with
``u <= lastUpdateId``, require ``U <= last + 1``, set or delete each level.
Every Book record the feed emits (top 20 at each applied update) must equal
the reference's top 20 after the same update, and the complete final books
must be equal. Both book implementations (C and pure Python) are held to it,
and to each other on random operations.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from dataclasses import dataclass, field
from functools import cache

import pytest

from ccf.config import shared_dir
from ccf.records import Book, Record
from ccf.sources.binance import book as book_mod
from ccf.sources.binance.book import IMPLEMENTATIONS, BookSide, OrderBook
from ccf.sources.binance.feed import BinanceFeed
from ccf.sources.recording import read_frames

DATA = shared_dir() / "data" / "binance"
SYMBOLS = ("btcusdt", "ethusdt")
STREAMS = ("depth@100ms", "trade", "bookTicker")
DEPTH = 20
SIDES = {"python": BookSide}
if "c" in IMPLEMENTATIONS:
    from ccf.sources.binance import _cbook

    SIDES["c"] = _cbook.BookSide

NAN = math.nan


# -- the independent reference ------------------------------------------------------------


@cache
def recording(symbol: str) -> tuple[list[tuple[int, str]], int]:
    """Every line of ``symbol``'s two files, and the index of the REST snapshot line."""
    frames = [
        fr
        for day in ("20240808", "20240809")
        for fr in read_frames(DATA / f"spot_{symbol}_{day}.jsonl.gz")
    ]
    snap_at = next(i for i, (_, f) in enumerate(frames) if f.startswith('{"lastUpdateId"'))
    return frames, snap_at


def top(asks: dict[float, float], bids: dict[float, float], depth: int) -> tuple[float, ...]:
    out: list[float] = []
    for book, prices in ((asks, heapq.nsmallest(depth, asks)), (bids, heapq.nlargest(depth, bids))):
        for p in prices:
            out += [p, book[p]]
        out += [NAN] * (2 * (depth - len(prices)))
    return tuple(out)


@dataclass
class Reference:
    asks: dict[float, float]
    bids: dict[float, float]
    update_id: int
    tops: list[tuple[int, tuple[float, ...]]] = field(default_factory=list)  # (u, top 20)
    full: dict[int, tuple[dict[float, float], dict[float, float]]] = field(default_factory=dict)


def rebuild(symbol: str, *, keep_full_at: frozenset[int] = frozenset()) -> Reference:
    """Binance's procedure with dicts; ``keep_full_at``: update ids to copy the whole book at."""
    frames, snap_at = recording(symbol)
    snap = json.loads(frames[snap_at][1])
    ref = Reference(
        {float(p): float(q) for p, q in snap["asks"]},
        {float(p): float(q) for p, q in snap["bids"]},
        snap["lastUpdateId"],
    )
    for i, (_, line) in enumerate(frames):
        if i == snap_at or "@depth" not in line[:40]:
            continue
        d = json.loads(line)["data"]
        if d["u"] <= ref.update_id:
            continue  # older than the book: buffered before the snapshot, or a repeat
        assert d["U"] <= ref.update_id + 1, "the recording itself has a gap"
        for side, levels in ((ref.bids, d["b"]), (ref.asks, d["a"])):
            for p, q in levels:
                if float(q) == 0.0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(q)
        ref.update_id = d["u"]
        ref.tops.append((d["u"], top(ref.asks, ref.bids, DEPTH)))
        if d["u"] in keep_full_at:
            ref.full[d["u"]] = (dict(ref.asks), dict(ref.bids))
    return ref


reference = cache(rebuild)


def same_levels(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Equal, NaN matching NaN (a missing level)."""
    return a == b or (
        len(a) == len(b) and all(x == y or (x != x and y != y) for x, y in zip(a, b, strict=True))
    )


def replay(
    symbol: str, impl: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[BinanceFeed, list[Record]]:
    monkeypatch.setattr(book_mod, "DEFAULT_IMPL", impl)
    feed = BinanceFeed((symbol,), STREAMS, book_depth=DEPTH)
    frames, snap_at = recording(symbol)
    out: list[Record] = []
    for i, (ts, frame) in enumerate(frames):
        if i == snap_at:
            assert feed.on_snapshot(symbol, frame, ts, out) == "synced"
        else:
            feed.handle(frame, ts, out)
    return feed, out


# -- the recordings, at every update ------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("symbol", SYMBOLS)
def test_every_book_record_equals_the_independent_rebuild(
    symbol: str, impl: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = reference(symbol)

    feed, out = replay(symbol, impl, monkeypatch)

    books = [r for r in out if type(r) is Book]
    assert [b.update_id for b in books] == [u for u, _ in ref.tops]  # one per applied update
    bad = [
        b.update_id
        for b, (_, levels) in zip(books, ref.tops, strict=True)
        if not same_levels(b.levels, levels)
    ]
    assert not bad, f"{len(bad)} book records differ, first at update id {bad[0]}"
    assert all(len(b.levels) == 4 * DEPTH and b.source == "diff" for b in books)
    final = feed.state[symbol].book
    assert final.asks.levels() == ref.asks  # the complete book, every level
    assert final.bids.levels() == ref.bids
    assert final.update_id == ref.update_id
    assert not feed.open_gaps and feed.stats["resyncs"] == 0


def test_both_implementations_emit_identical_records(monkeypatch: pytest.MonkeyPatch) -> None:
    assert IMPLEMENTATIONS == ("c", "python"), "the C book is not built: pip install -e ."
    runs = [replay("btcusdt", impl, monkeypatch)[1] for impl in IMPLEMENTATIONS]

    assert len(runs[0]) == len(runs[1]) == 99_571
    assert all(repr(a) == repr(b) for a, b in zip(*runs, strict=True))  # repr: NaN equals NaN


# -- BookSide unit cases, for each implementation -----------------------------------------


@pytest.fixture(params=sorted(SIDES))
def side_cls(request: pytest.FixtureRequest) -> type:
    return SIDES[request.param]


def test_deleting_a_missing_level_changes_nothing(side_cls: type) -> None:
    side = side_cls(1.0, 4)
    side.reset([(101.0, 1.0), (102.0, 2.0)])

    side.apply([(100.0, 0.0), (103.5, 0.0)], 2)

    assert side.levels() == {101.0: 1.0, 102.0: 2.0}
    assert side.top(2) == [101.0, 1.0, 102.0, 2.0]


def test_refills_after_many_deletions_near_the_top(side_cls: type) -> None:
    keep, depth = 4, 3
    prices = [100.0 + i / 100 for i in range(60)]
    asks, bids = side_cls(1.0, keep), side_cls(-1.0, keep)
    asks.reset([(p, 1.0 + i) for i, p in enumerate(prices)])
    bids.reset([(p, 1.0 + i) for i, p in enumerate(prices)])
    ref = {p: 1.0 + i for i, p in enumerate(prices)}

    for i in range(55):  # eat both books from their best end, one level at a time
        asks.apply([(prices[i], 0.0)], depth)
        bids.apply([(prices[-1 - i], 0.0)], depth)
        del ref[prices[i]]
        best_asks = sorted(ref)[:depth]
        assert asks.top(depth) == [x for k in best_asks for x in (k, ref[k])]
    assert len(asks) == len(bids) == 5
    assert bids.top(2) == [prices[4], 5.0, prices[3], 4.0]


def test_a_thin_book_pads_with_nan(side_cls: type) -> None:
    side = side_cls(-1.0, 4)
    side.reset([(99.0, 1.0), (98.5, 2.0)])

    levels = side.top(4)

    assert levels[:4] == [99.0, 1.0, 98.5, 2.0]
    assert len(levels) == 8 and all(math.isnan(x) for x in levels[4:])
    assert math.isnan(side_cls(1.0).best())


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_order_book_top_and_crossed(impl: str) -> None:
    book = OrderBook(depth=2, impl=impl)
    book.reset(bids=[(99.0, 1.0)], asks=[(101.0, 2.0)], update_id=7)

    assert same_levels(book.top(), (101.0, 2.0, NAN, NAN, 99.0, 1.0, NAN, NAN))
    assert not book.crossed()
    book.apply(bids=[(101.0, 0.5)], asks=[], update_id=8)  # bid == ask: crossed
    assert book.crossed() and book.best_bid() == 101.0 and book.update_id == 8
    book.apply(bids=[(101.0, 0.0)], asks=[(101.0, 0.0)], update_id=9)  # an empty side
    assert not book.crossed() and math.isnan(book.best_ask())


def test_an_unknown_implementation_is_refused() -> None:
    with pytest.raises(ValueError, match="use one of"):
        OrderBook(impl="rust")


# -- C and Python agree -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_c_and_python_sides_agree_on_random_operations(seed: int) -> None:
    rng = random.Random(seed)
    keep, depth = rng.choice([1, 2, 5, 100]), rng.choice([1, 3, 20])
    grid = [round(100 + rng.randint(-300, 300) * 0.01, 2) for _ in range(rng.randint(1, 400))]
    for sign in (1.0, -1.0):
        c, py = _cbook.BookSide(sign, keep), BookSide(sign, keep)
        snapshot = [(p, rng.choice([0.0, 1.5, 2.0])) for p in rng.sample(grid, len(grid) // 2)]
        c.reset(snapshot)
        py.reset(snapshot)
        for _ in range(150):
            levels = [
                (rng.choice(grid), rng.choice([0.0, 0.0, 0.5, 1.0, 3.25]))
                for _ in range(rng.randint(0, 40))
            ]
            c.apply(levels, depth)
            py.apply(levels, depth)
            assert same_levels(tuple(c.top(depth)), tuple(py.top(depth)))
            assert c.near == py.near and c.bound == py.bound  # the same design, step by step
        assert c.levels() == py.levels() and len(c) == len(py)


def test_c_level_parser_equals_float_on_every_recorded_level() -> None:
    for symbol in SYMBOLS:
        frames, _ = recording(symbol)
        for _, line in frames:
            if "@depth" not in line[:40]:
                continue
            data = json.loads(line)["data"]
            for key in ("b", "a"):
                raw = json.dumps(data[key])
                expected = [(float(p), float(q)) for p, q in data[key]]
                assert list(_cbook.parse_levels(raw)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "0.00000001",
        "61837.63000000",
        "123456789.12345678",
        "9007199254740993",
        "1e22",
        "1.5E-7",
        "0.1234567890123456789",
        "12345678901234567890.5",
    ],
)
def test_c_level_parser_rounds_like_float(text: str) -> None:
    levels = _cbook.parse_levels(f'[["{text}", {text}]]')
    assert list(levels) == [(float(text), float(text))]


@pytest.mark.parametrize("text", ["0", "0.00000000", "1e-400"])
def test_c_level_parser_takes_a_zero_quantity_but_never_a_zero_price(text: str) -> None:
    assert list(_cbook.parse_levels(f'[["1.5", "{text}"]]')) == [(1.5, 0.0)]
    with pytest.raises(ValueError, match="a price must be > 0"):
        _cbook.parse_levels(f'[["{text}", "1.5"]]')


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[",
        '[["1"]]',
        '[["-1","1"]]',
        '[["01","1"]]',
        '[["1.","1"]]',
        '[["nan","1"]]',
        '[["1","1"],]',
        '[["1","1"]] x',
        '[["1" "1"]]',
        '[["1e","1"]]',
        '{"1": 1}',
        "[[1,1]]]",
        '[["1e400","1"]]',  # inf: out of a double's range
        '[["1","1e400"]]',
        '[["1","-0.5"]]',
        '[["inf","1"]]',
    ],
)
def test_c_level_parser_refuses_what_is_not_plain_json_numbers(text: str) -> None:
    with pytest.raises(ValueError, match="levels:"):
        _cbook.parse_levels(text)
