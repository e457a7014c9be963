"""The candle-file fuzz target, run long: files, crashes, refusals by reason.

    python bench/bench_fuzz_import.py                  # 2,000 files
    python bench/bench_fuzz_import.py --examples 20000

Runs the property of ``tests/sources/test_backfill_fuzz.py`` (real BTCUSDT one-minute
rows, mutated, packed as CSV, gzip, zip or a truncated gzip, imported into a real SQLite
store) for many more examples than the suite's bounded budget, then prints what it did.
Exits with status 1 when the property fails (Hypothesis prints the smallest failing file).
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--examples", type=int, default=2000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # each refused row is a warning: counted below
    from tests.sources import test_backfill_fuzz as fuzz

    began = time.monotonic()
    failed = False
    with tempfile.TemporaryDirectory() as tmp:

        @settings(
            max_examples=args.examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(fuzz.candle_files())
        def run(case: tuple) -> None:
            fuzz.check_import(Path(tmp), *case)

        try:
            run()
        except AssertionError as e:
            failed = True
            print(f"PROPERTY FAILED: {e}")
    f = fuzz.FIGURES
    took = time.monotonic() - began
    print(
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print(f"files imported: {f.files:,} in {took:.1f} s ({f.files / took:,.0f} files/s)")
    print("files by kind:", ", ".join(f"{k} {n:,}" for k, n in f.kinds.most_common()))
    print(f"crashes (uncaught exceptions): {f.crashes}")
    print(f"data rows: {f.rows:,}; stored: {f.stored:,}; refused: {sum(f.refused.values()):,}")
    print("refused rows by reason:")
    for code, n in f.refused.most_common():
        print(f"  {code:<16} {n:>8,}")
    print("files refused whole:")
    for why, n in f.file_errors.most_common():
        print(f"  {why:<40} {n:>6,}")
    print("every untouched row stored exactly, every stored row valid:", "no" if failed else "yes")
    return 1 if failed or f.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
