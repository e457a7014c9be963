"""The replay exchange: recordings served over Binance's websocket and REST protocol.

One aiohttp application on one port serves ``/stream?streams=a/b``,
``/ws/<stream>`` and ``/ws`` (:mod:`.ws`), the public market-data REST
endpoints (:mod:`.rest`, :mod:`.rest_history`, :mod:`.rest_tickers`), the
system status, and two admin endpoints (``GET /_replay/state``, ``POST
/_replay/faults``: the latter only with the ``X-Replay-Token`` that
``replay.admin_token`` names). With ``replay.tls`` it serves https/wss
(:mod:`.tls`). One player task (:mod:`.player`) walks the timeline at
``speed``; with ``rebase_time`` its exchange times start at the wall-clock
moment it starts (:mod:`.clock`).

What cannot start (a port in use, a recording or klines file that cannot be
read) raises :class:`ReplayStartError` with a message naming it.

    async with running_exchange(ReplayConfig(port=0, speed=0)) as ex:
        ...  # ex.url, ex.ws_url, ex.state(), ex.set_faults(skip_update_every=50)
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import ValidationError

from ccf.config import ReplayConfig, Settings
from ccf.secrets import SecretError, resolve
from ccf.sources.replay.candles import Candles, load_kline_csv
from ccf.sources.replay.clock import ReplayClock
from ccf.sources.replay.exchange_info import load_exchange_info
from ccf.sources.replay.faults import Faults
from ccf.sources.replay.hub import Hub
from ccf.sources.replay.klines_live import LiveKlines
from ccf.sources.replay.market import Market
from ccf.sources.replay.player import Player
from ccf.sources.replay.rest import RestApi, WeightLimiter, json_response
from ccf.sources.replay.rest_history import HistoryApi
from ccf.sources.replay.rest_tickers import TickerApi
from ccf.sources.replay.tasks import TaskSet
from ccf.sources.replay.timeline import Timeline, load_timeline
from ccf.sources.replay.wire import NS_PER_MS, loads
from ccf.sources.replay.ws import WsEndpoint

if TYPE_CHECKING:
    from ccf.sources.replay.tls import TlsFiles

__all__ = ["ReplayExchange", "ReplayStartError", "replay_venues", "running_exchange", "serve"]

log = logging.getLogger(__name__)

_PLAYER = "replay-player"
_BAD_FAULTS = {"error": "body must be a JSON object of FaultConfig fields"}
_NO_TOKEN = {
    "error": "runtime fault changes are off: set replay.admin_token=env:NAME (or file:/path) "
    "and send the token in the X-Replay-Token header"
}
_BAD_TOKEN = {"error": "missing or wrong X-Replay-Token header"}
# A /stream?streams= URL of 1024 streams (the limit) is about 30 KB: aiohttp's 8 KB request
# line would refuse it before the exchange could answer Binance's stream-limit error.
_MAX_LINE = 1 << 17


class ReplayStartError(RuntimeError):
    """The exchange cannot start; the message names the file, key or port to fix."""


class _MalformedRequests(logging.Filter):
    """aiohttp logs each request it cannot parse as an ERROR with a traceback; such a request
    is the client's fault, not the exchange's: one INFO line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = "part=exchange symbol=- malformed request refused remote=%s error=%s"
            record.args = (remote, " ".join(f"{exc.code} {exc.message}".split())[:200])
            record.exc_info, record.exc_text = None, None
        return True


class ReplayExchange:
    """The running exchange; also the handle tests get from :func:`running_exchange`."""

    def __init__(self, cfg: ReplayConfig, timeline: Timeline) -> None:
        self.cfg = cfg
        self.timeline = timeline
        self.market = Market(timeline)
        self.clock = ReplayClock(timeline.start_ns, cfg.speed, cfg.rebase_time)
        self.faults = Faults(cfg.faults)
        self.limiter = WeightLimiter(cfg.weight_limit_per_minute, cfg.ban_after_429s, cfg.ban_s)
        self._tasks = TaskSet()
        self.hub = Hub(self.faults, self.clock, self._tasks, on_subscribe=self._on_subscribe)
        try:
            csv = dict(load_kline_csv(p) for p in cfg.klines)
        except (OSError, ValueError) as e:
            raise ReplayStartError(f"replay.klines: {e}") from None
        self.candles = Candles(self.market, self.clock, csv)
        self.klines = LiveKlines(self.market, self.candles, self.hub.subs)
        self.player = Player(cfg, self.market, self.clock, self.hub, self.faults, self.klines)
        info = load_exchange_info(list(timeline.symbols), cfg.weight_limit_per_minute)
        self.rest = RestApi(self.market, self.clock, self.faults, self.limiter, info)
        self._history = HistoryApi(self.market, self.candles, self.faults)
        self.tickers = TickerApi(self.market, self.clock)
        self.player.tickers = self.tickers
        self._ws = WsEndpoint(cfg, self.hub, self._tasks, self.market.timeline.symbols)
        self._runner: web.AppRunner | None = None
        self._player_task: asyncio.Task[None] | None = None
        self._log_filter = _MalformedRequests()
        self.tls: TlsFiles | None = None
        self.port = 0
        try:
            self._token = resolve(cfg.admin_token)
        except SecretError as e:
            raise ReplayStartError(f"replay.admin_token: {e}") from None

    def _on_subscribe(self) -> None:
        self.player.go.set()
        self.klines.wake()

    # --- lifecycle -------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.cfg.tls else 'http'}://{self.cfg.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.cfg.tls else 'ws'}://{self.cfg.host}:{self.port}"

    @property
    def started(self) -> bool:
        return self.clock.started

    @property
    def finished(self) -> bool:
        return self.player.finished

    @property
    def frames_dispatched(self) -> int:
        return self.player.frames_dispatched

    @property
    def frames_sent(self) -> int:
        return self.hub.frames_sent

    @property
    def time_shift_ms(self) -> int:
        """Exchange time minus recorded time (0 with ``rebase_time`` off)."""
        return self.clock.shift_ms

    def build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self.rest.middleware],
            handler_args={"max_line_size": _MAX_LINE, "max_field_size": _MAX_LINE},
        )
        app.router.add_get("/stream", self._ws.handle)
        app.router.add_get("/ws", self._ws.handle)
        app.router.add_get("/ws/{streams:.*}", self._ws.handle)
        self.rest.add_routes(app)
        self._history.add_routes(app)
        self.tickers.add_routes(app)
        app.router.add_get("/_replay/state", self._state)
        app.router.add_post("/_replay/faults", self._set_faults)
        return app

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.cfg.tls:
            return None
        from ccf.sources.replay.tls import default_tls_dir, ensure_certificate, server_context

        tls_dir = Path(self.cfg.tls_dir or default_tls_dir())
        try:
            self.tls = ensure_certificate(tls_dir, self.cfg.host)
            return server_context(self.tls)
        except (OSError, ValueError, ssl.SSLError) as e:
            raise ReplayStartError(
                f"replay.tls: cannot make or load the certificate in {tls_dir} ({e}); "
                "choose a writable replay.tls_dir"
            ) from None

    async def start(self) -> None:
        ctx = self._ssl()
        self._runner = web.AppRunner(
            self.build_app(),
            access_log=None,
            shutdown_timeout=1.0,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port, ssl_context=ctx)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            raise ReplayStartError(
                f"replay.port: cannot listen on {self.cfg.host}:{self.cfg.port} "
                f"({e.strerror or e}); stop the process holding it or choose another "
                "(replay.port=<port>, 0 for a free one)"
            ) from None
        logging.getLogger("aiohttp.server").addFilter(self._log_filter)
        self.port = self._runner.addresses[0][1]
        if self.cfg.start == "immediately":
            self.player.go.set()
        self._player_task = self._tasks.spawn(self.player.run(), _PLAYER)
        log.info(
            "part=exchange symbol=- replay exchange listening url=%s symbols=%s speed=%s loop=%s "
            "rebase_time=%s",
            self.url,
            ",".join(self.timeline.symbols),
            self.cfg.speed,
            self.cfg.loop,
            self.cfg.rebase_time,
        )

    async def stop(self) -> None:
        self._tasks.cancel(_PLAYER)
        await self.hub.close_all()
        self._tasks.cancel()
        await self._tasks.wait()
        if self._runner is not None:
            await self._runner.cleanup()
        logging.getLogger("aiohttp.server").removeFilter(self._log_filter)
        log.info("part=exchange symbol=- stopped frames_sent=%d", self.hub.frames_sent)

    async def run_forever(self) -> None:
        """Serve until cancelled; a player that fails ends this with its exception (so
        ``ccf exchange`` exits non-zero instead of serving a frozen market)."""
        if self._player_task is not None:
            await self._player_task
        await asyncio.Event().wait()

    # --- state -----------------------------------------------------------------

    def now_ns(self) -> int:
        """Exchange time: the last frame's, advancing with the wall clock at ``speed``."""
        return self.clock.recorded_ns() + self.clock.shift_ms * NS_PER_MS

    def state(self) -> dict[str, Any]:
        market = self.market
        return {
            "started": self.started,
            "finished": self.finished,
            "speed": self.cfg.speed,
            "loop_count": market.pass_index,
            "replay_time_ms": self.clock.now_ms(),
            "time_shift_ms": self.time_shift_ms,
            "frames_dispatched": self.frames_dispatched,
            "frames_sent": self.frames_sent,
            "symbols": {
                s: {
                    "last_u": market.books[s].last_update_id,
                    "last_trade_id": market.last_trade_id[s],
                    "book_levels": market.books[s].levels(),
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
                for c in self.hub.conns.values()
            ],
            "connections_total": self.hub.connections_total,
            "rest": {
                "weight_used_1m": self.limiter.used,
                "banned_until": self.limiter.banned_until,
            },
            **self.faults.state(),
        }

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Merge fault settings at runtime (raises pydantic ValidationError on bad ones)."""
        return self.faults.update(changes).model_dump()

    # --- admin -------------------------------------------------------------------

    async def _state(self, request: web.Request) -> web.Response:
        return json_response(self.state())

    async def _set_faults(self, request: web.Request) -> web.Response:
        if self._token is None:
            return json_response(_NO_TOKEN, 403)
        given = request.headers.get("X-Replay-Token", "")
        if not hmac.compare_digest(given.encode(), self._token.encode()):
            log.warning("part=exchange symbol=- fault change refused remote=%s", request.remote)
            return json_response(_BAD_TOKEN, 401)
        try:
            body = await request.json(loads=loads)
        except ValueError:
            return json_response(_BAD_FAULTS, 400)
        if not isinstance(body, dict):
            return json_response(_BAD_FAULTS, 400)
        try:
            return json_response({"faults": self.set_faults(**body)})
        except ValidationError as e:
            return json_response({"error": str(e)}, 400)


@asynccontextmanager
async def running_exchange(
    cfg: ReplayConfig, timeline: Timeline | None = None
) -> AsyncIterator[ReplayExchange]:
    """Run the exchange for the block (port 0 picks a free port: see ``ex.port``)."""
    if timeline is None:
        files = cfg.recording_files()
        if not files:
            raise ReplayStartError(
                "no recordings to replay: set replay.files or put spot_*.jsonl.gz under "
                "$CCF_SHARED/data/binance"
            )
        try:
            timeline = await asyncio.to_thread(load_timeline, files)
        except (OSError, ValueError) as e:
            raise ReplayStartError(f"replay.files: {e}") from None
    ex = ReplayExchange(cfg, timeline)
    await ex.start()
    try:
        yield ex
    finally:
        await ex.stop()


def replay_venues(settings: Settings) -> list[ReplayConfig]:
    """The replay exchanges of the venues after the first (each on its ``replay_port``,
    serving its ``replay_files``): the first venue is served on ``replay.port``."""
    from ccf.sources.replay.venues.protocols import PROTOCOLS  # served by replay.venues

    out = []
    for v in settings.venue_list()[1:]:
        if v.name in PROTOCOLS:
            continue
        if not v.replay_files or not v.replay_port:
            raise ReplayStartError(
                f"venue {v.name}: set replay_files and replay_port to replay it (only the "
                "first venue is served from replay.files on replay.port)"
            )
        out.append(
            settings.replay.model_copy(update={"port": v.replay_port, "files": v.replay_files})
        )
    return out


async def serve(
    cfg: ReplayConfig, on_start: Callable[[ReplayExchange], None] | None = None
) -> None:
    """``ccf exchange``: serve until cancelled; ``on_start`` sees the running exchange."""
    async with running_exchange(cfg) as ex:
        if on_start is not None:
            on_start(ex)
        await ex.run_forever()
