"""Frames/s the replay exchange serves to one websocket client, per stream set, in one run.

    python bench/bench_replay.py                    # BTCUSDT 2024-08-08, best of 3
    python bench/bench_replay.py --repeats 5 --lines 40000

The replay plays the first ``--lines`` lines of the real BTCUSDT recording
(``$CCF_SHARED/data/binance``) flat out (speed 0, no loop) to one aiohttp
client that reads every frame, for each stream set in turn, interleaved
across repeats:

- ``recorded streams`` (the reference): ``@depth@100ms``, ``@trade`` and
  ``@bookTicker``, the frames the recording holds, as the collector
  subscribes them;
- ``+ per-second streams``: the same plus ``@depth`` (1000 ms aggregated
  diffs), ``@depth5``, ``@depth20@100ms``, ``@ticker``, ``@miniTicker``,
  ``!ticker@arr``, ``@avgPrice`` and ``@kline_1s``, the streams issue 16 added
  or put on their own cadence;
- ``recorded streams, timeUnit=MICROSECOND``: the reference with every time
  rewritten to microseconds (one parse and dump per frame).

Printed: frames received, wall seconds, frames/s (best of the repeats) and
the ratio to the reference. The frames of the first two sets that both
carry (the recorded ones) must be identical, or the script exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import logging
import os
import platform
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import aiohttp

from ccf.config import ReplayConfig, shared_dir
from ccf.sources.replay.exchange import running_exchange
from ccf.sources.replay.timeline import load_timeline

RECORDED = ["btcusdt@depth@100ms", "btcusdt@trade", "btcusdt@bookTicker"]
PER_SECOND = [
    "btcusdt@depth",
    "btcusdt@depth5",
    "btcusdt@depth20@100ms",
    "btcusdt@ticker",
    "btcusdt@miniTicker",
    "!ticker@arr",
    "btcusdt@avgPrice",
    "btcusdt@kline_1s",
]
SETS = {
    "recorded streams": (RECORDED, ""),
    "+ per-second streams": (RECORDED + PER_SECOND, ""),
    "recorded streams, timeUnit=MICROSECOND": (RECORDED, "&timeUnit=MICROSECOND"),
}


async def serve_once(timeline: object, streams: list[str], query: str) -> tuple[list[str], float]:
    cfg = ReplayConfig(port=0, speed=0, loop=False, rebase_time=False)
    async with running_exchange(cfg, timeline) as ex, aiohttp.ClientSession() as http:  # type: ignore[arg-type]
        url = f"{ex.ws_url}/stream?streams={'/'.join(streams)}{query}"
        frames: list[str] = []
        async with http.ws_connect(url, max_msg_size=1 << 22) as ws:
            t0 = time.perf_counter()
            while True:
                try:
                    msg = await ws.receive(timeout=0.5)
                except TimeoutError:
                    if ex.finished:
                        break
                    continue
                frames.append(msg.data)
                last = time.perf_counter()
        return frames, last - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=20000, help="recording lines (default 20000)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)  # the exchange's per-connection lines: not here
    src = shared_dir() / "data" / "binance" / "spot_btcusdt_20240808.jsonl.gz"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "btcusdt.jsonl"
        with gzip.open(src, "rt", encoding="utf-8") as f:
            path.write_text("".join(islice(f, args.lines)))
        timeline = load_timeline([path])
    span_s = (timeline.end_ns - timeline.start_ns) / 1e9
    print(
        f"replay of {len(timeline.items):,} recorded frames ({span_s:.0f} s of BTCUSDT), "
        f"speed 0, one client; {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"best of {args.repeats}"
    )
    best: dict[str, float] = {}
    counts: dict[str, int] = {}
    kept: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for name, (streams, query) in SETS.items():
            frames, secs = asyncio.run(serve_once(timeline, streams, query))
            best[name] = min(best.get(name, float("inf")), secs)
            counts[name] = len(frames)
            kept[name] = frames
    ref = counts["recorded streams"] / best["recorded streams"]
    print(f"{'stream set':<42} {'frames':>9} {'seconds':>8} {'frames/s':>10} {'vs ref':>7}")
    for name in SETS:
        rate = counts[name] / best[name]
        print(
            f"{name:<42} {counts[name]:>9,} {best[name]:>8.2f} {rate:>10,.0f} {rate / ref:>6.2f}x"
        )
    recorded = set(RECORDED)
    both = [f for f in kept["+ per-second streams"] if json.loads(f)["stream"] in recorded]
    if both != kept["recorded streams"]:
        print("MISMATCH: the recorded streams differ when the per-second ones are added")
        return 1
    print("check: the recorded streams' frames are identical in both sets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
