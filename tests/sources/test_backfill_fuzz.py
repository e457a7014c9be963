"""Fuzz: candle files built from real rows, mutated, imported into a real SQLite store.

Each example takes a run of real one-minute BTCUSDT bars (``$CCF_SHARED/data/klines``),
damages some rows (hostile values in any column, fields dropped or added, high and low
swapped, rows repeated, blank lines), packs the file as plain CSV, gzip or zip (sometimes
truncated) or Parquet (text columns, or int64/float64 ones where the cells convert), and
imports it the way ``ccf backfill import`` does. Properties:

- no exception escapes but a file-level :class:`ArchiveError` (bad container, no valid row)
- every untouched row is stored exactly, with its own values
- every row is either stored or refused with a line, a column and a reason, never both
- a stored row breaks no rule: finite prices > 0, low <= open, close <= high, volume >= 0

The budget is bounded for the suite (``CCF_FUZZ_EXAMPLES``, default 120: about 10 s);
``bench/bench_fuzz_import.py`` runs the same property long and prints its figures.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccf.config import shared_dir
from ccf.sources.archive import ArchiveError
from ccf.sources.backfill import Backfill
from ccf.storage import SqliteStore

KLINES = shared_dir() / "data" / "klines" / "BTCUSDT-1m-2026-03-23_2026-04-11.csv.gz"
HEADER = "open_time_ms,open,high,low,close,volume"
MS = 1_000_000
EXAMPLES = int(os.environ.get("CCF_FUZZ_EXAMPLES", "120"))
HOSTILE = [
    "nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1", "-0.5", "0", "0.0", "", " ",
    "abc", "0x1A", "1_000", "１２", "1e-400", "9" * 30, "-" + "9" * 30, "1.5.2", "+3",
    "\x00", "1,5", "٣", "1e5", "00012", " 7 ", "true", "None", "x" * 300,
]  # fmt: skip


@cache
def real_rows() -> tuple[str, ...]:
    with gzip.open(KLINES, "rt") as f:
        lines = f.read().splitlines()
    assert lines[0] == HEADER
    return tuple(lines[1:2001])


@dataclass
class Figures:
    """What the fuzz run did, for the bench and the report."""

    files: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # by file name: .csv, .gz, ...
    rows: int = 0
    stored: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    file_errors: Counter[str] = field(default_factory=Counter)
    crashes: int = 0


FIGURES = Figures()


@st.composite
def candle_files(draw: st.DrawFn) -> tuple[str, bytes, list[tuple[int, str | None]]]:
    """(file name, bytes, [(line number, the real row when untouched)])."""
    rows = real_rows()
    start = draw(st.integers(0, len(rows) - 40))
    n = draw(st.integers(1, 30))
    entries: list[tuple[str, str | None]] = []  # (line, the real row when untouched)
    for line in rows[start : start + n]:
        what = draw(
            st.sampled_from(["keep"] * 6 + ["value", "drop", "extra", "swap", "repeat", "blank"])
        )
        cells = line.split(",")
        if what in ("keep", "blank", "repeat"):
            if what == "blank":
                entries.append(("", None))
            entries.append((line, line))
            if what == "repeat":
                entries.append((line, None))  # the same open time again: refused as a repeat
            continue
        if what == "value":
            i = draw(st.integers(0, 5))
            cells[i] = draw(st.sampled_from(HOSTILE) | st.text(max_size=12))
        elif what == "drop":
            cells = cells[: draw(st.integers(1, 5))]
        elif what == "extra":
            cells.append(draw(st.sampled_from(HOSTILE)))
        elif what == "swap":
            cells[2], cells[3] = cells[3], cells[2]
        mutated = ",".join(cells).replace('"', "").replace("\r", "").replace("\n", "")
        entries.append((mutated, None))
    box = draw(st.sampled_from(["csv", "gz", "zip", "gz-truncated", "parquet", "parquet-typed"]))
    if box.startswith("parquet"):
        entries = [e for e in entries if e[0]]  # a table has no blank rows
        lines = [(i + 2, real) for i, (_, real) in enumerate(entries)]
        return "candles.parquet", parquet_bytes(entries, typed=box == "parquet-typed"), lines
    lines = [(i + 2, real) for i, (text, real) in enumerate(entries) if text]
    data = (HEADER + "\n" + "\n".join(t for t, _ in entries) + "\n").encode()
    if box == "gz":
        return "candles.csv.gz", gzip.compress(data), lines
    if box == "gz-truncated":
        packed = gzip.compress(data)
        return "candles.csv.gz", packed[: draw(st.integers(0, len(packed) - 1))], []
    if box == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("candles.csv", data)
        return "candles.zip", buf.getvalue(), lines
    return "candles.csv", data, lines


def parquet_bytes(entries: list[tuple[str, str | None]], typed: bool) -> bytes:
    """The rows as a Parquet table: string columns, or (``typed``) int64 / float64 columns
    where every cell of the column converts, NaN and inf included."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cells = [t.split(",") for t, _ in entries]
    width = max(6, *(len(c) for c in cells))
    names = [*HEADER.split(","), *(f"extra_{i}" for i in range(width - 6))]
    columns = {}
    for j, name in enumerate(names):
        values = [c[j] if j < len(c) else None for c in cells]
        column = pa.array(values, type=pa.string())
        if typed:
            convert = int if j == 0 else float
            try:
                column = pa.array([None if v is None else convert(v) for v in values])
            except (ValueError, OverflowError, pa.ArrowException):
                pass  # this column stays text
        columns[name] = column
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def check_import(tmp: Path, name: str, data: bytes, lines: list[tuple[int, str | None]]) -> None:
    FIGURES.files += 1
    FIGURES.kinds[name.rsplit(".", 1)[-1]] += 1
    db = tmp / f"fuzz-{FIGURES.files}.sqlite"
    store = SqliteStore(db)
    try:
        try:
            summary = Backfill(store).import_file(data, name, symbol="btcusdt", interval="1m")
        except ArchiveError as e:
            FIGURES.file_errors[str(e).split(":")[1].strip().split(" (")[0][:40]] += 1
            got = store.query("SELECT count(*) FROM candle")[0][0]
            assert got == 0  # a refused file stores nothing
            return
        except Exception:
            FIGURES.crashes += 1
            raise
        stored = {
            r[0] // MS: r[1:]
            for r in store.query("SELECT open_time, open, high, low, close, volume FROM candle")
        }
    finally:
        store.close()
        db.unlink(missing_ok=True)
        for extra in ("-wal", "-shm"):
            Path(f"{db}{extra}").unlink(missing_ok=True)
    refused_lines = [r.line for r in summary.refused]
    assert len(set(refused_lines)) == len(refused_lines)  # a row is refused once
    for r in summary.refused:
        assert r.column and r.reason and r.code
        FIGURES.refused[r.code] += 1
    data_lines = {n for n, _ in lines}
    assert set(refused_lines) <= data_lines
    # untouched rows: stored exactly, never refused
    for n, row in lines:
        if row is None:
            continue
        assert n not in refused_lines, (n, row, summary.refused)
        c = row.split(",")
        assert stored[int(c[0])] == tuple(map(float, c[1:6])), row
    # every row is accounted for once: stored, or refused (a mutated row may still be valid)
    assert summary.rows + len(refused_lines) == len(lines)
    assert summary.rows == len(stored)
    FIGURES.rows += len(lines)
    FIGURES.stored += summary.rows
    for o, h, lo, c, v in stored.values():
        assert all(math.isfinite(x) for x in (o, h, lo, c, v))
        assert min(o, h, lo, c) > 0 and v >= 0 and lo <= min(o, c) and max(o, c) <= h


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(candle_files())
def test_mutated_candle_files_never_crash_and_store_only_valid_rows(
    tmp_path: Path, case: tuple[str, bytes, list[tuple[int, str | None]]]
) -> None:
    check_import(tmp_path, *case)
