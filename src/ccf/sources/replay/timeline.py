"""Recordings merged into one replayable timeline, plus the geometry of its loop passes.

Recording lines are grouped by symbol, cut to begin at the symbol's REST
snapshot, and merged into one list ordered by exchange event time. Passes
after the first replay that list shifted in time and ids
(:class:`~ccf.sources.replay.market.Market` renders them); each opens with one
synthetic diff per symbol that turns the book back into the start snapshot,
so a client following Binance's snapshot + diff procedure never sees a gap.

A USD-M futures recording (its diffs carry ``pu``) is recognised per symbol:
its update ids jump between events, so continuity is ``pu`` = the previous
``u`` (the first diff after the snapshot straddles it), and :attr:`SymbolInfo.futures`
tells the market to render ``pu`` and the player to serve ``@depth@0ms``.
"""

from __future__ import annotations

import gzip
import logging
import math
import statistics
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ccf.sources.recording import read_frames
from ccf.sources.replay.frames import SNAPSHOT, Frame, Item, Line, Resync, Snapshot, parse_line
from ccf.sources.replay.tape import TradeTape
from ccf.sources.replay.wire import BOOK_TICKER, DEPTH, NS_PER_MS, TRADE, loads

log = logging.getLogger(__name__)

PASS_STEP_MS = 100  # pause between passes: one diff-depth interval


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """What a pass shift needs per symbol: the start snapshot and the id ranges."""

    start: Snapshot
    last_diff_id: int  # u of the last diff in the recording
    id_step: int  # depth/bookTicker ids advance this much per pass
    trade_step: int  # trade ids advance this much per pass
    frames: int
    futures: bool = False  # a USD-M recording: diffs carry pu


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


def _owner(lines: list[tuple[str, Line]], snap: Snapshot) -> str | None:
    """The symbol a file's snapshot line belongs to, told by the file's other frames."""
    syms = {s for s, _ in lines if s}
    if len(syms) == 1:
        return syms.pop()
    fits = {  # the diff sequence that brackets the snapshot id
        s
        for s, r in lines
        if s and r.kind == DEPTH and r.first_id <= snap.last_update_id + 1 <= r.last_id + 1
    }
    return fits.pop() if len(fits) == 1 else None


def _read_file(path: Path, ignored: Counter[str]) -> list[tuple[str, Line]]:
    """A recording's usable lines; a file that cannot be read raises ValueError naming it."""
    lines: list[tuple[str, Line]] = []
    n = 0
    try:
        for n, (recv_ns, text) in enumerate(read_frames(path), 1):
            try:
                parsed = parse_line(recv_ns, text)
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(
                    f"{path}: frame {n} is not a Binance frame ({type(e).__name__}: {e})"
                ) from None
            if parsed is None:
                ignored[str(path)] += 1
            else:
                lines.append(parsed)
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not UTF-8 text in frame {n + 1} ({e.reason}); a recording holds "
            "'<ns> <json>' lines in UTF-8, optionally gzipped"
        ) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: a damaged gzip file at frame {n + 1} ({e})") from None
    return lines


def _read_grouped(paths: Sequence[Path]) -> dict[str, list[Line]]:
    by_symbol: dict[str, list[Line]] = {}
    ignored: Counter[str] = Counter()
    for path in paths:
        lines = _read_file(path, ignored)
        for sym, line in lines:
            if line.snapshot is not None:
                owner = _owner(lines, line.snapshot)
                if owner is None:
                    log.warning("part=exchange snapshot without a symbol file=%s skipped", path)
                    continue
                sym = owner
            by_symbol.setdefault(sym, []).append(line)
    for path, n in ignored.items():
        log.info(
            "part=exchange ignored frames file=%s count=%d (not depth/trade/bookTicker)", path, n
        )
    return by_symbol


def _median_offset(lines: list[Line]) -> int:
    """Median of exchange time minus receive time: puts bookTicker (no E) among the others."""
    diffs = [r.event_ms * NS_PER_MS - r.recv_ns for r in lines if r.kind in (DEPTH, TRADE)]
    return int(statistics.median(diffs)) if diffs else 0


def _build_symbol(sym: str, recs: list[Line]) -> tuple[list[Item], SymbolInfo, TradeTape]:
    """Cut a symbol's records to start at its snapshot, repair gaps from later snapshots."""
    offset = _median_offset(recs)
    snaps = [i for i, r in enumerate(recs) if r.kind == SNAPSHOT]
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
    futures = any(r.kind == DEPTH and b'"pu":' in r.payload for r in recs[:200])
    fresh = True  # no diff kept yet after the snapshot (futures rule)
    for i, r in enumerate(recs):
        if r.kind == SNAPSHOT:
            continue
        ts = r.event_ms * NS_PER_MS if r.kind != BOOK_TICKER else r.recv_ns + offset
        ts = max(ts, last_ts.get(r.kind, ts))  # keep each stream's own order under the merge
        last_ts[r.kind] = ts
        if r.kind == DEPTH and futures:
            if r.last_id < prev_u or (not fresh and r.last_id <= prev_u):
                dropped += 1
                continue
            pu = loads(r.payload)["pu"]
            if (r.first_id > prev_u if fresh else pu != prev_u) and pu != prev_u:
                log.warning(
                    "part=exchange recorded gap symbol=%s after_u=%d next_pu=%d kept",
                    sym,
                    prev_u,
                    pu,
                )
            fresh = False
            items.append(Frame(ts, sym, DEPTH, r.payload, r.first_id, r.last_id, False, r.stamps))
            prev_u = r.last_id
            max_book_id = max(max_book_id, prev_u)
        elif r.kind == DEPTH:
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
            patched = first != r.first_id
            items.append(Frame(ts, sym, DEPTH, r.payload, first, r.last_id, patched, r.stamps))
            prev_u = r.last_id
            max_book_id = max(max_book_id, prev_u)
        elif i > s0 or not snaps:
            items.append(Frame(ts, sym, r.kind, r.payload, r.first_id, r.last_id, False, r.stamps))
            if r.kind == BOOK_TICKER:
                max_book_id = max(max_book_id, r.last_id)
            elif r.trade is not None:
                if tape.ids and (r.first_id <= tape.ids[-1] or r.trade[0] < tape.times_ms[-1]):
                    # the tape must stay in id and time order: it is what REST pages through
                    log.warning(
                        "part=exchange trade out of order symbol=%s t=%d after=%d dropped",
                        sym,
                        r.first_id,
                        tape.ids[-1],
                    )
                    items.pop()
                    continue
                first_t = r.first_id if first_t is None else first_t
                last_t = r.last_id
                t_ms, price, qty, maker = r.trade
                tape.add(r.first_id, t_ms, price, qty, maker, ts // NS_PER_MS)
    tape.finish()
    trade_step = (last_t - first_t + 1) if first_t is not None and last_t is not None else 0
    info = SymbolInfo(
        start, prev_u, max_book_id - start.last_update_id + 1, trade_step, len(items), futures
    )
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
