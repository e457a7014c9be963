"""Restarts after a downtime longer than the warm-up continue bit-equal to a batch run.

The raw store holds the real recordings (the collector's own records); the live runner
is stopped (cleanly, or by ``kill -9`` of a real ``ccf features`` process) part-way, more
data arrives while it is down (minutes of event time, against a warm-up of 60 s), and the
restarted runner must write exactly the rows a batch run over everything writes: same
buckets, same bytes. With only the warm-up to go on, an EMA of the log return differs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ccf
from ccf.features.runner import FeatureRunner
from ccf.features.spec import feature_set
from ccf.features.store import FeatureStore
from ccf.storage.sqlite import connect
from tests.features.helpers import S
from tests.features.test_runner import (
    BATCH_LATE,
    batch_rows,
    caught_up,
    fill,
    follow_until_caught_up,
    settings_for,
    table,
)

CCF_ROOT = str(Path(ccf.__file__).resolve().parents[1])  # the folder holding ccf
WARMUP = "features.warmup=60s"


def differing(live: list[tuple], batch: list[tuple]) -> int:
    """Rows of ``live`` whose bytes differ from the batch row of the same bucket (a row
    missing on either side counts too)."""
    want = {r[:2]: r for r in batch}
    have = {r[:2]: r for r in live}
    return sum(want.get(k) != have.get(k) for k in want.keys() | have.keys())


async def test_a_restart_after_a_downtime_longer_than_the_warmup_equals_batch(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path, "symbols=[btcusdt,ethusdt]", WARMUP)
    fill(settings, (0.0, 0.3))
    first = FeatureRunner(settings)
    await follow_until_caught_up(first, settings)
    fill(settings, (0.3, 1.0))  # about 7 minutes of event time while it is down
    second = FeatureRunner(settings)
    await follow_until_caught_up(second, settings)
    assert set(second.restored) == {"btcusdt", "ethusdt"}  # resumed from checkpoints
    for sym in ("btcusdt", "ethusdt"):
        assert second.restored[sym] == first.last_bucket[sym]
        assert second.rows_written[sym] > 300  # the downtime is far longer than 60 s
    live = table(settings.features_path, settings)
    batch = batch_rows(settings, tmp_path, "symbols=[btcusdt,ethusdt]")
    for sym in ("btcusdt", "ethusdt"):  # what came after its bucket closed, counted alike
        assert second.engine.stats(sym).late <= BATCH_LATE[sym]
    assert len(live) == len(batch) > 1200
    assert differing(live, batch) == 0
    print(f"restarted: {len(live)} rows, 0 differing from batch")


async def test_a_crash_between_checkpoints_resumes_from_the_older_one_exactly(
    tmp_path: Path,
) -> None:
    # one checkpoint per 10 minutes of event time: only its first write's; small polls, so
    # rows come in many writes after it; the first run dies without its final checkpoint
    settings = settings_for(
        tmp_path,
        "symbols=[btcusdt]",
        WARMUP,
        "features.checkpoint_every=10m",
        "features.max_rows_per_poll=300",
    )
    fill(settings, (0.0, 0.3))
    first = FeatureRunner(settings)
    task = asyncio.create_task(first.run(asyncio.Event()))
    while not caught_up(first, settings):
        assert not task.done(), task
        await asyncio.sleep(0.05)
    task.cancel()  # no clean stop: the checkpoint stays where the last write put it
    with pytest.raises(asyncio.CancelledError):
        await task
    cp = FeatureStore(settings.features_path, feature_set(settings.features)).checkpoint("btcusdt")
    last = first.last_bucket["btcusdt"]
    assert cp is not None and cp.ts < last - 60 * S  # a minute and more older than the rows
    fill(settings, (0.3, 1.0))
    second = FeatureRunner(settings)
    await follow_until_caught_up(second, settings)
    assert second.restored == {"btcusdt": cp.ts}
    assert second.resume["btcusdt"] == last + S  # the rows after cp.ts are not rewritten
    live = table(settings.features_path, settings)
    batch = batch_rows(settings, tmp_path, "symbols=[btcusdt]")
    assert len(live) == len(batch) and differing(live, batch) == 0


async def test_without_a_checkpoint_it_warms_up_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path, "symbols=[btcusdt]", WARMUP)
    fill(settings, (0.0, 0.3))
    await follow_until_caught_up(FeatureRunner(settings), settings)
    con = connect(settings.features_path)
    con.execute("DELETE FROM feature_checkpoints")  # a store written before checkpoints
    con.close()
    fill(settings, (0.3, 1.0))
    second = FeatureRunner(settings)
    await follow_until_caught_up(second, settings)
    assert second.restored == {}
    assert "by replaying 60.0 s of history (no checkpoint)" in caplog.text
    live = table(settings.features_path, settings)
    batch = batch_rows(settings, tmp_path, "symbols=[btcusdt]")
    # every bucket once; the long-memory features (EMAs) differ: why checkpoints exist
    assert [r[:3] for r in live] == [r[:3] for r in batch]
    assert differing(live, batch) > 100
    print(f"warm-up only: {differing(live, batch)} of {len(live)} rows differ from batch")


def stored_rows(settings) -> int:
    path = settings.features_path
    if not path.exists():
        return 0
    store = FeatureStore(path, feature_set(settings.features), readonly=True)
    try:
        return sum(n for _, n, _, _ in store.summary())
    except sqlite3.OperationalError as e:  # its table may not exist yet: no rows
        if "no such table" in str(e):
            return 0
        raise
    finally:
        store.close()


def test_kill_9_of_a_real_features_process_then_restart_equals_batch(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "symbols=[btcusdt,ethusdt]", WARMUP)
    fill(settings, (0.0, 0.5))
    args = [
        sys.executable,
        "-m",
        "ccf",
        "features",
        f"data_dir={tmp_path / 'data'}",
        WARMUP,
        "metrics.enabled=false",
        "features.print_every_s=0",
        "features.poll_interval_s=0.05",
        "log_level=INFO",
    ]
    # the ccf this test imported first: sys.path may also hold a partial copy (a pyfunc
    # model loaded earlier in the session adds its code_paths folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([CCF_ROOT, *sys.path])}
    log = tmp_path / "features.log"
    with open(log, "wb") as out:
        # small polls: it is still catching up (writing rows) when it is killed
        proc = subprocess.Popen(
            [*args, "features.max_rows_per_poll=300"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + 120
        while stored_rows(settings) < 200:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-stream: no chance to flush or say goodbye
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed_at = stored_rows(settings)
    fill(settings, (0.5, 1.0))  # minutes of event time arrive while it is down
    batch = batch_rows(settings, tmp_path, "symbols=[btcusdt,ethusdt]")

    with open(log, "ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 180
        while stored_rows(settings) < len(batch):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert text.count("from its checkpoint") == 2, text  # both symbols restored their state
    live = table(settings.features_path, settings)
    assert 200 <= killed_at < len(live) - 600  # the restart wrote most of the rows
    assert len(live) == len(batch) > 1200
    assert differing(live, batch) == 0
    print(f"kill -9 after {killed_at} rows; {len(live)} rows, 0 differing from batch")


async def test_a_poll_limit_below_one_millisecond_of_trades_still_moves_on(
    tmp_path: Path,
) -> None:
    # the recording holds 735 BTCUSDT trades at one millisecond (a sweep): a page of 100
    # holds nothing before its own last event time, and the tail used to stop there
    settings = settings_for(tmp_path, "symbols=[btcusdt]", "features.max_rows_per_poll=100")
    fill(settings, (0.0, 0.5))
    runner = FeatureRunner(settings)
    await follow_until_caught_up(runner, settings)
    live = table(settings.features_path, settings)
    batch = batch_rows(settings, tmp_path, "symbols=[btcusdt]")
    assert len(live) == len(batch) > 300 and differing(live, batch) == 0


def _register_unpicklable() -> None:
    from ccf.features.kinds.base import REGISTRY, kind

    if "t_local_state" in REGISTRY:
        return

    @kind("t_local_state")
    def local(params, columns):  # noqa: ANN001, ANN202
        class Local:  # defined in the factory: pickle cannot name it
            def step(self, row) -> None:  # noqa: ANN001
                row["t_local"] = row["m_p"]

        return ("t_local",), Local


async def test_a_kind_whose_state_does_not_pickle_runs_and_warms_up_instead(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _register_unpicklable()
    settings = settings_for(
        tmp_path, "symbols=[btcusdt]", "features.features=[{kind: m_p}, {kind: t_local_state}]"
    )
    fill(settings, (0.0, 0.3))
    first = FeatureRunner(settings)
    await follow_until_caught_up(first, settings)
    assert first.rows_written["btcusdt"] > 100
    assert "no checkpoints: the feature state does not pickle" in caplog.text
    second = FeatureRunner(settings)
    fill(settings, (0.3, 0.4))
    await follow_until_caught_up(second, settings)
    assert second.restored == {} and second.rows_written["btcusdt"] > 0
    assert "(no checkpoint)" in caplog.text
