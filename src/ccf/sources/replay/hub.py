"""Websocket clients, what they subscribe to, and the frames queued for them.

The player hands each frame to :meth:`Hub.send`, which only queues it;
:meth:`Hub.flush` writes every connection's queue in one syscall and holds
the player while a client lags (backpressure). Per-connection faults fire
here, after the frame that triggers them.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count

from aiohttp import WSCloseCode, web

from ccf.sources.replay.clock import ReplayClock
from ccf.sources.replay.faults import Action, ConnFaults, Faults
from ccf.sources.replay.streams import micros
from ccf.sources.replay.tasks import TaskSet
from ccf.sources.replay.wire import dumps

log = logging.getLogger(__name__)

_SHUTDOWN_GRACE_S = 0.5  # serverShutdown notice -> close
_HIGH_WATER = 1 << 20  # bytes buffered for one client before the player waits for it
_DRAIN_POLL_S = 0.002


def frame_header(n: int) -> bytes:
    """RFC 6455 header of an unmasked, final text frame of ``n`` bytes (server to client)."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n)
    return struct.pack("!BBQ", 0x81, 127, n)


@dataclass(eq=False, slots=True)
class Conn:
    """One websocket client."""

    id: int
    ws: web.WebSocketResponse
    request: web.Request
    combined: bool
    opened: float
    streams: list[str] = field(default_factory=list)
    cf: ConnFaults = field(default_factory=ConnFaults)
    pings: deque[bytes] = field(default_factory=lambda: deque(maxlen=8))
    last_pong: float = 0.0
    incoming: deque[float] = field(default_factory=deque)
    out: list[bytes] = field(default_factory=list)  # framed, not yet written
    closing: bool = False
    micros: bool = False  # timeUnit=MICROSECOND: times in frames are microseconds


class Hub:
    """Open connections by id and by stream; ``on_subscribe`` runs on every subscription."""

    def __init__(
        self, faults: Faults, clock: ReplayClock, tasks: TaskSet, on_subscribe: Callable[[], None]
    ) -> None:
        self._faults = faults
        self._clock = clock
        self._tasks = tasks
        self._on_subscribe = on_subscribe
        self.conns: dict[int, Conn] = {}
        self.subs: dict[str, set[Conn]] = {}
        self._dirty: list[Conn] = []  # connections with queued frames
        self._ids = count(1)
        self.frames_sent = 0
        self.connections_total = 0
        self.sent_by_stream: Counter[str] = Counter()  # frames queued per stream name
        self._micro_src: bytes | None = None  # the last payload rewritten in microseconds
        self._micro_out = b""

    def open(self, ws: web.WebSocketResponse, request: web.Request, combined: bool) -> Conn:
        now = time.monotonic()
        conn = Conn(next(self._ids), ws, request, combined, now, last_pong=now)
        self.conns[conn.id] = conn
        self.connections_total += 1
        return conn

    def forget(self, conn: Conn) -> None:
        conn.closing = True
        self.unsubscribe(conn, list(conn.streams))
        self.conns.pop(conn.id, None)

    def subscribe(self, conn: Conn, streams: list[str]) -> None:
        for s in streams:
            if s not in conn.streams:
                conn.streams.append(s)
                self.subs.setdefault(s, set()).add(conn)
        if streams:
            self._on_subscribe()

    def unsubscribe(self, conn: Conn, streams: list[str]) -> None:
        for s in streams:
            if s in conn.streams:
                conn.streams.remove(s)
                subs = self.subs.get(s)
                if subs is not None:
                    subs.discard(conn)
                    if not subs:
                        del self.subs[s]

    def send(self, conn: Conn, data: bytes, stream: str) -> None:
        """Queue one text frame; :meth:`flush` writes a connection's queue in one syscall."""
        if conn.closing:
            return
        faults = self._faults
        if conn.cf.stall_until and faults.stalled(conn.cf, time.monotonic()):
            return
        if conn.micros:
            if data is not self._micro_src:  # one rewrite per payload, whatever the fan-out
                self._micro_src, self._micro_out = data, micros(data)
            data = self._micro_out
        if not conn.out:
            self._dirty.append(conn)
        conn.out += (frame_header(len(data)), data)
        self.frames_sent += 1
        self.sent_by_stream[stream] += 1
        if not faults.per_connection:
            conn.cf.frames += 1
            return
        for action in faults.after_frame(conn.cf, time.monotonic()):
            self._act(conn, action, stream)

    async def flush(self) -> None:
        """Write queued frames, then hold the player while any client lags (backpressure)."""
        dirty, self._dirty = self._dirty, []
        slow = []
        for conn in dirty:
            chunks, conn.out = conn.out, []
            transport = conn.request.transport
            # ws.closed turns true before aiohttp writes its close frame: nothing may follow it
            if conn.closing or conn.ws.closed or transport is None or transport.is_closing():
                conn.closing = True
                continue
            transport.write(b"".join(chunks))
            if transport.get_write_buffer_size() > _HIGH_WATER:
                slow.append((conn, transport))
        for conn, transport in slow:
            # A transport has no public drain, and aiohttp's is private: poll its buffer.
            while (  # noqa: ASYNC110
                transport.get_write_buffer_size() > _HIGH_WATER // 4
                and not transport.is_closing()
                and not conn.ws.closed
            ):
                await asyncio.sleep(_DRAIN_POLL_S)

    def _act(self, conn: Conn, action: Action, stream: str) -> None:
        if conn.closing:
            return
        if action is Action.DROP:
            log.info("part=exchange fault drop conn=%d frames=%d", conn.id, conn.cf.frames)
            conn.closing = True
            transport = conn.request.transport
            if transport is not None and not transport.is_closing():
                # like a network drop: the frames so far arrive, then EOF without a close frame
                transport.write(b"".join(conn.out))
                transport.close()
            conn.out = []
            return
        if action is Action.MALFORMED:
            data = self._faults.malformed_frame(stream, conn.combined).encode()
        else:
            event = {"e": "serverShutdown", "E": self._clock.now_ms()}
            wrapped = {"stream": "!serverShutdown", "data": event}
            data = dumps(wrapped if conn.combined else event)
            self._tasks.spawn(
                self._close_later(conn, _SHUTDOWN_GRACE_S), f"replay-shutdown-{conn.id}"
            )
            log.info(
                "part=exchange fault serverShutdown conn=%d frames=%d", conn.id, conn.cf.frames
            )
        if not conn.out:
            self._dirty.append(conn)
        conn.out += (frame_header(len(data)), data)

    async def _close_later(self, conn: Conn, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.close(conn, WSCloseCode.GOING_AWAY, "server shutdown")

    async def close(self, conn: Conn, code: int, reason: str) -> None:
        if conn.ws.closed:
            return
        conn.closing = True
        log.info("part=exchange closing conn=%d reason=%s", conn.id, reason.replace(" ", "_"))
        await conn.ws.close(code=code, message=reason.encode())

    async def close_all(self) -> None:
        """Close every connection (on stop): nothing more is queued for any of them."""
        for conn in self.conns.values():
            conn.closing = True
        closes = [
            c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"replay exchange stopping")
            for c in self.conns.values()
        ]
        await asyncio.gather(*closes, return_exceptions=True)
