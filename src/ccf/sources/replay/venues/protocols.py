"""Each venue's side of its websocket protocol, as the replay exchange speaks it.

A protocol reads the client's messages (subscribe, unsubscribe, ping), says
which instrument and channel a recorded frame belongs to, writes the venue's
acknowledgements, renders a book snapshot from the exchange's reference book
(sent when a client resubscribes after the recording's own snapshot has
passed, as the venue does), and corrupts a frame's checksum for fault tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from ccf.sources.venues.feedbase import Instrument
from ccf.sources.venues.okx.checksum import checksum as okx_checksum

Key = tuple[str, str]  # (instrument as on the wire, channel)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a recorded frame goes: ``book_update`` frames are what ``skip_update_every``
    drops; ``checksummed`` ones are what ``corrupt_checksum_every`` corrupts."""

    key: Key
    book_update: bool = False
    checksummed: bool = False


@dataclass(slots=True)
class ClientMessage:
    subscribe: list[Key]
    unsubscribe: list[Key]
    replies: list[str]  # acks, pongs, errors: sent at once


class OkxProtocol:
    venue = "okx"
    book_channel = "books"
    ws_path = "/ws/v5/public"

    def hello(self) -> list[str]:
        return []

    def client(self, text: str) -> ClientMessage:
        if text == "ping":
            return ClientMessage([], [], ["pong"])
        try:
            m = orjson.loads(text)
            op = m["op"]
            keys = [(a["instId"], a["channel"]) for a in m["args"]]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            err = {"event": "error", "code": "60012", "msg": f"Invalid request: {text[:200]}"}
            return ClientMessage([], [], [orjson.dumps(err).decode()])
        acks = [
            orjson.dumps({"event": op, "arg": {"channel": ch, "instId": i}}).decode()
            for i, ch in keys
        ]
        if op == "subscribe":
            return ClientMessage(keys, [], acks)
        if op == "unsubscribe":
            return ClientMessage([], keys, acks)
        err = {"event": "error", "code": "60012", "msg": f"Invalid request: {text[:200]}"}
        return ClientMessage([], [], [orjson.dumps(err).decode()])

    def route(self, m: Any) -> Route | None:
        if not isinstance(m, dict) or "data" not in m:
            return None  # acks and errors: the exchange writes its own
        arg = m["arg"]
        key = (arg["instId"], arg["channel"])
        upd = m.get("action") == "update"
        return Route(key, upd, any("checksum" in d for d in m["data"]))

    def snapshot(self, inst: Instrument) -> str:
        book = inst.book
        data = {
            "asks": [[p, q, "0", "1"] for p, q, _ in book.asks.top(400)],
            "bids": [[p, q, "0", "1"] for p, q, _ in book.bids.top(400)],
            "ts": str(inst.last_ts.get("book", 0) // 1_000_000),
            "checksum": okx_checksum(book),
        }
        arg = {"channel": "books", "instId": inst.venue_id}
        return orjson.dumps({"arg": arg, "action": "snapshot", "data": [data]}).decode()

    def corrupt(self, text: str) -> str:
        return re.sub(r'"checksum":(-?\d+)', lambda m: f'"checksum":{int(m[1]) ^ 1}', text)


class CoinbaseProtocol:
    venue = "coinbase"
    book_channel = "level2"
    ws_path = "/"
    _CHANNELS = {"snapshot": "level2", "l2update": "level2", "match": "matches",
                 "last_match": "matches", "ticker": "ticker"}  # fmt: skip

    def hello(self) -> list[str]:
        return []

    def client(self, text: str) -> ClientMessage:
        try:
            m = orjson.loads(text)
            kind = m["type"]
            keys = [(p, ch) for ch in m["channels"] for p in m["product_ids"]]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            err = {"type": "error", "message": "Failed to subscribe", "reason": text[:200]}
            return ClientMessage([], [], [orjson.dumps(err).decode()])
        if kind not in ("subscribe", "unsubscribe"):
            err = {"type": "error", "message": f"{kind} is not a valid message type"}
            return ClientMessage([], [], [orjson.dumps(err).decode()])
        return ClientMessage(
            keys if kind == "subscribe" else [], keys if kind == "unsubscribe" else [], []
        )

    def subscriptions(self, subs: set[Key]) -> str:
        by_ch: dict[str, list[str]] = {}
        for p, ch in sorted(subs):
            by_ch.setdefault(ch, []).append(p)
        chans = [{"name": ch, "product_ids": ps} for ch, ps in by_ch.items()]
        return orjson.dumps({"type": "subscriptions", "channels": chans}).decode()

    def route(self, m: Any) -> Route | None:
        ch = self._CHANNELS.get(m.get("type")) if isinstance(m, dict) else None
        if ch is None:
            return None
        return Route((m["product_id"], ch), m["type"] == "l2update", False)

    def snapshot(self, inst: Instrument) -> str:
        book = inst.book
        asks = [[p, q] for p, q, _ in book.asks.top(len(book.asks))]
        bids = [[p, q] for p, q, _ in book.bids.top(len(book.bids))]
        msg = {"type": "snapshot", "product_id": inst.venue_id, "asks": asks, "bids": bids}
        return orjson.dumps(msg).decode()

    def corrupt(self, text: str) -> str:
        return text  # level2 carries no checksum


class KrakenProtocol:
    venue = "kraken"
    book_channel = "book"
    ws_path = "/"

    def __init__(self) -> None:
        self._channel_ids: dict[str, int] = {}

    def hello(self) -> list[str]:
        status = {
            "connectionID": 1,
            "event": "systemStatus",
            "status": "online",
            "version": "1.8.3",
        }
        return [orjson.dumps(status).decode()]

    def channel_id(self, pair: str) -> int:
        return self._channel_ids.setdefault(pair, 1000 + len(self._channel_ids))

    def client(self, text: str) -> ClientMessage:
        try:
            m = orjson.loads(text)
            event = m["event"]
            if event == "ping":
                return ClientMessage([], [], [orjson.dumps({"event": "pong"}).decode()])
            sub = m["subscription"]
            depth = sub.get("depth", 10)
            pairs = m["pair"]
            if sub["name"] != "book" or event not in ("subscribe", "unsubscribe"):
                raise KeyError(sub["name"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            err = {"event": "error", "errorMessage": f"Unsupported request {text[:200]}"}
            return ClientMessage([], [], [orjson.dumps(err).decode()])
        status = "subscribed" if event == "subscribe" else "unsubscribed"
        acks = [
            orjson.dumps(
                {
                    "channelID": self.channel_id(p),
                    "channelName": f"book-{depth}",
                    "event": "subscriptionStatus",
                    "pair": p,
                    "status": status,
                    "subscription": {"depth": depth, "name": "book"},
                }
            ).decode()
            for p in pairs
        ]
        keys = [(p, "book") for p in pairs]
        return ClientMessage(
            keys if event == "subscribe" else [], keys if event == "unsubscribe" else [], acks
        )

    def route(self, m: Any) -> Route | None:
        if not isinstance(m, list):
            return None  # heartbeats, status: the exchange writes its own
        has_c = any("c" in part for part in m[1:-2])
        return Route((m[-1], "book"), has_c, has_c)

    def snapshot(self, inst: Instrument) -> str:
        book = inst.book
        ts = inst.last_ts.get("book", 0)
        stamp = f"{ts // 1_000_000_000}.{ts % 1_000_000_000 // 1000:06d}"
        payload = {
            "as": [[p, q, stamp] for p, q, _ in book.asks.top(len(book.asks))],
            "bs": [[p, q, stamp] for p, q, _ in book.bids.top(len(book.bids))],
        }
        frame = [self.channel_id(inst.venue_id), payload, "book-1000", inst.venue_id]
        return orjson.dumps(frame).decode()

    def corrupt(self, text: str) -> str:
        return re.sub(r'"c":"(\d+)"', lambda m: f'"c":"{int(m[1]) ^ 1}"', text)


PROTOCOLS = {"okx": OkxProtocol, "coinbase": CoinbaseProtocol, "kraken": KrakenProtocol}
