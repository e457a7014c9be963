"""The optional InfluxDB sink: line protocol, and the writer against a real InfluxDB.

The 1.x path runs against Debian's ``influxd`` 1.6.7, started per test
(``tests.infra.influxd``): records are written, then read back with
``/query`` and compared value for value; the server is stopped mid-stream and
restarted, started late, and fed a bad line.

The 2.x path (``/api/v2/write`` with a token) runs against a small HTTP
server in this file that records each request and answers as scripted. It is
the one stand-in here, because no real 2.x server can run on this machine:
Debian ships InfluxDB 1.6.7, which has no ``/api/v2/write`` (that arrived in
1.8). The same recording server, over TLS, checks ``ca_bundle``, and echoes
credentials back to prove they are redacted from the logs.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import doctest
import gzip
import ipaddress
import itertools
import json
import logging
import math
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from ccf.config import InfluxConfig, load_settings, shared_dir
from ccf.features.engine import FeatureEngine, FeatureRow
from ccf.features.spec import feature_set
from ccf.records import (
    Book,
    Candle,
    Gap,
    NewsItem,
    Prediction,
    Quote,
    Record,
    Score,
    Trade,
    book_columns,
)
from ccf.sinks import InfluxTee, InfluxWriter, open_influx
from ccf.sinks import influx as influx_mod
from ccf.sinks import lineprotocol as lp
from ccf.sources.binance.feed import BinanceFeed
from ccf.sources.news.dedupe import DedupeIndex, assign
from ccf.sources.news.parse import parse_feed
from ccf.sources.recording import read_frames
from tests.infra import Influxd, influxd  # noqa: F401

DATA = shared_dir() / "data"
BTC_FILE = DATA / "binance" / "spot_btcusdt_20240808.jsonl.gz"
COINDESK = DATA / "news" / "coindesk_2026-09-30.xml"
KLINES = DATA / "klines" / "BTCUSDT-1m-2026-03-23_2026-04-11.csv.gz"
needs_data = pytest.mark.skipif(
    not (BTC_FILE.exists() and COINDESK.exists() and KLINES.exists()),
    reason="shared recordings missing",
)
NAN = math.nan
LOG = "ccf.sinks.influx"


# -- helpers --------------------------------------------------------------------------------


def cfg_for(url: str, **kw: Any) -> InfluxConfig:
    """A sink config for tests: small batches, short intervals."""
    base: dict[str, Any] = {
        "enabled": True,
        "url": url,
        "batch_lines": 2000,
        "flush_interval_s": 0.05,
        "timeout_s": 5.0,
    }
    return InfluxConfig(**{**base, **kw})


def fast_writer(cfg: InfluxConfig, **kw: Any) -> InfluxWriter:
    """Backoff scaled down (rng = 0.05), so a test's outage costs little waiting."""
    return InfluxWriter(cfg, rng=lambda: 0.05, **kw)


def query(url: str, q: str, db: str = "ccf") -> list[dict[str, Any]]:
    """Rows of an InfluxQL query as dicts (times in ns), all series together."""
    qs = urllib.parse.urlencode({"db": db, "q": q, "epoch": "ns"})
    with urllib.request.urlopen(f"{url}/query?{qs}", timeout=30) as resp:
        result = json.load(resp)["results"][0]
    assert "error" not in result, result
    rows = []
    for series in result.get("series", []):
        rows += [dict(zip(series["columns"], v, strict=True)) for v in series["values"]]
    return rows


def count(url: str, measurement: str, field: str = "ts_recv") -> int:
    rows = query(url, f'SELECT count("{field}") FROM "{measurement}"')
    return rows[0]["count"] if rows else 0


def same(stored: Any, value: Any) -> bool:
    """A value read back equals what was written; a NaN/None was left out (null). InfluxDB
    prints a whole float without its ``.0``, so JSON reads it as an int."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return stored is None
    if isinstance(value, float):
        return type(stored) in (int, float) and float(stored) == value
    return stored == value


def wait_for(pred: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    """Poll a condition (a state to reach, never a timing to assert)."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@cache
def recorded() -> tuple[Record, ...]:
    """The collector's own records for the first BTCUSDT file: books, trades, quotes."""
    feed = BinanceFeed(("btcusdt",), ("depth@100ms", "trade", "bookTicker"), book_depth=20)
    out: list[Record] = []
    for ts, frame in read_frames(BTC_FILE):
        if frame.startswith('{"lastUpdateId"'):
            feed.on_snapshot("btcusdt", frame, ts, out)
        else:
            feed.handle(frame, ts, out)
    return tuple(out)


@cache
def news_items() -> tuple[NewsItem, ...]:
    """The real CoinDesk feed as the news collector stores it: one poll, one ingested_at."""
    ingested = 1_790_000_000_000_000_000
    parsed = parse_feed(
        COINDESK.read_bytes(),
        source="coindesk",
        url="https://coindesk.com/rss",
        ingested_at=ingested,
    )
    return tuple(assign(DedupeIndex(3600 * 10**9), parsed.entries, ingested).items)


def kline_candles(n: int = 2000) -> list[Candle]:
    """The first ``n`` real one-minute bars. The file has no quote or taker volume and
    no trade count: those are NaN and None, as a backfill from it stores them."""
    out = []
    with gzip.open(KLINES, "rt") as f:
        for row in itertools.islice(csv.DictReader(f), n):
            t = int(row["open_time_ms"]) * 1_000_000
            o, h, lo, c, v = (float(row[k]) for k in ("open", "high", "low", "close", "volume"))
            end = t + 59_999_000_000
            out.append(
                Candle(
                    "binance",
                    "btcusdt",
                    "1m",
                    t,
                    end,
                    o,
                    h,
                    lo,
                    c,
                    v,
                    NAN,
                    None,
                    NAN,
                    NAN,
                    True,
                    end,
                    end + 5,
                )
            )
    return out


def feature_rows(records: tuple[Record, ...]) -> tuple[tuple[str, ...], list[FeatureRow]]:
    fs = feature_set(load_settings([], environ={}).features)
    events = sorted(
        (r for r in records if type(r) in (Book, Trade)),
        key=lambda r: (r.ts_event, 1 if type(r) is Trade else 0),
    )
    engine = FeatureEngine(fs, ["btcusdt"])
    rows: list[FeatureRow] = []
    for r in events:
        rows += engine.push(r)
    return fs.float_columns, rows


class Req(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


class Recorder(ThreadingHTTPServer):
    """Records every request; answers with ``script``'s (status, headers, body) in turn,
    then 204. ``echo`` answers 400 with the request's headers in the body."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Req] = []
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self.echo = False
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        url = urllib.parse.urlsplit(self.path)
        headers = dict(self.headers.items())
        self.server.requests.append(
            Req("POST", url.path, dict(urllib.parse.parse_qsl(url.query)), headers, body)
        )
        if self.server.echo:
            status, extra, out = 400, {}, json.dumps({"error": f"bad request {headers}"}).encode()
        elif self.server.script:
            status, extra, out = self.server.script.pop(0)
        else:
            status, extra, out = 204, {}, b""
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


# -- line protocol, pure --------------------------------------------------------------------


def test_doctests() -> None:
    for mod in (lp, influx_mod):
        assert doctest.testmod(mod).failed == 0


def test_escaping_of_names_tags_keys_and_strings() -> None:
    series = lp.series_key("my m,x", (("sym bol", "a=b,c d"), ("exchange", "binance")))
    assert series == r"my\ m\,x,exchange=binance,sym\ bol=a\=b\,c\ d"
    assert lp.escape_key("line\nbreak") == r"line\ break"  # a newline would end the line
    assert lp.string_field('a "quoted" \\ back\nslash') == r'"a \"quoted\" \\ back' + '\nslash"'
    fields = [(lp.escape_key("k=1"), "x,y z"), ("n", 3)]
    assert lp.line(series, fields, 7) == series + r' k\=1="x,y z",n=3i 7'
    assert lp.series_key("m", (("empty", ""),)) == "m"  # InfluxDB rejects k=


def test_field_types_and_skipped_values() -> None:
    assert lp.field_value(1.5) == "1.5"
    assert lp.field_value(0.1 + 0.2) == "0.30000000000000004"  # shortest round trip
    assert lp.field_value(1e-7) == "1e-07"
    assert lp.field_value(3) == "3i"
    assert lp.field_value(-(2**62)) == f"{-(2**62)}i"
    assert lp.field_value(True) == "true" and lp.field_value(False) == "false"
    for skipped in (None, NAN, math.inf, -math.inf):
        assert lp.field_value(skipped) is None
    np = pytest.importorskip("numpy")
    assert lp.field_value(np.float64(2.5)) == "2.5"
    assert lp.field_value(np.int64(4)) == "4i"
    assert lp.line("m", [("a", NAN), ("b", None)], 1) is None  # no field left: no line

    book = Book("binance", "btcusdt", "diff", 9, 5_000_000, 6, (101.0, 1.0, NAN, NAN))
    assert lp.book_line(book, "ccf_") == (
        "ccf_book,exchange=binance,source=diff,symbol=btcusdt "
        "a_p_0=101.0,a_q_0=1.0,update_id=9i,ts_recv=6i 5000009"
    )
    candle = Candle(
        "binance",
        "btcusdt",
        "1m",
        60,
        119,
        1.0,
        2.0,
        0.5,
        1.5,
        10.0,
        15.0,
        None,
        4.0,
        6.0,
        True,
        100,
        101,
    )
    got = lp.candle_line(candle, "ccf_")
    assert got is not None and "trades" not in got and ",closed=true," in got
    assert got.startswith("ccf_candle,exchange=binance,interval=1m,symbol=btcusdt ")
    assert got.endswith(" 60")
    gap = Gap("binance", "btcusdt", "book", 10, None, "disconnect", 'said "bye"', 11)
    assert lp.gap_line(gap) == (
        'gap,exchange=binance,stream=book,symbol=btcusdt reason="disconnect",'
        'detail="said \\"bye\\"",ts_recv=11i,filled=false 10'
    )


def test_same_millisecond_trades_stay_apart_and_rewrites_land_on_one_point() -> None:
    ms = 1_723_161_253_153 * 1_000_000
    trades = [Trade("binance", "btcusdt", i, 1.0, 1.0, "buy", ms, ms) for i in (7, 8, 1_000_009)]
    times = [lp.trade_line(t).rsplit(" ", 1)[1] for t in trades]  # type: ignore[union-attr]
    assert times == [str(ms + 7), str(ms + 8), str(ms + 9)]  # distinct, in id order
    assert all(int(t) // 1_000_000 * 1_000_000 == ms for t in times)  # still the event's ms


# -- 1.x against the real influxd -----------------------------------------------------------


def _predictions_and_scores(rows: list[FeatureRow]) -> tuple[list[Prediction], list[Score]]:
    preds, scores = [], []
    for i, r in enumerate(rows[:50]):
        p = Prediction(
            "binance",
            "btcusdt",
            "m_p",
            r.ts,
            5,
            r.ts + 5 * 10**9,
            "champion",
            "lgbm",
            "3",
            r.ts_end + 1000,
            r.ts_end,
            61_600.0 + i,
            1e-4 * i,
            (0.1, 0.5, 0.9),
            (-2e-4 * i, 1e-4 * i, 3e-4 * i),
            None,
        )
        preds.append(p)
        preds.append(
            p._replace(
                role="naive",
                model="naive",
                version="0",
                flag="warming_up",
                point=NAN,
                quantiles=(NAN, NAN, NAN),
            )
        )
        scores.append(
            Score(
                "binance",
                "btcusdt",
                "m_p",
                r.ts,
                5,
                "champion",
                "lgbm",
                "3",
                2e-4,
                -1e-4,
                1e-4,
                1e-8,
                2e-4,
                NAN if i % 2 else 1.0,
                (1.0, 0.0),
                5e-5,
                1 - i % 3,
                -1e-5,
                r.ts_end + 5 * 10**9,
            )
        )
    return preds, scores


@needs_data
def test_real_records_read_back_equal(
    influxd: Influxd,  # noqa: F811
) -> None:
    raw = recorded()
    news = news_items()
    columns, rows = feature_rows(raw)
    preds, scores = _predictions_and_scores(rows)
    candles = kline_candles()
    settings = load_settings(
        ["influx.enabled=true", f"influx.url={influxd.url}", "influx.flush_interval_s=0.05"],
        environ={},
    )
    tee = open_influx(settings)
    assert tee is not None
    for i in range(0, len(raw), 5000):  # as the collector hands them over
        tee.raw(raw[i : i + 5000])
    tee.raw(news)
    tee.raw(candles)
    tee.features(columns, rows, feature_set="features_default_v1")
    tee.predictions(preds)
    tee.scores(scores)
    assert tee.flush(60)
    stats = tee.stats()
    tee.close()
    assert stats.batches_failed == stats.lines_dropped == stats.encode_errors == 0

    url = influxd.url
    trades = [r for r in raw if type(r) is Trade]
    books = [r for r in raw if type(r) is Book]
    quotes = [r for r in raw if type(r) is Quote]
    assert len(trades) > 5000 and len(books) > 2000 and len(quotes) > 20000
    raw_lines = len(lp.raw_lines(raw))  # gaps too, if the file has any; no dead letters
    derived = len(rows) + len(preds) + len(scores)
    assert stats.lines_written == raw_lines + len(news) + len(candles) + derived

    got = {r["trade_id"]: r for r in query(url, "SELECT * FROM ccf_trade")}
    assert len(got) == len(trades)
    for t in trades:
        g = got[t.trade_id]
        assert g["time"] == lp.point_ns(t.ts_event, t.trade_id)
        assert (g["exchange"], g["symbol"], g["side"]) == (t.exchange, t.symbol, t.side)
        assert (g["price"], g["qty"], g["ts_recv"], g["backfilled"]) == (
            t.price,
            t.qty,
            t.ts_recv,
            t.backfilled,
        )

    got = {r["update_id"]: r for r in query(url, "SELECT * FROM ccf_book")}
    assert len(got) == len(books)
    for b in books:
        g = got[b.update_id]
        assert g["time"] == lp.point_ns(b.ts_event, b.update_id) and g["source"] == "diff"
        levels = zip(book_columns(20), b.levels, strict=True)
        assert all(same(g.get(c), v) for c, v in levels), b.update_id

    got = {r["update_id"]: r for r in query(url, "SELECT * FROM ccf_quote")}
    assert len(got) == len(quotes)
    for q in quotes:
        g = got[q.update_id]
        assert (g["bid_price"], g["bid_qty"], g["ask_price"], g["ask_qty"]) == q[3:7]

    got_news = {r["item_id"]: r for r in query(url, "SELECT * FROM ccf_news")}
    assert len(got_news) == len(news) > 20  # one poll, one time: item_id keeps them apart
    for n in news:
        g = got_news[n.item_id]
        assert g["time"] == n.ingested_at
        for f in ("guid", "title", "summary", "link", "authors", "tags", "title_key"):
            assert g[f] == getattr(n, f), f  # quotes, commas, unicode, newlines: all intact
        assert same(g["published_at"], n.published_at)

    got_c = query(url, "SELECT * FROM ccf_candle")
    assert [r["time"] for r in got_c] == [c.open_time for c in candles]
    for g, c in zip(got_c, candles, strict=True):
        assert g["interval"] == "1m" and g["closed"] is True and g["close_time"] == c.close_time
        for f in ("open", "high", "low", "close", "volume", "quote_volume", "trades"):
            assert same(g.get(f), getattr(c, f)), f  # unknown ones left out: null

    got_rows = {r["time"]: r for r in query(url, "SELECT * FROM ccf_features")}
    assert len(got_rows) == len(rows) > 300
    nan_seen = 0
    for r in rows:
        g = got_rows[r.ts]
        assert g["ts_end"] == r.ts_end and g["feature_set"] == "features_default_v1"
        for c, v in zip(columns, r.values, strict=True):
            assert same(g.get(c), v), (r.ts, c, g.get(c), v)
            nan_seen += math.isnan(v)
    assert nan_seen > 0  # the warm-up rows' NaNs were left out and read back as null

    got_p = query(url, "SELECT * FROM ccf_predictions WHERE \"role\" = 'champion'")
    assert len(got_p) == len(preds) // 2
    by_ts = {r["time"]: r for r in got_p}
    for p in preds[::2]:
        g = by_ts[p.ts]
        assert (g["horizon"], g["model"], g["version"], g["point"]) == ("5", "lgbm", "3", p.point)
        assert [g["q0.1"], g["q0.5"], g["q0.9"]] == [float(x) for x in p.quantiles]
    naive = query(url, "SELECT * FROM ccf_predictions WHERE \"role\" = 'naive'")
    assert {r["flag"] for r in naive} == {"warming_up"} and {r["point"] for r in naive} == {None}
    got_s = query(url, "SELECT * FROM ccf_scores")
    assert len(got_s) == len(scores)
    assert sorted((r["time"], r["signal"], r["in_0"], r["in_1"]) for r in got_s) == sorted(
        (s.ts, s.signal, 1.0, 0.0) for s in scores
    )


@needs_data
def test_influxd_stopped_mid_stream_then_restarted_loses_nothing(
    influxd: Influxd,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    trades = [r for r in recorded() if type(r) is Trade]
    lines = lp.raw_lines(trades, "ccf_")
    a, a2, b, c = lines[:3000], lines[3000:6000], lines[6000:9000], lines[9000:]
    w = fast_writer(cfg_for(influxd.url, batch_lines=500))
    w.write(a)
    assert w.flush(30)
    w.write(a2)  # in flight or queued when the server goes
    influxd.__exit__(None, None, None)
    w.write(b)
    assert not w.flush(0.3)  # nobody to take them: held
    assert wait_for(lambda: w.stats().retries > 0)
    held = w.stats()
    assert held.lines_buffered > 0 and held.lines_dropped == 0
    influxd.__enter__()
    w.write(c)
    assert w.flush(60)
    w.close()
    stats = w.stats()
    assert stats.lines_written == len(lines)  # each line acknowledged exactly once
    assert stats.lines_dropped == stats.batches_failed == stats.lines_buffered == 0
    # a batch the server wrote but could not acknowledge was sent again: same point
    assert count(influxd.url, "ccf_trade") == len(lines)
    ids = {r["trade_id"] for r in query(influxd.url, "SELECT trade_id FROM ccf_trade")}
    assert ids == {t.trade_id for t in trades}
    text = caplog.text
    assert "will retry" in text and "reachable again" in text


def test_influxd_started_late_database_created_oldest_dropped_past_the_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    (tmp_path / "influx").mkdir()
    server = Influxd(tmp_path / "influx")  # its port is chosen; nothing listens yet
    w = fast_writer(cfg_for(server.url, batch_lines=30, max_buffer_lines=100))
    lines = [f"ccf_t,exchange=binance,symbol=btcusdt n={i}i {1_000 + i}" for i in range(250)]
    for i in range(0, 250, 50):
        w.write(lines[i : i + 50])
    # once the batch in flight has come back, exactly the newest 100 are held
    assert wait_for(lambda: (w.stats().lines_buffered, w.stats().lines_dropped) == (100, 150))
    assert "buffer full (max_buffer_lines=100)" in caplog.text
    with server:  # the database does not exist yet: the writer creates it
        assert w.flush(60)
        w.close()
        got = sorted(r["n"] for r in query(server.url, "SELECT n FROM ccf_t"))
    assert got == list(range(150, 250))
    stats = w.stats()
    assert (stats.lines_written, stats.lines_dropped, stats.batches_failed) == (100, 150, 0)
    assert "created database ccf" in caplog.text


def test_batches_by_size_and_by_interval_without_flush() -> None:
    with Recorder() as srv:
        w = fast_writer(cfg_for(srv.url, batch_lines=2, flush_interval_s=0.05))
        w.write([f"m n={i}i {i}" for i in range(1, 6)])
        assert wait_for(lambda: w.stats().lines_written == 5)  # the last one by the clock
        w.write(["m n=6i 6"])  # one line into an empty queue still goes out
        assert wait_for(lambda: w.stats().lines_written == 6)
        w.close()
        lazy = fast_writer(cfg_for(srv.url, flush_interval_s=3600))
        lazy.write(["m n=7i 7", "m n=8i 8"])
        lazy.close(10)  # not due for an hour: close sends them
        lazy.write(["m n=9i 9"])  # too late: counted, not queued
        sizes = [len(gzip.decompress(r.body).splitlines()) for r in srv.requests]
    assert sizes == [2, 2, 1, 1, 2]
    stats = lazy.stats()
    assert (stats.lines_written, stats.lines_dropped, stats.lines_buffered) == (2, 1, 0)


def test_bad_line_is_logged_and_the_rest_goes_through(
    influxd: Influxd,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOG)
    w = fast_writer(cfg_for(influxd.url))
    good = [f"ccf_t,symbol=btcusdt price={i}.5 {i}" for i in range(1, 101)]
    w.write(good[:40])
    assert w.flush(30)
    w.write([*good[40:60], "ccf_t,symbol=btcusdt this is not line protocol", *good[60:80]])
    assert w.flush(30)  # refused, not retried: the queue empties
    w.write([*good[80:], "ccf_t,symbol=btcusdt price=7i 5000"])  # a field type conflict
    assert w.flush(30)
    w.write(["ccf_t,symbol=btcusdt price=8.5 6000"])
    assert w.flush(30)
    w.close()
    stats = w.stats()
    assert (stats.batches_failed, stats.lines_failed, stats.lines_written) == (2, 62, 41)
    assert count(influxd.url, "ccf_t", "price") == 101  # 1.x writes a batch's good lines
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "refused a batch of 41 lines" in errors[0].getMessage()
    assert "unable to parse" in errors[0].getMessage()
    assert "this is not line protocol" in errors[0].getMessage()  # the server names the line
    assert "field type conflict" in stats.last_error


def test_secrets_never_in_logs_repr_or_stats(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG)
    password, token = "pw-Zq81-secret", "tok-Yx72-secret"
    monkeypatch.setenv("CCF_TEST_INFLUX_PW", password)
    (tmp_path / "token").write_text(token + "\n")
    basic = base64.b64encode(f"ccf:{password}".encode()).decode()
    with Recorder() as srv:
        srv.echo = True  # a server that puts what it got into its error message
        v1 = cfg_for(srv.url, username="ccf", password="env:CCF_TEST_INFLUX_PW")
        v2 = cfg_for(srv.url, api="v2", org="acme", token=f"file:{tmp_path / 'token'}")
        for cfg in (v1, v2):
            tee = InfluxTee(cfg, fast_writer(cfg))
            tee.raw([Trade("binance", "btcusdt", 1, 1.0, 1.0, "buy", 10**15, 10**15)])
            assert tee.flush(30)
            shown = [repr(tee), repr(tee.writer), str(tee.stats()), repr(vars(tee.writer))]
            tee.close()
            for s in shown:
                assert password not in s and token not in s and basic not in s
        auths = [r.headers["Authorization"] for r in srv.requests]
    assert auths == [f"Basic {basic}", f"Token {token}"]  # they were sent, though
    assert caplog.text.count("refused a batch") == 2 and "***" in caplog.text
    assert password not in caplog.text and token not in caplog.text and basic not in caplog.text


def test_v2_request_shape_gzip_token_and_retries(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cr3t-token")
    lines = [f"ccf_t,symbol=btcusdt n={i}i {i}" for i in range(1, 6)]
    with Recorder() as srv:
        srv.script = [
            (503, {}, b'{"code":"unavailable"}'),
            (429, {"Retry-After": "0"}, b'{"code":"too many requests"}'),
        ]
        cfg = cfg_for(
            srv.url + "/influx/",
            api="v2",
            org="my org",
            bucket="ticks.raw",
            token=f"file:{tmp_path / 'token'}",
        )
        w = fast_writer(cfg)
        w.write(lines)
        assert w.flush(30)
        w.close()
        reqs = srv.requests
    assert len(reqs) == 3  # 503 and 429 retried, then 204
    for r in reqs:
        assert r.path == "/influx/api/v2/write"  # behind a proxy's path prefix
        assert r.query == {"org": "my org", "bucket": "ticks.raw", "precision": "ns"}
        assert r.headers["Authorization"] == "Token s3cr3t-token"
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Content-Type"].startswith("text/plain")
        assert gzip.decompress(r.body).decode() == "\n".join(lines) + "\n"
    stats = w.stats()
    assert (stats.lines_written, stats.retries, stats.batches_failed) == (5, 2, 0)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ccf-test-influx")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crt, pem = tmp_path / "ca.pem", tmp_path / "key.pem"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem


def test_tls_verified_with_ca_bundle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("cryptography")
    crt, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    with Recorder(tls=ctx) as srv:
        w = fast_writer(cfg_for(srv.url, ca_bundle=crt))
        w.write(["m f=1i 1"])
        assert w.flush(30)
        w.close()
        untrusted = fast_writer(cfg_for(srv.url))  # the system CAs do not know this one
        untrusted.write(["m f=2i 2"])
        assert wait_for(lambda: untrusted.stats().retries > 0)
        untrusted.close(0.5)
        assert len(srv.requests) == 1
    assert w.stats().lines_written == 1
    assert untrusted.stats().lines_dropped == 1 and untrusted.stats().lines_written == 0
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stats().last_error


def test_tee_honours_kinds_and_survives_a_bad_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert open_influx(load_settings([], environ={})) is None  # off by default
    with Recorder() as srv:
        cfg = cfg_for(srv.url, kinds=("raw", "scores"))
        tee = InfluxTee(cfg, fast_writer(cfg))
        good = Trade("binance", "btcusdt", 1, 1.0, 2.0, "buy", 10**15, 10**15)
        bad = good._replace(trade_id=2, price="1.0", qty=None)  # a bug upstream
        assert tee.raw([good, bad, good._replace(trade_id=3)]) == 2  # only the bad one lost
        assert tee.features(["m_p"], [FeatureRow("btcusdt", 1, 2, (1.0,))]) == 0  # not a kind
        assert tee.predictions([]) == 0
        assert tee.flush(30)
        tee.close()
        body = gzip.decompress(srv.requests[0].body).decode().splitlines()
    assert [ln.split(",", 1)[0] for ln in body] == ["ccf_trade", "ccf_trade"]
    assert tee.stats().encode_errors == 1
    assert "cannot encode a Trade" in caplog.text


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Every writer a test opens is closed: no ``ccf-influx`` thread outlives its test."""
    yield
    assert wait_for(lambda: not [t for t in threading.enumerate() if t.name == "ccf-influx"], 10)
