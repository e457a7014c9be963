"""Streams Binance pushes once a second: 1000 ms diffs, partial depth, tickers, avgPrice.

binance_formats.md 2.1-2.2 and web-socket-streams.md give each stream its
cadence. ``@depth@100ms`` and ``@depthN@100ms`` go out with every recorded
diff (the recordings hold the 100 ms diffs); the streams here go out at each
whole second of exchange time, at the first frame played at or after it,
with ``E`` = that second:

- ``<s>@depth`` / ``<s>@depth@1000ms``: one diff holding every change of the
  second (``U`` of its first diff, ``u`` of its last, each level's last
  quantity), so a client following Binance's procedure (snapshot, drop
  ``u <= lastUpdateId``, then ``U = prev u + 1``) builds the same book. A
  second whose diffs include one the ``skip_update_every`` fault withholds is
  withheld too: the client sees a gap, as on the 100 ms stream.
- ``<s>@depthN`` / ``<s>@depthN@1000ms``: the top N levels of the book at
  that moment.
- ``<s>@ticker``, ``<s>@miniTicker``, ``<s>@avgPrice``, and the all-market
  ``!ticker@arr`` / ``!miniTicker@arr`` (only the symbols that traded since
  their previous push, as on Binance): from :mod:`.stats`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ccf.sources.replay.book import Level
from ccf.sources.replay.market import Market
from ccf.sources.replay.stats import (
    AVG_PRICE_MINS,
    DAY_MS,
    Window,
    avg_price_event,
    mini_event,
    ticker_event,
)
from ccf.sources.replay.wire import dumps

SECOND_MS = 1000
_LEVELS = (5, 10, 20)
StatsFn = Callable[[str, int, int], Window]  # (symbol, span ms, now ms)


@dataclass(slots=True)
class _Pending:
    """The diffs of the current second, merged."""

    first_id: int
    last_id: int
    bids: dict[float, Level] = field(default_factory=dict)
    asks: dict[float, Level] = field(default_factory=dict)
    skipped: bool = False


def _never_traded(w: Window) -> bool:
    return w.count == 0 and w.last == 0


def _merge_side(into: dict[float, Level], levels: list[list[str]]) -> None:
    for p, q in levels:
        into[float(p)] = (p, q)


class SecondStreams:
    """What is due at each whole second; the player calls :meth:`tick` from ``due_ms`` on."""

    def __init__(self, market: Market, subs: Mapping[str, object], stats: StatsFn) -> None:
        self._market = market
        self._subs = subs
        self._stats = stats
        self._symbols = list(market.timeline.symbols)
        self._pending: dict[str, _Pending] = {}
        self._arr_seen: dict[tuple[str, str], tuple[int, int]] = {}  # -> (pass, trades)
        self.due_ms = -(1 << 62)

    def _wants_diffs(self, sym: str) -> bool:
        return bool(self._subs.get(f"{sym}@depth") or self._subs.get(f"{sym}@depth@1000ms"))

    def add_diff(self, sym: str, data: Mapping[str, Any], skipped: bool) -> None:
        """A diff just played (``data``: its payload) joins the current second's."""
        if not self._wants_diffs(sym):
            self._pending.pop(sym, None)
            return
        p = self._pending.get(sym)
        if p is None:
            p = self._pending[sym] = _Pending(data["U"], data["u"])
        p.last_id = data["u"]
        _merge_side(p.bids, data["b"])
        _merge_side(p.asks, data["a"])
        p.skipped |= skipped

    def tick(self, event_ms: int) -> list[tuple[str, bytes]]:
        """``(stream, payload)`` due at the second holding ``event_ms``, before its frame plays."""
        second = event_ms // SECOND_MS * SECOND_MS
        self.due_ms = second + SECOND_MS
        out: list[tuple[str, bytes]] = []
        for sym, p in self._pending.items():
            if p.skipped:
                continue
            payload = dumps(
                {
                    "e": "depthUpdate",
                    "E": second,
                    "s": sym.upper(),
                    "U": p.first_id,
                    "u": p.last_id,
                    "b": [p.bids[k] for k in sorted(p.bids, reverse=True)],
                    "a": [p.asks[k] for k in sorted(p.asks)],
                }
            )
            out += ((f"{sym}@depth", payload), (f"{sym}@depth@1000ms", payload))
        self._pending.clear()
        subs = self._subs
        for sym in self._symbols:
            for n in _LEVELS:
                names = [x for x in (f"{sym}@depth{n}", f"{sym}@depth{n}@1000ms") if subs.get(x)]
                if names:
                    payload = self._market.partial(sym, n)
                    out += ((name, payload) for name in names)
            self._tickers(sym, second, out)
        self._arrays(second, out)
        return out

    def _tickers(self, sym: str, second: int, out: list[tuple[str, bytes]]) -> None:
        subs = self._subs
        ticker, mini = subs.get(f"{sym}@ticker"), subs.get(f"{sym}@miniTicker")
        if ticker or mini:
            w = self._stats(sym, DAY_MS, second)
            if _never_traded(w):
                return  # no ticker before a symbol's first trade
            if ticker:
                book = self._market.books[sym].top(1)
                out.append((f"{sym}@ticker", dumps(ticker_event(sym, w, book, second))))
            if mini:
                out.append((f"{sym}@miniTicker", dumps(mini_event(sym, w, second))))
        if subs.get(f"{sym}@avgPrice"):
            w = self._stats(sym, AVG_PRICE_MINS * 60_000, second)
            out.append((f"{sym}@avgPrice", dumps(avg_price_event(sym, w, second))))

    def _arrays(self, second: int, out: list[tuple[str, bytes]]) -> None:
        for name in ("!ticker@arr", "!miniTicker@arr"):
            if not self._subs.get(name):
                continue
            rows = []
            for sym in self._symbols:
                played = (self._market.pass_index, self._market.played.get(sym, 0))
                if self._arr_seen.get((name, sym)) == played:
                    continue  # unchanged since its last push
                self._arr_seen[(name, sym)] = played
                w = self._stats(sym, DAY_MS, second)
                if _never_traded(w):
                    continue
                if name == "!ticker@arr":
                    rows.append(ticker_event(sym, w, self._market.books[sym].top(1), second))
                else:
                    rows.append(mini_event(sym, w, second))
            if rows:
                out.append((name, dumps(rows)))
