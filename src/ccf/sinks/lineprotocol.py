"""Records as InfluxDB line protocol, one pure function per record kind.

A line is ``measurement,tag=value,... field=value,... timestamp``::

    ccf_trade,exchange=binance,symbol=btcusdt trade_id=3735163i,price=61556.01,\
qty=0.00012,side="buy",ts_recv=1723161254414000000i,backfilled=false 1723161253153000000

- Measurements are ``{prefix}{kind}``: ``book``, ``trade``, ``agg_trade``,
  ``quote``, ``candle``, ``gap``, ``news`` for raw records, and ``features``,
  ``predictions``, ``scores``.
- Tags are what a query groups by and what tells two series apart:
  ``exchange`` and ``symbol`` everywhere, plus what keys the record in the store
  (a book's ``source``, a candle's ``interval``, a gap's ``stream``, a
  prediction's ``target``, ``horizon``, ``role`` and ``model``).
- Floats are written as Python's shortest round-trip repr, so they read back
  bit for bit; ints carry the ``i`` suffix; strings are quoted.
- A NaN, an infinity or a None field is left out: InfluxDB stores neither and
  rejects the whole line for one. A line left with no field at all is skipped
  (the functions return None).
- The timestamp is the event time in ns (``precision=ns``).

InfluxDB keys a point by measurement, tags and time: a second point with the
same three replaces the first. That makes rewrites idempotent, as in the
store (a candle rewritten when it closes, a gap rewritten when it ends), but
Binance stamps trades and depth updates in whole milliseconds, and a busy
symbol trades many times in one. So where the time is a whole millisecond
its sub-millisecond nanoseconds carry the record's id modulo 10^6
(:func:`point_ns`): the points stay distinct, the millisecond is still the
event's, and the same record written twice still lands on one point.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from functools import lru_cache

from ccf.records import (
    AggTrade,
    Book,
    Candle,
    Gap,
    NewsItem,
    Prediction,
    Quote,
    Score,
    Trade,
    book_columns,
)

_INF = math.inf
_NEG_INF = -math.inf
_NS_PER_MS = 1_000_000

# Line protocol cannot carry a newline in a name or tag: it ends the line. It becomes a
# (escaped) space, the nearest thing that keeps the rest of the line readable.
_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\ ", "\r": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\ ", "\r": r"\ "})
_STRING = str.maketrans({'"': r"\"", "\\": "\\\\"})


def escape_measurement(name: str) -> str:
    r"""A measurement name with its commas and spaces escaped.

    >>> escape_measurement("a b,c")
    'a\\ b\\,c'
    """
    return name.translate(_MEASUREMENT)


def escape_key(key: str) -> str:
    r"""A tag key, tag value or field key with its commas, equals signs and spaces escaped.

    >>> escape_key("a=b c,d")
    'a\\=b\\ c\\,d'
    """
    return key.translate(_KEY)


def string_field(value: str) -> str:
    r"""A string field value: quoted, with its quotes and backslashes escaped.

    Newlines stay as they are: InfluxDB reads them inside a quoted string.

    >>> string_field('say "hi" \\ bye')
    '"say \\"hi\\" \\\\ bye"'
    """
    return '"' + value.translate(_STRING) + '"'


def field_value(value: object) -> str | None:
    """One field value in line protocol, or None where it is not to be written.

    bool before int (a bool is an int in Python, but a different field type in
    InfluxDB); numpy scalars go through ``float``/``int`` so their repr
    (``np.float64(1.5)``) never reaches the wire.

    >>> [field_value(v) for v in (1.5, 3, True, "x", None, float("nan"))]
    ['1.5', '3i', 'true', '"x"', None, None]
    """
    t = type(value)
    if t is float:
        return repr(value) if _NEG_INF < value < _INF else None  # type: ignore[operator]
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return f"{value}i"
    if t is str:
        return string_field(value)  # type: ignore[arg-type]
    if value is None:
        return None
    if isinstance(value, numbers.Integral):  # numpy integers register here
        return f"{int(value)}i"
    if isinstance(value, numbers.Real):  # numpy floats
        return field_value(float(value))
    raise TypeError(f"no line-protocol type for {t.__name__} value {value!r}")


@lru_cache(maxsize=8192)
def series_key(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """``measurement,k=v,...`` with the tags escaped, sorted by key (InfluxDB's own
    order, which spares the server a sort) and empty values left out (InfluxDB
    rejects ``k=``). Cached: a process writes few distinct series.

    >>> series_key("m", (("symbol", "btcusdt"), ("exchange", "binance"), ("x", "")))
    'm,exchange=binance,symbol=btcusdt'
    """
    parts = [escape_measurement(measurement)]
    parts += [f"{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags) if v]
    return ",".join(parts)


def line(series: str, fields: Iterable[tuple[str, object]], ts: int) -> str | None:
    """One line from a series key, ``(field key, value)`` pairs and a ns time; None
    when no field is left to write. Field keys are taken as already escaped."""
    parts = []
    for k, v in fields:
        s = field_value(v)
        if s is not None:
            parts.append(f"{k}={s}")
    if not parts:
        return None
    return f"{series} {','.join(parts)} {ts}"


def point_ns(ts: int, seq: int) -> int:
    """The point's time: ``ts``, with ``seq % 10**6`` in the nanoseconds where ``ts`` is a
    whole millisecond (see the module docstring: keeps same-millisecond trades apart).

    >>> point_ns(1_723_161_253_153_000_000, 3_735_163)
    1723161253153735163
    >>> point_ns(1_723_161_253_153_000_007, 3_735_163)
    1723161253153000007
    """
    return ts + seq % _NS_PER_MS if ts % _NS_PER_MS == 0 else ts


@lru_cache(maxsize=64)
def _level_keys(n: int) -> tuple[str, ...]:
    return tuple(book_columns(n // 4))


@lru_cache(maxsize=64)
def _float_format(keys: tuple[str, ...]) -> str:
    return ",".join(f"{k.replace('%', '%%')}=%s" for k in keys)


def _float_fields(keys: tuple[str, ...], values: Sequence[float]) -> str:
    """``k=v,...`` for every finite value: the hot path of books and feature rows.

    Float formatting is most of the cost (80 levels make a book line), so where
    every value is finite (their sum is: one NaN or infinity makes it NaN or
    infinite) one prebuilt %-format does the whole line, about a third faster
    than formatting pair by pair. ``%s`` of a float is its shortest round-trip
    repr, numpy's floats included.
    """
    if len(keys) != len(values):
        raise ValueError(f"{len(values)} values for {len(keys)} columns")
    if _NEG_INF < sum(values) < _INF:
        return _float_format(keys) % tuple(values)
    return ",".join([f"{k}={v}" for k, v in zip(keys, values, strict=True) if _NEG_INF < v < _INF])


def book_line(b: Book, prefix: str = "") -> str | None:
    """A top-N book: ``a_p_0 .. b_q_{N-1}`` (missing levels left out), ``update_id``,
    ``ts_recv``. Tagged by ``source``: a diff book and a partial-depth book are
    different series."""
    series = series_key(
        prefix + "book", (("exchange", b.exchange), ("symbol", b.symbol), ("source", b.source))
    )
    levels = _float_fields(_level_keys(len(b.levels)), b.levels)
    ids = f"update_id={b.update_id}i,ts_recv={b.ts_recv}i"
    fields = f"{levels},{ids}" if levels else ids
    return f"{series} {fields} {point_ns(b.ts_event, b.update_id)}"


_SIDE = {"buy": '"buy"', "sell": '"sell"'}


def trade_line(t: Trade, prefix: str = "") -> str | None:
    series = series_key(prefix + "trade", (("exchange", t.exchange), ("symbol", t.symbol)))
    ts = point_ns(t.ts_event, t.trade_id)
    side = _SIDE.get(t.side)
    if side is not None and _NEG_INF < t.price + t.qty < _INF:  # the usual trade, fast
        return (
            f"{series} trade_id={t.trade_id}i,price={t.price},qty={t.qty},side={side},"
            f"ts_recv={t.ts_recv}i,backfilled={'true' if t.backfilled else 'false'} {ts}"
        )
    fields = (
        ("trade_id", t.trade_id),
        ("price", t.price),
        ("qty", t.qty),
        ("side", t.side),
        ("ts_recv", t.ts_recv),
        ("backfilled", t.backfilled),
    )
    return line(series, fields, ts)


def agg_trade_line(t: AggTrade, prefix: str = "") -> str | None:
    series = series_key(prefix + "agg_trade", (("exchange", t.exchange), ("symbol", t.symbol)))
    fields = (
        ("agg_id", t.agg_id),
        ("price", t.price),
        ("qty", t.qty),
        ("first_trade_id", t.first_trade_id),
        ("last_trade_id", t.last_trade_id),
        ("side", t.side),
        ("ts_recv", t.ts_recv),
    )
    return line(series, fields, point_ns(t.ts_event, t.agg_id))


def quote_line(q: Quote, prefix: str = "") -> str | None:
    series = series_key(prefix + "quote", (("exchange", q.exchange), ("symbol", q.symbol)))
    ts = point_ns(q.ts_event, q.update_id)
    if _NEG_INF < q.bid_price + q.bid_qty + q.ask_price + q.ask_qty < _INF:  # fast
        return (
            f"{series} update_id={q.update_id}i,bid_price={q.bid_price},bid_qty={q.bid_qty},"
            f"ask_price={q.ask_price},ask_qty={q.ask_qty},ts_recv={q.ts_recv}i {ts}"
        )
    fields = (
        ("update_id", q.update_id),
        ("bid_price", q.bid_price),
        ("bid_qty", q.bid_qty),
        ("ask_price", q.ask_price),
        ("ask_qty", q.ask_qty),
        ("ts_recv", q.ts_recv),
    )
    return line(series, fields, ts)


def candle_line(c: Candle, prefix: str = "") -> str | None:
    """A bar at its ``open_time`` (the store's key), so the open bar's updates and its
    closed form land on one point, the last written winning."""
    series = series_key(
        prefix + "candle",
        (("exchange", c.exchange), ("symbol", c.symbol), ("interval", c.interval)),
    )
    fields = (
        ("open", c.open),
        ("high", c.high),
        ("low", c.low),
        ("close", c.close),
        ("volume", c.volume),
        ("quote_volume", c.quote_volume),
        ("trades", c.trades),
        ("taker_buy_volume", c.taker_buy_volume),
        ("taker_buy_quote_volume", c.taker_buy_quote_volume),
        ("closed", c.closed),
        ("close_time", c.close_time),
        ("ts_event", c.ts_event),
        ("ts_recv", c.ts_recv),
    )
    return line(series, fields, c.open_time)


def gap_line(g: Gap, prefix: str = "") -> str | None:
    """A gap at its ``start_ts``, tagged by ``stream`` (the store's key), so the closed
    gap, written again with ``end_ts``, replaces the open one."""
    series = series_key(
        prefix + "gap", (("exchange", g.exchange), ("symbol", g.symbol), ("stream", g.stream))
    )
    fields = (
        ("end_ts", g.end_ts),
        ("reason", g.reason),
        ("detail", g.detail),
        ("ts_recv", g.ts_recv),
        ("filled", g.filled),
    )
    return line(series, fields, g.start_ts)


def news_line(n: NewsItem, prefix: str = "") -> str | None:
    """A story at its ``ingested_at`` (what training goes by). One poll stamps all its
    stories with one time, so ``item_id`` is a tag that keeps them apart; news comes
    in hundreds a day, a series count InfluxDB carries easily."""
    series = series_key(prefix + "news", (("source", n.source), ("item_id", n.item_id)))
    fields = (
        ("guid", n.guid),
        ("title", n.title),
        ("summary", n.summary),
        ("link", n.link),
        ("authors", n.authors),
        ("tags", n.tags),
        ("published_at", n.published_at),
        ("published_raw", n.published_raw),
        ("date_flag", n.date_flag),
        ("title_key", n.title_key),
    )
    return line(series, fields, n.ingested_at)


_RAW = {
    Book: book_line,
    Trade: trade_line,
    AggTrade: agg_trade_line,
    Quote: quote_line,
    Candle: candle_line,
    Gap: gap_line,
    NewsItem: news_line,
}


def record_line(record: object, prefix: str = "") -> str | None:
    """The line of any raw record; None for the kinds kept only in the store (dead
    letters, news sources, feed status: bookkeeping, not market data)."""
    encode = _RAW.get(type(record))
    return encode(record, prefix) if encode is not None else None  # type: ignore[operator]


def raw_lines(records: Iterable[object], prefix: str = "") -> list[str]:
    """The lines of a batch of raw records, skipping those with nothing to write."""
    raw = _RAW
    out = []
    for r in records:
        encode = raw.get(type(r))
        if encode is not None:
            s = encode(r, prefix)  # type: ignore[operator]
            if s is not None:
                out.append(s)
    return out


@lru_cache(maxsize=64)
def escaped_keys(columns: tuple[str, ...]) -> tuple[str, ...]:
    """Field keys for column names (cached: a feature set's columns never change)."""
    return tuple(escape_key(c) for c in columns)


def feature_lines(
    columns: Sequence[str],
    rows: Iterable[tuple[str, int, int, Sequence[float]]],
    *,
    exchange: str,
    prefix: str = "",
    feature_set: str = "",
) -> list[str]:
    """Feature rows (``FeatureRow(symbol, ts, ts_end, values)``, ``values`` following
    ``columns``, the set's ``float_columns``) at their bucket start, with ``ts_end``.
    ``feature_set`` (its table name, say) tags the rows, so two sets with a column
    of one name never mix."""
    keys = escaped_keys(tuple(columns))
    measurement = prefix + "features"
    out = []
    for symbol, ts, ts_end, values in rows:
        series = series_key(
            measurement, (("exchange", exchange), ("symbol", symbol), ("feature_set", feature_set))
        )
        floats = _float_fields(keys, values)
        fields = f"{floats},ts_end={ts_end}i" if floats else f"ts_end={ts_end}i"
        out.append(f"{series} {fields} {ts}")
    return out


@lru_cache(maxsize=256)
def _quantile_keys(levels: tuple[float, ...]) -> tuple[str, ...]:
    """``q0.1``, ``q0.5``, ... (double-quote them in InfluxQL: they hold a dot)."""
    return tuple(escape_key(f"q{lv:g}") for lv in levels)


def prediction_line(p: Prediction, prefix: str = "") -> str | None:
    """A forecast at its origin bucket ``ts``; its quantiles as ``q{level}`` fields."""
    series = series_key(
        prefix + "predictions",
        (
            ("exchange", p.exchange),
            ("symbol", p.symbol),
            ("target", p.target),
            ("horizon", str(p.horizon)),
            ("role", p.role),
            ("model", p.model),
        ),
    )
    fields: list[tuple[str, object]] = [
        ("version", p.version),
        ("target_ts", p.target_ts),
        ("made_at", p.made_at),
        ("watermark", p.watermark),
        ("last_value", p.last_value),
        ("point", p.point),
        ("flag", p.flag or None),
    ]
    fields += zip(_quantile_keys(tuple(p.levels)), p.quantiles, strict=True)
    return line(series, fields, p.ts)


def score_line(s: Score, prefix: str = "") -> str | None:
    """A score at its prediction's ``ts``; per-interval hits as ``in_0``, ``in_1``, ...
    (widest interval first, as the score store names them)."""
    series = series_key(
        prefix + "scores",
        (
            ("exchange", s.exchange),
            ("symbol", s.symbol),
            ("target", s.target),
            ("horizon", str(s.horizon)),
            ("role", s.role),
            ("model", s.model),
        ),
    )
    fields: list[tuple[str, object]] = [
        ("version", s.version),
        ("truth", s.truth),
        ("error", s.error),
        ("abs_error", s.abs_error),
        ("sq_error", s.sq_error),
        ("naive_abs_error", s.naive_abs_error),
        ("direction_hit", s.direction_hit),
        ("pinball", s.pinball),
        ("signal", s.signal),
        ("signal_return", s.signal_return),
        ("scored_at", s.scored_at),
    ]
    fields += ((f"in_{i}", v) for i, v in enumerate(s.inside))
    return line(series, fields, s.ts)


def lines_of(encode: object, rows: Iterable[object], prefix: str = "") -> list[str]:
    """``encode`` (a ``*_line`` function) over ``rows``, skipping empty lines."""
    out = []
    for r in rows:
        s = encode(r, prefix)  # type: ignore[operator]
        if s is not None:
            out.append(s)
    return out
