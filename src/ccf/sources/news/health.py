"""Per-feed health and schedule: pure transitions of the ``FeedStatus`` record.

A poll ends in :func:`on_success` (a body parsed, or 304 Not Modified) or
:func:`on_failure`; :func:`next_delay_s` then says when to poll again: the
feed's interval with a little jitter while it works, a capped exponential
backoff while it fails, never sooner than the server's Retry-After.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ccf.config import BackoffConfig, FeedConfig
from ccf.records import FeedStatus
from ccf.sources.backoff import backoff_s

NS = 1_000_000_000


def initial_status(feed: FeedConfig, now: int, previous: FeedStatus | None = None) -> FeedStatus:
    """Status at start: the stored one's counters and validators when the URL is the same
    (a restart then asks with If-None-Match and gets 304 for what it already holds)."""
    if previous is not None and previous.url == feed.url:
        return previous._replace(next_poll_at=now, updated_at=now)
    return FeedStatus(
        feed.name, feed.url, "pending", None, None, None, "", "", None, 0, 0, 0, 0, now, "", "", now
    )


def on_success(
    st: FeedStatus,
    *,
    now: int,
    http_status: int,
    items_seen: int | None,
    new_items: int,
    bozo: str,
    etag: str,
    last_modified: str,
) -> FeedStatus:
    """A poll that worked; ``items_seen`` None keeps the count (304: nothing re-read)."""
    return st._replace(
        state="ok",
        last_poll_at=now,
        last_success_at=now,
        http_status=http_status,
        consecutive_failures=0,
        items_seen=st.items_seen if items_seen is None else items_seen,
        new_items=new_items,
        new_total=st.new_total + new_items,
        bozo=st.bozo if items_seen is None else bozo,
        etag=etag,
        last_modified=last_modified,
        updated_at=now,
    )


def on_failure(st: FeedStatus, *, now: int, error: str, http_status: int | None) -> FeedStatus:
    return st._replace(
        state="failing",
        last_poll_at=now,
        last_error_at=now,
        last_error=error,
        http_status=http_status,
        consecutive_failures=st.consecutive_failures + 1,
        new_items=0,
        updated_at=now,
    )


def next_delay_s(
    st: FeedStatus,
    *,
    interval_s: float,
    jitter: float,
    backoff: BackoffConfig,
    retry_after_s: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds until the next poll of a feed just updated to ``st``."""
    if st.consecutive_failures == 0:
        return interval_s * (1.0 + jitter * (2.0 * rng() - 1.0))
    # "Equal jitter": between half and all of the exponential step, so a failing feed
    # never retries at once yet many failing feeds still spread out.
    delay = backoff_s(
        st.consecutive_failures - 1,
        base=backoff.base_s,
        cap=backoff.cap_s,
        rng=lambda: 0.5 + 0.5 * rng(),
    )
    return max(delay, retry_after_s or 0.0)


def condition(st: FeedStatus) -> str:
    """What a log line should change on: the state and the kind of error or bozo, not
    the details that differ on every poll (byte counts, timings)."""
    if st.state == "failing":
        return "failing:" + st.last_error.split(":", 1)[0]
    if st.bozo:
        return "ok:bozo:" + st.bozo.split(":", 1)[0]
    return st.state
