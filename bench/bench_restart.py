"""kill -9 of a real ``ccf features`` mid-stream, a downtime longer than the warm-up, a
restart: how many rows differ from a batch run.

    python bench/bench_restart.py                       # this checkout's code
    python bench/bench_restart.py --src ../main/src     # the features processes run other code

The raw store holds the first half of both real recordings (the collector's own records,
as ``tests/features/test_runner.fill`` writes them); ``ccf features`` (warm-up 60 s, small
polls so it is mid-way) is killed with SIGKILL after 200 rows, the second half (about 5.5
minutes of event time) arrives while it is down, and a new process runs until it has
written every bucket. Every row is then compared, as bytes, with a batch run over all of
it; the worst relative error of the EMA of the log return is printed too.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WARMUP = "features.warmup=60s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=str(ROOT / "src"), help="PYTHONPATH of the processes")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        return run(Path(tmp), args.src)


def run(tmp: Path, src: str) -> int:
    from tests.features.test_restart import differing, stored_rows
    from tests.features.test_runner import batch_rows, fill, settings_for, table

    from ccf.features.spec import feature_set

    settings = settings_for(tmp, "symbols=[btcusdt,ethusdt]", WARMUP)
    fill(settings, (0.0, 0.5))
    cmd = [
        sys.executable, "-m", "ccf", "features", f"data_dir={tmp / 'data'}", WARMUP,
        "metrics.enabled=false", "features.print_every_s=0", "features.poll_interval_s=0.05",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": src}
    with open(tmp / "features.log", "wb") as log:
        proc = subprocess.Popen(
            [*cmd, "features.max_rows_per_poll=1000"], stdout=log, stderr=log, env=env
        )
        while stored_rows(settings) < 200:
            if proc.poll() is not None:
                sys.exit(f"ccf features stopped: {(tmp / 'features.log').read_text()[-2000:]}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = stored_rows(settings)
        fill(settings, (0.5, 1.0))
        batch = batch_rows(settings, tmp, "symbols=[btcusdt,ethusdt]")
        began = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        while stored_rows(settings) < len(batch) and time.monotonic() - began < 300:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    live = table(settings.features_path, settings)
    fs = feature_set(settings.features)
    col = fs.float_columns.index("ema_lograt_m_p_1_0p05")
    unpack = struct.Struct(f"<{len(fs.float_columns)}d").unpack
    want = {r[:2]: r for r in batch}
    worst = 0.0
    for r in live:
        w = want.get(r[:2])
        if w is not None and w != r:
            a, b = unpack(r[3])[col], unpack(w[3])[col]
            if b and math.isfinite(a) and math.isfinite(b):
                worst = max(worst, abs(a - b) / abs(b))
    bad = differing(live, batch)
    print(f"code: {src}")
    print(f"killed after {killed:,} rows; the restart wrote {len(live) - killed:,}")
    print(f"rows differing from batch: {bad:,} of {len(batch):,}")
    print(f"worst relative error of ema_lograt_m_p_1_0p05: {worst:.1%}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
