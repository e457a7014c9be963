"""``ccf status``: what the store holds and how the parts are doing."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from ccf.config import Settings
from ccf.storage.backends import open_raw_store, uses_postgres
from ccf.storage.postgres.connect import describe

if TYPE_CHECKING:
    from ccf.storage.postgres.raw import PgRawStore
    from ccf.storage.sqlite import SqliteStore

STALE_HEARTBEAT_S = 30


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns / 1e9))
        + f".{ns // 1_000_000 % 1000:03d}Z"
    )


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _news_status(store: SqliteStore | PgRawStore) -> dict[str, Any]:
    """Stories per feed, the newest story, and which feeds work (from ``feed_status``)."""
    sources = store.news_sources()
    feeds = store.feed_statuses()
    newest = max((r[4] for r in sources if r[4] is not None), default=None)
    return {
        "stories": sum(r[2] for r in sources),
        "last_ingested": _iso(newest),
        "sources": [
            {"source": src, "stories": n, "first": first, "last_seen": _iso(last)}
            for src, n, first, last, _ in sources
        ],
        "feeds_ok": sum(f.state == "ok" for f in feeds),
        "feeds_failing": sum(f.state == "failing" for f in feeds),
        "feeds": [
            {
                "feed": f.feed,
                "state": f.state,
                "last_success": _iso(f.last_success_at),
                "last_error": f.last_error,
                "last_error_at": _iso(f.last_error_at),
                "consecutive_failures": f.consecutive_failures,
                "bozo": f.bozo,
                "items_seen": f.items_seen,
                "new_items": f.new_items,
                "next_poll": _iso(f.next_poll_at),
            }
            for f in feeds
        ],
    }


def _features_status(settings: Settings) -> list[dict[str, Any]]:
    if settings.storage.backend == "sqlite" and not settings.features_path.exists():
        return []  # no feature part has run: a collector machine may not even have numpy
    if uses_postgres(settings):  # lazy: numpy (and psycopg) only when asked
        from ccf.storage.postgres.features import pg_feature_status

        rows = pg_feature_status(settings.storage.postgres)
    else:
        from ccf.features.store import feature_status

        rows = feature_status(settings.features_path)
    return [{**f, "last_bucket": _iso(f["last_bucket"])} for f in rows]


def _open_store(settings: Settings) -> tuple[str, SqliteStore | PgRawStore | None, str]:
    """Where the raw store is, the store read-only (None when there is nothing to read),
    and why not."""
    if not uses_postgres(settings):
        path = settings.db_path
        store = open_raw_store(settings, readonly=True) if path.exists() else None
        return str(path), store, ""
    where = describe(settings.storage.postgres)
    try:
        return where, open_raw_store(settings, readonly=True), ""
    except FileNotFoundError:  # a database without CCF's tables yet
        return where, None, ""
    except ConnectionError as e:  # the message names the server, never the password
        return where, None, str(e)


def gather_status(settings: Settings) -> dict[str, Any]:
    """Everything ``ccf status`` shows, as plain data (``--json`` prints it as is)."""
    path, store, error = _open_store(settings)
    if store is None:
        empty = {"store": path, "exists": False, "streams": [], "dead_letters": {}, "parts": []}
        return {**empty, "error": error} if error else empty
    now = time.time_ns()
    try:
        streams = [
            {
                "kind": s.kind,
                "exchange": s.exchange,
                "symbol": s.symbol,
                "rows": s.rows,
                "first_event": _iso(s.first_ts),
                "last_event": _iso(s.last_ts),
                "gaps": s.gaps,
                "open_gaps": s.open_gaps,
                "receive_age_s": None
                if s.last_recv is None
                else round((now - s.last_recv) / 1e9, 3),
                "event_lag_s": (
                    None
                    if s.last_recv is None or s.last_ts is None
                    else round((s.last_recv - s.last_ts) / 1e9, 3)
                ),
            }
            for s in store.summaries()
        ]
        parts = []
        for part, pid, started, beat, state, detail in store.parts():
            running = (
                state == "running" and pid_alive(pid) and (now - beat) / 1e9 < STALE_HEARTBEAT_S
            )
            parts.append(
                {
                    "part": part,
                    "pid": pid,
                    "running": running,
                    "state": state if running or state != "running" else "not responding",
                    "since": _iso(started),
                    "heartbeat": _iso(beat),
                    "detail": json.loads(detail) if detail else {},
                }
            )
        open_gaps = [
            {"exchange": e, "symbol": s, "stream": k, "since": _iso(t), "reason": r, "detail": d}
            for e, s, k, t, r, d in store.query(
                "SELECT exchange, symbol, stream, start_ts, reason, detail FROM gap "
                "WHERE end_ts IS NULL ORDER BY start_ts"
            )
        ]
        return {
            "store": path,
            "exists": True,
            "streams": streams,
            "dead_letters": store.dead_letter_counts(),
            "open_gaps": open_gaps,
            "parts": parts,
            "news": _news_status(store),
            "features": _features_status(settings),
        }
    finally:
        store.close()


def lead_lines(detail: dict[str, Any]) -> list[str]:
    """A predictor's lead times from its heartbeat: event-clock delay from the origin
    bucket's end to the stored forecast, and forecasts stored after their target closed."""
    out = []
    for sym, d in (detail.get("symbols") or {}).items():
        lead = d.get("lead") if isinstance(d, dict) else None
        if not lead or not lead.get("n"):
            continue
        after = sum(lead["after_target"].values())
        out.append(
            f"    {sym:<10} lead: stored {lead['delay_p50_s']:.3f} s (p50) / "
            f"{lead['delay_p99_s']:.3f} s (p99) after the origin bucket's end (event clock, "
            f"last {lead['n']}); {after} stored after their target closed; least horizon "
            f"left {lead['horizon_left_min']:.0%}"
        )
    return out


def format_status(status: dict[str, Any]) -> str:
    if status.get("error"):
        return f"store {status['store']}: unreachable: {status['error']}"
    if not status["exists"]:
        return f"store {status['store']}: empty (nothing collected yet; run `ccf collect`)"
    lines = [f"store {status['store']}", ""]
    head = (
        f"{'kind':<7} {'symbol':<10} {'rows':>9}  {'first event':<24} {'last event':<24} "
        f"{'gaps':>4} {'open':>4} {'recv age s':>10} {'event lag s':>11}"
    )
    lines += [head, "-" * len(head)]
    for s in status["streams"]:
        age = "-" if s["receive_age_s"] is None else f"{s['receive_age_s']:.1f}"
        lag = "-" if s["event_lag_s"] is None else f"{s['event_lag_s']:.3f}"
        lines.append(
            f"{s['kind']:<7} {s['symbol']:<10} {s['rows']:>9,}  {s['first_event'] or '-':<24} "
            f"{s['last_event'] or '-':<24} {s['gaps']:>4} {s['open_gaps']:>4} {age:>10} "
            f"{lag:>11}"
        )
    dead = status["dead_letters"]
    lines += ["", "dead letters: " + (", ".join(f"{k}={v}" for k, v in dead.items()) or "none")]
    if status.get("open_gaps"):
        lines.append("open gaps:")
        lines += [
            f"  {g['symbol']} {g['stream']} since {g['since']} ({g['reason']}: {g['detail']})"
            for g in status["open_gaps"]
        ]
    lines.append("parts:" if status["parts"] else "parts: none has run yet")
    for p in status["parts"]:
        lines.append(
            f"  {p['part']:<10} {p['state']:<15} pid {p['pid']} since {p['since']} "
            f"(heartbeat {p['heartbeat']})"
        )
        lines += lead_lines(p.get("detail") or {})
    for f in status.get("features", []):
        lines.append(
            f"features {f['set']}@{f['version']} {f['symbol']:<10} {f['rows']:>9,} rows, "
            f"last bucket {f['last_bucket']}, lag {f['lag_s']:.1f} s"
        )
    news = status.get("news")
    if news and (news["sources"] or news["feeds"]):
        lines.append(
            f"news: {news['stories']:,} stories, newest ingested {news['last_ingested'] or '-'}; "
            f"feeds {news['feeds_ok']} ok, {news['feeds_failing']} failing"
        )
        lines += [
            f"  {s['source']:<16} {s['stories']:>7,} stories ({s['first']:,} first), "
            f"last seen {s['last_seen']}"
            for s in news["sources"]
        ]
        lines += [
            f"  failing: {f['feed']}: {f['last_error']} ({f['consecutive_failures']} in a row, "
            f"last success {f['last_success'] or 'never'})"
            for f in news["feeds"]
            if f["state"] == "failing"
        ]
    return "\n".join(lines)
