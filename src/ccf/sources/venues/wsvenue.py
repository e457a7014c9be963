"""Venues whose websocket takes subscription messages (OKX, Coinbase, Kraken), behind
the :class:`ccf.sources.venues.base.Venue` interface.

Their streams are named like Binance's, ``<symbol>@<channel>`` with the venue's
own channel (``btc-usdt@books``, ``skl-usd@matches``, ``xbt/chf@book``), and the
symbol is the venue's instrument name in lower case. None of them takes streams in
the URL: everything is in subscribe messages, built by the venue's feed module.
Books come from the websocket's snapshots, so a resync is a resubscription that
the feed queues (``take_outgoing``) and the connection sends; REST is for
instrument lists and manual depth checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ccf.sources.venues.base import NO_CALLBACKS, ConnectionRules, Endpoints, FeedCallbacks, Market
from ccf.sources.venues.rest import VenueRest

if TYPE_CHECKING:
    import aiohttp


def split_stream(stream: str) -> tuple[str, str]:
    """``btc-usdt@books`` -> (``btc-usdt``, ``books``)."""
    sym, sep, channel = stream.rpartition("@")
    if not sep or not sym:
        raise ValueError(f"stream {stream!r} is not <symbol>@<channel>")
    return sym, channel


@dataclass(frozen=True)
class WsVenue:
    name: str
    market: Market  # of the symbols this venue is mostly used for; symbols say their own
    endpoints: Endpoints
    rules: ConnectionRules
    kinds: Mapping[str, str]  # channel -> record kind: {"books": "book", ...}
    feed_factory: Callable[..., Any]  # (symbols, channels, depth=) -> feed
    subscribe: Callable[[Sequence[str], Sequence[str]], list[str]]  # (symbols, channels)
    to_common: Callable[[str], str]  # wire name -> common instrument
    to_venue: Callable[[str], str]  # common instrument -> wire name
    ping_message: str | None = None  # sent after ping_interval_s of silence; None: ws ping

    def stream_kind(self, stream: str) -> str:
        return self.kinds[stream.rpartition("@")[2]]

    def supports(self, stream: str) -> bool:
        return stream.rpartition("@")[2] in self.kinds

    def instrument(self, symbol: str) -> str:
        return self.to_common(symbol.upper())

    def native(self, instrument: str) -> str:
        return self.to_venue(instrument).lower()

    def stream_url(self, ws_url: str, streams: Sequence[str]) -> str:
        return ws_url.rstrip("/") + self.endpoints.ws_path

    def subscribe_messages(self, streams: Sequence[str]) -> list[bytes]:
        """One subscription for every symbol and channel named in ``streams``."""
        syms: list[str] = []
        channels: list[str] = []
        for st in streams:
            sym, ch = split_stream(st)
            if ch not in self.kinds:
                raise ValueError(f"{self.name} has no channel {ch!r}: use {sorted(self.kinds)}")
            if sym not in syms:
                syms.append(sym)
            if ch not in channels:
                channels.append(ch)
        wire = [s.upper() for s in syms]
        return [m.encode() for m in self.subscribe(wire, channels)]

    def make_feed(
        self,
        symbols: tuple[str, ...],
        streams: tuple[str, ...],
        *,
        book_depth: int = 20,
        book_cadence: str = "update",
        callbacks: FeedCallbacks = NO_CALLBACKS,
        **options: Any,
    ) -> Any:
        """``streams`` are channels (``books``) or whole stream names (``btc-usdt@books``).
        ``options`` are other venues' feed settings (Binance's ``max_id_jump``): these
        feeds check checksums and sequence links instead, so they take none."""
        if book_cadence != "update":
            raise ValueError(f"{self.name} books are written at every update (book_cadence)")
        channels = tuple(dict.fromkeys(st.rpartition("@")[2] for st in streams))
        return self.feed_factory(symbols, channels, depth=book_depth)

    def make_rest(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        weight_limit: int = 6000,
        timeout_s: float = 10.0,
    ) -> VenueRest:
        return VenueRest(session, base_url, self.endpoints.depth_path, timeout_s=timeout_s)
