"""Bad candle files and bad arguments, through the real command line: one clear line each.

The rows are real one-minute BTCUSDT bars (``$CCF_SHARED/data/klines``), a few of them
damaged the ways files get damaged. A bad row is refused by line, column and reason and
never stored; the file's other rows are; a file that cannot be read at all (a folder, a
header without a column, nothing valid) stops the command with exit code 2.
"""

from __future__ import annotations

import gzip
import math
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ccf.cli import app
from ccf.config import shared_dir
from ccf.storage import SqliteStore

KLINES = shared_dir() / "data" / "klines" / "BTCUSDT-1m-2026-03-23_2026-04-11.csv.gz"
HEADER = "open_time_ms,open,high,low,close,volume"
MS = 1_000_000


def real_lines(n: int = 40) -> list[str]:
    with gzip.open(KLINES, "rt") as f:
        lines = f.read().splitlines()
    assert lines[0] == HEADER
    return lines[1 : n + 1]


def set_field(line: str, i: int, value: str) -> str:
    cells = line.split(",")
    cells[i] = value
    return ",".join(cells)


def import_cli(tmp_path: Path, path: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        [
            "backfill",
            "import",
            str(path),
            "--symbol",
            "btcusdt",
            "--interval",
            "1m",
            f"data_dir={tmp_path / 'data'}",
            "log_level=ERROR",
            *extra,
        ],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def stored(tmp_path: Path) -> list[tuple]:
    store = SqliteStore(tmp_path / "data" / "ccf.sqlite", readonly=True)
    try:
        return store.query(
            "SELECT open_time, open, high, low, close, volume FROM candle ORDER BY 1"
        )
    finally:
        store.close()


def test_bad_values_are_refused_by_line_and_column_and_never_stored(tmp_path: Path) -> None:
    lines = real_lines()
    damaged = {  # line number in the file (the header is line 1) -> damaged row
        3: set_field(lines[1], 1, "nan"),
        5: set_field(lines[3], 2, "inf"),
        7: set_field(lines[5], 5, "-3.5"),
        9: set_field(set_field(lines[7], 2, "60000"), 3, "61000"),  # high below low
        11: set_field(lines[9], 4, "99999"),  # close above high
        13: set_field(lines[11], 3, "0"),  # a price of 0
        15: ",".join(lines[13].split(",")[:5]),  # the volume column is missing
        17: set_field(lines[15], 0, str(int(lines[15].split(",")[0]) + 7)),  # off the minute
        19: set_field(lines[17], 0, "9" * 20),  # past int64 nanoseconds
        21: lines[18],  # the row before it again: a repeated open time
        23: set_field(lines[21], 1, "1e999"),
    }
    rows = [damaged.get(i + 2, line) for i, line in enumerate(lines)]
    path = tmp_path / "candles.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")

    code, out = import_cli(tmp_path, path)
    assert code == 0, out
    assert "refused 11 bad rows (not stored)" in out
    for want in (
        "candles.csv: line 3, column open: 'nan' is not finite",
        "candles.csv: line 5, column high: 'inf' is not finite",
        "candles.csv: line 7, column volume: -3.5 is negative",
        "candles.csv: line 9, column high: high 60000.0 is below low 61000.0",
        "candles.csv: line 11, column close: close 99999.0 is outside low..high",
        "candles.csv: line 13, column low: 0 is not > 0",
        "candles.csv: line 15, column volume: missing (the row has 5 of 6)",
        "candles.csv: line 17, column open_time_ms:",
    ):
        assert want in out, out
    assert "... and 1 more" in out  # the first ten one by one, then a count
    good = [line for i, line in enumerate(lines) if i + 2 not in damaged]
    want_rows = [(int(c[0]) * MS, *map(float, c[1:6])) for c in (line.split(",") for line in good)]
    assert stored(tmp_path) == want_rows  # every valid row exactly, none of the bad ones
    assert all(math.isfinite(v) and v >= 0 for r in stored(tmp_path) for v in r[1:])


def test_a_header_without_a_column_names_the_file_and_the_column(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    path.write_text(
        "open_time_ms,open,high,low,close\n"
        + "\n".join(",".join(r.split(",")[:5]) for r in real_lines(3))
    )
    code, out = import_cli(tmp_path, path)
    assert code == 2
    assert out.strip().splitlines() == [
        "ccf: short.csv: missing column volume in its header "
        "'open_time_ms,open,high,low,close'; a candle file's header is " + HEADER
    ]
    assert not (tmp_path / "data" / "ccf.sqlite").exists() or stored(tmp_path) == []


def test_an_archive_row_short_of_columns_names_the_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-1m-2024-08-09.csv"
    path.write_text(
        "1723161240000,1,2,0.5,1.5,10,1723161299999,15,7,4,6,0\n"
        "1723161300000,1,2,0.5,1.5\n"  # the "expected 11, got 5"
    )
    result = CliRunner().invoke(
        app, ["backfill", "import", str(path), f"data_dir={tmp_path / 'data'}"]
    )
    assert result.exit_code == 0, result.output
    assert (
        "BTCUSDT-1m-2024-08-09.csv: line 2, column volume: missing (the row has 5 of 11)"
        in result.output
    )


def test_a_file_with_no_valid_row_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "all_bad.csv"
    path.write_text(HEADER + "\n" + "\n".join(set_field(r, 1, "-1") for r in real_lines(4)))
    code, out = import_cli(tmp_path, path)
    assert code == 2
    assert out.strip() == (
        "ccf: all_bad.csv: no valid rows (4 refused); first: all_bad.csv: line 2, column "
        "open: -1 is not > 0"
    )


def run_ccf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ccf", *args], capture_output=True, text=True, timeout=120
    )


def test_a_folder_is_one_clear_line_not_a_traceback(tmp_path: Path) -> None:
    done = run_ccf("backfill", "import", str(KLINES.parent), f"data_dir={tmp_path / 'data'}")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"ccf: {KLINES.parent}: is a folder; import one file at a time")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "command",
    [
        ["backfill", "import", str(KLINES)],
        ["features", "transport.backend=kafka"],  # the feature worker's store
    ],
    ids=["backfill-import", "features"],
)
def test_an_unreachable_postgresql_prints_only_its_connection_error(
    tmp_path: Path, command: list[str]
) -> None:
    port = free_port()  # nothing listens there
    done = run_ccf(
        *command,
        f"data_dir={tmp_path / 'data'}",
        "storage.backend=postgres",
        f"storage.postgres.port={port}",
        "storage.postgres.connect_timeout_s=2",
        "metrics.enabled=false",
    )
    out = done.stderr + done.stdout
    assert done.returncode == 1, out
    assert "Traceback" not in out and 'File "' not in out, out
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("ccf:")]  # logs aside
    assert line.startswith(f"ccf: cannot connect to postgresql://ccf@127.0.0.1:{port}/ccf")
    assert "Connection refused" in line


def test_features_from_after_to_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "features",
            "--from",
            "2024-08-09T00:02",
            "--to",
            "2024-08-08T23:57",
            f"data_dir={tmp_path}",
        ],
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        "ccf: --from 2024-08-09T00:02 is not before --to 2024-08-08T23:57: no bucket lies "
        "between them; give --from earlier than --to (--to is exclusive)"
    )


def test_a_parquet_candle_file_meets_the_same_checks(tmp_path: Path) -> None:
    import pandas as pd

    df = pd.read_csv(KLINES, nrows=20)
    df.loc[3, "open"] = float("nan")
    df.loc[5, "volume"] = -1.0
    df.loc[7, "high"] = float("inf")
    path = tmp_path / "candles.parquet"
    df.to_parquet(path)
    code, out = import_cli(tmp_path, path)
    assert code == 0, out
    assert "refused 3 bad rows (not stored)" in out
    for want in (  # row i of the table is line i + 2, as in a CSV file with its header
        "candles.parquet: line 5, column open: empty (no value)",  # pandas: NaN -> null
        "candles.parquet: line 7, column volume: -1.0 is negative",
        "candles.parquet: line 9, column high: 'inf' is not finite",
    ):
        assert want in out, out
    good = df.drop(index=[3, 5, 7])
    assert stored(tmp_path) == [
        (int(r.open_time_ms) * MS, r.open, r.high, r.low, r.close, r.volume)
        for r in good.itertuples()
    ]
