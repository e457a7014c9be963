"""The replay exchange: recordings served over Binance's websocket and REST protocol.

One aiohttp application on one port serves ``/stream?streams=a/b`` (combined
``{"stream":..,"data":..}`` frames), ``/ws/<stream>`` and ``/ws`` (raw
payloads), the public market-data REST endpoints with Binance's weights and
rate-limit answers, and two admin endpoints (``GET /_replay/state``,
``POST /_replay/faults``). One player task walks the timeline at ``speed``
and broadcasts each frame to the connections subscribed at that moment, so a
client that connects later misses what came before, as on the real exchange.

    async with running_exchange(ReplayConfig(port=0, speed=0)) as ex:
        ...  # ex.url, ex.ws_url, ex.state(), ex.set_faults(skip_update_every=50)
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import ValidationError

from ccf.config import ReplayConfig, shared_dir
from ccf.sources.replay.faults import Action, ConnFaults, Faults
from ccf.sources.replay.timeline import (
    BOOK_TICKER,
    DEPTH,
    INTERVALS_MS,
    NS_PER_MS,
    TRADE,
    Candles,
    Emitted,
    Market,
    Timeline,
    dumps,
    load_kline_csv,
    load_timeline,
    loads,
)

log = logging.getLogger(__name__)

_YIELD_EVERY = 256  # frames between event-loop yields at speed 0
_SHUTDOWN_GRACE_S = 0.5  # serverShutdown notice -> close
_CLOSE_TIMEOUT_S = 2.0  # how long a close waits for the client's close frame
_HIGH_WATER = 1 << 20  # bytes buffered for one client before the player waits for it
_DRAIN_POLL_S = 0.002
_RAW, _AGG = 0, -1  # stream renderers; a positive number is a partial-depth level count
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,36}")
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def _stream_routes(sym: str) -> dict[str, list[tuple[str, bytes, int]]]:
    """Per frame kind: the stream names it feeds, their combined-frame prefix, and renderer."""
    names: dict[str, list[tuple[str, int]]] = {
        DEPTH: [(f"{sym}@depth@100ms", _RAW), (f"{sym}@depth", _RAW), (f"{sym}@depth@1000ms", _RAW)]
        + [(f"{sym}@depth{n}{s}", n) for n in (5, 10, 20) for s in ("", "@100ms", "@1000ms")],
        TRADE: [(f"{sym}@trade", _RAW), (f"{sym}@aggTrade", _AGG)],
        BOOK_TICKER: [(f"{sym}@bookTicker", _RAW)],
    }
    return {
        kind: [(n, f'{{"stream":"{n}","data":'.encode(), r) for n, r in lst]
        for kind, lst in names.items()
    }


def _frame_header(n: int) -> bytes:
    """RFC 6455 header of an unmasked, final text frame of ``n`` bytes (server to client)."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n)
    return struct.pack("!BBQ", 0x81, 127, n)


def depth_weight(limit: int) -> int:
    """REST weight of ``/api/v3/depth`` by limit (binance_formats.md 2.3)."""
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


class WeightLimiter:
    """REQUEST_WEIGHT per wall-clock minute; 429 over the limit, a 418 ban for ignoring 429s."""

    def __init__(self, limit: int, ban_after_429s: int, ban_s: float) -> None:
        self.limit = limit
        self._ban_after = ban_after_429s
        self._ban_s = ban_s
        self._minute = -1
        self.used = 0
        self._strikes = 0
        self.banned_until = 0.0

    def charge(self, weight: int, now: float) -> tuple[int, int | None, int]:
        """``(used weight, error status or None, Retry-After seconds)`` for one request."""
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self.used = minute, 0
        if now < self.banned_until:
            return self.used, 418, math.ceil(self.banned_until - now)
        self.used += weight
        if self.used <= self.limit:
            self._strikes = 0
            return self.used, None, 0
        self._strikes += 1
        if self._strikes > self._ban_after:
            self.banned_until = now + self._ban_s
            log.warning(
                "part=exchange rest ban for_s=%.0f after_429s=%d", self._ban_s, self._strikes - 1
            )
            return self.used, 418, math.ceil(self._ban_s)
        return self.used, 429, max(1, math.ceil(60 - now % 60))


@dataclass(eq=False, slots=True)
class _Conn:
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


def _error(code: int, msg: str, rid: Any = None, with_id: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"code": code, "msg": msg}
    if with_id:
        out["id"] = rid
    return out


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=dumps(obj), status=status, headers=headers, content_type="application/json"
    )


def _rest_error(code: int, msg: str) -> web.Response:
    return _json({"code": code, "msg": msg}, status=400)


class _BadParam(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _int_param(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 20:
        raise _BadParam(
            _rest_error(
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^[0-9]{1,20}$'.",
            )
        )
    return int(raw)


def _load_exchange_info(symbols: list[str], weight_limit: int) -> dict[str, Any]:
    """The real 2021 exchangeInfo (fixtures/BINANCE.0) cut to the served symbols."""
    upper = [s.upper() for s in symbols]
    path = shared_dir() / "data" / "binance" / "fixtures" / "BINANCE.0"
    try:
        line = path.read_text(encoding="utf-8").split("\n", 1)[0]
        info = loads(line[line.index("{") :])
    except (OSError, ValueError) as e:
        log.info(
            "part=exchange exchangeInfo fixture unusable path=%s error=%s; using a minimal one",
            path,
            e,
        )
        info = {"timezone": "UTC", "serverTime": 0, "exchangeFilters": [], "symbols": []}
    known = {s["symbol"]: s for s in info.get("symbols", [])}
    info["symbols"] = [known.get(s) or _minimal_symbol(s) for s in upper]
    info["rateLimits"] = [
        {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": weight_limit,
        },
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 160000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
    ]
    return info


def _minimal_symbol(sym: str) -> dict[str, Any]:
    quote = next(
        (
            q
            for q in ("USDT", "USDC", "FDUSD", "BUSD", "BTC", "ETH", "BNB", "EUR")
            if sym.endswith(q)
        ),
        sym[-4:],
    )
    return {
        "symbol": sym,
        "status": "TRADING",
        "baseAsset": sym[: -len(quote)],
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"],
        "isSpotTradingAllowed": True,
        "permissions": ["SPOT"],
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01000000",
                "maxPrice": "1000000.00000000",
                "tickSize": "0.01000000",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00001000",
                "maxQty": "9000.00000000",
                "stepSize": "0.00001000",
            },
        ],
    }


class ReplayExchange:
    """The running exchange; also the handle tests get from :func:`running_exchange`."""

    def __init__(self, cfg: ReplayConfig, timeline: Timeline) -> None:
        self.cfg = cfg
        self.timeline = timeline
        self.market = Market(timeline)
        csv = dict(load_kline_csv(p) for p in cfg.klines)
        self.candles = Candles(self.market, csv)
        self.faults = Faults(cfg.faults)
        self.limiter = WeightLimiter(cfg.weight_limit_per_minute, cfg.ban_after_429s, cfg.ban_s)
        self._routes = {s: _stream_routes(s) for s in timeline.symbols}
        self._subs: dict[str, set[_Conn]] = {}
        self._conns: dict[int, _Conn] = {}
        self._ids = count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dirty: list[_Conn] = []  # connections with queued frames
        self._go = asyncio.Event()
        self._exchange_info = _load_exchange_info(
            list(timeline.symbols), cfg.weight_limit_per_minute
        )
        self._runner: web.AppRunner | None = None
        self.port = 0
        # replay clock and progress
        self._clock_ts = timeline.start_ns
        self._clock_wall = time.monotonic()
        self._cap_ts: int | None = timeline.start_ns
        self.started = False
        self.finished = False
        self.frames_dispatched = 0
        self.frames_sent = 0
        self.connections_total = 0

    # --- lifecycle -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.cfg.host}:{self.port}"

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "part=exchange task failed name=%s", task.get_name(), exc_info=task.exception()
            )

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._rest_middleware])
        app.router.add_get("/stream", self._ws_handler)
        app.router.add_get("/ws", self._ws_handler)
        app.router.add_get("/ws/{streams:.*}", self._ws_handler)
        app.router.add_get("/api/v3/depth", self._depth)
        app.router.add_get("/api/v3/exchangeInfo", self._info)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/klines", self._klines)
        app.router.add_get("/_replay/state", self._state)
        app.router.add_post("/_replay/faults", self._set_faults)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        if self.cfg.start == "immediately":
            self._go.set()
        self._spawn(self._play(), "replay-player")
        log.info(
            "replay exchange listening url=%s symbols=%s speed=%s loop=%s part=exchange",
            self.url,
            ",".join(self.timeline.symbols),
            self.cfg.speed,
            self.cfg.loop,
        )

    async def stop(self) -> None:
        for task in list(self._tasks):
            if task.get_name() == "replay-player":
                task.cancel()
        for conn in list(self._conns.values()):
            conn.closing = True
        closes = [
            c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"replay exchange stopping")
            for c in self._conns.values()
        ]
        await asyncio.gather(*closes, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("part=exchange stopped frames_sent=%d", self.frames_sent)

    # --- state -----------------------------------------------------------------

    def now_ns(self) -> int:
        """Replay event time: the last frame's, advancing with the wall clock at ``speed``."""
        if not self.started or not self.cfg.speed:
            return self._clock_ts
        now = self._clock_ts + int((time.monotonic() - self._clock_wall) * self.cfg.speed * 1e9)
        return now if self._cap_ts is None else max(self._clock_ts, min(now, self._cap_ts))

    def state(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "finished": self.finished,
            "speed": self.cfg.speed,
            "loop_count": self.market.pass_index,
            "replay_time_ms": self.now_ns() // NS_PER_MS,
            "frames_dispatched": self.frames_dispatched,
            "frames_sent": self.frames_sent,
            "symbols": {
                s: {
                    "last_u": self.market.books[s].last_update_id,
                    "last_trade_id": self.market.last_trade_id[s],
                    "book_levels": self.market.books[s].levels(),
                }
                for s in self.timeline.symbols
            },
            "connections": [
                {
                    "id": c.id,
                    "streams": list(c.streams),
                    "combined": c.combined,
                    "frames": c.cf.frames,
                }
                for c in self._conns.values()
            ],
            "connections_total": self.connections_total,
            "rest": {
                "weight_used_1m": self.limiter.used,
                "banned_until": self.limiter.banned_until,
            },
            **self.faults.state(),
        }

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Merge fault settings at runtime (raises pydantic ValidationError on bad ones)."""
        return self.faults.update(changes).model_dump()

    # --- the player --------------------------------------------------------------

    async def _play(self) -> None:
        await self._go.wait()
        self.started = True
        speed, period = self.cfg.speed, self.timeline.period_ns
        anchor_ts: int | None = None
        anchor_wall = 0.0
        current_pass = 0
        n_items = len(self.timeline.items)
        log.info("part=exchange replay started speed=%s frames_per_pass=%d", speed, n_items)
        for k, item in self.timeline.passes(self.cfg.loop, self.cfg.max_passes):
            ts = item.ts_ns + k * period
            if k != current_pass:
                current_pass = k
                log.info("part=exchange pass started pass=%d frames_sent=%d", k, self.frames_sent)
            if speed:
                if anchor_ts is None:
                    anchor_ts, anchor_wall = ts, time.monotonic()
                wait = anchor_wall + (ts - anchor_ts) / 1e9 / speed - time.monotonic()
                if wait > 0.0005:
                    await self._flush()
                    self._cap_ts = ts
                    await asyncio.sleep(wait)
                elif wait < -1.0:  # fell behind (slow clients): carry on from here, no burst
                    anchor_ts, anchor_wall = ts, time.monotonic()
            self.frames_dispatched += 1
            if self.frames_dispatched % _YIELD_EVERY == 0:
                await self._flush()
                await asyncio.sleep(0)
            self._clock_ts, self._clock_wall = ts, time.monotonic()
            self._broadcast(self.market.step(k, item))
        await self._flush()
        self._cap_ts = None
        self.finished = True
        log.info(
            "part=exchange replay finished passes=%d frames_sent=%d",
            current_pass + 1,
            self.frames_sent,
        )

    def _broadcast(self, em: Emitted) -> None:
        skip = em.kind == DEPTH and not em.synthetic and self.faults.skip_diff()
        partial: dict[int, bytes] = {}
        for name, prefix, renderer in self._routes[em.symbol][em.kind]:
            conns = self._subs.get(name)
            if not conns:
                continue
            if renderer == _RAW:
                if skip:
                    continue
                payload = em.payload
            elif renderer == _AGG:
                payload = self.market.agg_trade(em)
            else:
                if renderer not in partial:
                    partial[renderer] = self.market.partial(em.symbol, renderer)
                payload = partial[renderer]
            wrapped = None
            for conn in tuple(conns):
                if conn.combined:
                    if wrapped is None:
                        wrapped = prefix + payload + b"}"
                    self._send(conn, wrapped, name)
                else:
                    self._send(conn, payload, name)

    def _send(self, conn: _Conn, data: bytes, stream: str) -> None:
        """Queue one text frame; :meth:`_flush` writes a connection's queue in one syscall."""
        if conn.closing:
            return
        faults = self.faults
        if conn.cf.stall_until and faults.stalled(conn.cf, time.monotonic()):
            return
        if not conn.out:
            self._dirty.append(conn)
        conn.out += (_frame_header(len(data)), data)
        self.frames_sent += 1
        if not faults.per_connection:
            conn.cf.frames += 1
            return
        for action in faults.after_frame(conn.cf, time.monotonic()):
            self._act(conn, action, stream)

    async def _flush(self) -> None:
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

    def _act(self, conn: _Conn, action: Action, stream: str) -> None:
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
            data = self.faults.malformed_frame(stream, conn.combined).encode()
        else:
            event = {"e": "serverShutdown", "E": self.now_ns() // NS_PER_MS}
            wrapped = {"stream": "!serverShutdown", "data": event}
            data = dumps(wrapped if conn.combined else event)
            self._spawn(self._close_later(conn, _SHUTDOWN_GRACE_S), f"replay-shutdown-{conn.id}")
            log.info(
                "part=exchange fault serverShutdown conn=%d frames=%d", conn.id, conn.cf.frames
            )
        if not conn.out:
            self._dirty.append(conn)
        conn.out += (_frame_header(len(data)), data)

    async def _close_later(self, conn: _Conn, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._close(conn, WSCloseCode.GOING_AWAY, "server shutdown")

    async def _close(self, conn: _Conn, code: int, reason: str) -> None:
        if conn.ws.closed:
            return
        conn.closing = True
        log.info("part=exchange closing conn=%d reason=%s", conn.id, reason.replace(" ", "_"))
        await conn.ws.close(code=code, message=reason.encode())

    # --- websocket ---------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        combined = request.path == "/stream"
        raw = (
            request.query.get("streams", "") if combined else request.match_info.get("streams", "")
        )
        streams = [s for s in raw.split("/") if s]
        if len(streams) > self.cfg.max_streams_per_connection:
            return _json(
                _error(
                    2,
                    f"Invalid request: too many streams, the limit is "
                    f"{self.cfg.max_streams_per_connection}",
                    with_id=False,
                ),
                status=400,
            )
        ws = web.WebSocketResponse(
            autoping=False, compress=False, timeout=_CLOSE_TIMEOUT_S, max_msg_size=1 << 16
        )
        await ws.prepare(request)
        now = time.monotonic()
        conn = _Conn(next(self._ids), ws, request, combined, now, last_pong=now)
        self._conns[conn.id] = conn
        self.connections_total += 1
        self._subscribe(conn, streams)
        log.info(
            "part=exchange connected conn=%d path=%s streams=%d",
            conn.id,
            request.path,
            len(streams),
        )
        watchdog = self._spawn(self._watch(conn), f"replay-watch-{conn.id}")
        try:
            await self._read(conn)
        finally:
            conn.closing = True
            watchdog.cancel()
            self._unsubscribe(conn, list(conn.streams))
            self._conns.pop(conn.id, None)
            log.info("part=exchange disconnected conn=%d frames=%d", conn.id, conn.cf.frames)
        return ws

    def _subscribe(self, conn: _Conn, streams: list[str]) -> None:
        for s in streams:
            if s not in conn.streams:
                conn.streams.append(s)
                self._subs.setdefault(s, set()).add(conn)
        if streams:
            self._go.set()

    def _unsubscribe(self, conn: _Conn, streams: list[str]) -> None:
        for s in streams:
            if s in conn.streams:
                conn.streams.remove(s)
                subs = self._subs.get(s)
                if subs is not None:
                    subs.discard(conn)
                    if not subs:
                        del self._subs[s]

    async def _read(self, conn: _Conn) -> None:
        ws = conn.ws
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            now = time.monotonic()
            conn.incoming.append(now)
            while conn.incoming[0] < now - 1.0:
                conn.incoming.popleft()
            if len(conn.incoming) > self.cfg.max_incoming_per_s:
                await self._close(conn, WSCloseCode.POLICY_VIOLATION, "too many incoming messages")
                return
            try:
                if msg.type is WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type is WSMsgType.PONG:
                    if msg.data in conn.pings:  # unsolicited pongs do not keep it alive
                        conn.last_pong = now
                        conn.pings.clear()
                elif msg.type is WSMsgType.TEXT:
                    await ws.send_frame(dumps(self._control(conn, msg.data)), WSMsgType.TEXT)
                else:
                    await ws.send_frame(
                        dumps(
                            _error(
                                3, "Invalid JSON: expected value at line 1 column 1", with_id=False
                            )
                        ),
                        WSMsgType.TEXT,
                    )
            except ConnectionResetError:
                return

    def _control(self, conn: _Conn, text: str) -> dict[str, Any]:
        """Answer one control message exactly as binance_formats.md section 1 shows."""
        try:
            req = loads(text)
        except ValueError as e:
            line, col = getattr(e, "lineno", 1), getattr(e, "colno", 1)
            return _error(
                3, f"Invalid JSON: expected value at line {line} column {col}", with_id=False
            )
        if not isinstance(req, dict):
            return _error(2, "Invalid request: expected a JSON object", with_id=False)
        rid = req.get("id")
        valid_int = isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid < 2**63
        if not (rid is None or valid_int or (isinstance(rid, str) and _ID_RE.fullmatch(rid))):
            return _error(
                2, "Invalid request: request ID must be an unsigned integer", with_id=False
            )
        method = req.get("method")
        if method is None:
            return _error(
                2, f"Invalid request: missing field `method` at line 1 column {len(text)}", rid
            )
        if method not in _METHODS:
            col = text.find(f'"{method}"') + len(str(method)) + 2
            return _error(
                2,
                f"Invalid request: unknown variant {method}, expected one of "
                f"{', '.join(_METHODS)} at line 1 column {col}",
                rid,
            )
        params = req.get("params", [])
        if not isinstance(params, list):
            return _error(
                2, "Invalid request: invalid type for field `params`, expected a sequence", rid
            )
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not all(isinstance(p, str) for p in params):
                return _error(2, "Invalid request: stream names must be strings", rid)
            if method == "UNSUBSCRIBE":
                self._unsubscribe(conn, params)
                return {"result": None, "id": rid}
            new = {p for p in params if p not in conn.streams}
            if len(conn.streams) + len(new) > self.cfg.max_streams_per_connection:
                return _error(
                    2,
                    f"Invalid request: too many streams, the limit is "
                    f"{self.cfg.max_streams_per_connection} per connection",
                    rid,
                )
            self._subscribe(conn, params)
            return {"result": None, "id": rid}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(conn.streams), "id": rid}
        if not params or not isinstance(params[0], str):
            return _error(2, "Invalid request: property name must be a string", rid)
        if params[0] != "combined":
            return _error(0, "Unknown property", rid)
        if method == "GET_PROPERTY":
            return {"result": conn.combined, "id": rid}
        if len(params) < 2 or not isinstance(params[1], bool):
            return _error(1, "Invalid value type: expected Boolean", with_id=False)
        conn.combined = params[1]
        return {"result": None, "id": rid}

    async def _watch(self, conn: _Conn) -> None:
        """Ping every ``ping_interval_s``; close on a missing pong or at the age limit."""
        cfg, ws = self.cfg, conn.ws
        next_ping = conn.opened + cfg.ping_interval_s
        max_age = conn.opened + cfg.max_connection_age_s
        n = 0
        while not ws.closed:
            now = time.monotonic()
            reason = "connection age limit" if now >= max_age else ""
            if now >= conn.last_pong + cfg.pong_timeout_s:
                reason = "pong timeout"
            if reason:  # closed from its own task: the handler cancels this watchdog on exit
                self._spawn(
                    self._close(conn, WSCloseCode.GOING_AWAY, reason), f"replay-close-{conn.id}"
                )
                return
            if now >= next_ping:
                n += 1
                payload = f"replay-{conn.id}-{n}".encode()
                conn.pings.append(payload)
                try:
                    await ws.ping(payload)
                except ConnectionResetError:
                    return
                next_ping = now + cfg.ping_interval_s
            await asyncio.sleep(
                max(0.0, min(next_ping, max_age, conn.last_pong + cfg.pong_timeout_s) - now)
            )

    # --- REST --------------------------------------------------------------------

    def _weight(self, request: web.Request) -> int:
        path = request.path
        if path == "/api/v3/depth":
            raw = request.query.get("limit", "100")
            return depth_weight(int(raw)) if raw.isdigit() and len(raw) <= 20 else 5
        return {"/api/v3/exchangeInfo": 20, "/api/v3/klines": 2}.get(path, 1)

    @web.middleware
    async def _rest_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        used, status, retry = self.limiter.charge(self._weight(request), time.time())
        if status is None:
            injected = self.faults.rest_fault()
            if injected is not None:
                status, retry = injected
        headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
        if status == 429:
            return _json(
                {
                    "code": -1003,
                    "msg": f"Too much request weight used; current limit is {self.limiter.limit} "
                    "request weight per 1 MINUTE. Please use WebSocket Streams for live updates "
                    "to avoid "
                    "polling the API.",
                },
                429,
                {**headers, "Retry-After": str(retry)},
            )
        if status == 418:
            until = int((time.time() + retry) * 1000)
            return _json(
                {
                    "code": -1003,
                    "msg": f"Way too much request weight used; IP banned until {until}. "
                    "Please use WebSocket Streams for live updates to avoid bans.",
                },
                418,
                {**headers, "Retry-After": str(retry)},
            )
        try:
            resp = await handler(request)
        except _BadParam as e:
            resp = e.response
        except web.HTTPException as e:
            e.headers.update(headers)
            raise
        resp.headers.update(headers)
        return resp

    def _symbol(self, request: web.Request) -> str:
        sym = request.query.get("symbol", "")
        if not sym:
            raise _BadParam(
                _rest_error(
                    -1102,
                    "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                )
            )
        if sym.lower() not in self.timeline.symbols:
            raise _BadParam(_rest_error(-1121, "Invalid symbol."))
        return sym.lower()

    async def _depth(self, request: web.Request) -> web.Response:
        sym = self._symbol(request)
        limit = min(max(_int_param(request, "limit", 100) or 1, 1), 5000)
        if self.faults.stale_snapshot():
            log.info("part=exchange fault stale snapshot symbol=%s", sym)
            return _json(self.market.stale_depth(sym, limit))
        return _json(self.market.depth(sym, limit))

    async def _info(self, request: web.Request) -> web.Response:
        wanted: list[str] = []
        if "symbol" in request.query:
            wanted = [self._symbol(request).upper()]
        elif "symbols" in request.query:
            try:
                wanted = [str(s).upper() for s in loads(request.query["symbols"])]
            except ValueError:
                raise _BadParam(
                    _rest_error(-1100, "Illegal characters found in parameter 'symbols'.")
                ) from None
            if any(s.lower() not in self.timeline.symbols for s in wanted):
                raise _BadParam(_rest_error(-1121, "Invalid symbol."))
        info = dict(self._exchange_info, serverTime=self.now_ns() // NS_PER_MS)
        if wanted:
            info["symbols"] = [s for s in info["symbols"] if s["symbol"] in wanted]
        return _json(info)

    async def _time(self, request: web.Request) -> web.Response:
        return _json({"serverTime": self.now_ns() // NS_PER_MS})

    async def _ping(self, request: web.Request) -> web.Response:
        return _json({})

    async def _klines(self, request: web.Request) -> web.Response:
        sym = self._symbol(request)
        iv = INTERVALS_MS.get(request.query.get("interval", ""))
        if iv is None:
            raise _BadParam(_rest_error(-1120, "Invalid interval."))
        start, end = _int_param(request, "startTime"), _int_param(request, "endTime")
        limit = min(max(_int_param(request, "limit", 500) or 1, 1), 1000)
        rows = self.candles.rows(sym, iv, start, end, limit, self.now_ns() // NS_PER_MS)
        return _json(rows)

    # --- admin -------------------------------------------------------------------

    async def _state(self, request: web.Request) -> web.Response:
        return _json(self.state())

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json(loads=loads)
        except ValueError:
            return _json({"error": "body must be a JSON object of FaultConfig fields"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "body must be a JSON object of FaultConfig fields"}, 400)
        try:
            return _json({"faults": self.set_faults(**body)})
        except ValidationError as e:
            return _json({"error": str(e)}, 400)


@asynccontextmanager
async def running_exchange(
    cfg: ReplayConfig, timeline: Timeline | None = None
) -> AsyncIterator[ReplayExchange]:
    """Run the exchange for the block (port 0 picks a free port: see ``ex.port``)."""
    if timeline is None:
        files = cfg.recording_files()
        if not files:
            raise ValueError(
                "no recordings to replay: set replay.files or put spot_*.jsonl.gz under "
                "$CCF_SHARED/data/binance"
            )
        timeline = await asyncio.to_thread(load_timeline, files)
    ex = ReplayExchange(cfg, timeline)
    await ex.start()
    try:
        yield ex
    finally:
        await ex.stop()


async def serve(cfg: ReplayConfig) -> None:
    """``ccf exchange``: serve until cancelled."""
    async with running_exchange(cfg):
        await asyncio.Event().wait()
