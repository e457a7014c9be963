"""The player: one task that walks the timeline at ``speed`` and fans each frame out.

Each frame goes to the connections subscribed at that moment, so a client
that connects later misses what came before, as on the real exchange. At
speed 0 it runs flat out, yielding to the event loop every few hundred frames.
Besides the recorded streams it sends ``@aggTrade`` (one frame when an
aggregate's last trade is played), ``@kline_<interval>`` (:mod:`.klines_live`)
and the once-a-second streams (:mod:`.seconds`: 1000 ms diffs, partial
depth, tickers), each at its own cadence.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ccf.config import ReplayConfig
from ccf.sources.replay.clock import ReplayClock
from ccf.sources.replay.faults import Faults
from ccf.sources.replay.hub import Hub
from ccf.sources.replay.klines_live import LiveKlines
from ccf.sources.replay.market import Emitted, Market
from ccf.sources.replay.rest_tickers import TickerApi
from ccf.sources.replay.seconds import SecondStreams
from ccf.sources.replay.stats import Window
from ccf.sources.replay.wire import BOOK_TICKER, DEPTH, TRADE

log = logging.getLogger(__name__)

_YIELD_EVERY = 256  # frames between event-loop yields at speed 0
_RAW, _AGG = 0, -1  # stream renderers; a positive number is a partial-depth level count
Route = tuple[str, bytes, int]  # stream name, its combined-frame prefix, renderer


def stream_routes(sym: str, futures: bool = False) -> dict[str, list[Route]]:
    """Per frame kind: the stream names it feeds, their combined-frame prefix, and renderer.

    A USD-M recording (``futures``) was taken from ``@depth@0ms``: its diffs go there,
    and to ``@depth``/``@depth@100ms`` as well (each diff is a valid one of those)."""
    depth = [(f"{sym}@depth@100ms", _RAW)] + [(f"{sym}@depth{n}@100ms", n) for n in (5, 10, 20)]
    if futures:
        depth = [(f"{sym}@depth@0ms", _RAW), (f"{sym}@depth", _RAW), (f"{sym}@depth@100ms", _RAW)]
    names: dict[str, list[tuple[str, int]]] = {
        # the 100 ms streams: one frame per recorded diff (the 1000 ms ones: .seconds)
        DEPTH: depth,
        TRADE: [(f"{sym}@trade", _RAW), (f"{sym}@aggTrade", _AGG)],
        BOOK_TICKER: [(f"{sym}@bookTicker", _RAW)],
    }
    return {
        kind: [(n, f'{{"stream":"{n}","data":'.encode(), r) for n, r in lst]
        for kind, lst in names.items()
    }


class Player:
    """Plays once :attr:`go` is set (first subscription, or at once); counts what it sent."""

    def __init__(
        self,
        cfg: ReplayConfig,
        market: Market,
        clock: ReplayClock,
        hub: Hub,
        faults: Faults,
        klines: LiveKlines,
    ) -> None:
        self._cfg = cfg
        self._market = market
        self._timeline = market.timeline
        self._clock = clock
        self._hub = hub
        self._faults = faults
        self._klines = klines
        self._routes = {s: stream_routes(s, i.futures) for s, i in self._timeline.symbols.items()}
        self.tickers: TickerApi | None = None  # set by the exchange, for the ticker streams
        self.seconds = SecondStreams(market, hub.subs, self._stats)
        self.go = asyncio.Event()
        self.frames_dispatched = 0
        self.finished = False

    def _stats(self, sym: str, span_ms: int, now_ms: int) -> Window:
        assert self.tickers is not None
        return self.tickers.stats(sym, span_ms, now_ms)

    async def run(self) -> None:
        await self.go.wait()
        self._market.rebase(self._clock.start())
        hub, clock, market, klines = self._hub, self._clock, self._market, self._klines
        seconds = self.seconds
        speed, period = self._cfg.speed, self._timeline.period_ns
        anchor_ts: int | None = None
        anchor_wall = 0.0
        current_pass = 0
        log.info(
            "part=exchange replay started speed=%s frames_per_pass=%d time_shift_ms=%d",
            speed,
            len(self._timeline.items),
            self._market.time_shift_ms,
        )
        for k, item in self._timeline.passes(self._cfg.loop, self._cfg.max_passes):
            ts = item.ts_ns + k * period
            if k != current_pass:
                current_pass = k
                log.info("part=exchange pass started pass=%d frames_sent=%d", k, hub.frames_sent)
            if speed:
                if anchor_ts is None:
                    anchor_ts, anchor_wall = ts, time.monotonic()
                wait = anchor_wall + (ts - anchor_ts) / 1e9 / speed - time.monotonic()
                if wait > 0.0005:
                    await hub.flush()
                    clock.hold(ts)
                    await asyncio.sleep(wait)
                elif wait < -1.0:  # fell behind (slow clients): carry on from here, no burst
                    anchor_ts, anchor_wall = ts, time.monotonic()
            self.frames_dispatched += 1
            if self.frames_dispatched % _YIELD_EVERY == 0:
                await hub.flush()
                await asyncio.sleep(0)
            clock.sent(ts)
            ev = market.event_ms_of(k, item)
            if ev >= seconds.due_ms:  # the second's streams, from the book before this frame
                for name, payload in seconds.tick(ev):
                    self._send(name, payload)
            self._broadcast(market.step(k, item))
            now_ms = market.event_ms
            if now_ms is not None and now_ms >= klines.due_ms:
                for name, payload in klines.tick(now_ms):
                    self._send(name, payload)
        if market.event_ms is not None:  # the last second's streams
            for name, payload in seconds.tick(max(market.event_ms, seconds.due_ms)):
                self._send(name, payload)
        await hub.flush()
        clock.hold(None)
        self.finished = True
        log.info(
            "part=exchange replay finished passes=%d frames_sent=%d",
            current_pass + 1,
            hub.frames_sent,
        )

    def _broadcast(self, em: Emitted) -> None:
        skip = em.kind == DEPTH and not em.synthetic and self._faults.skip_diff()
        if em.kind == DEPTH and em.data is not None:
            self.seconds.add_diff(em.symbol, em.data, skip)
        partial: dict[int, bytes] = {}
        subs, send = self._hub.subs, self._hub.send
        for name, prefix, renderer in self._routes[em.symbol][em.kind]:
            conns = subs.get(name)
            if not conns:
                continue
            if renderer == _RAW:
                if skip:
                    continue
                payload = em.payload
            elif renderer == _AGG:
                agg = self._market.agg_trade(em)
                if agg is None:
                    continue  # the aggregate goes out with its last trade
                payload = agg
            else:
                if renderer not in partial:
                    partial[renderer] = self._market.partial(em.symbol, renderer)
                payload = partial[renderer]
            wrapped = None
            for conn in tuple(conns):
                if conn.combined:
                    if wrapped is None:
                        wrapped = prefix + payload + b"}"
                    send(conn, wrapped, name)
                else:
                    send(conn, payload, name)

    def _send(self, name: str, payload: bytes) -> None:
        """One payload to the subscribers of a stream the market does not route (klines)."""
        conns = self._hub.subs.get(name)
        if not conns:
            return
        wrapped = f'{{"stream":"{name}","data":'.encode() + payload + b"}"
        for conn in tuple(conns):
            self._hub.send(conn, wrapped if conn.combined else payload, name)
