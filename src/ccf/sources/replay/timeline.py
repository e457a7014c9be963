"""Recordings as one replayable market: timeline, order book, candles.

Recorded lines (``<recv ns> <frame>``, see :mod:`ccf.sources.recording`) are
grouped by symbol, cut to begin at the symbol's REST snapshot, and merged into
one list ordered by exchange event time. :class:`Market` then plays any pass
of that list: pass 0 sends the recorded payload bytes untouched, later passes
shift times, trade ids and depth update ids so that a client following
Binance's snapshot + diff procedure never sees a gap, because each pass opens
with one synthetic diff that turns the book back into the start snapshot.

A recorded frame looks like::

    {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255208,
     "s":"BTCUSDT","U":50093239189,"u":50093239202,"b":[["61737.63000000","0.00000000"]],"a":[]}}
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
import statistics
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccf.sources.recording import read_frames

try:  # orjson is several times faster; the stdlib keeps the module importable without it
    import orjson

    loads = orjson.loads

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - exercised only without orjson
    import json

    loads = json.loads

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


log = logging.getLogger(__name__)

NS_PER_MS = 1_000_000
PASS_STEP_MS = 100  # pause between passes: one diff-depth interval
ZERO_QTY = "0.00000000"
DEPTH, TRADE, BOOK_TICKER = "depth", "trade", "bookTicker"
_KIND_BY_EVENT = {"depthUpdate": DEPTH, "trade": TRADE}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A REST ``/api/v3/depth`` answer: levels keep their wire strings."""

    last_update_id: int
    bids: tuple[tuple[str, str], ...]
    asks: tuple[tuple[str, str], ...]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Snapshot:
        return cls(
            int(d["lastUpdateId"]),
            tuple((p, q) for p, q in d["bids"]),
            tuple((p, q) for p, q in d["asks"]),
        )


@dataclass(frozen=True, slots=True)
class Frame:
    """One recorded stream payload, ids as they must be sent in pass 0.

    ``first_id``/``last_id`` are U/u for depth, t for trades, u for bookTicker.
    ``patched`` marks a diff whose U was raised to ``prev u + 1`` (the diff that
    straddles the snapshot), so its payload must be re-serialized.
    """

    ts_ns: int
    symbol: str
    kind: str
    payload: bytes
    first_id: int
    last_id: int
    patched: bool = False


@dataclass(frozen=True, slots=True)
class Resync:
    """A synthetic diff with ids [first_id, last_id] that turns the book into ``snapshot``."""

    ts_ns: int
    symbol: str
    snapshot: Snapshot
    first_id: int
    last_id: int
    kind: str = DEPTH


Item = Frame | Resync


@dataclass(slots=True)
class TradeTape:
    """A symbol's recorded trades (pass 0) as columns, sorted by trade time, for klines."""

    times_ms: list[int] = field(default_factory=list)
    prices: list[float] = field(default_factory=list)
    qtys: list[float] = field(default_factory=list)
    taker_buy: list[bool] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """What a pass shift needs per symbol: the start snapshot and the id ranges."""

    start: Snapshot
    last_diff_id: int  # u of the last diff in the recording
    id_step: int  # depth/bookTicker ids advance this much per pass
    trade_step: int  # trade ids advance this much per pass
    frames: int


@dataclass(frozen=True, slots=True)
class Timeline:
    """Every symbol's frames merged by event time (pass 0), plus loop geometry."""

    items: tuple[Item, ...]
    symbols: dict[str, SymbolInfo]
    tapes: dict[str, TradeTape]
    start_ns: int
    end_ns: int

    @property
    def period_ns(self) -> int:
        """Event-time shift from one pass to the next: duration plus a small step."""
        return (math.ceil((self.end_ns - self.start_ns) / NS_PER_MS) + PASS_STEP_MS) * NS_PER_MS

    def passes(self, loop: bool, max_passes: int = 0) -> Iterator[tuple[int, Item]]:
        """Yield ``(pass, item)``; passes after the first open with one Resync per symbol."""
        k = 0
        while True:
            if k:
                for sym, info in self.symbols.items():
                    if info.last_diff_id == info.start.last_update_id:
                        continue  # no diffs recorded: nothing to turn back
                    first = info.last_diff_id + 1 - info.id_step  # = previous pass's last u + 1
                    yield (
                        k,
                        Resync(self.start_ns, sym, info.start, first, info.start.last_update_id),
                    )
            for item in self.items:
                yield k, item
            k += 1
            if not loop or (max_passes and k >= max_passes):
                return


# --- loading -----------------------------------------------------------------


@dataclass(slots=True)
class _Rec:
    recv_ns: int
    kind: str  # depth | trade | bookTicker | snapshot
    event_ms: int = 0
    first_id: int = 0
    last_id: int = 0
    payload: bytes = b""
    snapshot: Snapshot | None = None
    trade: tuple[int, float, float, bool] | None = None  # T, price, qty, buyer is maker


def _payload_bytes(text: str, stream: str, data: dict[str, Any]) -> bytes:
    """The ``data`` part of a combined frame, sliced from the text when it has the usual shape."""
    prefix = f'{{"stream":"{stream}","data":'
    if text.startswith(prefix) and text.endswith("}"):
        return text[len(prefix) : -1].encode()
    return dumps(data)


def _parse_line(recv_ns: int, text: str) -> tuple[str, _Rec] | None:
    """``(symbol, record)`` for a usable line; ``("", snapshot)`` when the symbol is unknown."""
    obj = loads(text)
    if not isinstance(obj, dict):
        return None
    if "lastUpdateId" in obj and "bids" in obj:
        return "", _Rec(recv_ns, "snapshot", snapshot=Snapshot.from_json(obj))
    if "stream" in obj and isinstance(obj.get("data"), dict):
        stream, data = obj["stream"], obj["data"]
        sym, _, suffix = stream.partition("@")
        kind = {"trade": TRADE, "bookTicker": BOOK_TICKER}.get(suffix)
        if suffix.startswith("depth") and data.get("e") == "depthUpdate":
            kind = DEPTH
        payload = _payload_bytes(text, stream, data)
    else:  # a raw (non-combined) payload, as a /ws/<stream> recording would hold
        data = obj
        kind = _KIND_BY_EVENT.get(data.get("e", ""))
        if kind is None and {"u", "s", "b", "a"} <= data.keys():
            kind = BOOK_TICKER
        sym = str(data.get("s", "")).lower()
        payload = text.encode()
    if kind is None or not sym:
        return None
    if kind == DEPTH:
        rec = _Rec(recv_ns, kind, data["E"], data["U"], data["u"], payload)
    elif kind == TRADE:
        taker = (data["T"], float(data["p"]), float(data["q"]), bool(data["m"]))
        rec = _Rec(recv_ns, kind, data["E"], data["t"], data["t"], payload, trade=taker)
    else:
        rec = _Rec(recv_ns, kind, 0, data["u"], data["u"], payload)
    return sym, rec


def _owner(recs: list[tuple[str, _Rec]], snap: Snapshot) -> str | None:
    """The symbol a file's snapshot line belongs to, told by the file's other frames."""
    syms = {s for s, _ in recs if s}
    if len(syms) == 1:
        return syms.pop()
    fits = {  # the diff sequence that brackets the snapshot id
        s
        for s, r in recs
        if s and r.kind == DEPTH and r.first_id <= snap.last_update_id + 1 <= r.last_id + 1
    }
    return fits.pop() if len(fits) == 1 else None


def _read_grouped(paths: Sequence[Path]) -> dict[str, list[_Rec]]:
    by_symbol: dict[str, list[_Rec]] = {}
    ignored: Counter[str] = Counter()
    for path in paths:
        recs: list[tuple[str, _Rec]] = []
        for recv_ns, text in read_frames(path):
            parsed = _parse_line(recv_ns, text)
            if parsed is None:
                ignored[str(path)] += 1
            else:
                recs.append(parsed)
        for sym, rec in recs:
            if rec.snapshot is not None:
                owner = _owner(recs, rec.snapshot)
                if owner is None:
                    log.warning("part=exchange snapshot without a symbol file=%s skipped", path)
                    continue
                sym = owner
            by_symbol.setdefault(sym, []).append(rec)
    for path, n in ignored.items():
        log.info(
            "part=exchange ignored frames file=%s count=%d (not depth/trade/bookTicker)", path, n
        )
    return by_symbol


def _median_offset(recs: list[_Rec]) -> int:
    """Median of exchange time minus receive time: puts bookTicker (no E) among the others."""
    diffs = [r.event_ms * NS_PER_MS - r.recv_ns for r in recs if r.kind in (DEPTH, TRADE)]
    return int(statistics.median(diffs)) if diffs else 0


def _build_symbol(sym: str, recs: list[_Rec]) -> tuple[list[Item], SymbolInfo, TradeTape]:
    """Cut a symbol's records to start at its snapshot, repair gaps from later snapshots."""
    offset = _median_offset(recs)
    snaps = [i for i, r in enumerate(recs) if r.kind == "snapshot"]
    if snaps:
        s0 = snaps[0]
        start = recs[s0].snapshot
        assert start is not None
    else:
        first = next((r for r in recs if r.kind == DEPTH), None)
        start = Snapshot(first.first_id - 1 if first else 0, (), ())
        s0 = 0
        log.warning("part=exchange no depth snapshot symbol=%s book starts empty", sym)
    items: list[Item] = []
    tape = TradeTape()
    prev_u = start.last_update_id
    last_ts: dict[str, int] = {}
    max_book_id = prev_u
    first_t = last_t = None
    dropped = 0
    for i, r in enumerate(recs):
        if r.kind == "snapshot":
            continue
        ts = r.event_ms * NS_PER_MS if r.kind != BOOK_TICKER else r.recv_ns + offset
        ts = max(ts, last_ts.get(r.kind, ts))  # keep each stream's own order under the merge
        last_ts[r.kind] = ts
        if r.kind == DEPTH:
            if r.first_id > prev_u + 1:
                snap = next(
                    (
                        recs[j].snapshot
                        for j in snaps
                        if j > s0 and recs[j].snapshot.last_update_id >= r.first_id - 1  # type: ignore[union-attr]
                    ),
                    None,
                )
                if snap is not None and snap.last_update_id > prev_u:
                    items.append(Resync(ts, sym, snap, prev_u + 1, snap.last_update_id))
                    prev_u = snap.last_update_id
                else:
                    log.warning(
                        "part=exchange recorded gap symbol=%s after_u=%d next_U=%d kept",
                        sym,
                        prev_u,
                        r.first_id,
                    )
                    prev_u = r.first_id - 1
            if r.last_id <= prev_u:
                dropped += 1
                continue
            first = max(r.first_id, prev_u + 1)
            items.append(Frame(ts, sym, DEPTH, r.payload, first, r.last_id, first != r.first_id))
            prev_u = r.last_id
            max_book_id = max(max_book_id, prev_u)
        elif i > s0 or not snaps:
            items.append(Frame(ts, sym, r.kind, r.payload, r.first_id, r.last_id))
            if r.kind == BOOK_TICKER:
                max_book_id = max(max_book_id, r.last_id)
            elif r.trade is not None:
                first_t = r.first_id if first_t is None else first_t
                last_t = r.last_id
                t_ms, price, qty, maker = r.trade
                tape.times_ms.append(t_ms)
                tape.prices.append(price)
                tape.qtys.append(qty)
                tape.taker_buy.append(not maker)
    if tape.times_ms != sorted(tape.times_ms):
        cols = sorted(zip(tape.times_ms, tape.prices, tape.qtys, tape.taker_buy, strict=True))
        tape = TradeTape(*(list(c) for c in zip(*cols, strict=True)))
    trade_step = (last_t - first_t + 1) if first_t is not None and last_t is not None else 0
    info = SymbolInfo(start, prev_u, max_book_id - start.last_update_id + 1, trade_step, len(items))
    log.info(
        "part=exchange timeline symbol=%s frames=%d stale_diffs_dropped=%d snapshot_id=%d "
        "last_u=%d",
        sym,
        len(items),
        dropped,
        start.last_update_id,
        prev_u,
    )
    return items, info, tape


def load_timeline(paths: Sequence[Path]) -> Timeline:
    """Load recordings (any order of files per symbol is kept as given) into a Timeline."""
    grouped = _read_grouped(paths)
    if not grouped:
        raise ValueError(f"no replayable frames in {[str(p) for p in paths]}")
    merged: list[Item] = []
    symbols: dict[str, SymbolInfo] = {}
    tapes: dict[str, TradeTape] = {}
    for sym in sorted(grouped):
        items, symbols[sym], tapes[sym] = _build_symbol(sym, grouped[sym])
        merged.extend(items)
    merged.sort(key=lambda it: it.ts_ns)  # stable: ties keep per-symbol file order
    if not merged:
        raise ValueError("the recordings hold no frames after their snapshots")
    return Timeline(tuple(merged), symbols, tapes, merged[0].ts_ns, merged[-1].ts_ns)


# --- the exchange's order book -----------------------------------------------


class Book:
    """Price levels with their wire strings, answering top N per side in order."""

    __slots__ = ("_bids", "_asks", "_bid_keys", "_ask_keys", "last_update_id")

    def __init__(self, snap: Snapshot) -> None:
        self.reset(snap)

    def reset(self, snap: Snapshot) -> None:
        self._bids = {float(p): (p, q) for p, q in snap.bids if float(q)}
        self._asks = {float(p): (p, q) for p, q in snap.asks if float(q)}
        self._bid_keys = sorted(self._bids)
        self._ask_keys = sorted(self._asks)
        self.last_update_id = snap.last_update_id

    @staticmethod
    def _apply_side(
        levels: dict[float, tuple[str, str]], keys: list[float], upd: list[list[str]]
    ) -> None:
        for p, q in upd:
            fp = float(p)
            if float(q) == 0.0:
                if levels.pop(fp, None) is not None:
                    del keys[bisect_left(keys, fp)]
            else:
                if fp not in levels:
                    insort(keys, fp)
                levels[fp] = (p, q)

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self._apply_side(self._bids, self._bid_keys, bids)
        self._apply_side(self._asks, self._ask_keys, asks)

    def top(self, n: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        bids = [self._bids[k] for k in reversed(self._bid_keys[-n:])] if n > 0 else []
        asks = [self._asks[k] for k in self._ask_keys[:n]]
        return bids, asks

    def levels(self) -> tuple[int, int]:
        return len(self._bids), len(self._asks)

    def diff_to(self, snap: Snapshot) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The level changes that turn this book into ``snap`` (removed levels get qty 0)."""

        def side(
            cur: dict[float, tuple[str, str]], target: tuple[tuple[str, str], ...], desc: bool
        ):
            want = {float(p): (p, q) for p, q in target if float(q)}
            out = [(p, ZERO_QTY) for k, (p, _) in cur.items() if k not in want]
            out += [
                (p, q) for k, (p, q) in want.items() if k not in cur or float(cur[k][1]) != float(q)
            ]
            out.sort(key=lambda lv: float(lv[0]), reverse=desc)
            return out

        return side(self._bids, snap.bids, True), side(self._asks, snap.asks, False)


# --- playing passes ------------------------------------------------------------


@dataclass(slots=True)
class Emitted:
    """One frame leaving the market: ``payload`` is the raw (unwrapped) stream payload."""

    symbol: str
    kind: str
    payload: bytes
    data: dict[str, Any] | None  # parsed payload when it was needed anyway
    synthetic: bool = False


class Market:
    """The exchange's state while it plays a Timeline: books, last ids, renders passes."""

    def __init__(self, tl: Timeline) -> None:
        self.timeline = tl
        self.books = {s: Book(i.start) for s, i in tl.symbols.items()}
        self.last_trade_id: dict[str, int | None] = dict.fromkeys(tl.symbols)
        self.pass_index = 0
        self._dt_ms = 0

    def _id_shift(self, sym: str) -> int:
        return self.pass_index * self.timeline.symbols[sym].id_step

    def step(self, k: int, item: Item) -> Emitted:
        """Apply ``item`` of pass ``k`` to the book and render what the stream sends."""
        if k != self.pass_index:
            self.pass_index = k
            self._dt_ms = k * self.timeline.period_ns // NS_PER_MS
        sym = item.symbol
        if isinstance(item, Resync):
            return self._resync(item)
        shift = self._id_shift(sym)
        if item.kind == DEPTH:
            data = loads(item.payload)
            book = self.books[sym]
            book.apply(data["b"], data["a"])
            book.last_update_id = item.last_id + shift
            if k == 0 and not item.patched:
                return Emitted(sym, DEPTH, item.payload, data)
            data["E"] += self._dt_ms
            data["U"] = item.first_id + shift
            data["u"] = book.last_update_id
            return Emitted(sym, DEPTH, dumps(data), data)
        if item.kind == TRADE:
            tshift = k * self.timeline.symbols[sym].trade_step
            self.last_trade_id[sym] = item.first_id + tshift
            if k == 0:
                return Emitted(sym, TRADE, item.payload, None)
            data = loads(item.payload)
            data["E"] += self._dt_ms
            data["T"] += self._dt_ms
            data["t"] += tshift
            return Emitted(sym, TRADE, dumps(data), data)
        if k == 0:
            return Emitted(sym, item.kind, item.payload, None)
        data = loads(item.payload)
        data["u"] += shift
        return Emitted(sym, item.kind, dumps(data), data)

    def _resync(self, item: Resync) -> Emitted:
        sym, shift = item.symbol, self._id_shift(item.symbol)
        book = self.books[sym]
        bids, asks = book.diff_to(item.snapshot)
        book.reset(item.snapshot)
        book.last_update_id = item.last_id + shift
        data = {
            "e": "depthUpdate",
            "E": (item.ts_ns + self.pass_index * self.timeline.period_ns) // NS_PER_MS,
            "s": sym.upper(),
            "U": item.first_id + shift,
            "u": book.last_update_id,
            "b": bids,
            "a": asks,
        }
        return Emitted(sym, DEPTH, dumps(data), data, synthetic=True)

    def depth(self, sym: str, limit: int) -> dict[str, Any]:
        """The REST snapshot of the current book."""
        book = self.books[sym]
        bids, asks = book.top(limit)
        return {"lastUpdateId": book.last_update_id, "bids": bids, "asks": asks}

    def stale_depth(self, sym: str, limit: int) -> dict[str, Any]:
        """The snapshot the timeline started from (pass 0 ids): older than any live diff."""
        snap = self.timeline.symbols[sym].start
        return {
            "lastUpdateId": snap.last_update_id,
            "bids": list(snap.bids[:limit]),
            "asks": list(snap.asks[:limit]),
        }

    def partial(self, sym: str, levels: int) -> bytes:
        """A ``<sym>@depth<levels>`` payload from the current book (no e/E/s, like spot)."""
        return dumps(self.depth(sym, levels))

    @staticmethod
    def agg_trade(em: Emitted) -> bytes:
        """Each trade as its own aggregate trade (a = f = l = trade id)."""
        d = em.data if em.data is not None else loads(em.payload)
        t = d["t"]
        agg = {
            "e": "aggTrade",
            "E": d["E"],
            "s": d["s"],
            "a": t,
            "p": d["p"],
            "q": d["q"],
            "f": t,
            "l": t,
            "T": d["T"],
            "m": d["m"],
            "M": True,
        }
        return dumps(agg)


# --- candles -----------------------------------------------------------------

INTERVALS_MS = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}
_WEEK_ORIGIN_MS = 4 * 86_400_000  # weekly candles open on Monday; 1970-01-01 was a Thursday

# open_ms, open, high, low, close, volume, quote volume, trades, taker-buy volume, taker-buy quote
Bar = tuple[int, float, float, float, float, float, float, int, float, float]


def bucket_open(t_ms: int, iv_ms: int) -> int:
    origin = _WEEK_ORIGIN_MS if iv_ms == INTERVALS_MS["1w"] else 0
    return t_ms - (t_ms - origin) % iv_ms


def _merge_bar(a: Bar, b: Bar) -> Bar:
    """``a`` then ``b`` as one bar (b is later)."""
    return (
        a[0],
        a[1],
        max(a[2], b[2]),
        min(a[3], b[3]),
        b[4],
        a[5] + b[5],
        a[6] + b[6],
        a[7] + b[7],
        a[8] + b[8],
        a[9] + b[9],
    )


def tape_bars(
    tape: TradeTape, iv_ms: int, shift_ms: int, lo: int = 0, hi: int | None = None
) -> list[Bar]:
    """Bars of ``iv_ms`` from trades of indexes [lo, hi), trade times shifted by ``shift_ms``."""
    hi = len(tape.times_ms) if hi is None else hi
    bars: list[Bar] = []
    cur: list[Any] | None = None
    times, prices, qtys, buys = tape.times_ms, tape.prices, tape.qtys, tape.taker_buy
    for i in range(lo, hi):
        t = bucket_open(times[i] + shift_ms, iv_ms)
        p, q = prices[i], qtys[i]
        bq = q if buys[i] else 0.0
        if cur is None or cur[0] != t:
            if cur is not None:
                bars.append(tuple(cur))  # type: ignore[arg-type]
            cur = [t, p, p, p, p, q, p * q, 1, bq, p * bq]
        else:
            cur[2] = max(cur[2], p)
            cur[3] = min(cur[3], p)
            cur[4] = p
            cur[5] += q
            cur[6] += p * q
            cur[7] += 1
            cur[8] += bq
            cur[9] += p * bq
    if cur is not None:
        bars.append(tuple(cur))  # type: ignore[arg-type]
    return bars


def aggregate_bars(bars: Sequence[Bar], iv_ms: int) -> list[Bar]:
    """Re-bucket sorted bars into ``iv_ms`` bars (a coarser or equal interval)."""
    out: list[Bar] = []
    for b in bars:
        t = bucket_open(b[0], iv_ms)
        if out and out[-1][0] == t:
            out[-1] = _merge_bar(out[-1], b)
        else:
            out.append((t, *b[1:]))  # type: ignore[arg-type]
    return out


def load_kline_csv(path: Path) -> tuple[str, list[Bar]]:
    """``(symbol, 1m bars)`` from ``SYMBOL-1m-...csv[.gz]``.

    Columns: open_time_ms,open,high,low,close,volume.

    The file has no quote volume, trade count or taker volume: quote volume is
    estimated at the typical price (h+l+c)/3, the others are 0.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    bars: list[Bar] = []
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        for row in csv.DictReader(f):
            o, h, lo, c, v = (float(row[k]) for k in ("open", "high", "low", "close", "volume"))
            bars.append(
                (int(row["open_time_ms"]), o, h, lo, c, v, v * (h + lo + c) / 3, 0, 0.0, 0.0)
            )
    bars.sort()
    return path.name.split("-", 1)[0].lower(), bars


def select_window(
    bars: Sequence[Bar], iv_ms: int, start: int | None, end: int | None, limit: int, now_ms: int
) -> list[Bar]:
    """Binance kline paging over sorted, merged bars; empty intervals between bars are filled.

    With ``start`` the oldest ``limit`` bars opening at or after it, else the
    newest ``limit`` bars opening at or before ``end`` (and never after now).
    """
    hi = now_ms if end is None else min(end, now_ms)
    lo = -(10**18) if start is None else start
    filled: list[Bar] = []
    for b in bars:
        if not lo <= b[0] <= hi:
            continue
        while filled and filled[-1][0] + iv_ms < b[0]:
            c = filled[-1][4]
            filled.append((filled[-1][0] + iv_ms, c, c, c, c, 0.0, 0.0, 0, 0.0, 0.0))
        filled.append(b)
    return filled[:limit] if start is not None else filled[-limit:]


def merge_sorted_bars(groups: Sequence[Sequence[Bar]]) -> list[Bar]:
    """Merge bar lists; bars with the same open time (pass boundaries) combine in order."""
    out: list[Bar] = []
    for b in sorted((b for g in groups for b in g), key=lambda b: b[0]):
        if out and out[-1][0] == b[0]:
            out[-1] = _merge_bar(out[-1], b)
        else:
            out.append(b)
    return out


def bar_row(b: Bar, iv_ms: int) -> list[Any]:
    """The 12-column Binance kline array."""
    f = "{:.8f}".format
    return [
        b[0],
        f(b[1]),
        f(b[2]),
        f(b[3]),
        f(b[4]),
        f(b[5]),
        b[0] + iv_ms - 1,
        f(b[6]),
        b[7],
        f(b[8]),
        f(b[9]),
        "0",
    ]


def window_bounds(
    iv_ms: int, start: int | None, end: int | None, limit: int, now_ms: int
) -> tuple[int, int]:
    """Trade-time range [lo, hi) that can hold the answer's bars."""
    if start is not None:
        lo = bucket_open(start, iv_ms)
        hi = lo + (limit + 1) * iv_ms
        if end is not None:
            hi = min(hi, end + iv_ms)
    else:
        top = bucket_open(now_ms if end is None else min(end, now_ms), iv_ms)
        lo, hi = top - limit * iv_ms, top + iv_ms
    return lo, min(hi, now_ms + 1)


class Candles:
    """Klines from the trades the market has played so far (all passes), plus optional 1m CSVs.

    Bars of a finished pass never change, so they are cached per (symbol, interval, pass).
    """

    _CACHE_MAX = 4096

    def __init__(self, market: Market, csv_bars: dict[str, list[Bar]] | None = None) -> None:
        self._market = market
        self._csv = csv_bars or {}
        self._cache: dict[tuple[str, int, int], list[Bar]] = {}

    def _pass_bars(self, sym: str, iv_ms: int, k: int, now_ms: int) -> list[Bar]:
        tape = self._market.timeline.tapes[sym]
        shift = k * self._market.timeline.period_ns // NS_PER_MS
        if k < self._market.pass_index:
            key = (sym, iv_ms, k)
            if key not in self._cache:
                if len(self._cache) >= self._CACHE_MAX:
                    self._cache.clear()
                self._cache[key] = tape_bars(tape, iv_ms, shift)
            return self._cache[key]
        return tape_bars(tape, iv_ms, shift, 0, bisect_right(tape.times_ms, now_ms - shift))

    def rows(
        self, sym: str, iv_ms: int, start: int | None, end: int | None, limit: int, now_ms: int
    ) -> list[list[Any]]:
        csv_bars = self._csv.get(sym)
        # CSV history may lie after the recording: it is served whatever the replay clock says
        horizon = max(now_ms, csv_bars[-1][0] + 59_999) if csv_bars else now_ms
        lo, hi = window_bounds(iv_ms, start, end, limit, horizon)
        groups: list[Sequence[Bar]] = []
        tape = self._market.timeline.tapes.get(sym)
        if tape is not None and tape.times_ms:
            period = self._market.timeline.period_ns // NS_PER_MS
            k_lo = max(0, (lo - tape.times_ms[-1]) // period)
            k_hi = min(self._market.pass_index, (hi - tape.times_ms[0]) // period)
            groups += [self._pass_bars(sym, iv_ms, k, now_ms) for k in range(k_lo, k_hi + 1)]
        if csv_bars and iv_ms % 60_000 == 0:
            i, j = bisect_left(csv_bars, (lo,)), bisect_left(csv_bars, (hi,))
            groups.append(aggregate_bars(csv_bars[i:j], iv_ms))
        bars = select_window(merge_sorted_bars(groups), iv_ms, start, end, limit, horizon)
        return [bar_row(b, iv_ms) for b in bars]
