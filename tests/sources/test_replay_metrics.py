"""The exchange's Prometheus endpoint: its own figures (not a collector's zeros), in
Prometheus' units, answering GET and HEAD, clean for promtool; and the CLI's help and
library logging."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import subprocess
import sys
import urllib.request
from itertools import islice
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccf.config import MetricsConfig, ReplayConfig, shared_dir
from ccf.logs import setup_logging
from ccf.sources.replay.exchange import running_exchange
from ccf.sources.replay.metrics import ExchangeMetrics, stream_kind

DATA = shared_dir() / "data" / "binance"
pytestmark = pytest.mark.skipif(
    not (DATA / "spot_btcusdt_20240808.jsonl.gz").exists(),
    reason="shared recordings not found: set CCF_SHARED",
)


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
        return r.status, dict(r.headers), r.read()


async def test_the_exchange_exports_its_own_figures(tmp_path: Path) -> None:
    rec = tmp_path / "btc.jsonl"
    with gzip.open(DATA / "spot_btcusdt_20240808.jsonl.gz", "rt", encoding="utf-8") as f:
        rec.write_text("".join(islice(f, 1500)))
    token = tmp_path / "token"
    token.write_text("t0k3n")
    cfg = ReplayConfig(port=0, files=(rec,), speed=0, loop=False, admin_token=f"file:{token}")
    metrics = ExchangeMetrics(MetricsConfig(ports={"exchange": 0}))
    metrics.serve()
    try:
        async with running_exchange(cfg) as ex, aiohttp.ClientSession() as http:
            metrics.attach(ex)
            names = "btcusdt@depth@100ms/btcusdt@depth/btcusdt@trade/btcusdt@depth5"
            received: dict[str, int] = {}
            async with http.ws_connect(f"{ex.ws_url}/stream?streams={names}") as ws:
                while True:
                    try:
                        msg = await ws.receive(timeout=0.5)
                    except TimeoutError:
                        if ex.finished:
                            break
                        continue
                    kind = stream_kind(json.loads(msg.data)["stream"])
                    received[kind] = received.get(kind, 0) + 1
                for _ in range(3):
                    await http.get(f"{ex.url}/api/v3/depth?symbol=BTCUSDT&limit=500")
                await http.get(f"{ex.url}/api/v3/depth?symbol=NOPE")
                await http.post(
                    f"{ex.url}/_replay/faults",
                    json={"rest_429": 1},
                    headers={"X-Replay-Token": "t0k3n"},
                )
                await http.get(f"{ex.url}/api/v3/time")
                status, headers, body = fetch(metrics.url)
                head = fetch(metrics.url, "HEAD")
                promtool = await asyncio.create_subprocess_exec(
                    "promtool",
                    "check",
                    "metrics",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                lint = (await promtool.communicate(body))[0].decode()
    finally:
        metrics.close()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }
    names_seen = {n for n, _ in samples}
    assert status == 200 and head[0] == 200 and head[2] == b""
    assert int(head[1]["Content-Length"]) > 1000  # the figures move between two scrapes
    assert head[1]["Content-Type"] == headers["Content-Type"]
    assert promtool.returncode == 0 and lint == "", lint  # promtool check metrics: clean
    assert not {"ccf_events_in_total", "ccf_lag_seconds_count", "ccf_gaps_total"} & names_seen
    assert "ccf_process_cpu_percent" not in names_seen
    assert 0 <= samples[("ccf_process_cpu_usage_ratio", ())] <= 1
    assert samples[("ccf_process_cpu_seconds_total", ())] > 0
    frames = {
        dict(labels)["kind"]: v
        for (n, labels), v in samples.items()
        if n == "ccf_exchange_frames_sent_total"
    }
    assert frames == received and set(frames) == {
        "depth_100ms",
        "depth_1000ms",
        "trade",
        "partial_depth",
    }
    assert samples[("ccf_exchange_connections_opened_total", ())] == 1
    assert samples[("ccf_exchange_open_connections", ())] == 1  # the client, still connected
    rest = {
        tuple(v for _, v in labels): n
        for (name, labels), n in samples.items()
        if name == "ccf_exchange_rest_requests_total"
    }
    assert rest == {
        ("/api/v3/depth", "200"): 3,
        ("/api/v3/depth", "400"): 1,
        ("/api/v3/time", "429"): 1,
    }
    # depth limit 500 weighs 25, the refused one 5, time 1 (charged, then the 429 injected)
    assert samples[("ccf_exchange_rest_weight_total", ())] == 3 * 25 + 5 + 1
    assert samples[("ccf_exchange_faults_injected_total", (("fault", "rest_429"),))] == 1


def test_help_shows_brackets_and_libraries_stay_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ccf", "exchange", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
    )
    assert "symbols=[btcusdt] replay.speed=10" in out.stdout
    monkeypatch.delenv("CCF_VERBOSE", raising=False)
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    try:
        setup_logging("DEBUG")
        quiet = logging.getLogger("mlflow").getEffectiveLevel()
        bars = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
        ours = logging.getLogger("ccf.sources").getEffectiveLevel()
        monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
        monkeypatch.setenv("CCF_VERBOSE", "1")  # what `ccf --verbose` sets for every part
        logging.getLogger("mlflow").setLevel(logging.NOTSET)
        setup_logging("DEBUG")
        loud = logging.getLogger("mlflow").getEffectiveLevel()
    finally:
        logging.getLogger("mlflow").setLevel(logging.NOTSET)
        setup_logging("INFO", verbose=True)
    assert (quiet, bars, ours) == (logging.WARNING, "false", logging.DEBUG)
    assert loud == logging.DEBUG and "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ
