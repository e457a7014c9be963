"""The optional InfluxDB sink: a background writer and a tee the parts call.

The original system stored everything in InfluxDB; CCF keeps its own store
and can copy raw records, feature rows, predictions and scores into an
InfluxDB as well (``influx.enabled=true``), for the dashboards people
already have there. The copy is secondary, so it never blocks or stops the
part it serves:

- :meth:`InfluxWriter.write` only appends lines to an in-memory queue. A
  daemon thread sends them in gzip'd batches of at most ``batch_lines``, at
  least every ``flush_interval_s``, over one kept-alive HTTP connection.
- Connection errors, 5xx and 429 are retried with capped, jittered backoff
  (a ``Retry-After`` is honoured). Meanwhile the lines wait in the queue; past
  ``max_buffer_lines`` (plus the one batch in flight) the oldest are dropped,
  counted, with a warning.
- Any other 4xx (a bad line, a field type conflict, bad credentials) is the
  batch's own fault: retrying would fail forever, so the server's message is
  logged and the batch dead-lettered (counted in ``batches_failed`` and
  ``lines_failed``). InfluxDB 1.x still writes the good lines of such a batch
  (a "partial write"); they are not counted as written.
- A 1.x database that does not exist (the server was started late, or afresh)
  is created with ``CREATE DATABASE``, as Telegraf does, and the batch is sent again.

Credentials (``influx.password`` for 1.x basic auth, ``influx.token`` for
2.x) are references read through :func:`ccf.secrets.resolve` at start; their
values go into one header, are kept out of every repr and are redacted from
server messages before those are logged.

    tee = open_influx(settings)          # None when influx.enabled is false
    if tee is not None:
        tee.raw(records)                 # Book, Trade, Candle, ... as they are stored
        tee.features(fs.float_columns, rows, feature_set=fs.table)
        tee.close()                      # flushes what it can within influx.timeout_s
"""

from __future__ import annotations

import base64
import gzip
import http.client
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple
from urllib.parse import quote, urlencode, urlsplit

from ccf.config import InfluxConfig, Settings
from ccf.records import Prediction, Score
from ccf.secrets import redact, resolve
from ccf.sinks import lineprotocol as lp
from ccf.sources.backoff import backoff_s

log = logging.getLogger(__name__)

_RETRY_CAP_S = 30.0  # longest pause between two tries while InfluxDB is down
_RETRY_AFTER_CAP_S = 300.0  # a server asking for longer is not taken at its word
_LOG_EVERY_S = 10.0  # a repeating warning is logged at most this often
_GZIP_LEVEL = 1  # line protocol shrinks ~8x even at level 1; higher levels cost CPU for little


class InfluxStats(NamedTuple):
    """What the sink has done since start (for ``ccf status`` and the metrics)."""

    lines_written: int  # acknowledged by InfluxDB (2xx)
    batches_written: int
    batches_failed: int  # refused with a 4xx: logged and dead-lettered, never retried
    lines_failed: int  # the lines of those batches
    lines_dropped: int  # held past max_buffer_lines, or still unsent at close
    lines_buffered: int  # waiting now (the batch in flight included)
    retries: int  # tries that failed with a connection error, 5xx or 429
    encode_errors: int  # records no line could be made of (a bug upstream: logged)
    last_error: str  # the last failure, secrets redacted; "" if none yet


class _Secret:
    """A credential that never shows in a repr, a log line or a traceback's locals."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"


class _Retry(Exception):
    """A try that may succeed later: connection error, 5xx, 429."""

    def __init__(self, why: str, after_s: float | None = None) -> None:
        super().__init__(why)
        self.after_s = after_s


class _Refused(Exception):
    """A 4xx other than 429: the batch itself is wrong, so it is dead-lettered."""


def write_path(cfg: InfluxConfig) -> str:
    """The write endpoint with its query, after the url's own path.

    >>> write_path(InfluxConfig(database="ccf", retention_policy="week"))
    '/write?db=ccf&rp=week&precision=ns'
    >>> write_path(InfluxConfig(api="v2", org="acme", bucket="ticks"))
    '/api/v2/write?org=acme&bucket=ticks&precision=ns'
    """
    if cfg.api == "v1":
        q = {"db": cfg.database, "rp": cfg.retention_policy, "precision": "ns"}
        path = "/write"
    else:
        q = {"org": cfg.org, "bucket": cfg.bucket, "precision": "ns"}
        path = "/api/v2/write"
    return path + "?" + urlencode({k: v for k, v in q.items() if v is not None}, quote_via=quote)


def auth_header(cfg: InfluxConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The ``Authorization`` value: ``Basic`` for 1.x with a username (a header rather
    than ``u=&p=``, which would put the password in URLs and access logs), ``Token``
    for 2.x with a token; None without credentials. Raises
    :class:`ccf.secrets.SecretError` (naming the reference, not the value)."""
    if cfg.api == "v1":
        if cfg.username is None:
            return None
        password = resolve(cfg.password, environ) or ""
        pair = f"{cfg.username}:{password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")
    token = resolve(cfg.token, environ)
    return None if token is None else f"Token {token}"


def retry_after_s(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (the HTTP-date form is rare here: None, use backoff)."""
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), _RETRY_AFTER_CAP_S)
    except ValueError:
        return None


class _Http:
    """One kept-alive connection to InfluxDB, reopened after any error."""

    def __init__(self, cfg: InfluxConfig) -> None:
        url = urlsplit(cfg.url)
        if url.username or url.password:
            raise ValueError(
                "influx.url must not carry credentials: set influx.username and "
                "influx.password (or influx.token) to env:NAME or file:/path"
            )
        self.scheme = url.scheme
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port
        self.base = url.path.rstrip("/")  # InfluxDB behind a proxy at a path prefix
        self.timeout_s = cfg.timeout_s
        self._context: ssl.SSLContext | None = None
        if self.scheme == "https":
            ca = str(cfg.ca_bundle) if cfg.ca_bundle is not None else None
            self._context = ssl.create_default_context(cafile=ca)
        self._conn: http.client.HTTPConnection | None = None

    def post(
        self, path: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> tuple[int, str, str | None]:
        """POST; returns (status, body text, Retry-After). Connection errors raise.

        A kept-alive connection the server has closed while idle fails on first use;
        that one failure is tried again at once on a fresh connection (a write is
        idempotent: the same points land on the same keys).
        """
        reused = self._conn is not None
        try:
            return self._post_once(path, body, headers, timeout_s)
        except (OSError, http.client.HTTPException):
            if not reused:
                raise
        return self._post_once(path, body, headers, timeout_s)

    def _post_once(
        self, path: str, body: bytes, headers: Mapping[str, str], timeout_s: float
    ) -> tuple[int, str, str | None]:
        conn = self._conn
        if conn is None:
            if self._context is not None:
                conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=timeout_s, context=self._context
                )
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
            self._conn = conn
        elif conn.sock is not None:
            conn.sock.settimeout(timeout_s)
        try:
            conn.request("POST", self.base + path, body=body, headers=dict(headers))
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if resp.will_close:
            self.close()
        return resp.status, text, resp.getheader("Retry-After")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class InfluxWriter:
    """Batches line-protocol lines to InfluxDB from a daemon thread; see the module doc.

    ``write`` never blocks on the network. ``flush`` waits (bounded) until the
    queue is empty; ``close`` flushes what it can within a timeout and counts the
    rest as dropped.
    """

    def __init__(
        self,
        cfg: InfluxConfig,
        *,
        environ: Mapping[str, str] | None = None,
        rng: Callable[[], float] | None = None,
    ) -> None:
        self.cfg = cfg
        self._http = _Http(cfg)
        self._path = write_path(cfg)
        auth = auth_header(cfg, environ)
        self._auth = _Secret(auth) if auth is not None else None
        # the raw secret too, so a server echoing it is redacted
        raw = resolve(cfg.password if cfg.api == "v1" else cfg.token, environ)
        self._secrets = tuple(_Secret(s) for s in (raw, auth) if s)
        self._rng = rng
        self._cond = threading.Condition()
        self._queue: deque[str] = deque()
        self._inflight = 0
        self._flush_now = False
        self._closing = False
        self._close_deadline = 0.0
        self._closed = False
        self._down_since: float | None = None
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._n = dict.fromkeys(
            ("written", "batches", "failed_batches", "failed", "dropped", "retries"), 0
        )
        self._last_error = ""
        self._thread = threading.Thread(target=self._run, name="ccf-influx", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        target = self.cfg.database if self.cfg.api == "v1" else self.cfg.bucket
        return f"InfluxWriter(url={self.cfg.url!r}, api={self.cfg.api}, target={target!r})"

    # -- the caller's side --------------------------------------------------------------

    def write(self, lines: Sequence[str]) -> None:
        """Queue ``lines`` (no newline inside a name or tag: see lineprotocol); never blocks
        on the network. Past ``max_buffer_lines`` the oldest queued lines are dropped."""
        if not lines:
            return
        with self._cond:
            if self._closed:
                self._n["dropped"] += len(lines)
                self._warn("closed", "part=influx write after close: %d lines dropped", len(lines))
                return
            was_empty = not self._queue
            self._queue.extend(lines)
            self._trim()
            # wake the thread to start the flush clock, or because a batch is full
            if was_empty or len(self._queue) >= self.cfg.batch_lines:
                self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Send what is queued now; True once the queue is empty, False at the timeout
        (InfluxDB still down: the lines stay queued)."""
        timeout_s = self.cfg.timeout_s if timeout_s is None else timeout_s
        with self._cond:
            self._flush_now = True
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: not self._queue and not self._inflight, timeout=timeout_s
            )

    def close(self, timeout_s: float | None = None) -> None:
        """Flush what can be sent within ``timeout_s`` (default ``influx.timeout_s``), then
        stop; lines still unsent are counted as dropped and logged."""
        timeout_s = self.cfg.timeout_s if timeout_s is None else timeout_s
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._close_deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        self._thread.join(timeout_s + 1.0)
        with self._cond:
            self._closed = True
            left = len(self._queue) + self._inflight
            self._queue.clear()
            if left:
                self._n["dropped"] += left
                log.warning(
                    "part=influx url=%s closed with %d lines unsent (dropped)", self.cfg.url, left
                )
        self._http.close()

    def stats(self) -> InfluxStats:
        with self._cond:
            n = self._n
            return InfluxStats(
                lines_written=n["written"],
                batches_written=n["batches"],
                batches_failed=n["failed_batches"],
                lines_failed=n["failed"],
                lines_dropped=n["dropped"],
                lines_buffered=len(self._queue) + self._inflight,
                retries=n["retries"],
                encode_errors=0,
                last_error=self._last_error,
            )

    # -- helpers under the lock ---------------------------------------------------------

    def _trim(self) -> None:
        """Drop the oldest queued lines past ``max_buffer_lines``.

        The batch in flight is not counted: it is the oldest, and if its try fails
        it comes back to the queue's front, where this trims it first. So what
        survives a long outage is always the newest ``max_buffer_lines``.
        """
        excess = len(self._queue) - self.cfg.max_buffer_lines
        if excess <= 0:
            return
        for _ in range(excess):
            self._queue.popleft()
        self._n["dropped"] += excess
        self._warn(
            "dropped",
            "part=influx url=%s buffer full (max_buffer_lines=%d): dropped the oldest %d "
            "lines, %d in all",
            self.cfg.url,
            self.cfg.max_buffer_lines,
            excess,
            self._n["dropped"],
        )

    def _warn(self, key: str, msg: str, *args: object, level: int = logging.WARNING) -> None:
        """Log at most once per ``_LOG_EVERY_S`` per key; says how many were held back."""
        now = time.monotonic()
        if now - self._last_logged.get(key, -_LOG_EVERY_S) < _LOG_EVERY_S:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last_logged[key] = now
        held = self._suppressed.pop(key, 0)
        if held:
            msg += " (%d like it not logged)"
            args = (*args, held)
        log.log(level, msg, *args)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._send(batch)
            except _Retry as e:
                attempt += 1
                delay = self._after_failure(batch, str(e), e.after_s, attempt)
                self._pause(delay)
                continue
            except _Refused as e:
                self._dead_letter(batch, str(e))
            else:
                self._delivered(batch)
            attempt = 0

    def _take(self) -> list[str] | None:
        """The next batch: once ``batch_lines`` are queued, ``flush_interval_s`` after the
        first line came into an empty queue (or after the last batch, for lines already
        waiting), on ``flush``, or (closing) whatever is left; None to stop."""
        cfg = self.cfg
        with self._cond:
            due = time.monotonic() + cfg.flush_interval_s
            while True:
                now = time.monotonic()
                if self._closing and (not self._queue or now >= self._close_deadline):
                    return None
                if not self._queue:
                    self._flush_now = False
                    self._cond.notify_all()  # flush() waiters: the queue is empty
                    self._cond.wait()  # write() wakes us when the first line comes
                    due = time.monotonic() + cfg.flush_interval_s
                    continue
                if (
                    len(self._queue) >= cfg.batch_lines
                    or self._flush_now
                    or self._closing
                    or now >= due
                ):
                    break
                self._cond.wait(due - now)
            n = min(cfg.batch_lines, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._inflight = n
            return batch

    def _pause(self, delay_s: float) -> None:
        """Wait before the next try. ``close()`` cuts a pause short once, for a last try
        now; pauses while closing still back off (a down server is not hammered), but
        never past the close deadline."""
        with self._cond:
            if not self._closing:
                self._cond.wait_for(lambda: self._closing, timeout=delay_s)
            else:
                self._cond.wait(min(delay_s, max(self._close_deadline - time.monotonic(), 0.0)))

    def _timeout_s(self) -> float:
        if self._closing:
            return max(min(self.cfg.timeout_s, self._close_deadline - time.monotonic()), 0.1)
        return self.cfg.timeout_s

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "text/plain; charset=utf-8", "Content-Encoding": "gzip"}
        if self._auth is not None:
            h["Authorization"] = self._auth.value
        return h

    def _post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        """POST, turning connection errors, 5xx and 429 into :class:`_Retry`."""
        try:
            status, text, after = self._http.post(path, body, headers, self._timeout_s())
        except (OSError, http.client.HTTPException) as e:
            raise _Retry(f"{type(e).__name__}: {e}") from None
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status}: {self._clean(text)}", retry_after_s(after))
        return status, text

    def _send(self, batch: list[str]) -> None:
        body = gzip.compress(("\n".join(batch) + "\n").encode(), compresslevel=_GZIP_LEVEL)
        headers = self._headers()
        status, text = self._post(self._path, body, headers)
        if status == 404 and self.cfg.api == "v1" and "database not found" in text:
            self._create_database()
            status, text = self._post(self._path, body, headers)
        if not 200 <= status < 300:
            raise _Refused(f"HTTP {status}: {self._clean(text)}")

    def _create_database(self) -> None:
        """``CREATE DATABASE`` (a no-op where it exists); the name is validated by the config
        (letters, digits, ``_``, ``-``), so quoting it is enough."""
        q = urlencode({"q": f'CREATE DATABASE "{self.cfg.database}"'})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self._auth is not None:
            headers["Authorization"] = self._auth.value
        status, text = self._post("/query", q.encode(), headers)
        if 200 <= status < 300 and '"error"' not in text:
            log.info("part=influx url=%s created database %s", self.cfg.url, self.cfg.database)
        else:
            log.error(
                "part=influx url=%s database %s does not exist and could not be created "
                "(HTTP %d: %s): create it, or give the user the privilege",
                self.cfg.url,
                self.cfg.database,
                status,
                self._clean(text),
            )

    def _clean(self, text: str) -> str:
        """A server message fit for a log: secrets redacted, one line, bounded."""
        text = redact(text, *(s.value for s in self._secrets))
        return " ".join(text.split())[:500]

    def _delivered(self, batch: list[str]) -> None:
        with self._cond:
            if self._closed:  # close() gave up on this batch and counted it as dropped
                self._n["dropped"] -= len(batch)
            self._inflight = 0
            self._n["written"] += len(batch)
            self._n["batches"] += 1
            if self._down_since is not None:
                log.info(
                    "part=influx url=%s reachable again after %.1f s; %d lines waiting",
                    self.cfg.url,
                    time.monotonic() - self._down_since,
                    len(self._queue),
                )
                self._down_since = None
            self._cond.notify_all()

    def _dead_letter(self, batch: list[str], why: str) -> None:
        with self._cond:
            if self._closed:  # counted as dropped by close(): refused is the truer count
                self._n["dropped"] -= len(batch)
            self._inflight = 0
            self._n["failed_batches"] += 1
            self._n["failed"] += len(batch)
            self._last_error = why
            self._warn(
                "refused",
                "part=influx url=%s refused a batch of %d lines (dead-lettered, not retried): %s",
                self.cfg.url,
                len(batch),
                why,
                level=logging.ERROR,
            )
            self._cond.notify_all()

    def _after_failure(
        self, batch: list[str], why: str, after_s: float | None, attempt: int
    ) -> float:
        """Put the batch back at the queue's front (so the oldest lines go first, and are
        the ones dropped if the queue overflows) and say how long to wait."""
        with self._cond:
            self._inflight = 0
            if self._closed:  # close() gave up on this batch and counted it as dropped
                return 0.0
            self._queue.extendleft(reversed(batch))
            self._trim()
            self._n["retries"] += 1
            self._last_error = why
            if self._down_since is None:
                self._down_since = time.monotonic()
            self._warn(
                "retry",
                "part=influx url=%s write failed, will retry (attempt=%d, queued=%d): %s",
                self.cfg.url,
                attempt,
                len(self._queue),
                why,
            )
            self._cond.notify_all()
        if after_s is not None:
            return after_s
        kw = {"rng": self._rng} if self._rng is not None else {}
        return backoff_s(attempt, base=0.2, cap=_RETRY_CAP_S, **kw)


class InfluxTee:
    """What the parts call: encodes records of the configured ``influx.kinds`` and queues
    them. Never raises for the sink's sake: a record that cannot be encoded is logged
    and counted, and the part goes on."""

    def __init__(
        self, cfg: InfluxConfig, writer: InfluxWriter | None = None, *, exchange: str = "binance"
    ) -> None:
        self.cfg = cfg
        self.writer = writer if writer is not None else InfluxWriter(cfg)
        self.exchange = exchange
        self.kinds = frozenset(cfg.kinds)
        self._prefix = cfg.measurement_prefix
        self._encode_errors = 0
        self._last_logged = -_LOG_EVERY_S

    def __repr__(self) -> str:
        return f"InfluxTee({self.writer!r}, kinds={sorted(self.kinds)})"

    def raw(self, records: Iterable[object]) -> int:
        """Raw records (book, trade, agg trade, quote, candle, gap, news); others skipped.
        Returns the lines queued."""
        if "raw" not in self.kinds:
            return 0
        records = records if isinstance(records, Sequence) else list(records)
        return self._put(lambda: lp.raw_lines(records, self._prefix), records, lp.record_line)

    def features(
        self,
        fs_columns: Sequence[str],
        rows: Iterable[tuple[str, int, int, Sequence[float]]],
        *,
        feature_set: str = "",
        exchange: str | None = None,
    ) -> int:
        """Feature rows, ``values`` following ``fs_columns`` (``FeatureSet.float_columns``);
        ``feature_set`` (the set's table name) tags them."""
        if "features" not in self.kinds:
            return 0
        rows = rows if isinstance(rows, Sequence) else list(rows)
        ex = exchange or self.exchange
        prefix = self._prefix

        def one(row: object, _prefix: str) -> str | None:
            got = lp.feature_lines(
                fs_columns, [row], exchange=ex, prefix=prefix, feature_set=feature_set
            )
            return got[0] if got else None

        return self._put(
            lambda: lp.feature_lines(
                fs_columns, rows, exchange=ex, prefix=prefix, feature_set=feature_set
            ),
            rows,
            one,
        )

    def predictions(self, rows: Iterable[Prediction]) -> int:
        if "predictions" not in self.kinds:
            return 0
        rows = rows if isinstance(rows, Sequence) else list(rows)
        return self._put(
            lambda: lp.lines_of(lp.prediction_line, rows, self._prefix), rows, lp.prediction_line
        )

    def scores(self, rows: Iterable[Score]) -> int:
        if "scores" not in self.kinds:
            return 0
        rows = rows if isinstance(rows, Sequence) else list(rows)
        return self._put(
            lambda: lp.lines_of(lp.score_line, rows, self._prefix), rows, lp.score_line
        )

    def stats(self) -> InfluxStats:
        return self.writer.stats()._replace(encode_errors=self._encode_errors)

    def flush(self, timeout_s: float | None = None) -> bool:
        return self.writer.flush(timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        self.writer.close(timeout_s)

    def _put(
        self,
        encode_all: Callable[[], list[str]],
        items: Sequence[object],
        encode_one: Callable[[object, str], str | None],
    ) -> int:
        """Encode the batch in one go; if one item breaks the encoder (a bug upstream),
        encode item by item so only that one is lost, logged and counted."""
        try:
            lines = encode_all()
        except (TypeError, ValueError, AttributeError):
            lines = []
            for item in items:
                try:
                    s = encode_one(item, self._prefix)
                except (TypeError, ValueError, AttributeError) as e:
                    self._encode_error(item, e)
                    continue
                if s is not None:
                    lines.append(s)
        self.writer.write(lines)
        return len(lines)

    def _encode_error(self, item: object, e: Exception) -> None:
        self._encode_errors += 1
        now = time.monotonic()
        if now - self._last_logged >= _LOG_EVERY_S:
            self._last_logged = now
            log.error(
                "part=influx cannot encode a %s (%s: %s); skipped, %d so far",
                type(item).__name__,
                type(e).__name__,
                e,
                self._encode_errors,
            )


def open_influx(settings: Settings, environ: Mapping[str, str] | None = None) -> InfluxTee | None:
    """The tee for ``settings.influx``, or None when it is off. Secrets are read now, so
    a missing one stops the part at start with a message naming the reference."""
    cfg = settings.influx
    if not cfg.enabled:
        return None
    tee = InfluxTee(cfg, InfluxWriter(cfg, environ=environ), exchange=settings.exchange)
    log.info(
        "part=influx url=%s api=%s target=%s kinds=%s",
        cfg.url,
        cfg.api,
        cfg.database if cfg.api == "v1" else cfg.bucket,
        ",".join(cfg.kinds),
    )
    return tee
