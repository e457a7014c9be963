"""The venue contract: what a venue folder provides so that the collector, the
replay, the recorder, features and stores never name a venue.

A *venue* is one market of one exchange with its own wire protocol (Binance
spot and Binance USD-M futures are two venues). Its ``name`` is the value of
the records' ``exchange`` column: ``exchange`` = venue everywhere (records,
raw store keys, features, predictions); the column keeps its old name so no
table or reader had to change. Records keep the venue's *native* symbol in
lower case (``btcusdt``), the name its streams and REST use; the *common*
instrument form (``btc-usdt`` spot, ``btc-usdt-perp`` perpetual) is what
joins one venue to another (cross-venue features, the dashboard).

What a venue provides (:class:`Venue`):

- ``name``, ``market`` (``spot`` or ``perp``), and its :class:`Endpoints`
  (live websocket and REST base URLs, REST depth path) and
  :class:`ConnectionRules` (streams per connection, control messages per
  second, ping interval, planned reconnect age).
- ``stream_kind(stream)``: the record kind of a subscribed stream name
  (``depth@100ms`` -> ``book``); ``supports(stream)`` says whether the venue
  has that stream.
- ``instrument(symbol)`` / ``native(instrument)``: symbol mapping both ways.
- ``stream_url(ws_url, streams)`` and ``subscribe_messages(streams)``: how
  a connection names its streams (in the URL, then in control messages).
- ``make_feed(...)``: a :class:`Feed` for a set of symbols. The feed owns
  the wire schemas (msgspec structs, the venue's field names verbatim), the
  books and the book sync rule (:class:`BookSync`, plus an optional
  :class:`Checksum` for venues that send one); it is synchronous and does no
  I/O, so live, replay, benchmarks and tests run the same code. It asks for
  I/O through :class:`FeedCallbacks`.
- ``make_rest(session, base_url, ...)``: a :class:`RestClient` whose
  ``depth(symbol, limit)`` returns the raw snapshot body the feed's
  ``on_snapshot`` reads.

The book sync rule of a snapshot + diff venue, as a :class:`BookSync`:
``stale(last_id, diff, first)`` says a diff is already in the book and is
dropped; ``breaks(last_id, diff, first)`` returns why a diff cannot follow the
book (a gap record and a resync of *that instrument only*) or ``None``.
``first`` is true for the first diff after a snapshot, where venues differ
(Binance spot: ``U <= lastUpdateId + 1``; USD-M: ``U <= lastUpdateId <= u``,
then ``pu`` = the previous ``u``). A checksum venue verifies the book after
each update with ``Checksum.matches(book, expected)``; a mismatch is handled
like a sequence break (reason ``sequence_gap``, detail names the checksum).

Registering: :func:`ccf.sources.venues.register` at import of the venue's
module; :func:`ccf.sources.venues.get` finds a venue by name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ccf.records import Gap, GapReason, Record

if TYPE_CHECKING:
    import aiohttp

Market = Literal["spot", "perp"]
SnapshotOutcome = Literal["synced", "stale", "ignored"]


@dataclass(frozen=True)
class Endpoints:
    """Where the live venue answers; the replay exchange serves the same paths."""

    ws_url: str
    rest_url: str
    depth_path: str  # REST depth snapshot, e.g. /api/v3/depth or /fapi/v1/depth
    trades_path: str = "/api/v3/historicalTrades"  # trades by id, to fill a trade gap
    ws_path: str = "/stream"  # combined streams


@dataclass(frozen=True)
class ConnectionRules:
    """The venue's documented limits, which the connection honours."""

    max_streams_per_connection: int
    control_messages_per_s: float  # SUBSCRIBE and friends, per connection
    ping_interval_s: float  # the venue pings this often; the client answers
    max_connection_age_s: float  # the venue cuts a connection after this; reconnect before
    streams_in_url: int = 50  # the rest go in subscribe messages
    streams_per_subscribe: int = 200


@dataclass(frozen=True)
class FeedCallbacks:
    """The I/O a feed asks for; the collector answers, tests may ignore."""

    request_snapshot: Callable[[str], None] = lambda symbol: None
    on_server_shutdown: Callable[[], None] = lambda: None
    # (symbol, first missing trade id, last missing trade id, the gap record)
    on_trade_gap: Callable[[str, int, int, Gap], None] = field(
        default=lambda symbol, first, last, gap: None
    )


NO_CALLBACKS = FeedCallbacks()


class BookSync(Protocol):
    """A snapshot + diff venue's sequence rule (see the module docstring)."""

    def stale(self, last_id: int, diff: Any, first: bool) -> bool: ...

    def breaks(self, last_id: int, diff: Any, first: bool) -> str | None: ...


class Checksum(Protocol):
    """A venue that sends a checksum of its book (OKX, Kraken) implements this."""

    def matches(self, book: Any, expected: int) -> bool: ...


@runtime_checkable
class Feed(Protocol):
    """Frames in, records out, for one venue and a set of its symbols."""

    frames: int
    stats: Counter[str]
    open_gaps: dict[tuple[str, str], Gap]
    state: Mapping[str, Any]  # native symbol -> per-instrument state

    def handle(self, frame: str, ts_recv: int, out: list[Record]) -> None: ...

    def on_snapshot(
        self, symbol: str, frame: str | bytes, ts_recv: int, out: list[Record]
    ) -> SnapshotOutcome: ...

    def on_disconnect(
        self,
        symbols: tuple[str, ...],
        ts_recv: int,
        out: list[Record],
        reason: GapReason = "disconnect",
        detail: str = "connection lost",
    ) -> None: ...

    def resume_from(
        self,
        symbol: str,
        kind: str,
        last_ts: int,
        ts_recv: int,
        out: list[Record],
        last_trade_id: int | None = None,
    ) -> None: ...

    def flush(self, out: list[Record]) -> None: ...


class RestClient(Protocol):
    stats: dict[str, int]

    async def depth(self, symbol: str, limit: int = 1000) -> tuple[bytes, int]: ...


@runtime_checkable
class Venue(Protocol):
    name: str  # the records' `exchange` value
    market: Market
    endpoints: Endpoints
    rules: ConnectionRules

    def stream_kind(self, stream: str) -> str: ...

    def supports(self, stream: str) -> bool: ...

    def instrument(self, symbol: str) -> str: ...

    def native(self, instrument: str) -> str: ...

    def stream_url(self, ws_url: str, streams: Sequence[str]) -> str: ...

    def subscribe_messages(self, streams: Sequence[str]) -> list[bytes]: ...

    def make_feed(
        self,
        symbols: tuple[str, ...],
        streams: tuple[str, ...],
        *,
        book_depth: int = 20,
        book_cadence: str = "update",
        callbacks: FeedCallbacks = NO_CALLBACKS,
        **options: Any,  # the venue's own feed settings, passed through (e.g. id bounds)
    ) -> Feed: ...

    def make_rest(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        weight_limit: int = 6000,
        timeout_s: float = 10.0,
    ) -> RestClient: ...


# Quote assets, longest first, so `btcfdusd` splits as btc/fdusd, not btcf/dusd.
QUOTES = ("fdusd", "usdt", "usdc", "busd", "tusd", "try", "eur", "btc", "eth", "bnb")


def split_symbol(symbol: str) -> tuple[str, str]:
    """``btcusdt`` -> (``btc``, ``usdt``): Binance-style glued symbols by known quote.

    >>> split_symbol("ETHUSDT")
    ('eth', 'usdt')
    """
    s = symbol.lower()
    for q in sorted(QUOTES, key=len, reverse=True):
        if s.endswith(q) and len(s) > len(q):
            return s[: -len(q)], q
    raise ValueError(f"cannot split {symbol!r} into base and quote: known quotes are {QUOTES}")
