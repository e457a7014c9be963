"""The replay exchange for one venue: its websocket protocol, its recorded frames.

One aiohttp application serves the venue's websocket path. A player walks the
recording at ``speed`` (0: flat out) once the first client subscribes, and hands
each frame to every connection subscribed to that frame's instrument and
channel; a client that subscribes later misses what came before, as on the
real venue. The exchange keeps a reference book per instrument (the venue's own
feed code, fed every recorded frame), so a client that resubscribes after a
resync gets a snapshot of the book at that moment, in the venue's format.

Faults (:class:`ccf.config.FaultConfig`, per connection, settable while running
with :meth:`VenueExchange.set_faults`): ``drop_after_frames`` closes the
connection, ``skip_update_every`` drops one book update in N,
``malformed_every`` sends a malformed frame every N, ``stall_after_frames`` +
``stall_s`` goes silent once, ``corrupt_checksum_every`` alters the checksum of
one checksummed book update in N.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from ccf.config import FaultConfig, Settings
from ccf.sources import venues
from ccf.sources.replay.tasks import TaskSet
from ccf.sources.replay.venues.protocols import PROTOCOLS, Key, Route
from ccf.sources.replay.venues.recording import default_path, venue_frames

log = logging.getLogger(__name__)

_YIELD_EVERY = 128  # frames between event-loop yields at speed 0
MALFORMED = ('{"arg":{"channel":', "\u00ff\u2603 not json", '{"type":"l2update"}', "[1,2]")


@dataclass(slots=True)
class Played:
    """A recorded frame, its route decided once at load."""

    ts_ns: int
    text: str
    route: Route


def load_played(venue: str, path: Path) -> list[Played]:
    """The venue's data frames with their routes; control frames (acks, heartbeats) are
    left out, the exchange writes its own."""
    proto = PROTOCOLS[venue]()
    out = []
    for ts, text in venue_frames(path):
        try:
            m = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue  # "pong" and the like
        route = proto.route(m)
        if route is not None:
            out.append(Played(ts, text, route))
    return out


@dataclass(slots=True, eq=False)  # hashed by identity: kept in a set
class Conn:
    ws: web.WebSocketResponse
    subs: set[Key] = field(default_factory=set)
    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    frames: int = 0
    book_updates: int = 0
    checksummed: int = 0
    stalled: bool = False


class VenueExchange:
    def __init__(
        self,
        venue: str,
        frames: list[Played],
        *,
        speed: float = 0.0,
        faults: FaultConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.venue = venue
        self.proto = PROTOCOLS[venue]()
        self.frames = frames
        self.speed = speed
        self.faults = faults or FaultConfig()
        self.counts: Counter[str] = Counter()
        self._host, self._port = host, port
        self.port = 0
        self._conns: set[Conn] = set()
        self._go = asyncio.Event()
        self.done = asyncio.Event()  # the player reached the recording's end
        self._tasks = TaskSet()
        self._runner: web.AppRunner | None = None
        syms = tuple(sorted({p.route.key[0].lower() for p in frames}))
        self.reference = venues.get(venue).make_feed(
            syms, tuple(venues.get(venue).kinds), book_depth=10
        )

    @property
    def ws_url(self) -> str:
        return f"ws://{self._host}:{self.port}"

    def set_faults(self, **changes: Any) -> FaultConfig:
        self.faults = FaultConfig.model_validate({**self.faults.model_dump(), **changes})
        return self.faults

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self.proto.ws_path, self._ws)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._tasks.spawn(self._play(), f"replay-{self.venue}-player")
        log.info("part=exchange venue=%s serving %d frames on port %d", self.venue,
                 len(self.frames), self.port)  # fmt: skip

    async def stop(self) -> None:
        self._tasks.cancel()
        await self._tasks.wait()
        for c in list(self._conns):
            await c.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the player -------------------------------------------------------------------------

    async def _play(self) -> None:
        await self._go.wait()
        t0 = time.monotonic()
        first = self.frames[0].ts_ns if self.frames else 0
        ref_out: list[Any] = []
        for i, p in enumerate(self.frames):
            if self.speed > 0:
                due = (p.ts_ns - first) / 1e9 / self.speed - (time.monotonic() - t0)
                if due > 0:
                    await asyncio.sleep(due)
            elif i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            self.reference.handle(p.text, p.ts_ns, ref_out)
            ref_out.clear()
            for c in self._conns:
                if p.route.key in c.subs:
                    self._send(c, p)
            self.counts["played"] += 1
        self.done.set()
        log.info("part=exchange venue=%s recording played: %d frames", self.venue, len(self.frames))

    def _send(self, c: Conn, p: Played) -> None:
        f = self.faults
        text = p.text
        if p.route.book_update:
            c.book_updates += 1
            if f.skip_update_every and c.book_updates % f.skip_update_every == 0:
                self.counts["skipped_updates"] += 1
                return
        if p.route.checksummed:
            c.checksummed += 1
            if f.corrupt_checksum_every and c.checksummed % f.corrupt_checksum_every == 0:
                self.counts["corrupted_checksums"] += 1
                text = self.proto.corrupt(text)
        c.queue.put_nowait(text)

    # -- connections ------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        c = Conn(ws)
        self._conns.add(c)
        self.counts["connections"] += 1
        writer = self._tasks.spawn(self._writer(c), f"replay-{self.venue}-writer")
        for text in self.proto.hello():
            c.queue.put_nowait(text)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    self._on_client(c, msg.data)
                elif msg.type is WSMsgType.BINARY:
                    self._on_client(c, msg.data.decode("utf-8", "replace"))
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            self._conns.discard(c)
            c.queue.put_nowait(None)
            await writer
        return ws

    def _on_client(self, c: Conn, text: str) -> None:
        m = self.proto.client(text)
        if text in ("ping", '{"event":"ping"}'):
            self.counts["pings"] += 1
        for r in m.replies:
            c.queue.put_nowait(r)
        for key in m.unsubscribe:
            c.subs.discard(key)
        for key in m.subscribe:
            c.subs.add(key)
            inst = self.reference.by_id.get(key[0])
            if key[1] == self.proto.book_channel and inst is not None and inst.synced:
                c.queue.put_nowait(self.proto.snapshot(inst))
                self.counts["snapshots_rendered"] += 1
        if self.venue == "coinbase" and (m.subscribe or m.unsubscribe):
            c.queue.put_nowait(self.proto.subscriptions(c.subs))
        self.counts["client_messages"] += 1
        if m.subscribe:
            self._go.set()

    async def _writer(self, c: Conn) -> None:
        """Sends the connection's queue in order, applying the per-connection faults."""
        f = self.faults
        while True:
            text = await c.queue.get()
            if text is None or c.ws.closed:
                return
            await c.ws.send_str(text)
            c.frames += 1
            f = self.faults
            if f.malformed_every and c.frames % f.malformed_every == 0:
                await c.ws.send_str(MALFORMED[(c.frames // f.malformed_every) % len(MALFORMED)])
                self.counts["malformed_frames"] += 1
            if f.stall_after_frames and c.frames == f.stall_after_frames and not c.stalled:
                c.stalled = True
                self.counts["stalls"] += 1
                await asyncio.sleep(f.stall_s)
            if f.drop_after_frames and c.frames >= f.drop_after_frames:
                self.counts["drops"] += 1
                await c.ws.close()
                return


@asynccontextmanager
async def running_venue(
    venue: str,
    *,
    path: Path | None = None,
    speed: float = 0.0,
    faults: FaultConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> AsyncIterator[VenueExchange]:
    """Serve ``venue``'s recording for the block (port 0 picks a free port)."""
    frames = await asyncio.to_thread(load_played, venue, path or default_path(venue))
    ex = VenueExchange(venue, frames, speed=speed, faults=faults, host=host, port=port)
    await ex.start()
    try:
        yield ex
    finally:
        await ex.stop()


async def serve_venue(venue: str, path: Path | None, *, speed: float, host: str, port: int) -> None:
    """Serve one venue until cancelled (``ccf exchange``)."""
    async with running_venue(venue, path=path, speed=speed, host=host, port=port):
        await asyncio.Event().wait()


def venue_servers(settings: Settings) -> list[Coroutine[Any, Any, None]]:
    """The replay exchanges of the configured OKX, Coinbase and Kraken venues, each on its
    ``replay_port`` serving its ``replay_files[0]`` (default: the shared recording)."""
    out = []
    for v in settings.venue_list():
        if v.name not in PROTOCOLS:
            continue
        if not v.replay_port:
            from ccf.sources.replay.exchange import ReplayStartError

            raise ReplayStartError(
                f"venue {v.name}: set replay_port to replay it (replay.port serves Binance)"
            )
        path = v.replay_files[0] if v.replay_files else None
        out.append(
            serve_venue(
                v.name,
                path,
                speed=settings.replay.speed,
                host=settings.replay.host,
                port=v.replay_port,
            )
        )
    return out
