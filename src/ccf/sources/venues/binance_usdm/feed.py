"""Binance USD-M futures frames in, CCF records out.

The spot feed's machinery (one msgspec decode per frame, gap records, dead
letters, cadence) with the futures payloads and the futures diff rule
(developers.binance.com, USDⓈ-M "How to manage a local order book
correctly"): after a ``/fapi/v1/depth`` snapshot drop diffs with
``u < lastUpdateId``; the first diff applied must have
``U <= lastUpdateId <= u`` (or ``pu == lastUpdateId``: it follows the snapshot's
id exactly); from then on each diff's ``pu`` must equal the
previous diff's ``u``. Update ids are *not* contiguous on futures (one event
spans thousands of ids), which is why the spot rule ``U <= last + 1`` cannot
be used. A break writes a gap record and resyncs that symbol only.

bookTicker carries the exchange's event time here, so quotes get ``E`` as
their event time (spot quotes have none and use the receive time).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ccf.records import NS_PER_MS, Quote, Record
from ccf.sources.binance import schemas as spot_wire
from ccf.sources.binance.feed import BinanceFeed, SymbolState
from ccf.sources.venues.binance_usdm import schemas as wire

EXCHANGE = "binance_usdm"
BOOK_STREAMS = ("depth", "depth@0ms", "depth@100ms", "depth@250ms", "depth@500ms")

PAYLOADS: dict[str, type] = {
    "book": wire.DepthDiff,
    "trade": wire.TradeMsg,
    "quote": wire.BookTickerMsg,
    "candle": spot_wire.KlineMsg,
}
PAYLOADS_C = {**PAYLOADS, "book": wire.DepthDiffRaw}
_new = tuple.__new__


def stream_kind(stream: str) -> str:
    """``depth@0ms`` -> ``book``; KeyError for a stream this venue does not handle."""
    if stream in BOOK_STREAMS:
        return "book"
    if stream.startswith("kline_"):
        return "candle"
    return {"trade": "trade", "bookTicker": "quote"}[stream]


class FuturesSync:
    """The USD-M diff rule: ``pu`` continuity (see the module docstring)."""

    @staticmethod
    def stale(last_id: int, ev: Any, first: bool) -> bool:
        return ev.u < last_id if first else ev.u <= last_id

    @staticmethod
    def breaks(last_id: int, ev: Any, first: bool) -> str | None:
        if first:
            # The documented test is U <= lastUpdateId <= u. A snapshot whose id is exactly
            # the previous event's u (what the replay exchange serves) is followed by the
            # event with pu == lastUpdateId: continuous too.
            if ev.U > last_id and ev.pu != last_id:
                return (
                    f"first diff U={ev.U} after snapshot lastUpdateId={last_id}: "
                    "the diffs between are missing"
                )
            return None
        if ev.pu != last_id:
            return f"diff pu={ev.pu} != previous u={last_id}: the diffs between are missing"
        return None


class UsdmFeed(BinanceFeed):
    """Turns Binance USD-M combined-stream frames into records for a set of symbols."""

    exchange = EXCHANGE
    PAYLOADS = PAYLOADS
    PAYLOADS_C = PAYLOADS_C
    decode_frame = {
        k: msgspec.json.Decoder(spot_wire.Frame[t], strict=False).decode
        for k, t in PAYLOADS.items()
    }
    decode_payload = {k: msgspec.json.Decoder(t, strict=False).decode for k, t in PAYLOADS.items()}
    sync = FuturesSync()
    kind_of = staticmethod(stream_kind)
    # collect.max_id_jump is sized for spot's update ids (~700/s on the recordings);
    # USD-M's advance ~80,000/s: the same bound in time needs ~200x the ids
    ID_JUMP_SCALE = 200

    def __init__(self, *args: Any, max_id_jump: int = 1_000_000, **kwargs: Any) -> None:
        super().__init__(*args, max_id_jump=max_id_jump * self.ID_JUMP_SCALE, **kwargs)

    def _on_ticker(
        self, s: SymbolState, m: wire.BookTickerMsg, ts_recv: int, out: list[Record]
    ) -> None:
        ts = m.E * NS_PER_MS
        if self.open_gaps:
            self._resume(s, "quote", ts, ts_recv, out)
        s.last_ts["quote"] = ts
        out.append(_new(Quote, (EXCHANGE, s.symbol, m.u, m.b, m.B, m.a, m.A, ts, ts_recv)))
