"""End to end: the collector against the replay exchange, with hostile input (issue 17).

The real parts run: the replay exchange serving the recordings over the Binance
protocol (with its own malformed-frame fault on), the collector's websocket and
REST clients, the feed, the writer thread and SQLite. Hostile frames the replay
cannot make are injected where frames enter the collector (``_on_frame``): the
fuzz suite's certainly-invalid mutations of the frame just received (NaN, inf,
negative, zero, beyond int64, truncated, nested 1,000+ deep, unknown streams),
ids jumping far ahead, and a first depth snapshot answered with an HTML page.
The collector must keep running, store every recorded trade exactly once and
every book equal to the rebuild, and keep each hostile input as a dead letter
with its reason.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ccf.config import ReplayConfig
from ccf.records import Record
from ccf.sources.binance.connection import StreamConnection
from ccf.sources.binance.feed import DEAD_LETTER_KINDS, SnapshotOutcome
from ccf.sources.collector import Collector
from ccf.sources.replay.exchange import running_exchange
from ccf.sources.replay.timeline import Timeline, load_timeline
from ccf.storage import SqliteStore
from tests import parts
from tests.fuzz import hostile
from tests.sources.recorded import SYMBOLS, recorded, recording_files
from tests.sources.test_collector import (
    all_trades,
    assert_books_exact,
    settings_for,
    stored_trade_ids,
    trades_seen,
)

EVERY = 150  # frames between injected hostile ones
BOUND = 1_000_000


@pytest.fixture(scope="module")
def timeline() -> Timeline:
    return load_timeline(recording_files())


class HostileCollector(Collector):
    """The collector, with hostile frames sent in beside the real ones."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.rng = random.Random(17)
        self.seen = 0
        self.injected = 0
        self.jumps = 0
        self.html_snapshots = 0
        real_on_snapshot = self.feed.on_snapshot

        def on_snapshot(
            symbol: str, body: str | bytes, ts: int, out: list[Record]
        ) -> SnapshotOutcome:
            if self.html_snapshots < len(SYMBOLS):  # each symbol's first answer: an HTML page
                self.html_snapshots += 1
                body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            return real_on_snapshot(symbol, body, ts, out)

        self.feed.on_snapshot = on_snapshot  # type: ignore[method-assign]

    def _on_frame(self, conn: StreamConnection, frame: str, ts_recv: int) -> None:
        self.seen += 1
        if self.seen % EVERY == 0 and frame.startswith('{"stream"'):
            kind = hostile.kind_of(frame)
            if self.seen % (4 * EVERY) == 0 and kind in ("trade", "depth"):
                far = (3 * self.jumps + 2) * BOUND  # never two that look like one stream
                bad = hostile.jump_frame(self.rng, frame, BOUND, far)
                self.jumps += 1
            else:
                bad = hostile.invalid_frame(self.rng, frame.replace("ethusdt", "btcusdt"))[0]
            self.injected += 1
            super()._on_frame(conn, bad, ts_recv)
        super()._on_frame(conn, frame, ts_recv)


async def test_hostile_frames_and_snapshots_stop_nothing_and_lose_no_trade(
    tmp_path: Path, timeline: Timeline
) -> None:
    async with running_exchange(ReplayConfig(port=0, speed=0, loop=False), timeline) as ex:
        settings = settings_for(
            tmp_path, ex, "collect.silence_timeout_s=120", f"collect.max_id_jump={BOUND}"
        )
        ex.set_faults(malformed_every=3000)
        collector = HostileCollector(settings)
        await parts.run_until(
            collector, lambda c: trades_seen(c) >= all_trades(), 180, lambda c: c.status()
        )
    store = SqliteStore(settings.db_path, readonly=True)
    for sym in SYMBOLS:
        # every recorded trade, once: none lost to a bogus id, none doubled
        assert stored_trade_ids(store, sym) == sorted(recorded(sym).trades)
        assert assert_books_exact(store, sym) > 0.5 * len(recorded(sym).books)
    reasons = [r[0] for r in store.query("SELECT reason FROM dead_letter")]
    kinds = {r.split(":", 1)[0] for r in reasons}
    assert kinds <= set(DEAD_LETTER_KINDS), kinds
    assert {"invalid_value", "id_jump", "bad_snapshot", "malformed_json"} <= kinds
    # every injected frame and HTML snapshot is kept; so is every frame the replay broke
    assert len(reasons) == collector.feed.stats["dead_letters"]
    assert len(reasons) >= collector.injected + collector.html_snapshots
    assert collector.feed.stats["refused_snapshots"] >= len(SYMBOLS)
    # id jumps in diffs are gaps that closed again once the book was resynced
    gaps = store.query("SELECT stream, reason, end_ts FROM gap")
    assert all(stream == "book" and reason == "id_jump" for stream, reason, _ in gaps), gaps
    assert all(end_ts is not None for _, _, end_ts in gaps), gaps
    assert all(s.synced for s in collector.feed.state.values())
    collector.metrics.snapshot()  # runs the refresh that moves the counts into the metrics
    by_kind = {
        k: collector.metrics.registry.get_sample_value(
            "ccf_dead_letter_reasons_total", {"reason": k}
        )
        for k in kinds
    }
    assert sum(by_kind.values()) == len(reasons), by_kind  # dead letters by reason, in metrics
