"""The REST client against the replay exchange's REST endpoints."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from ccf.config import ReplayConfig
from ccf.sources.binance.rest import BinanceRest, RestError, depth_weight, weight_wait_s
from ccf.sources.replay.exchange import running_exchange
from ccf.sources.replay.timeline import Timeline, load_timeline
from tests.sources.recorded import recording_files


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return load_timeline(recording_files(("btcusdt",)))


async def test_depth_weight_is_tracked_from_the_header(timeline: Timeline) -> None:
    async with running_exchange(ReplayConfig(port=0), timeline) as ex, aiohttp.ClientSession() as s:
        rest = BinanceRest(s, ex.url)
        body, ts = await rest.depth("btcusdt", 1000)
        snap = orjson.loads(body)
        assert len(snap["bids"]) == len(snap["asks"]) == 1000
        assert rest.used_weight == depth_weight(1000) == 50
        await rest.depth("btcusdt", 100)
        assert rest.used_weight == 55  # the exchange's count, read back from X-MBX-USED-WEIGHT-1M
        assert ts > 0


async def test_429_and_418_wait_for_retry_after_then_succeed(timeline: Timeline) -> None:
    async with running_exchange(ReplayConfig(port=0), timeline) as ex, aiohttp.ClientSession() as s:
        ex.set_faults(rest_429=1, rest_418=1, retry_after_s=1)
        rest = BinanceRest(s, ex.url)
        body, _ = await rest.depth("btcusdt", 5)
        assert orjson.loads(body)["lastUpdateId"] > 0
        assert rest.stats["rate_limited"] == 1 and rest.stats["banned"] == 1
        assert rest.stats["calls"] == 3


async def test_a_bad_symbol_is_an_error_not_a_retry(timeline: Timeline) -> None:
    async with running_exchange(ReplayConfig(port=0), timeline) as ex, aiohttp.ClientSession() as s:
        rest = BinanceRest(s, ex.url)
        with pytest.raises(RestError, match="Invalid symbol"):
            await rest.depth("nosuchusdt", 5)
        assert rest.stats["calls"] == 1
    with pytest.raises(ValueError, match="maximum of 5000"):
        depth_weight(6000)


def test_weight_wait_waits_for_the_next_minute_only_when_over() -> None:
    assert weight_wait_s(5900, 50, 6000, now_s=120.0) == 0.0
    assert weight_wait_s(5990, 50, 6000, now_s=130.0) == pytest.approx(50.05)
    assert weight_wait_s(0, 250, 200, now_s=179.5) == pytest.approx(0.55)
