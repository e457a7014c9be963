"""The websocket endpoints: handshake, control messages, pings and the connection limits.

``/stream?streams=a/b`` sends combined ``{"stream":..,"data":..}`` frames,
``/ws/<stream>`` and ``/ws`` raw payloads; both take Binance's control
messages (SUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY combined, ...) and
answer them as binance_formats.md section 1 shows, errors included. Stream
names are checked as Binance checks them (:mod:`.streams`); ``timeUnit=
MICROSECOND`` in the URL turns every time of the connection's frames into
microseconds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Container
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from ccf.config import ReplayConfig
from ccf.sources.replay.hub import Conn, Hub
from ccf.sources.replay.rest import json_response
from ccf.sources.replay.streams import INVALID, TIME_UNITS, refusal, stream_symbol
from ccf.sources.replay.tasks import TaskSet
from ccf.sources.replay.wire import dumps, loads

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 2.0  # how long a close waits for the client's close frame
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,36}")
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


def _error(code: int, msg: str, rid: Any = None, with_id: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"code": code, "msg": msg}
    if with_id:
        out["id"] = rid
    return out


class WsEndpoint:
    """Serves one websocket per request until the client or the exchange closes it."""

    def __init__(
        self, cfg: ReplayConfig, hub: Hub, tasks: TaskSet, symbols: Container[str]
    ) -> None:
        self._cfg = cfg
        self._hub = hub
        self._tasks = tasks
        self._symbols = symbols

    def _note_unknown(self, conn_id: int, streams: list[str]) -> None:
        unknown = [s for s in streams if (sym := stream_symbol(s)) and sym not in self._symbols]
        if unknown:  # Binance acknowledges these and then sends nothing: so does the replay
            log.info(
                "part=exchange symbol=%s conn=%d subscribed to a symbol not replayed: "
                "nothing will be sent streams=%s",
                stream_symbol(unknown[0]),
                conn_id,
                ",".join(unknown[:5]),
            )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        combined = request.path == "/stream"
        raw = (
            request.query.get("streams", "") if combined else request.match_info.get("streams", "")
        )
        streams = [s for s in raw.split("/") if s]
        limit = self._cfg.max_streams_per_connection
        if len(streams) > limit:
            msg = f"Invalid request: too many streams, the limit is {limit}"
            return json_response(_error(2, msg, with_id=False), status=400)
        # Names in the URL are not checked: Binance accepts any (ccxt connects to /ws/0, /ws/1
        # to tell its connections apart), and an unknown one just never sends anything.
        unit = request.query.get("timeUnit", "MILLISECOND").upper()
        if unit not in TIME_UNITS:
            msg = "Invalid request: timeUnit must be MILLISECOND or MICROSECOND"
            return json_response(_error(2, msg, with_id=False), status=400)
        ws = web.WebSocketResponse(
            autoping=False, compress=False, timeout=_CLOSE_TIMEOUT_S, max_msg_size=1 << 16
        )
        await ws.prepare(request)
        conn = self._hub.open(ws, request, combined)
        conn.micros = TIME_UNITS[unit]
        self._hub.subscribe(conn, streams)
        self._note_unknown(conn.id, streams)
        log.info(
            "part=exchange connected conn=%d path=%s streams=%d",
            conn.id,
            request.path,
            len(streams),
        )
        watchdog = self._tasks.spawn(self._watch(conn), f"replay-watch-{conn.id}")
        try:
            await self._read(conn)
        finally:
            conn.closing = True
            watchdog.cancel()
            self._hub.forget(conn)
            log.info("part=exchange disconnected conn=%d frames=%d", conn.id, conn.cf.frames)
        return ws

    async def _read(self, conn: Conn) -> None:
        ws = conn.ws
        while True:
            msg = await ws.receive()
            if msg.type in _CLOSED:
                return
            now = time.monotonic()
            conn.incoming.append(now)
            while conn.incoming[0] < now - 1.0:
                conn.incoming.popleft()
            if len(conn.incoming) > self._cfg.max_incoming_per_s:
                await self._hub.close(
                    conn, WSCloseCode.POLICY_VIOLATION, "too many incoming messages"
                )
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
                    err = _error(
                        3, "Invalid JSON: expected value at line 1 column 1", with_id=False
                    )
                    await ws.send_frame(dumps(err), WSMsgType.TEXT)
            except ConnectionResetError:
                return

    def _control(self, conn: Conn, text: str) -> dict[str, Any]:
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
            return self._subscription(conn, method, params, rid)
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

    def _subscription(self, conn: Conn, method: str, params: list[Any], rid: Any) -> dict[str, Any]:
        if not all(isinstance(p, str) for p in params):
            return _error(2, "Invalid request: stream names must be strings", rid)
        if method == "UNSUBSCRIBE":
            self._hub.unsubscribe(conn, params)
            return {"result": None, "id": rid}
        refused = refusal(params)
        if refused is not None:
            if refused != INVALID:
                log.warning("part=exchange symbol=- conn=%d %s", conn.id, refused)
            return _error(2, refused, rid)
        new = {p for p in params if p not in conn.streams}
        limit = self._cfg.max_streams_per_connection
        if len(conn.streams) + len(new) > limit:
            msg = f"Invalid request: too many streams, the limit is {limit} per connection"
            return _error(2, msg, rid)
        self._hub.subscribe(conn, params)
        self._note_unknown(conn.id, params)
        return {"result": None, "id": rid}

    async def _watch(self, conn: Conn) -> None:
        """Ping every ``ping_interval_s``; close on a missing pong or at the age limit."""
        cfg, ws = self._cfg, conn.ws
        next_ping = conn.opened + cfg.ping_interval_s
        max_age = conn.opened + cfg.max_connection_age_s
        n = 0
        while not ws.closed:
            now = time.monotonic()
            reason = "connection age limit" if now >= max_age else ""
            if now >= conn.last_pong + cfg.pong_timeout_s:
                reason = "pong timeout"
            if reason:  # closed from its own task: the handler cancels this watchdog on exit
                self._tasks.spawn(
                    self._hub.close(conn, WSCloseCode.GOING_AWAY, reason),
                    f"replay-close-{conn.id}",
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
