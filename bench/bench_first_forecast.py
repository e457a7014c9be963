"""Time to the first forecast: ``ccf run`` as ``make run`` starts it, from the first
stored order book to the first stored champion forecast.

    python bench/bench_first_forecast.py                    # 1x replay, default config
    python bench/bench_first_forecast.py run.first_model=false   # the old route

Every part runs as under ``make run`` (the dashboard too) in a fresh data folder; the
script polls the stores every 0.25 s and prints, on the wall clock, when the first book
row and the first champion forecast were stored, and the gap between them. Extra
arguments are passed to ``ccf run`` as overrides.
"""

from __future__ import annotations

import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ccf.config import load_settings  # noqa: E402

LIMIT_S = 600


def _count(path: Path, sql: str) -> int:
    if not path.exists():
        return 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    try:
        return con.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # no table yet (or busy): poll again
    finally:
        con.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    extra = sys.argv[1:]
    with tempfile.TemporaryDirectory() as d:
        overrides = [
            f"data_dir={Path(d) / 'data'}",
            f"replay.port={_free_port()}",
            f"ui.port={_free_port()}",
            "log_level=WARNING",
            *extra,
        ]
        s = load_settings(overrides, environ={})
        env = {**os.environ, "CCF__METRICS__ENABLED": "false"}
        log = open(Path(d) / "run.log", "w")  # noqa: SIM115  (closed below)
        run = subprocess.Popen(
            [sys.executable, "-m", "ccf", "run", *overrides], stdout=log, stderr=log, env=env
        )
        t0 = time.monotonic()
        book = forecast = None
        try:
            while time.monotonic() - t0 < LIMIT_S and run.poll() is None:
                now = time.monotonic()
                if book is None and _count(s.db_path, "SELECT count(*) FROM book"):
                    book = now
                if book is not None and _count(
                    s.predictions_path, "SELECT count(*) FROM predictions WHERE role='champion'"
                ):
                    forecast = now
                    break
                time.sleep(0.25)
        finally:
            run.send_signal(signal.SIGTERM)
            run.wait(120)
            log.close()
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
        print(f"overrides: {' '.join(extra) or '(defaults)'}")
        if book is None or forecast is None:
            print((Path(d) / "run.log").read_text()[-3000:])
            raise SystemExit(f"no {'book' if book is None else 'forecast'} in {LIMIT_S} s")
        print(f"start -> first stored book      {book - t0:7.1f} s")
        print(f"start -> first stored forecast  {forecast - t0:7.1f} s")
        print(f"first book -> first forecast    {forecast - book:7.1f} s")


if __name__ == "__main__":
    main()
