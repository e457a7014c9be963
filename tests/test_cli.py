"""The command line as a user runs it: separate processes, real ports, real files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ccf.storage import SqliteStore

CCF = [sys.executable, "-m", "ccf"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], bool], timeout_s: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def process(*args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CCF, *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def status_json(*overrides: str) -> dict:
    out = subprocess.run(
        [*CCF, "status", "--json", *overrides],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def rows(status: dict, kind: str) -> int:
    return sum(s["rows"] for s in status["streams"] if s["kind"] == kind)


@pytest.fixture
def exchange(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    with process(
        "exchange", f"replay.port={port}", "replay.speed=5", log=tmp_path / "exchange.log"
    ):
        wait_for(lambda: port_open(port), 60, "the replay exchange")
        yield port


def test_collect_status_kill_restart_and_clean_stop(tmp_path: Path, exchange: int) -> None:
    data = f"data_dir={tmp_path / 'data'}"
    args = ("collect", f"replay.port={exchange}", data, "collect.print_every_s=0.5")
    with process(*args, log=tmp_path / "collect1.log") as collector:
        # another process reads the store while the collector writes it
        wait_for(lambda: (tmp_path / "data" / "ccf.sqlite").exists(), 30, "the store")
        wait_for(lambda: rows(status_json(data), "trade") > 0, 30, "the first trades")
        seen = []
        for _ in range(6):
            status = status_json(data)
            seen.append(rows(status, "trade"))
            time.sleep(0.5)
        assert seen == sorted(seen) and seen[-1] > seen[0] > 0
        assert {p["part"]: p["running"] for p in status["parts"]} == {"collect": True}
        collector.send_signal(signal.SIGKILL)  # no chance to flush
        collector.wait()
    killed = status_json(data)
    trades_before = rows(killed, "trade")
    assert trades_before >= seen[-1]  # everything committed before the kill is still there
    assert [p["state"] for p in killed["parts"]] == ["not responding"]

    with process(*args, log=tmp_path / "collect2.log") as collector:
        wait_for(
            lambda: rows(status_json(data), "trade") > trades_before + 100,
            60,
            "trades after the restart",
        )
        collector.send_signal(signal.SIGTERM)
        assert collector.wait(30) == 0
    final = status_json(data)
    assert [p["state"] for p in final["parts"]] == ["stopped"]
    store = SqliteStore(tmp_path / "data" / "ccf.sqlite", readonly=True)
    restart = store.query("SELECT stream, end_ts FROM gap WHERE reason='restart'")
    assert {s for s, _ in restart} == {"book", "trade", "quote"}
    assert all(end is not None for _, end in restart)  # closed once data flowed again
    text = subprocess.run([*CCF, "status", data], capture_output=True, text=True, check=True).stdout
    assert "btcusdt" in text and "trade" in text and "stopped" in text


def test_record_then_replay_the_recording(tmp_path: Path, exchange: int) -> None:
    """A recorded run replays through the same code and yields the same trades."""
    data = tmp_path / "live"
    with process(
        "record",
        f"replay.port={exchange}",
        f"data_dir={data}",
        "symbols=[btcusdt]",
        "collect.print_every_s=0",
        log=tmp_path / "record.log",
    ) as rec:
        wait_for(lambda: rows(status_json(f"data_dir={data}"), "trade") > 300, 60, "trades")
        rec.send_signal(signal.SIGTERM)
        assert rec.wait(30) == 0
    files = sorted((data / "recordings").glob("binance_btcusdt_*.jsonl"))
    assert files, list((data / "recordings").iterdir())
    lines = files[0].read_text().splitlines()
    assert any('"lastUpdateId"' in line for line in lines)  # the REST snapshot is recorded
    assert all(line.split(" ", 1)[0].isdigit() for line in lines)

    port = free_port()
    replayed = tmp_path / "replayed"
    with process(
        "exchange",
        f"replay.port={port}",
        "replay.speed=0",
        "replay.loop=false",
        f"replay.files=[{files[0]}]",
        log=tmp_path / "exchange2.log",
    ):
        wait_for(lambda: port_open(port), 60, "the second exchange")
        with process(
            "collect",
            f"replay.port={port}",
            f"data_dir={replayed}",
            "symbols=[btcusdt]",
            "collect.print_every_s=0",
            log=tmp_path / "collect.log",
        ) as col:
            live = SqliteStore(data / "ccf.sqlite", readonly=True)
            want = {r[0] for r in live.query("SELECT trade_id FROM trade")}
            got: set[int] = set()

            def caught_up() -> bool:
                if not (replayed / "ccf.sqlite").exists():
                    return False
                store = SqliteStore(replayed / "ccf.sqlite", readonly=True)
                if not store.query("SELECT 1 FROM sqlite_master WHERE name='trade'"):
                    return False  # the file is there, its schema not yet
                got.update(r[0] for r in store.query("SELECT trade_id FROM trade"))
                return len(got) >= 0.9 * len(want)

            wait_for(caught_up, 60, "the replayed trades")
            col.send_signal(signal.SIGTERM)
            col.wait(30)
    assert got <= want  # nothing invented
    live_rows = dict(live.query("SELECT trade_id, price FROM trade"))
    again = SqliteStore(replayed / "ccf.sqlite", readonly=True)
    assert all(live_rows[t] == p for t, p in again.query("SELECT trade_id, price FROM trade"))


def test_bad_config_and_missing_recordings_say_what_to_do(tmp_path: Path) -> None:
    bad = subprocess.run(
        [*CCF, "collect", "collect.book_depth=abc"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "collect.book_depth" in bad.stderr and "integer" in bad.stderr
    env = {**os.environ, "CCF_SHARED": str(tmp_path / "nowhere")}
    missing = subprocess.run(
        [*CCF, "run", f"data_dir={tmp_path}"], capture_output=True, text=True, timeout=60, env=env
    )
    assert missing.returncode == 2
    assert "nowhere" in missing.stderr and "source=binance" in missing.stderr


def test_collect_polls_news_feeds_beside_market_data(tmp_path: Path, exchange: int) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from ccf.config import shared_dir

    handler = functools.partial(
        SimpleHTTPRequestHandler, directory=str(shared_dir() / "data" / "news")
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    data = f"data_dir={tmp_path / 'data'}"
    feeds = (
        f"news.feeds=[{{name: coindesk, url: {base}/coindesk_2026-09-30.xml}}, "
        f"{{name: cointelegraph, url: {base}/cointelegraph_2026-02-15.xml}}]"
    )
    try:
        with process(
            "collect",
            f"replay.port={exchange}",
            data,
            "news.enabled=true",
            feeds,
            "collect.print_every_s=0",
            log=tmp_path / "collect.log",
        ) as col:

            def news_in() -> bool:
                if not (tmp_path / "data" / "ccf.sqlite").exists():
                    return False
                news = status_json(data).get("news") or {}
                return (
                    bool(news)
                    and rows(status_json(data), "trade") > 0
                    and SqliteStore(tmp_path / "data" / "ccf.sqlite", readonly=True).query(
                        "SELECT count(*) FROM news"
                    )[0][0]
                    >= 35
                )

            wait_for(news_in, 60, "news and trades in the store")
            col.send_signal(signal.SIGTERM)
            assert col.wait(30) == 0
    finally:
        server.shutdown()
    text = subprocess.run([*CCF, "status", data], capture_output=True, text=True, check=True).stdout
    assert "coindesk" in text and "cointelegraph" in text
