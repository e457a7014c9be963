"""The records every part exchanges.

Records are NamedTuples: immutable, typed, cheap to build on the hot path
(a frozen dataclass costs several times more per record) and already rows
for the stores. Each record carries the exchange, the symbol (lower case, as in Binance stream
names), the exchange's event time ``ts_event`` and our receive time
``ts_recv``, both int64 nanoseconds UTC. Event time drives features and
training; receive time drives latency metrics.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

NS_PER_MS = 1_000_000

GapReason = Literal[
    "disconnect",
    "sequence_gap",
    "resync",
    "restart",
    "late_start",
    "crossed_book",
    "stale_snapshot",
    "missing_history",  # the exchange's own history has a hole (found by a backfill)
    "checksum_mismatch",  # the local book disagrees with the venue's checksum (OKX, Kraken)
    "id_jump",  # an update id beyond collect.max_id_jump of the last one: the book resyncs
]


def book_columns(depth: int) -> list[str]:
    """Column names of a top-``depth`` book, in the original system's names.

    >>> book_columns(1)
    ['a_p_0', 'a_q_0', 'b_p_0', 'b_q_0']
    """
    cols: list[str] = []
    for side in ("a", "b"):
        for i in range(depth):
            cols += [f"{side}_p_{i}", f"{side}_q_{i}"]
    # Interleaved per side: a_p_0, a_q_0, a_p_1, ... matches the original layout.
    return cols


class Book(NamedTuple):
    """Top-N levels of the local order book after applying ``update_id``.

    ``levels`` is flat in :func:`book_columns` order (a_p_0, a_q_0, ...,
    b_p_0, b_q_0, ...); a missing level is NaN. ``source`` tells how the book
    was obtained: ``diff`` (snapshot + diff procedure) or ``depthN`` (the
    exchange's partial-depth stream).
    """

    exchange: str
    symbol: str
    source: str
    update_id: int
    ts_event: int
    ts_recv: int
    levels: tuple[float, ...]


class Trade(NamedTuple):
    exchange: str
    symbol: str
    trade_id: int
    price: float
    qty: float
    side: Literal["buy", "sell"]  # taker side
    ts_event: int  # trade time (T)
    ts_recv: int
    backfilled: bool = False  # fetched over REST to fill a gap, not received live


class AggTrade(NamedTuple):
    """An aggregate trade (``/api/v3/aggTrades``, archive ``aggTrades``): trades
    ``first_trade_id..last_trade_id`` filled at one price by one taker order."""

    exchange: str
    symbol: str
    agg_id: int
    price: float
    qty: float
    first_trade_id: int
    last_trade_id: int
    side: Literal["buy", "sell"]  # taker side
    ts_event: int
    ts_recv: int


class Quote(NamedTuple):
    """Best bid and ask from the ``bookTicker`` stream.

    Spot bookTicker carries no event time: ``ts_event`` is our receive time,
    and ``update_id`` shares the diff-depth sequence.
    """

    exchange: str
    symbol: str
    update_id: int
    bid_price: float
    bid_qty: float
    ask_price: float
    ask_qty: float
    ts_event: int
    ts_recv: int


class Candle(NamedTuple):
    exchange: str
    symbol: str
    interval: str
    open_time: int  # ns
    close_time: int  # ns
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int | None  # None where the source does not say (plain OHLCV files)
    taker_buy_volume: float
    taker_buy_quote_volume: float
    closed: bool
    ts_event: int
    ts_recv: int


class Gap(NamedTuple):
    """What was missed, from when to when, and why.

    ``end_ts`` is None while the gap is open (the stream has not recovered
    yet); the same gap is written again with ``end_ts`` once it closes, keyed
    by (exchange, symbol, stream, start_ts).
    """

    exchange: str
    symbol: str
    stream: str  # "book", "trade", "quote", "candle", ...
    start_ts: int
    end_ts: int | None
    reason: GapReason
    detail: str
    ts_recv: int
    filled: bool = False  # the missing records were fetched afterwards (backfilled)


class DeadLetter(NamedTuple):
    """A frame we could not use, kept verbatim with the reason."""

    exchange: str
    symbol: str  # "" when the frame names none
    reason: str
    frame: str
    ts_recv: int


NewsDateFlag = Literal["", "missing", "unparsed", "future"]


class NewsItem(NamedTuple):
    """One story, however many feeds carried it; written once, never updated.

    ``item_id`` is fixed by the first sighting (a hash of that feed and guid),
    and ``ingested_at`` is when we first saw the story: training sees news only
    by ``ingested_at``, so a later poll must never move it. ``authors`` and
    ``tags`` are JSON arrays of strings (rows must stay plain SQL values).
    ``published_at`` is the feed's date in UTC ns, None when missing or
    unreadable; ``date_flag`` says why (``missing``, ``unparsed``) or that a
    date too far in the future was clamped to ``ingested_at`` (``future``).
    """

    item_id: str
    source: str  # the feed that carried it first
    guid: str
    title: str
    summary: str  # plain text
    link: str  # canonical: no tracking parameters, no fragment
    authors: str  # JSON array
    tags: str  # JSON array
    published_at: int | None
    published_raw: str  # the date text as the feed wrote it
    date_flag: NewsDateFlag
    title_key: str  # normalized title words, for deduplication
    ingested_at: int


class NewsSource(NamedTuple):
    """One feed carrying one story: a syndicated story has one row per feed."""

    item_id: str
    source: str
    guid: str
    link: str  # canonical
    title_key: str
    seen_at: int  # when this feed first carried it, ns


class FeedStatus(NamedTuple):
    """Health of one feed, upserted by name after every poll.

    ``state`` is ``ok`` or ``failing`` (``pending`` before the first poll);
    ``bozo`` keeps feedparser's complaint about a feed that still parsed.
    ``etag``/``last_modified`` are the validators for the next conditional GET.
    """

    feed: str
    url: str
    state: str
    last_poll_at: int | None
    last_success_at: int | None
    last_error_at: int | None
    last_error: str
    bozo: str
    http_status: int | None
    consecutive_failures: int
    items_seen: int  # entries in the last feed body parsed
    new_items: int  # new stories from the last poll
    new_total: int  # new stories since the feed was first polled
    next_poll_at: int | None
    etag: str
    last_modified: str
    updated_at: int


PredictionFlag = Literal[
    "gap_in_window",  # the encoder window holds a gap-flagged or missing bucket: no forecast
    "stale_input",  # the newest feature row is older than serve.max_input_lag_s
    "stale_model",  # the model is older than serve.max_model_age
    "warming_up",  # not enough history for a window yet
]


class Prediction(NamedTuple):
    """One model's forecast of one target at one horizon, made at one bucket.

    ``ts`` is the origin bucket's start; the forecast is for the log return of
    ``target`` from the origin bucket's value (``last_value``) to the value of the
    bucket starting at ``target_ts`` = ts + horizon buckets. ``quantiles`` follow
    ``levels``; ``point`` is the 0.5 quantile. ``watermark`` is the newest event
    time the inputs had seen (the row's bucket end). A flagged record carries its
    reason and, for ``gap_in_window`` and ``warming_up``, NaN forecasts.
    """

    exchange: str
    symbol: str
    target: str
    ts: int
    horizon: int  # buckets
    target_ts: int
    role: str  # champion, challenger, naive
    model: str  # registered name, or the model kind where unregistered
    version: str
    made_at: int  # wall clock, ns
    watermark: int
    last_value: float
    point: float  # log return
    levels: tuple[float, ...]
    quantiles: tuple[float, ...]
    flag: str | None
    # lead time on the event clock (:mod:`ccf.serving.lead`): seconds after the origin
    # bucket's end when it was stored, and the share of the horizon still ahead then
    # (<= 0: stored after its target bucket closed); NaN where unknown
    delay_s: float = float("nan")
    horizon_left: float = float("nan")


class Score(NamedTuple):
    """A prediction joined with what happened (written by ``ccf monitor``)."""

    exchange: str
    symbol: str
    target: str
    ts: int
    horizon: int
    role: str
    model: str
    version: str
    truth: float  # realized log return
    error: float  # point - truth
    abs_error: float
    sq_error: float
    naive_abs_error: float  # |0 - truth|: the no-change forecast's error on the same target
    direction_hit: float  # 1, 0, or NaN when truth or forecast is zero
    inside: tuple[float, ...]  # per central interval (widest first): 1 inside, 0 outside
    pinball: float  # mean over the quantiles
    signal: int  # +1 BUY, -1 SELL, 0 HOLD
    signal_return: float  # signal * truth - fee when traded, in log-return units
    scored_at: int


Record = (
    Book | Trade | AggTrade | Quote | Candle | Gap | DeadLetter | NewsItem | NewsSource | FeedStatus
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def unstorable_field(record: tuple) -> str | None:
    """The first field of ``record`` no store column can hold (an int beyond int64),
    or None. The collector refuses such values at the edge; the stores check again
    only when a batch fails, to refuse that row instead of losing the batch.

    >>> unstorable_field(Trade("binance", "btcusdt", 2**64, 1.0, 1.0, "buy", 1, 1))
    'trade_id=18446744073709551616'
    """
    for name, value in zip(record._fields, record, strict=True):  # type: ignore[attr-defined]
        if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
            return f"{name}={value}"
    return None


def refuse_unstorable(records: list, now_ns: int) -> tuple[list, list[DeadLetter]]:
    """``records`` split into those a store can hold and a dead letter for each other one
    (``unstorable_row: <Kind> <field>=<value> is beyond int64``, the row's repr kept)."""
    good: list = []
    letters: list[DeadLetter] = []
    for r in records:
        bad = unstorable_field(r)
        if bad is None:
            good.append(r)
            continue
        ts_recv = getattr(r, "ts_recv", None)
        if type(ts_recv) is not int or not INT64_MIN <= ts_recv <= INT64_MAX:
            ts_recv = now_ns
        letters.append(
            DeadLetter(
                getattr(r, "exchange", ""),
                getattr(r, "symbol", ""),
                f"unstorable_row: {type(r).__name__} {bad[:80]} is beyond int64",
                repr(r)[:65_536],
                ts_recv,
            )
        )
    return good, letters
