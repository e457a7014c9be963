"""Recording lines as replayable items: snapshots, stream frames, synthetic resyncs.

A recording line (``<recv ns> <frame>``, see :mod:`ccf.sources.recording`)
holds a combined stream frame, a raw payload or a REST snapshot. A combined
frame looks like::

    {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255208,
     "s":"BTCUSDT","U":50093239189,"u":50093239202,"b":[["61737.63000000","0.00000000"]],"a":[]}}

Only the ``data`` part is kept, as bytes, so pass 0 can send it untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ccf.sources.replay.stamps import DEPTH_KEYS, TRADE_KEYS, Spans, find_spans
from ccf.sources.replay.wire import BOOK_TICKER, DEPTH, TRADE, dumps, loads

SNAPSHOT = "snapshot"
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
    straddles the snapshot), so its payload must be re-serialized. ``stamps``
    locates the E/T digits, for shifting times without re-serializing.
    """

    ts_ns: int
    symbol: str
    kind: str
    payload: bytes
    first_id: int
    last_id: int
    patched: bool = False
    stamps: Spans = ()


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
class Line:
    """One usable recording line, parsed once."""

    recv_ns: int
    kind: str  # depth | trade | bookTicker | snapshot
    event_ms: int = 0
    first_id: int = 0
    last_id: int = 0
    payload: bytes = b""
    snapshot: Snapshot | None = None
    trade: tuple[int, str, str, bool] | None = None  # T, price, qty (wire strings), buyer is maker
    stamps: Spans = ()


def _payload_bytes(text: str, stream: str, data: dict[str, Any]) -> bytes:
    """The ``data`` part of a combined frame, sliced from the text when it has the usual shape."""
    prefix = f'{{"stream":"{stream}","data":'
    if text.startswith(prefix) and text.endswith("}"):
        return text[len(prefix) : -1].encode()
    return dumps(data)


def parse_line(recv_ns: int, text: str) -> tuple[str, Line] | None:
    """``(symbol, line)`` for a usable line; ``("", snapshot)`` when the symbol is unknown."""
    obj = loads(text)
    if not isinstance(obj, dict):
        return None
    if "lastUpdateId" in obj and "bids" in obj:
        return "", Line(recv_ns, SNAPSHOT, snapshot=Snapshot.from_json(obj))
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
        stamps = find_spans(payload, DEPTH_KEYS, (data["E"],))
        line = Line(recv_ns, kind, data["E"], data["U"], data["u"], payload, stamps=stamps)
    elif kind == TRADE:
        taker = (data["T"], str(data["p"]), str(data["q"]), bool(data["m"]))
        stamps = find_spans(payload, TRADE_KEYS, (data["E"], data["T"]))
        line = Line(
            recv_ns, kind, data["E"], data["t"], data["t"], payload, trade=taker, stamps=stamps
        )
    else:
        line = Line(recv_ns, kind, 0, data["u"], data["u"], payload)
    return sym, line
