"""Hostile input made from the real recordings, and the run that checks what it does.

Shared by the Hypothesis suite (``tests/fuzz``, a bounded budget in ``make
test``) and ``bench/bench_fuzz.py`` (the long run). Every mutator takes a
``random.Random``: Hypothesis hands it one it controls (so failures shrink and
replay), the bench a seeded one.

- ``invalid_frame``: a real frame made certainly invalid (a NaN, inf, negative
  or zero price, a negative quantity, an id or time beyond int64, a wrong type,
  truncation, deep nesting, an unknown stream): it must be a dead letter and
  change nothing else.
- ``any_frame``: a real frame mutated at random, valid or not (byte flips,
  splices, values swapped for others): nothing may escape the feed, and every
  record it gives must be one a valid frame could give.
- ``jump_frame``: a real diff or trade whose ids jump far ahead: a dead letter,
  a gap and a resync, never a book or trade that differs from the rebuild.

:func:`play` feeds the clean frames with hostile ones between them, answers
every snapshot request from an independent plain-dict rebuild of the clean
frames (Binance's procedure, as ``tests/sources/recorded.py`` does), and
returns the records, the dead letters by kind and the rebuild's book at every
update id, for the properties to compare.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ccf.records import Book, DeadLetter, Gap, Quote, Record, Trade
from ccf.sources.binance import book as book_mod
from ccf.sources.binance.feed import DEFAULT_MAX_ID_JUMP, BinanceFeed, dead_letter_kind
from tests.sources.recorded import _top
from tests.sources.test_book import recording

SYMBOL = "btcusdt"
STREAMS = ("depth@100ms", "trade", "bookTicker")
DEPTH = 20
INT64 = 2**63

# Values no field of their kind may take, as JSON text.
BAD_PRICES = ['"NaN"', '"nan"', '"inf"', '"-Infinity"', '"1e400"', "1e400", '"-1"', "-5.5", '"0"']
BAD_PRICES += ["0", '"0.00000000"', '"abc"', '""', "null", "[]", "{}", "true"]
BAD_QTYS = ['"NaN"', '"inf"', '"-1"', "-0.5", '"1e400"', '"abc"', "null", "[1]", "{}"]
BAD_INTS = [str(2**64), str(10**30), str(INT64), "-1", '"abc"', "null", "1.5", "[]", '"1e400"']
HOSTILE_VALUES = [*BAD_PRICES, *BAD_QTYS, *BAD_INTS, '"0"', "0", '"-0.0"', "1e-400", '"1e308"']
HOSTILE_VALUES += [str(INT64 - 1), "9007199254740993", '"61837.63000000"', '"0.00000001"']
ID_FIELDS = {"trade": ("t", "T", "E"), "depth": ("E", "U", "u"), "bookTicker": ("u",)}
PRICE_FIELDS = {"trade": ("p",), "bookTicker": ("b", "a")}
QTY_FIELDS = {"trade": ("q",), "bookTicker": ("B", "A")}
TRADE_QTY_BAD = ['"0"', "0"]  # a trade's quantity must be > 0: zero is bad there only


@dataclass(frozen=True)
class Recording:
    frames: tuple[str, ...]  # every stream frame, in order (the snapshot line taken out)
    snapshot: str  # the REST snapshot the recording holds


@cache
def real(n: int) -> Recording:
    """The first ``n`` stream frames of the BTCUSDT recording, and its snapshot."""
    lines, snap_at = recording(SYMBOL)
    frames = tuple(f for i, (_, f) in enumerate(lines) if i != snap_at)
    return Recording(frames[:n], lines[snap_at][1])


def kind_of(frame: str) -> str:
    stream = json.loads(frame)["stream"]
    return "depth" if "@depth" in stream else stream.split("@", 1)[1]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _with_raw(frame: str, path: tuple[str | int, ...], raw: str) -> str:
    """``frame`` with the value at ``path`` (under ``data``) replaced by JSON text ``raw``
    (text, so values json.dumps cannot write, like 1e400 or a 30-digit int, get through)."""
    obj = json.loads(frame)
    marker = "\u0000MARK\u0000"
    node = obj["data"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = marker
    return _dumps(obj).replace(json.dumps(marker), raw, 1)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


VALUE = "invalid_value|bad_payload"  # a bad number, or no number at all


def invalid_frame(rng: random.Random, frame: str) -> tuple[str, str]:
    """(a certainly invalid variant of ``frame``, the dead-letter kinds it may get, ``|``
    between them)."""
    kind = kind_of(frame)
    data = json.loads(frame)["data"]
    how = rng.randrange(9)
    if how == 0:  # an id or time
        return _with_raw(frame, (rng.choice(ID_FIELDS[kind]),), rng.choice(BAD_INTS)), VALUE
    if how == 1 and kind != "depth":
        return _with_raw(frame, (rng.choice(PRICE_FIELDS[kind]),), rng.choice(BAD_PRICES)), VALUE
    if how == 2 and kind != "depth":
        bad = BAD_QTYS + (TRADE_QTY_BAD if kind == "trade" else [])
        return _with_raw(frame, (rng.choice(QTY_FIELDS[kind]),), rng.choice(bad)), VALUE
    if how in (1, 2) and kind == "depth":
        side = rng.choice([s for s in "ba" if data[s]] or ["b"])
        if not data[side]:
            return _with_raw(frame, (side,), '[["1e400","1"]]'), VALUE
        i = rng.randrange(len(data[side]))
        if how == 1:
            return _with_raw(frame, (side, i, 0), rng.choice(BAD_PRICES)), VALUE
        return _with_raw(frame, (side, i, 1), rng.choice(BAD_QTYS)), VALUE
    if how == 3:  # cut short
        return frame[: rng.randrange(1, len(frame) - 1)], "malformed_json"
    if how == 4:  # nested past the decoder's limit, where the payload goes
        # too_deep where the decoder recurses that far; where it sees an array in place
        # of the payload first, bad_payload (it depends on the stack depth it starts at)
        return frame.replace('"data":', '"data":' + nested(rng.randint(1000, 3000)) + ',"x":', 1), (
            "too_deep|bad_payload"
        )
    if how == 5:  # a required field gone
        obj = json.loads(frame)
        fields = [*ID_FIELDS[kind], *PRICE_FIELDS.get(kind, ()), *QTY_FIELDS.get(kind, ())]
        del obj["data"][rng.choice(fields)]
        return _dumps(obj), "bad_payload"
    if how == 6:  # a stream we did not subscribe to
        return frame.replace(f"{SYMBOL}@", rng.choice(["ethusdt@", "btcusdt@x", "@"]), 1), (
            "unexpected_stream"
        )
    if how == 7:  # not JSON at all
        junk = ["<html><body>502</body></html>", "\x00\xff garbage", "", "{", "]", "nul"]
        return rng.choice(junk), "malformed_json"
    return _with_raw(frame, (rng.choice(ID_FIELDS[kind]),), rng.choice(['"x"', "{}", "[1]"])), (
        "bad_payload"
    )


def any_frame(rng: random.Random, frame: str) -> str:
    """``frame`` mutated at random: it may stay valid (then it is a real-looking frame)."""
    how = rng.randrange(5)
    if how == 0:  # flip bytes
        b = bytearray(frame.encode())
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return b.decode("utf-8", "replace")
    if how == 1:  # splice two pieces
        i, j = sorted(rng.randrange(len(frame)) for _ in range(2))
        return frame[:i] + frame[j:] if rng.random() < 0.5 else frame[:j] + frame[i:]
    if how == 2:  # a value swapped for a hostile one, anywhere
        obj = json.loads(frame)
        paths = list(_paths(obj["data"]))
        return _with_raw(frame, rng.choice(paths), rng.choice(HOSTILE_VALUES))
    if how == 3:
        return invalid_frame(rng, frame)[0]
    return jump_frame(rng, frame, DEFAULT_MAX_ID_JUMP)


def _paths(node: Any, prefix: tuple = ()) -> Any:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list) and node:
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))
    else:
        yield prefix


def jump_frame(rng: random.Random, frame: str, bound: int, far: int | None = None) -> str:
    """A diff or trade (else ``frame`` as is) whose ids jump ``far`` (default: at random)
    beyond ``bound``."""
    kind = kind_of(frame)
    obj = json.loads(frame)
    d = obj["data"]
    far = far or bound + rng.randint(1, 10**9)
    if kind == "trade":
        d["t"] += far
    elif kind == "depth":
        if rng.random() < 0.5:
            d["u"] += far  # the first case: u far ahead
        else:
            d["U"] += far  # the second: U far ahead (and u with it)
            d["u"] += far
    return _dumps(obj)


def invalid_snapshot(rng: random.Random, snapshot: str) -> str:
    """A certainly unusable variant of a REST depth snapshot."""
    obj = json.loads(snapshot)
    how = rng.randrange(7)
    if how == 0:  # a bid above the best ask: crossed
        obj["bids"].insert(rng.randrange(len(obj["bids"]) + 1), [obj["asks"][0][0], "1.0"])
        return _dumps(obj)
    if how == 1:
        side = rng.choice(["bids", "asks"])
        i = rng.randrange(len(obj[side]))
        j = rng.randrange(2)
        value = rng.choice(BAD_PRICES if j == 0 else BAD_QTYS)
        marker = "\u0000MARK\u0000"
        obj[side][i][j] = marker
        return _dumps(obj).replace(json.dumps(marker), value, 1)
    if how == 2:
        text = _dumps(obj)
        return text[: rng.randrange(1, len(text) - 1)]
    if how == 3:
        return rng.choice(["<html><body><h1>502 Bad Gateway</h1></body></html>", "", "null"])
    if how == 4:
        return _dumps({"code": -1003, "msg": "Too many requests"})
    if how == 5:
        marker = "\u0000MARK\u0000"
        obj["lastUpdateId"] = marker
        return _dumps(obj).replace(json.dumps(marker), rng.choice(BAD_INTS), 1)
    return '{"lastUpdateId":1,"x":' + nested(rng.randint(1000, 3000)) + "}"


def any_json(rng: random.Random, text: str) -> str:
    """Any JSON document mutated at random: bytes flipped, a splice, or one value swapped
    for a hostile one (it may stay valid)."""
    how = rng.randrange(3)
    if how == 0:
        b = bytearray(text.encode())
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return b.decode("utf-8", "replace")
    if how == 1:
        i, j = sorted(rng.randrange(len(text)) for _ in range(2))
        return text[:i] + text[j:]
    obj = json.loads(text)
    path = rng.choice(list(_paths(obj)))
    if not path:
        return rng.choice(HOSTILE_VALUES)
    marker = "\u0000MARK\u0000"
    node = obj
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = marker
    return _dumps(obj).replace(json.dumps(marker), rng.choice(HOSTILE_VALUES), 1)


def any_snapshot(rng: random.Random, snapshot: str) -> str:
    """A REST depth snapshot mutated at random (it may stay valid)."""
    how = rng.randrange(4)
    if how == 0:
        b = bytearray(snapshot.encode())
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return b.decode("utf-8", "replace")
    if how == 1:
        i, j = sorted(rng.randrange(len(snapshot)) for _ in range(2))
        return snapshot[:i] + snapshot[j:]
    if how == 2:
        obj = json.loads(snapshot)
        marker = "\u0000MARK\u0000"
        path = rng.choice(
            [
                ("lastUpdateId",),
                *((s, i, j) for s in ("bids", "asks") for i in range(3) for j in range(2)),
            ]
        )
        node = obj
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = marker
        return _dumps(obj).replace(json.dumps(marker), rng.choice(HOSTILE_VALUES), 1)
    return invalid_snapshot(rng, snapshot)


# -- the run ---------------------------------------------------------------------------------


class RefBook:
    """Binance's procedure with plain dicts over the clean frames only."""

    def __init__(self, snapshot: str) -> None:
        snap = json.loads(snapshot)
        self.asks = {float(p): float(q) for p, q in snap["asks"]}
        self.bids = {float(p): float(q) for p, q in snap["bids"]}
        self.update_id = snap["lastUpdateId"]
        self.tops: dict[int, tuple[float, ...]] = {}
        self._snapshot: tuple[int, str] = (-1, "")

    def apply(self, data: dict) -> None:
        if data["u"] <= self.update_id:
            return
        assert data["U"] <= self.update_id + 1, "the recording itself has a gap"
        for side, book in (("a", self.asks), ("b", self.bids)):
            for p, q in data[side]:
                if float(q) == 0:
                    book.pop(float(p), None)
                else:
                    book[float(p)] = float(q)
        self.update_id = data["u"]
        self.tops[self.update_id] = _top(self.asks, self.bids, DEPTH)

    def snapshot(self) -> str:
        """The book as a REST snapshot (kept per update id: a feed waiting for the
        rebuild to pass its buffered diffs asks after every frame)."""
        if self._snapshot[0] != self.update_id:

            def side(book: dict[float, float]) -> list[list[str]]:
                return [[repr(p), repr(q)] for p, q in book.items()]

            text = _dumps(
                {"lastUpdateId": self.update_id, "bids": side(self.bids), "asks": side(self.asks)}
            )
            self._snapshot = (self.update_id, text)
        return self._snapshot[1]


@dataclass
class Run:
    records: list[Record] = field(default_factory=list)
    dead: Counter[str] = field(default_factory=Counter)  # dead letters by kind
    ref: RefBook | None = None
    frames: int = 0
    snapshots: Counter[str] = field(default_factory=Counter)  # outcomes

    def market(self) -> list[Record]:
        """The records a consumer reads: books, trades, quotes (no gaps, no dead letters)."""
        return [r for r in self.records if type(r) in (Book, Trade, Quote)]

    def of(self, kind: type) -> list:
        return [r for r in self.records if type(r) is kind]


def play(
    rec: Recording,
    inject: dict[int, list[str]] | None = None,
    *,
    impl: str = book_mod.DEFAULT_IMPL,
    max_id_jump: int = DEFAULT_MAX_ID_JUMP,
    snapshots: dict[int, str] | None = None,
) -> Run:
    """Feed ``rec``'s frames, ``inject[i]`` before frame ``i``; answer each snapshot request
    after the frame that made it from the rebuild (or ``snapshots[n]`` for the n-th request,
    0-based, a hostile answer: the request then stays open for the next frame)."""
    run = Run(ref=RefBook(rec.snapshot))
    ref = run.ref
    asked: list[str] = []
    saved = book_mod.DEFAULT_IMPL
    book_mod.DEFAULT_IMPL = impl
    try:
        feed = BinanceFeed(
            (SYMBOL,), STREAMS, request_snapshot=asked.append, max_id_jump=max_id_jump
        )
    finally:
        book_mod.DEFAULT_IMPL = saved
    out = run.records
    n_requests = 0
    pending = False
    inject = inject or {}
    for i, frame in enumerate(rec.frames):
        for bad in inject.get(i, ()):
            feed.handle(bad, i, out)
            run.frames += 1
        feed.handle(frame, i, out)
        run.frames += 1
        if "@depth" in frame[:40]:
            ref.apply(json.loads(frame)["data"])
        pending = pending or bool(asked)
        asked.clear()
        if pending:  # answered after the frame that asked; stale or refused: ask again
            hostile = snapshots or {}
            body = hostile[n_requests] if n_requests in hostile else ref.snapshot()
            n_requests += 1
            outcome = feed.on_snapshot(SYMBOL, body, i, out)
            run.snapshots[outcome] += 1
            pending = outcome in ("stale", "refused")
    feed.flush(out)
    feed.release_held(out)
    for r in out:
        if type(r) is DeadLetter:
            run.dead[dead_letter_kind(r.reason)] += 1
    return run


def book_matches(levels: tuple[float, ...], ref: tuple[float, ...]) -> bool:
    return len(levels) == len(ref) and all(
        (math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(levels, ref, strict=True)
    )


def out_of_range(run: Run) -> list[str]:
    """Records no valid frame could give: a NaN, inf or negative value, an int beyond
    int64, a crossed book."""
    out: list[str] = []
    for r in run.market():
        values = r.levels if type(r) is Book else r[3:7] if type(r) is Quote else r[3:5]
        if any(not (math.isnan(v) or (math.isfinite(v) and v >= 0)) for v in values):
            out.append(f"{type(r).__name__} with a value out of range: {r}")
        if type(r) is Trade and not (r.price > 0 and r.qty > 0):
            out.append(f"trade with a price or quantity <= 0: {r}")
        if type(r) is Book and r.levels[2 * DEPTH] >= r.levels[0]:
            out.append(f"crossed book at u={r.update_id}")
        if not all(type(v) is not int or -INT64 <= v < INT64 for v in r):
            out.append(f"{type(r).__name__} with an int beyond int64")
    return out


def problems(run: Run, clean: Run) -> list[str]:
    """What in ``run`` differs from what valid frames may give: each book equals the
    rebuild at its update id, the trades are exactly the clean run's (none lost or
    doubled), every quote is one of the clean run's, and every value is in range."""
    out = out_of_range(run)
    assert run.ref is not None
    for b in run.of(Book):
        ref = run.ref.tops.get(b.update_id)
        if ref is None or not book_matches(b.levels, ref):
            out.append(f"book at u={b.update_id} differs from the rebuild")
    trades = [t[:8] for t in run.of(Trade)]
    want = [t[:8] for t in clean.of(Trade)]
    if trades != want:
        out.append(f"trades differ: {len(trades)} vs {len(want)} in the clean run")
    quotes = {q[:7] for q in clean.of(Quote)}
    out += [
        f"quote {q.update_id} not in the clean run" for q in run.of(Quote) if q[:7] not in quotes
    ]
    return out


def gap_kinds(run: Run) -> Counter[str]:
    return Counter(g.reason for g in run.of(Gap) if g.end_ts is None)
