"""Each venue's recorded frames rebuild books that the venue itself vouches for:
OKX and Kraken by their checksum at every update, Coinbase by an independent
Decimal rebuild; a corrupted checksum gives a gap and a resync of that instrument."""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter

import orjson
import pytest

from ccf.config import shared_dir
from ccf.records import Book, DeadLetter, Gap, Trade
from ccf.sources import venues
from ccf.sources.venues import strbook
from ccf.sources.venues.coinbase import symbols as coinbase_symbols
from ccf.sources.venues.coinbase.feed import CoinbaseFeed
from ccf.sources.venues.coinbase.times import iso_ns
from ccf.sources.venues.kraken import symbols as kraken_symbols
from ccf.sources.venues.kraken.feed import KrakenFeed
from ccf.sources.venues.okx import symbols as okx_symbols
from ccf.sources.venues.okx.feed import OkxFeed
from tests.sources.venues.recorded import (
    COINBASE_SYMBOLS,
    KRAKEN_SYMBOLS,
    OKX_SYMBOLS,
    venue_facts,
)


def _run(feed, frames):
    out: list = []
    for ts, text in frames:
        feed.handle(text, ts, out)
    return out


def test_okx_books_match_okx_checksum_at_every_update() -> None:
    facts = venue_facts("okx")
    feed = OkxFeed(OKX_SYMBOLS)
    out = _run(feed, facts.frames)
    assert facts.book_updates_with_checksum == 290
    assert feed.stats["checksums_verified"] == 290
    assert feed.stats["checksum_mismatches"] == 0
    kinds = Counter(type(r).__name__ for r in out)
    assert kinds == {"Book": 290, "Trade": 74, "Quote": 28}
    assert {r.symbol for r in out} == set(OKX_SYMBOLS)


def test_kraken_books_match_kraken_checksum_at_every_update() -> None:
    facts = venue_facts("kraken")
    feed = KrakenFeed(KRAKEN_SYMBOLS)
    out = _run(feed, facts.frames)
    assert facts.book_updates_with_checksum == 4269
    assert feed.stats["checksums_verified"] == 4269
    assert feed.stats["checksum_mismatches"] == 0
    # one record per snapshot (10) and per update
    assert Counter(type(r) for r in out) == {Book: 4279}


def test_coinbase_books_match_an_independent_rebuild() -> None:
    facts = venue_facts("coinbase")
    feed = CoinbaseFeed(COINBASE_SYMBOLS)
    out = _run(feed, facts.frames)
    assert not [r for r in out if isinstance(r, DeadLetter | Gap)]
    for sym, (bids, asks) in facts.final_books.items():
        book = feed.state[sym].book
        assert book.bids.as_floats() == {float(p): float(q) for p, q in bids.items()}
        assert book.asks.as_floats() == {float(p): float(q) for p, q in asks.items()}
        assert len(bids) > 50 and len(asks) > 50
    last = {}
    for r in out:
        if isinstance(r, Book):
            last[r.symbol] = r
    for sym, rec in last.items():  # the last record's top 10 is the rebuilt book's
        bids, asks = facts.final_books[sym]
        want = []
        for side, rev in ((asks, False), (bids, True)):
            for p in sorted(side, reverse=rev)[:10]:
                want += [float(p), float(side[p])]
        top = [x for x in rec.levels if not math.isnan(x)]
        assert top == want


def test_coinbase_trades_are_takers_side_and_every_match_once() -> None:
    facts = venue_facts("coinbase")
    out = _run(CoinbaseFeed(COINBASE_SYMBOLS), facts.frames)
    trades = [r for r in out if isinstance(r, Trade)]
    by_sym: dict[str, list[int]] = {}
    for t in trades:
        by_sym.setdefault(t.symbol, []).append(t.trade_id)
    assert {s: set(v) for s, v in by_sym.items()} == facts.trades
    assert sum(len(v) for v in by_sym.values()) == sum(len(v) for v in facts.trades.values())
    first = json.loads(next(t for _, t in facts.frames if '"type":"match"' in t))
    rec = next(t for t in trades if t.trade_id == first["trade_id"])
    assert rec.side == ("buy" if first["side"] == "sell" else "sell")  # maker sold: taker bought
    assert rec.ts_event == iso_ns(first["time"])


def _corrupt_okx(frames, n: int, inst: str):
    """The n-th books update of ``inst`` with its checksum off by one."""
    out, seen = [], 0
    for ts, text in frames:
        if f'"channel":"books","instId":"{inst}"' in text and '"action":"update"' in text:
            seen += 1
            if seen == n:
                m = orjson.loads(text)
                m["data"][0]["checksum"] += 1
                text = orjson.dumps(m).decode()
        out.append((ts, text))
    return out


def test_okx_corrupted_checksum_is_a_gap_and_a_resync_of_that_instrument_only() -> None:
    frames = _corrupt_okx(venue_facts("okx").frames, 10, "BTC-USDT")
    feed = OkxFeed(OKX_SYMBOLS)
    out = _run(feed, frames)
    gaps = [r for r in out if isinstance(r, Gap)]
    assert len(gaps) == 1 and gaps[0].symbol == "btc-usdt" and gaps[0].end_ts is None
    assert gaps[0].reason == "checksum_mismatch"
    assert [orjson.loads(m) for m in feed.take_outgoing()] == [
        {"op": "unsubscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]},
        {"op": "subscribe", "args": [{"channel": "books", "instId": "BTC-USDT"}]},
    ]
    books = Counter(r.symbol for r in out if isinstance(r, Book))
    # BTC-USDT: the snapshot and 9 good updates; the others every push
    assert books == {"btc-usdt": 10, "btc-usd-220527": 99, "uni-usd-swap": 93}
    assert feed.stats["checksum_mismatches"] == 1
    # the venue answers the resubscription with a snapshot: the gap closes
    snap = next(t for _, t in venue_facts("okx").frames if '"snapshot"' in t and "BTC-USDT" in t)
    after: list = []
    feed.handle(snap, 1, after)
    assert [type(r) for r in after] == [Gap, Book]
    assert after[0].end_ts is not None and after[0].start_ts == gaps[0].start_ts


def test_kraken_corrupted_checksum_is_a_gap_and_a_resync() -> None:
    frames = list(venue_facts("kraken").frames)
    i = next(i for i, (_, t) in enumerate(frames) if '"XBT/CHF"]' in t and '"c":"' in t)
    ts, text = frames[i]
    frames[i] = (ts, text.replace('"c":"', '"c":"9'))
    feed = KrakenFeed(KRAKEN_SYMBOLS)
    out = _run(feed, frames)
    gaps = [r for r in out if isinstance(r, Gap)]
    assert [(g.symbol, g.reason) for g in gaps] == [("xbt/chf", "checksum_mismatch")]
    msgs = [orjson.loads(m) for m in feed.take_outgoing()]
    assert [(m["event"], m["pair"]) for m in msgs] == [
        ("unsubscribe", ["XBT/CHF"]),
        ("subscribe", ["XBT/CHF"]),
    ]
    assert feed.stats["checksums_verified"] == 4269 - sum(
        1 for _, t in frames[i:] if '"XBT/CHF"]' in t and '"c":"' in t
    )


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (
            '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":5}]}',
            "bad books data",
        ),
        ("{not json", "not an OKX frame"),
        ('{"arg":{"channel":"books","instId":"ETH-USDT"},"data":[]}', "unsubscribed"),
    ],
)
def test_okx_bad_frames_are_dead_letters(frame: str, why: str) -> None:
    out: list = []
    OkxFeed(OKX_SYMBOLS).handle(frame, 1, out)
    assert len(out) == 1 and isinstance(out[0], DeadLetter) and why in out[0].reason


def test_kraken_and_coinbase_bad_frames_are_dead_letters() -> None:
    out: list = []
    KrakenFeed(KRAKEN_SYMBOLS).handle('[1,{"a":[["x"]]},"book-1000"]', 1, out)
    CoinbaseFeed(COINBASE_SYMBOLS).handle('{"type":"l2update","product_id":"SKL-USD"}', 1, out)
    CoinbaseFeed(COINBASE_SYMBOLS).handle('{"type":"match","trade_id":1}', 1, out)
    assert [type(r) for r in out] == [DeadLetter] * 3


def test_symbol_mapping_to_the_common_form() -> None:
    okx, cb, kr = venues.get("okx"), venues.get("coinbase"), venues.get("kraken")
    assert okx.instrument("btc-usdt") == "btc-usdt"
    assert okx.instrument("uni-usd-swap") == "uni-usd-perp"
    assert okx.instrument("btc-usd-220527") == "btc-usd-20220527"
    for common in ("btc-usdt", "uni-usd-perp", "btc-usd-20220527"):
        assert okx.instrument(okx.native(common)) == common
    with pytest.raises(ValueError, match="dated future"):
        okx.instrument("btc-usd-220514-22000-c")
    assert kr.instrument("xbt/chf") == "btc-chf" and kr.native("btc-chf") == "xbt/chf"
    assert cb.instrument("skl-usd") == "skl-usd" and cb.native("skl-usd") == "skl-usd"
    assert okx.stream_kind("btc-usdt@books") == "book" and kr.supports("xbt/usd@book")
    assert not cb.supports("btc-usd@full")


def _with_seq_ids(frames, break_at: int | None = None):
    """The recorded books pushes with OKX's seqId/prevSeqId (added to the API after this
    recording) numbered per instrument; ``break_at``: that update's prevSeqId skips one."""
    out, last, n = [], {}, 0
    for ts, text in frames:
        if '"channel":"books"' in text and '"data"' in text:
            m = orjson.loads(text)
            inst = m["arg"]["instId"]
            d = m["data"][0]
            seq = last.get(inst, 1000) + 3
            d["prevSeqId"] = -1 if m["action"] == "snapshot" else last[inst]
            d["seqId"] = seq
            last[inst] = seq
            if m["action"] == "update":
                n += 1
                if n == break_at:
                    d["prevSeqId"] -= 1
            text = orjson.dumps(m).decode()
        out.append((ts, text))
    return out


def test_okx_seq_ids_chain_and_a_break_is_a_gap_and_a_resync() -> None:
    frames = venue_facts("okx").frames
    feed = OkxFeed(OKX_SYMBOLS)
    out = _run(feed, _with_seq_ids(frames))
    books = [r for r in out if isinstance(r, Book)]
    assert len(books) == 290 and not [r for r in out if isinstance(r, Gap)]
    assert all(b.update_id > 1000 for b in books)  # the seqId is the record's update_id
    feed = OkxFeed(OKX_SYMBOLS)
    out = _run(feed, _with_seq_ids(frames, break_at=100))
    gaps = [r for r in out if isinstance(r, Gap)]
    assert [(g.reason, g.end_ts) for g in gaps] == [("sequence_gap", None)]
    assert "prevSeqId" in gaps[0].detail
    sym = gaps[0].symbol
    msgs = [orjson.loads(m) for m in feed.take_outgoing()]
    assert [m["op"] for m in msgs] == ["unsubscribe", "subscribe"]
    assert msgs[1]["args"] == [{"channel": "books", "instId": sym.upper()}]


def _rest_body(venue: str, path_part: str) -> str:
    for line in gzip.open(shared_dir() / "data" / "venues" / f"{venue}.0.gz", "rt"):
        head, sep, body = line.partition(": ")
        if sep and path_part in head:
            return body
    raise AssertionError(f"no {path_part} answer recorded for {venue}")


def test_every_real_instrument_maps_to_the_common_form_and_back() -> None:
    okx, cb, kr = venues.get("okx"), venues.get("coinbase"), venues.get("kraken")
    ids = []
    for kind in ("SPOT", "SWAP", "FUTURES"):
        ids += okx_symbols.instrument_ids(_rest_body("OKX", f"instType={kind}"))
    assert len(ids) > 400 and "BTC-USD-220527" in ids and "UNI-USD-SWAP" in ids
    commons = [okx.instrument(i.lower()) for i in ids]
    assert len(set(commons)) == len(ids)  # no two instruments share a name
    assert all(okx.native(c) == i.lower() for c, i in zip(commons, ids, strict=True))
    assert {c.rsplit("-", 1)[-1] for c in commons if c.count("-") == 2} >= {"perp", "20220527"}
    pairs = kraken_symbols.ws_pairs(_rest_body("KRAKEN", "AssetPairs"))
    assert "XBT/CHF" in pairs and len(pairs) > 250
    assert all(kr.native(kr.instrument(p.lower())) == p.lower() for p in pairs)
    products = coinbase_symbols.product_ids(_rest_body("COINBASE", "/products"))
    assert "SKL-USD" in products and len(products) > 100
    assert all(cb.native(cb.instrument(p.lower())) == p.lower() for p in products)


@pytest.mark.parametrize("venue", ["okx", "coinbase", "kraken"])
def test_c_and_python_books_write_the_same_records(venue: str, monkeypatch) -> None:
    assert strbook._strlevels is not None, "the C levels are built by `pip install -e .`"
    v = venues.get(venue)
    syms = {"okx": OKX_SYMBOLS, "coinbase": COINBASE_SYMBOLS, "kraken": KRAKEN_SYMBOLS}[venue]
    runs = []
    for use_c in (True, False):
        monkeypatch.setattr(strbook, "USE_C", use_c)
        runs.append(
            _run(v.make_feed(syms, tuple(v.kinds), book_depth=10), venue_facts(venue).frames)
        )
    c, py = runs
    assert len(c) == len(py) > 100

    def same(x: object, y: object) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return x == y or (math.isnan(x) and math.isnan(y))
        if isinstance(x, tuple) and isinstance(y, tuple):
            return len(x) == len(y) and all(same(i, j) for i, j in zip(x, y, strict=True))
        return x == y

    assert all(type(a) is type(b) and same(a, b) for a, b in zip(c, py, strict=True))


def test_okx_checksum_0_is_no_checksum_and_the_seq_ids_still_guard_the_book() -> None:
    """OKX sends checksum 0 since its retirement of the field (June 2026)."""
    zeroed = []
    for ts, text in _with_seq_ids(venue_facts("okx").frames, break_at=100):
        if '"checksum":' in text:
            m = orjson.loads(text)
            m["data"][0]["checksum"] = 0
            text = orjson.dumps(m).decode()
        zeroed.append((ts, text))
    feed = OkxFeed(OKX_SYMBOLS)
    out = _run(feed, zeroed)
    assert feed.stats["checksums_verified"] == 0 and feed.stats["checksum_mismatches"] == 0
    assert [g.reason for g in out if isinstance(g, Gap)] == ["sequence_gap"]


def test_make_feed_takes_the_collector_options_of_other_venues() -> None:
    for name in ("okx", "coinbase", "kraken"):
        v = venues.get(name)
        feed = v.make_feed(
            ("btc-usdt",) if name == "okx" else ("xbt/usd",) if name == "kraken" else ("btc-usd",),
            tuple(v.kinds),
            book_depth=20,
            max_id_jump=1_000_000,
        )
        assert feed.depth == 20 and feed.exchange == name
    with pytest.raises(ValueError, match="every update"):
        venues.get("okx").make_feed(("btc-usdt",), ("books",), book_cadence="1s")
    with pytest.raises(ValueError, match="1 to 25 levels"):
        venues.get("okx").make_feed(("btc-usdt",), ("books",), book_depth=50)
