"""`ccf exchange` fails loudly on what it cannot serve, serves TLS, and keeps hostile HTTP
out of its error log: real processes, real sockets, real files."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import ssl
import subprocess
import sys
from itertools import islice
from pathlib import Path

import aiohttp
import pytest

from ccf.config import ConfigError, ReplayConfig, load_settings, shared_dir
from ccf.sources.replay.exchange import ReplayStartError, running_exchange
from ccf.sources.replay.tls import client_context, ensure_certificate

DATA = shared_dir() / "data" / "binance"
pytestmark = pytest.mark.skipif(
    not (DATA / "spot_btcusdt_20240808.jsonl.gz").exists(),
    reason="shared recordings not found: set CCF_SHARED",
)
CCF = [sys.executable, "-m", "ccf"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "btc.jsonl"
    with gzip.open(DATA / "spot_btcusdt_20240808.jsonl.gz", "rt", encoding="utf-8") as f:
        path.write_text("".join(islice(f, 600)))
    return path


def ccf_exchange(*overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CCF, "exchange", "metrics.ports.exchange=0", "replay.port=0", *overrides],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_taken_port_exits_non_zero_naming_it(recording: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = ccf_exchange(f"replay.files=[{recording}]", f"replay.port={port}")
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ccf: replay.port: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in out.stderr


def test_unreadable_inputs_exit_non_zero_naming_the_file(tmp_path: Path, recording: Path) -> None:
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes(recording.read_bytes()[:4000] + b'\n1 {"x": "caf\xe9"}\n')
    no_close = tmp_path / "BTCUSDT-1m-a.csv"
    no_close.write_text("open_time_ms,open,high,low\n1723161240000,1,2,1\n")
    garbage = tmp_path / "BTCUSDT-1m-b.csv"
    garbage.write_text(
        "open_time_ms,open,high,low,close,volume\n1723161240000,1,2,1,2,5\nabc,1,1,1,1,1\n"
    )
    nan = tmp_path / "BTCUSDT-1m-c.csv"
    nan.write_text("open_time_ms,open,high,low,close,volume\n1723161240000,nan,2,1,2,5\n")
    runs = [
        ccf_exchange(f"replay.files=[{latin}]"),
        ccf_exchange(f"replay.files=[{recording}]", f"replay.klines=[{no_close}]"),
        ccf_exchange(f"replay.files=[{recording}]", f"replay.klines=[{garbage}]"),
        ccf_exchange(f"replay.files=[{recording}]", f"replay.klines=[{nan}]"),
    ]
    last = [r.stderr.strip().splitlines()[-1] for r in runs]
    assert [r.returncode for r in runs] == [2, 2, 2, 2]
    assert last[0].startswith(f"ccf: replay.files: {latin}: not UTF-8 text in frame")
    assert last[1] == (
        f"ccf: replay.klines: {no_close}: missing column(s) close, volume; a klines file has "
        "the header open_time_ms,open,high,low,close,volume"
    )
    assert last[2].startswith(f"ccf: replay.klines: {garbage} line 3: not a candle")
    assert last[3].startswith(f"ccf: replay.klines: {nan} line 2: not a candle ('nan' is not")
    assert not any("Traceback" in r.stderr for r in runs)


async def test_the_same_errors_from_the_library(tmp_path: Path, recording: Path) -> None:
    bad = tmp_path / "BTCUSDT-1m-x.csv"
    bad.write_text("open_time_ms,open,high,low,close,volume\n1723161240000,1,2,1,-2,5\n")
    with pytest.raises(ReplayStartError, match=r"line 2: not a candle \(prices must be"):
        async with running_exchange(ReplayConfig(port=0, files=(recording,), klines=(bad,))):
            pass


async def test_malformed_requests_are_one_info_line(
    recording: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_exchange(ReplayConfig(port=0, files=(recording,), speed=0)) as ex:
        answers = []
        for raw in (
            b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
            b"GET /api/v3/time HTTP/1.1\r\nHo st: x\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", ex.port)
            writer.write(raw)
            await writer.drain()
            answers.append((await reader.read(200)).split(b"\r\n", 1)[0])
            writer.close()
    aiohttp_errors = [r for r in caplog.records if r.name.startswith("aiohttp") and r.levelno >= 30]
    refused = [r.getMessage() for r in caplog.records if "malformed request refused" in r.message]
    assert b" 400 " in answers[0] and b" 400 " in answers[2]
    assert aiohttp_errors == []
    assert len(refused) >= 2 and all(r.startswith("part=exchange symbol=-") for r in refused)
    assert not any(r.exc_info for r in caplog.records if r.name == "aiohttp.server")


async def test_tls_serves_https_and_wss_with_a_local_ca(tmp_path: Path, recording: Path) -> None:
    cfg = ReplayConfig(port=0, files=(recording,), speed=0, tls=True, tls_dir=tmp_path / "tls")
    async with running_exchange(cfg) as ex:
        assert ex.tls is not None and ex.url.startswith("https://")
        strict = client_context(ex.tls)
        strict.verify_flags |= ssl.VERIFY_X509_STRICT  # the default from Python 3.13 on
        trusted = aiohttp.TCPConnector(ssl=strict)
        async with aiohttp.ClientSession(connector=trusted) as http:
            server_time = await (await http.get(f"{ex.url}/api/v3/time")).json()
            async with http.ws_connect(f"{ex.ws_url}/ws/btcusdt@trade") as ws:
                trade = json.loads((await ws.receive(timeout=5)).data)
        async with aiohttp.ClientSession() as plain:  # the system's CAs: not trusted
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await plain.get(f"{ex.url}/api/v3/time")
    assert ex.ws_url.startswith("wss://") and "serverTime" in server_time
    assert trade["e"] == "trade"
    served = ex.tls.cert.read_bytes()
    files = ensure_certificate(tmp_path / "tls", "127.0.0.1")  # reused, not made again
    assert files.cert.read_bytes() == served
    assert oct(files.key.stat().st_mode & 0o777) == "0o600"
    other = ensure_certificate(tmp_path / "tls", "replay.test")  # another host: a new one
    assert other.cert.read_bytes() != served


def test_binance_urls_are_refused_with_the_replay_source() -> None:
    with pytest.raises(ConfigError, match=r"binance.rest_url would be ignored with source=replay"):
        load_settings(["binance.rest_url=http://127.0.0.1:1"])
    live = load_settings(["source=binance", "binance.ws_url=wss://example.test:9443"])
    assert live.ws_url() == "wss://example.test:9443"
    tls = load_settings(["replay.tls=true", "replay.port=9999"])
    assert (tls.ws_url(), tls.rest_url()) == ("wss://127.0.0.1:9999", "https://127.0.0.1:9999")


async def test_a_failing_player_ends_serve_with_its_error(
    recording: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one place a stand-in is used: no real input makes the player fail (inputs are
    checked at load), so a step that raises stands for a bug; serve must not go on serving
    a frozen market (issue 17: exit 0 under `ccf run`'s restart loop)."""
    from ccf.sources.replay import exchange as module
    from ccf.sources.replay.market import Market

    def broken(self: Market, k: int, item: object) -> None:
        raise RuntimeError("a bug in the player")

    monkeypatch.setattr(Market, "step", broken)
    cfg = ReplayConfig(port=0, files=(recording,), speed=0, start="immediately")
    with pytest.raises(RuntimeError, match="a bug in the player"):
        await asyncio.wait_for(module.serve(cfg), 30)
