"""The venue registry and interface, with Binance spot behind it."""

from __future__ import annotations

import orjson
import pytest

from ccf.sources import venues
from ccf.sources.venues.base import Feed, Venue, split_symbol


def test_binance_spot_is_a_venue_with_a_feed() -> None:
    v = venues.get("binance")
    assert isinstance(v, Venue)
    assert v.market == "spot"
    feed = v.make_feed(("btcusdt",), ("depth@100ms", "trade"))
    assert isinstance(feed, Feed)
    assert feed.exchange == "binance"
    assert v.stream_kind("depth@100ms") == "book"
    assert v.supports("trade") and not v.supports("markPrice")


def test_symbol_mapping_round_trips() -> None:
    v = venues.get("binance")
    assert v.instrument("btcusdt") == "btc-usdt"
    assert v.instrument("ETHFDUSD") == "eth-fdusd"
    assert v.native("btc-usdt") == "btcusdt"
    with pytest.raises(ValueError, match="not a spot instrument"):
        v.native("btc-usdt-perp")
    with pytest.raises(ValueError, match="cannot split"):
        split_symbol("usdt")


def test_streams_go_in_the_url_then_in_subscribe_messages() -> None:
    v = venues.get("binance")
    streams = [f"s{i}@trade" for i in range(260)]
    url = v.stream_url("ws://h:1/", streams)
    assert url == "ws://h:1/stream?streams=" + "/".join(streams[:50])
    msgs = [orjson.loads(m) for m in v.subscribe_messages(streams)]
    assert [m["id"] for m in msgs] == [1, 2]
    assert [p for m in msgs for p in m["params"]] == streams[50:]


def test_unknown_venue_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known venues are binance"):
        venues.get("nasdaq")
