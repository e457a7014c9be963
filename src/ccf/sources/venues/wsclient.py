"""A live websocket client for the subscription-message venues (OKX, Coinbase, Kraken).

Owns connecting, subscribing (at the venue's control-message rate), the venue's
keep-alive (OKX: text ``ping`` after ``ping_interval_s`` of silence, answered
``pong``; Kraken: ``{"event":"ping"}``; Coinbase: websocket pings, answered by
aiohttp), the silence watchdog, reconnects with capped jittered backoff, and
sending the resubscriptions a feed queues when one instrument's book must be
rebuilt. Parsing is the feed's: every text frame goes to ``feed.handle``, and
the records it writes go to ``on_records`` in one batch per frame.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from ccf.records import Record
from ccf.sources.backoff import backoff_s
from ccf.sources.venues.wsvenue import WsVenue

log = logging.getLogger(__name__)


class VenueConnection:
    def __init__(
        self,
        venue: WsVenue,
        feed: Any,
        session: aiohttp.ClientSession,
        streams: Sequence[str],
        *,
        ws_url: str | None = None,
        on_records: Callable[[list[Record]], None],
        silence_timeout_s: float = 60.0,
        reconnect_base_s: float = 0.5,
        reconnect_cap_s: float = 30.0,
    ) -> None:
        self.venue = venue
        self.feed = feed
        self.streams = list(streams)
        self.symbols = tuple(feed.state)
        self._session = session
        self._url = venue.stream_url(ws_url or venue.endpoints.ws_url, self.streams)
        self._on_records = on_records
        self._silence_s = silence_timeout_s
        self._base_s, self._cap_s = reconnect_base_s, reconnect_cap_s
        self.connects = 0
        self.disconnects = 0
        self.pings = 0
        self.live = False
        self.sending = 0  # control messages being sent (a resync waits out the rate limit)
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Collect until ``stop`` is set (which also closes an open connection at once)."""
        stopper = asyncio.create_task(self._close_on_stop(stop), name=f"{self.venue.name}-stop")
        try:
            await self._run(stop)
        finally:
            stopper.cancel()

    async def _close_on_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        if self._ws is not None:
            await self._ws.close()

    async def _run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            why = await self._connect_once(stop)
            out: list[Record] = []
            self.feed.on_disconnect(self.symbols, time.time_ns(), out, detail=why)
            if out:
                self._on_records(out)
            if stop.is_set():
                return
            self.disconnects += 1
            if self.live:
                attempt = 0
            self.live = False
            delay = backoff_s(attempt, base=self._base_s, cap=self._cap_s)
            log.warning(
                "part=collect exchange=%s symbol=* disconnected (%s): reconnecting in %.2f s",
                self.venue.name,
                why,
                delay,
            )
            attempt += 1
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, messages: Sequence[bytes]) -> None:
        gap = 1 / self.venue.rules.control_messages_per_s
        self.sending += 1
        try:
            for i, m in enumerate(messages):
                if i:
                    await asyncio.sleep(gap)  # the venue's control-message rate
                await ws.send_str(m.decode() if isinstance(m, bytes) else m)
        finally:
            self.sending -= 1

    async def _connect_once(self, stop: asyncio.Event) -> str:
        name = self.venue.name
        ping_s = self.venue.rules.ping_interval_s
        try:
            async with self._session.ws_connect(
                self._url, autoping=True, heartbeat=None, max_msg_size=0
            ) as ws:
                self._ws = ws
                self.connects += 1
                log.info("part=collect exchange=%s symbol=* connected url=%s", name, self._url)
                await self._send(ws, self.venue.subscribe_messages(self.streams))
                silent_since = time.monotonic()
                while True:
                    try:
                        msg = await ws.receive(timeout=min(ping_s, self._silence_s))
                    except TimeoutError:
                        if time.monotonic() - silent_since >= self._silence_s:
                            return f"no frame for {self._silence_s:g} s"
                        if self.venue.ping_message is not None:
                            self.pings += 1
                            await ws.send_str(self.venue.ping_message)
                        else:
                            await ws.ping()
                        continue
                    if stop.is_set():
                        return "stopping"
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        silent_since = time.monotonic()
                        self.live = True
                        out: list[Record] = []
                        self.feed.handle(msg.data, time.time_ns(), out)
                        if out:
                            self._on_records(out)
                        resync = self.feed.take_outgoing()
                        if resync:
                            await self._send(ws, [m.encode() for m in resync])
                    elif msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED,
                    ):
                        return f"closed by the venue (code {ws.close_code})"
                    elif msg.type is aiohttp.WSMsgType.ERROR:
                        return f"websocket error: {ws.exception()!r}"
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return f"connection failed: {e!r}"
