"""One websocket connection to Binance's combined streams, kept alive.

Owns connecting, subscribing, reconnecting (capped exponential backoff with
full jitter), the silence watchdog, the planned reconnect before Binance's
24-hour cut, and ``serverShutdown``. It does not parse: every text frame goes
to ``on_frame(frame, ts_recv_ns)`` as received. aiohttp answers the
exchange's pings with pongs that echo the payload (``autoping``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import aiohttp
import orjson

from ccf.config import CollectConfig
from ccf.sources.backoff import backoff_s

if TYPE_CHECKING:
    from ccf.sources.venues.base import Venue

log = logging.getLogger(__name__)

STREAMS_IN_URL = 50  # the rest go in SUBSCRIBE messages: keeps the URL short
STREAMS_PER_SUBSCRIBE = 200
CONTROL_MESSAGES_PER_S = 4  # Binance allows 5 incoming messages per second per connection


class StreamConnection:
    def __init__(
        self,
        name: str,
        session: aiohttp.ClientSession,
        ws_url: str,
        streams: Sequence[str],
        cfg: CollectConfig,
        *,
        on_frame: Callable[[StreamConnection, str, int], None],
        on_down: Callable[[StreamConnection, str, bool], None],
        venue: Venue | None = None,
    ) -> None:
        self.name = name
        self.streams = list(streams)
        self._session = session
        self._venue = venue  # names the streams in the URL and subscriptions; None: spot's way
        if venue is not None:
            self._url = venue.stream_url(ws_url, streams)
        else:
            self._url = ws_url.rstrip("/") + "/stream?streams=" + "/".join(streams[:STREAMS_IN_URL])
        self._cfg = cfg
        self._on_frame = on_frame
        self._on_down = on_down
        self.live = False  # frames have arrived since the last (re)connect
        self.reconnect_requested: str | None = None
        self.outbox: list[str] = []  # control messages the feed asked for, sent after the frame
        self.pings = 0  # keep-alive messages sent (venues with a ping_message)
        self.connects = 0
        self.disconnects = 0

    def request_reconnect(self, why: str) -> None:
        """Ask the receive loop to drop this connection and open a new one."""
        self.reconnect_requested = why

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            why = await self._connect_once(stop)
            was_live = self.live
            self._on_down(self, why, was_live)
            self.live = False
            if stop.is_set():
                return
            self.disconnects += 1
            if was_live or why.startswith("planned"):
                attempt = 0  # a connection that worked ends the run of failures
            delay = backoff_s(
                attempt, base=self._cfg.reconnect.base_s, cap=self._cfg.reconnect.cap_s
            )
            log.warning(
                "part=collect conn=%s disconnected (%s): reconnecting in %.2f s",
                self.name,
                why,
                delay,
            )
            attempt += 1
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _connect_once(self, stop: asyncio.Event) -> str:
        """Connect, pump frames until something ends the connection; return why."""
        cfg = self._cfg
        self.reconnect_requested = None
        try:
            async with self._session.ws_connect(
                self._url, autoping=True, heartbeat=None, max_msg_size=0, compress=0
            ) as ws:
                self.connects += 1
                opened = time.monotonic()
                log.info("part=collect conn=%s connected streams=%d", self.name, len(self.streams))
                await self._subscribe_rest(ws)
                # venues that expect the client's keep-alive (OKX "ping", Kraken's ping event)
                ping = getattr(self._venue, "ping_message", None)
                ping_s = self._venue.rules.ping_interval_s if ping else cfg.silence_timeout_s
                heard = opened
                while True:
                    age_left = cfg.max_connection_age_s - (time.monotonic() - opened)
                    if age_left <= 0:
                        return "planned reconnect before the exchange's 24 h cut"
                    try:
                        msg = await ws.receive(timeout=min(cfg.silence_timeout_s, age_left, ping_s))
                    except TimeoutError:
                        if time.monotonic() - opened >= cfg.max_connection_age_s:
                            return "planned reconnect before the exchange's 24 h cut"
                        if ping and time.monotonic() - heard < cfg.silence_timeout_s:
                            self.pings += 1
                            await ws.send_str(ping)
                            continue
                        return f"no frame for {cfg.silence_timeout_s:g} s"
                    if stop.is_set():
                        return "stopping"
                    heard = time.monotonic()
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        self.live = True
                        self._on_frame(self, msg.data, time.time_ns())
                        if self.outbox:
                            await self._send_outbox(ws)
                        if self.reconnect_requested:
                            return f"planned reconnect: {self.reconnect_requested}"
                    elif msg.type is aiohttp.WSMsgType.BINARY:
                        self._on_frame(self, msg.data.decode("utf-8", "replace"), time.time_ns())
                    elif msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED,
                    ):
                        return f"closed by the exchange (code {ws.close_code})"
                    elif msg.type is aiohttp.WSMsgType.ERROR:
                        return f"websocket error: {ws.exception()!r}"
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return f"connection failed: {e!r}"

    async def _send_outbox(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Send what the feed queued (a venue's resubscription), at its control-message rate."""
        rate = self._venue.rules.control_messages_per_s if self._venue is not None else 4
        while self.outbox:
            await ws.send_str(self.outbox.pop(0))
            if self.outbox:
                await asyncio.sleep(1 / rate)

    async def _subscribe_rest(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if self._venue is not None:
            pause = 1 / max(1.0, self._venue.rules.control_messages_per_s - 1)
            for message in self._venue.subscribe_messages(self.streams):
                await ws.send_str(message.decode())  # text frames: what every venue reads
                await asyncio.sleep(pause)
            return
        rest = self.streams[STREAMS_IN_URL:]
        for i in range(0, len(rest), STREAMS_PER_SUBSCRIBE):
            params = rest[i : i + STREAMS_PER_SUBSCRIBE]
            await ws.send_bytes(
                orjson.dumps(
                    {"method": "SUBSCRIBE", "params": params, "id": i // STREAMS_PER_SUBSCRIBE + 1}
                )
            )
            await asyncio.sleep(1 / CONTROL_MESSAGES_PER_S)
