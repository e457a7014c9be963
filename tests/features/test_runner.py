"""``ccf features`` on the real recordings: live equals batch, restarts, backfill, status.

The equality test runs the real parts together: the replay exchange serving
the recordings, the collector writing the raw store, and the live feature
runner following that store as it grows. Then the same feature set is
computed in batch from the stored raw data, and the two tables must hold
the same rows, bit for bit.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ccf.cli import app
from ccf.config import ReplayConfig, Settings, load_settings
from ccf.features.raw import RawReader
from ccf.features.runner import FeatureRunner, run_backfill
from ccf.features.spec import feature_set
from ccf.features.store import FeatureStore
from ccf.records import Book, Gap, Record, Trade
from ccf.sources.binance.feed import BinanceFeed
from ccf.sources.collector import Collector
from ccf.sources.recording import read_frames
from ccf.sources.replay.exchange import running_exchange
from ccf.sources.replay.timeline import load_timeline
from ccf.status import format_status, gather_status
from ccf.storage import SqliteStore
from ccf.storage.sqlite import connect
from tests import parts
from tests.sources.recorded import SYMBOLS, recorded, recording_files


def settings_for(tmp_path: Path, *extra: str) -> Settings:
    return load_settings(
        [
            f"data_dir={tmp_path / 'data'}",
            "collect.print_every_s=0",
            "features.print_every_s=0",
            "features.poll_interval_s=0.05",
            *extra,
        ],
        environ={},
    )


def table(path: Path, settings: Settings) -> list[tuple]:
    """Every stored row of the settings' feature set, as stored (blobs: exact bytes)."""
    store = FeatureStore(path, feature_set(settings.features), readonly=True)
    try:
        return store._con.execute(
            f"SELECT symbol, ts, ts_end, row FROM {store.set.table} ORDER BY symbol, ts"
        ).fetchall()
    finally:
        store.close()


BATCH_LATE: Counter[str] = Counter()  # late events of the last batch_rows run, per symbol


def batch_rows(settings: Settings, tmp_path: Path, *extra: str) -> list[tuple]:
    """The same feature set computed in batch into a store of its own."""
    other = tmp_path / "batch.sqlite"
    batch = load_settings(
        [f"data_dir={tmp_path / 'data'}", f"features.path={other}", *extra], environ={}
    )
    summary = run_backfill(batch)
    # the per-stream watermark decides in receive order, batch as live: a trade that came
    # after its stream had gone idle and the bucket closed is late in both, and counted
    BATCH_LATE.clear()
    BATCH_LATE.update(summary.late)
    return table(other, batch)


def caught_up(runner: FeatureRunner, settings: Settings) -> bool:
    """The runner has read everything the raw store holds."""
    con = connect(settings.db_path, readonly=True)
    try:
        reader = RawReader(con, runner.fs, settings.exchange)
        for sym in settings.symbols:
            last = reader.last_event_ts(sym)
            if last is None or runner.engine.frontier(sym) < last - runner.fs.lateness_ns:
                return False
    finally:
        con.close()
    return runner.caught_up


async def follow_until_caught_up(runner: FeatureRunner, settings: Settings) -> None:
    await parts.run_until(
        runner, lambda r: caught_up(r, settings), 60, lambda r: r.status(), poll_s=0.1
    )


# -- live == batch --------------------------------------------------------------------------


async def test_live_rows_equal_batch_rows_bit_for_bit(tmp_path: Path) -> None:
    timeline = load_timeline(recording_files())
    # 100x: the 11 minutes play in about 7 s, paced, so the runner reads a store that is
    # still growing (flat out, the collector can finish before the runner's first polls)
    async with running_exchange(ReplayConfig(port=0, speed=100, loop=False), timeline) as ex:
        settings = settings_for(tmp_path, f"replay.port={ex.port}", "collect.silence_timeout_s=120")
        runner = FeatureRunner(settings)
        stop = asyncio.Event()
        following = asyncio.create_task(runner.run(stop))
        want = sum(len(recorded(s).trades) for s in SYMBOLS)
        collector = await parts.run_until(
            Collector(settings),
            lambda c: sum(c.counts[(s, "trade")] for s in SYMBOLS) >= want,
            120,
            lambda c: c.status(),
        )
    if following.done():
        following.result()  # raises what stopped it
    # it followed the store while the collector wrote it, not only afterwards
    assert runner.events > 0 and runner.rows_written.total() > 0, runner.status()
    deadline = time.monotonic() + 60
    while not caught_up(runner, settings):
        assert time.monotonic() < deadline, runner.status()
        assert not following.done(), following.exception()
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(following, 30)
    assert collector.feed.stats["crossed_books"] == 0

    for sym in SYMBOLS:
        st = runner.engine.stats(sym)
        assert (st.late, st.late_gaps) == (0, 0), (sym, st)
        assert st.rows > 600  # about 11 minutes of 1 s buckets
    live = table(settings.features_path, settings)
    batch = batch_rows(settings, tmp_path)
    assert [r[:3] for r in live] == [r[:3] for r in batch]
    assert live == batch  # same columns (one table layout), same bytes: NaN is NaN

    # the in-process window equals the store's tail
    fs = feature_set(settings.features)
    store = FeatureStore(settings.features_path, fs, readonly=True)
    for sym in SYMBOLS:
        ring, stored = runner.online.last(sym, 120), store.last(sym, 120)
        assert ring.ts.tolist() == stored.ts.tolist()
        assert ring.values.tobytes() == stored.values.tobytes()
        assert not np.isnan(stored.values[:, fs.float_columns.index("m_p")]).any()


# -- a raw store filled from the recordings, without the network -------------------------------


@cache
def recorded_records(symbol: str) -> list[Record]:
    """The collector's records for ``symbol``, in receive order (its feed over the files)."""
    feed = BinanceFeed((symbol,), ("depth@100ms", "trade", "bookTicker"), book_depth=20)
    out: list[Record] = []
    frames = [fr for f in recording_files((symbol,)) for fr in read_frames(f)]
    for ts, frame in frames:
        if frame.startswith('{"lastUpdateId"'):
            feed.on_snapshot(symbol, frame, ts, out)
        else:
            feed.handle(frame, ts, out)
    return [r for r in out if type(r) in (Book, Trade, Gap)]


def fill(settings: Settings, share: tuple[float, float] = (0.0, 1.0)) -> None:
    """Write a share of the recorded records (by position) into the raw store."""
    raw = SqliteStore(settings.db_path)
    for sym in settings.symbols:
        recs = recorded_records(sym)
        raw.write(recs[int(share[0] * len(recs)) : int(share[1] * len(recs))])
    raw.close()


async def test_a_restart_resumes_after_the_last_bucket_and_matches_batch(tmp_path: Path) -> None:
    # warmup longer than the recordings: the restart rebuilds every feature's state exactly
    settings = settings_for(tmp_path, "symbols=[btcusdt]", "features.warmup=1h")
    fill(settings, (0.0, 0.5))
    first = FeatureRunner(settings)
    await follow_until_caught_up(first, settings)
    written = first.rows_written["btcusdt"]
    fill(settings, (0.5, 1.0))
    second = FeatureRunner(settings)
    await follow_until_caught_up(second, settings)
    assert (
        second.resume["btcusdt"]
        == first.last_bucket["btcusdt"] + feature_set(settings.features).bucket_ns
    )
    assert second.rows_written["btcusdt"] > 0  # only the buckets after the first run's last
    live = table(settings.features_path, settings)
    assert len(live) == written + second.rows_written["btcusdt"]
    assert live == batch_rows(settings, tmp_path, "symbols=[btcusdt]")


async def test_a_short_warmup_still_writes_every_bucket_once(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "symbols=[ethusdt]", "features.warmup=30s")
    fill(settings, (0.0, 0.6))
    await follow_until_caught_up(FeatureRunner(settings), settings)
    fill(settings, (0.6, 1.0))
    await follow_until_caught_up(FeatureRunner(settings), settings)
    live = table(settings.features_path, settings)
    batch = batch_rows(settings, tmp_path, "symbols=[ethusdt]")
    assert [r[:3] for r in live] == [r[:3] for r in batch]  # every bucket, none twice
    # its heartbeat is where `ccf status` looks for the parts
    (part,) = [p for p in gather_status(settings)["parts"] if p["part"] == "features"]
    assert part["state"] == "stopped"
    # it says how many events came too late (the batch run dropped them too)
    assert 0 <= part["detail"]["symbols"]["ethusdt"]["late"] <= BATCH_LATE["ethusdt"]


# -- backfill and status ----------------------------------------------------------------------


def test_backfill_command_computes_a_range_once(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    fill(settings)
    args = [f"data_dir={tmp_path / 'data'}", "log_level=WARNING"]
    cli = CliRunner()
    start, end = "2024-08-08T23:57", "2024-08-09T00:02"
    result = cli.invoke(app, ["features", "--from", start, "--to", end, *args])
    assert result.exit_code == 0, result.output
    assert "300 rows (300 new)" in result.output  # 5 minutes of 1 s buckets
    again = cli.invoke(app, ["features", "--from", start, "--to", end, *args])
    assert "300 rows (0 new)" in again.output
    df = FeatureStore(settings.features_path, feature_set(settings.features)).frame()
    assert df["ts"].min() == 1723161420 * 10**9 and df["ts_end"].max() == 1723161720 * 10**9
    # the rows equal those of a full batch run over the same range
    full = batch_rows(settings, tmp_path)
    window = [r for r in full if 1723161420 * 10**9 <= r[1] < 1723161720 * 10**9]
    stored = table(settings.features_path, settings)
    assert [r[:3] for r in stored] == [r[:3] for r in window]


def test_status_shows_the_feature_rows(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "symbols=[btcusdt]")
    fill(settings)
    run_backfill(settings)
    report = gather_status(settings)
    (f,) = report["features"]
    assert f["symbol"] == "btcusdt" and f["rows"] > 600 and f["last_bucket"].startswith("2024")
    assert "features default@" in format_status(report)


def test_a_bad_feature_config_stops_the_command_naming_the_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["features", f"data_dir={tmp_path}", "features.features=[{kind: nope}]"]
    )
    assert result.exit_code == 2
    assert "features.features[0]: unknown kind" in result.output


@pytest.mark.parametrize("sym", SYMBOLS)
def test_the_recorded_store_is_late_free_in_receive_order(sym: str) -> None:
    """Sanity for the equality test: in receive order no event trails the newest by more
    than the default lateness, so live can equal batch."""
    fs = feature_set(load_settings(environ={}).features)
    newest, worst = 0, 0
    for r in recorded_records(sym):
        if type(r) in (Book, Trade):
            newest = max(newest, r.ts_event)
            worst = max(worst, newest - r.ts_event)
    assert worst < fs.lateness_ns
