"""Wake-ups: a commit wakes the store's followers; a lost one costs only the fallback poll.

Real sockets on 127.0.0.1, a real writer thread over a real SQLite store, a real feature
runner, and a real follower process killed with ``kill -9``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ccf
from ccf.features.runner import FeatureRunner
from ccf.storage import SqliteStore
from ccf.storage.backends import record_writer
from ccf.storage.wake import Waker, Wakeups, wake_dir
from tests.features.test_runner import recorded_records, settings_for

CCF_ROOT = str(Path(ccf.__file__).resolve().parents[1])  # the folder holding ccf
LONG = 60.0  # a fallback interval no wait in these tests should reach


async def test_a_commit_wakes_a_follower(tmp_path: Path) -> None:
    store = tmp_path / "ccf.sqlite"
    async with Wakeups(store) as w:
        (addr,) = wake_dir(store).iterdir()  # its address: <pid>-<port>
        assert addr.name.startswith(f"{os.getpid()}-")
        waker = Waker(store)
        await asyncio.sleep(0)
        waker.wake()
        assert await w.wait(asyncio.Event(), LONG)  # woken, not the fallback
        assert (w.received, w.fallbacks) == (1, 0)
        waker.close()
    assert list(wake_dir(store).iterdir()) == []  # a clean stop leaves no address behind


async def test_the_writer_commits_when_its_queue_drains_and_wakes(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "storage.flush_interval_s=3600")  # never by the clock
    trades = [r for r in recorded_records("btcusdt") if type(r).__name__ == "Trade"][:50]
    settings.data_dir.mkdir(parents=True)
    async with Wakeups(settings.db_path) as w:
        writer = record_writer(settings)
        try:
            writer.submit(trades)
            assert await w.wait(asyncio.Event(), LONG)  # woken by the commit
            raw = SqliteStore(settings.db_path, readonly=True)
            try:
                assert raw.query("SELECT count(*) FROM trade")[0][0] == 50
            finally:
                raw.close()
        finally:
            writer.close()
    assert writer.commits >= 1


async def test_rows_still_come_when_the_wake_up_is_lost(tmp_path: Path) -> None:
    """The records are written by a plain store (no waker: the notifier is gone): the
    runner reads them on its fallback interval and writes every row."""
    settings = settings_for(tmp_path, "symbols=[btcusdt]", "storage.wake_fallback_s=0.3")
    recs = recorded_records("btcusdt")
    raw = SqliteStore(settings.db_path)
    raw.write(recs[: len(recs) // 10])
    runner = FeatureRunner(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    deadline = time.monotonic() + 60
    while runner.rows_written["btcusdt"] == 0:
        assert time.monotonic() < deadline and not task.done(), runner.status()
        await asyncio.sleep(0.05)
    first = runner.rows_written["btcusdt"]
    raw.write(recs[len(recs) // 10 : len(recs) // 5])  # no wake-up for this commit either
    raw.close()
    while runner.rows_written["btcusdt"] <= first:
        assert time.monotonic() < deadline and not task.done(), runner.status()
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 30)
    woken, fallbacks = runner.wakeups
    assert woken == 0 and fallbacks >= 1  # it got there by polling alone


FOLLOWER = """
import asyncio, sys
from pathlib import Path
from ccf.storage.wake import Wakeups
async def main():
    async with Wakeups(Path(sys.argv[1])) as w:
        print("ready", flush=True)
        await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_a_follower_killed_by_kill_9_is_forgotten(tmp_path: Path) -> None:
    store = tmp_path / "ccf.sqlite"
    # the ccf this test imported first: sys.path may also hold a partial copy (a pyfunc
    # model loaded earlier in the session adds its code_paths folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([CCF_ROOT, *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-c", FOLLOWER, str(store)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        (addr,) = wake_dir(store).iterdir()
        assert addr.name.startswith(f"{proc.pid}-")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    waker = Waker(store)
    waker.wake()  # a send to a dead port does not raise, and the address is removed
    waker.close()
    assert list(wake_dir(store).iterdir()) == []
