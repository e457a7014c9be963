"""Archive and candle-file imports: layouts, µs timestamps, checksums, bad files."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from aiohttp import web

from ccf.config import load_settings, shared_dir
from ccf.sources.archive import ArchiveError, describe, to_ms
from ccf.sources.backfill import missing_runs, run_import
from ccf.storage import SqliteStore
from tests.sources.recorded import recorded

KLINES = shared_dir() / "data" / "klines" / "BTCUSDT-1m-2026-03-23_2026-04-11.csv.gz"
NS = 1_000_000


def settings(tmp_path: Path):  # noqa: ANN201
    return load_settings([f"data_dir={tmp_path / 'data'}"], environ={})


def zipped(name: str, text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name.replace(".zip", ".csv"), text)
    return buf.getvalue()


def agg_rows(micro: bool) -> tuple[str, list[tuple[int, float, float, int, int]]]:
    """Archive aggTrades lines from the real recorded BTCUSDT trades (one trade each)."""
    trades = sorted(recorded("btcusdt").trades.items())[:500]
    scale = 1000 if micro else 1
    lines = [
        f"{i},{p:.8f},{q:.8f},{tid},{tid},{t * scale},{'True' if i % 3 else 'False'},True"
        for i, (tid, (t, p, q)) in enumerate(trades, start=900)
    ]
    return "\n".join(lines) + "\n", [
        (t, p, q, tid, i) for i, (tid, (t, p, q)) in enumerate(trades, start=900)
    ]


def test_plain_candle_file_imports_once(tmp_path: Path) -> None:
    s = settings(tmp_path)
    first = run_import(s, str(KLINES))
    again = run_import(s, str(KLINES))
    assert (first.rows, first.new_rows, again.new_rows) == (28_071, 28_071, 0)
    assert first.gaps == [] and first.symbol == "btcusdt"
    store = SqliteStore(s.db_path, readonly=True)
    with gzip.open(KLINES, "rt") as f:
        lines = f.read().splitlines()
    head = lines[1].split(",")
    row = store.query(
        "SELECT open_time, open, high, low, close, volume, close_time, trades, "
        "quote_volume, closed FROM candle ORDER BY open_time LIMIT 1"
    )[0]
    assert row[:6] == (int(head[0]) * NS, *map(float, head[1:6]))
    assert row[6] == (int(head[0]) + 59_999) * NS
    assert row[7:] == (None, None, 1)  # the file does not say: NULL, not made up


@pytest.mark.parametrize("micro", [False, True], ids=["ms-2024", "us-2025"])
def test_archive_agg_trades_in_ms_and_us(tmp_path: Path, micro: bool) -> None:
    text, rows = agg_rows(micro)
    path = tmp_path / "BTCUSDT-aggTrades-2024-08-08.zip"
    path.write_bytes(zipped(path.name, text))
    (tmp_path / (path.name + ".CHECKSUM")).write_text(
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"
    )
    s = settings(tmp_path)
    summary = run_import(s, str(path))
    assert summary.rows == 500 and summary.gaps == []
    got = SqliteStore(s.db_path, readonly=True).query(
        "SELECT ts_event, price, qty, first_trade_id, agg_id, side FROM agg_trade ORDER BY agg_id"
    )
    assert [g[:5] for g in got] == [(t * NS, p, q, tid, a) for t, p, q, tid, a in rows]
    assert {g[5] for g in got} == {"buy", "sell"}


def test_archive_klines_with_all_columns_and_us_times(tmp_path: Path) -> None:
    base = 1735689600000  # 2025-01-01: archive times in µs from here on
    lines = [
        f"{(base + i * 60000) * 1000},1.0,2.0,0.5,1.5,10.0,{(base + i * 60000 + 59999) * 1000},"
        f"15.0,7,4.0,6.0,0"
        for i in range(5)
        if i != 2
    ]
    path = tmp_path / "ETHUSDT-1m-2025-01-01.zip"
    path.write_bytes(zipped(path.name, "\n".join(lines)))
    s = settings(tmp_path)
    summary = run_import(s, str(path))
    assert summary.rows == 4
    assert summary.gaps == [(base + 120000, base + 120000)]  # the missing minute, named
    store = SqliteStore(s.db_path, readonly=True)
    assert store.query(
        "SELECT open_time, close_time, trades, taker_buy_volume FROM candle ORDER BY 1 LIMIT 1"
    ) == [(base * NS, (base + 59999) * NS, 7, 4.0)]
    assert store.query("SELECT stream, reason, start_ts FROM gap") == [
        ("candle", "missing_history", (base + 120000) * NS)
    ]


async def test_import_from_a_url_checks_the_published_checksum(tmp_path: Path) -> None:
    text, _ = agg_rows(False)
    good = zipped("BTCUSDT-aggTrades-2024-08-08.zip", text)

    async def archive_file(_: web.Request) -> web.Response:
        return web.Response(body=good)

    async def wrong_checksum(_: web.Request) -> web.Response:
        return web.Response(text="0" * 64 + "  BTCUSDT-aggTrades-2024-08-08.zip")

    app = web.Application()
    app.router.add_get("/BTCUSDT-aggTrades-2024-08-08.zip", archive_file)
    app.router.add_get("/BTCUSDT-aggTrades-2024-08-08.zip.CHECKSUM", wrong_checksum)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        with pytest.raises(ArchiveError, match="does not match its .CHECKSUM"):
            await asyncio.to_thread(
                run_import,
                settings(tmp_path),
                f"http://127.0.0.1:{port}/BTCUSDT-aggTrades-2024-08-08.zip",
            )
    finally:
        await runner.cleanup()
    assert not (tmp_path / "data" / "ccf.sqlite").exists()  # nothing from a bad download


def test_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    s = settings(tmp_path)
    broken = tmp_path / "BTCUSDT-1m-2024-08-08.zip"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ArchiveError, match="not a zip file"):
        run_import(s, str(broken))
    bad_line = tmp_path / "BTCUSDT-1m-2024-08-09.csv"
    bad_line.write_text(
        "1723161240000,1,2,0.5,1.5,10,1723161299999,15,7,4,6,0\n"
        "1723161300000,1,2,oops,1.5,10,1723161359999,15,7,4,6,0\n"
    )
    summary = run_import(s, str(bad_line))  # the good row is stored, the bad one named
    assert summary.rows == 1
    assert [r.text(bad_line.name) for r in summary.refused] == [
        "BTCUSDT-1m-2024-08-09.csv: line 2, column low: 'oops' is not a number"
    ]
    nameless = tmp_path / "x.csv"
    nameless.write_text("1,2\n")
    with pytest.raises(ArchiveError, match="give --symbol"):
        run_import(s, str(nameless))
    with pytest.raises(ArchiveError, match="no such file"):
        run_import(s, str(tmp_path / "missing.zip"))


def test_names_and_units() -> None:
    assert describe("BTCUSDT-1h-2024-08.zip").interval == "1h"
    assert describe("BTCUSDT-aggTrades-2024-08-08.zip").kind == "aggTrades"
    assert to_ms(1735689600010866) == 1735689600010 and to_ms(1723161255342) == 1723161255342
    assert missing_runs([0, 60, 240, 300], 60) == [(120, 180)]
