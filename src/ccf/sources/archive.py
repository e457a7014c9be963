"""Binance's public data archive and plain candle files, into records.

Archive files (data.binance.vision) are CSV without a header, usually zipped:
``<SYMBOL>-<interval>-<date>.zip`` holds 12-column klines,
``<SYMBOL>-aggTrades-<date>.zip`` 8-column aggregate trades. Spot
timestamps switched from milliseconds to microseconds on 2025-01-01, so each
timestamp is read by its size, not by the file's date. A ``.CHECKSUM`` file
beside the archive (``<sha256>  <name>``) is verified when present.

Parquet candle files (``.parquet``, the same six columns) are read through the same
checks. Plain candle files such as ``../shared/data/klines/*.csv.gz`` have a header
``open_time_ms,open,high,low,close,volume`` and nothing else: the fields they
lack (quote volume, trade count, taker volume) are stored as NULL; their
columns are found by name, in any order, and a missing one refuses the file.

Every row is checked before it becomes a record (:mod:`ccf.sources.file_rows`:
finite positive prices, low <= open, close <= high, volumes >= 0, times that fit,
no repeated open time). A row that fails is *refused*, never stored: the import
stores the file's other rows and reports each refused one by line, column and
reason (a damaged row does not hide a day of good ones, and the gap it leaves is
written as a gap record like any missing candle). A file none of whose rows pass
is refused whole.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ccf.records import Record
from ccf.sources import file_rows
from ccf.sources.file_rows import OHLCV_COLUMNS, Refused, to_ms

__all__ = [
    "ArchiveError",
    "FileInfo",
    "Refused",
    "csv_text",
    "describe",
    "ohlcv_index",
    "parse",
    "to_ms",
    "verify_checksum",
]
_INT = re.compile(r"\s*-?\d+\s*")
FileKind = Literal["klines", "aggTrades", "ohlcv"]
_NAME = re.compile(r"(?P<symbol>[A-Z0-9]+)-(?P<kind>aggTrades|\d+[smhdw]|1mo)-")


class ArchiveError(ValueError):
    """A file that is not what it claims to be; the message says which and why."""


@dataclass(frozen=True)
class FileInfo:
    kind: FileKind
    symbol: str
    interval: str | None


def describe(
    name: str,
    *,
    symbol: str | None = None,
    interval: str | None = None,
    header: list[str] | None = None,
) -> FileInfo:
    """What a file holds, from its header and name; ``symbol``/``interval`` override."""
    m = _NAME.search(Path(name).name)
    sym = (symbol or (m.group("symbol") if m else "")).lower()
    if header is not None:  # only candle files have one (checked by ohlcv_index)
        iv = interval or (m.group("kind") if m and m.group("kind")[0].isdigit() else None)
        if not sym or not iv:
            raise ArchiveError(f"{name}: plain OHLCV file: give --symbol and --interval")
        return FileInfo("ohlcv", sym, iv)
    if not m and not (symbol and interval):
        raise ArchiveError(
            f"{name}: not an archive name like BTCUSDT-1m-2024-08-08.zip or "
            "BTCUSDT-aggTrades-2024-08-08.zip; give --symbol (and --interval)"
        )
    kind = m.group("kind") if m else interval
    if kind == "aggTrades" and not interval:
        return FileInfo("aggTrades", sym, None)
    if kind == "1mo":
        raise ArchiveError(f"{name}: monthly-interval candles (1mo) are not supported")
    return FileInfo("klines", sym, interval or kind)


def verify_checksum(data: bytes, checksum_text: str, name: str) -> None:
    expected = checksum_text.split()[0].lower()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ArchiveError(f"{name}: sha256 {actual} does not match its .CHECKSUM {expected}")


def csv_text(data: bytes, name: str) -> str:
    """The CSV inside a .zip (one member), a .gz, a .parquet (as CSV), or plain bytes."""
    if name.endswith(".parquet"):
        return parquet_csv(data, name)
    if name.endswith(".zip"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                members = [n for n in z.namelist() if n.endswith(".csv")]
                if len(members) != 1:
                    raise ArchiveError(f"{name}: expected one .csv inside, found {members}")
                data = z.read(members[0])
        except zipfile.BadZipFile as e:
            raise ArchiveError(f"{name}: not a zip file ({e})") from e
    elif name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ArchiveError(f"{name}: not a gzip file ({e})") from e
    try:
        return data.decode("utf-8-sig")  # a byte-order mark is not part of the header
    except UnicodeDecodeError as e:
        raise ArchiveError(f"{name}: not UTF-8 text ({e})") from e


def parquet_csv(data: bytes, name: str) -> str:
    """A Parquet candle file as CSV text (header, then one line per row), so it meets the
    same checks: floats written exactly (``repr``), a null as an empty field. Its row
    ``i`` (from 0) is then line ``i + 2``, as in a CSV file with its header."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ArchiveError(
            f"{name}: reading Parquet needs pyarrow: pip install 'ccf[ml]'"
        ) from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as e:
        raise ArchiveError(f"{name}: not a Parquet file ({e})") from None
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(table.column_names)
    for batch in table.to_batches():
        for row in zip(*(c.to_pylist() for c in batch.columns), strict=True):
            w.writerow([_cell(v) for v in row])
    return out.getvalue()


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # exact: nan, inf stay what they are and are refused
    return str(v)


def parse(
    text: str,
    name: str,
    *,
    symbol: str | None = None,
    interval: str | None = None,
    ts_recv: int,
    refused: list[Refused] | None = None,
) -> tuple[FileInfo, Iterator[Record]]:
    """Records from one file's CSV text, each row checked (:mod:`ccf.sources.file_rows`).

    A row that breaks a rule is not a record: it is appended to ``refused`` (its line,
    column and reason), or, without that list, raised as an :class:`ArchiveError` naming
    them. A file is refused whole when it is empty or its header lacks a column.
    """
    rows = csv.reader(io.StringIO(text))
    try:
        first = next(rows, None)
    except csv.Error as e:
        raise ArchiveError(f"{name}: line 1 is not CSV ({e})") from None
    if first is None or not first:
        raise ArchiveError(f"{name}: empty file (no rows)")
    header = None if _INT.fullmatch(first[0].strip()) else [c.strip() for c in first]
    index = None if header is None else ohlcv_index(header, name)
    info = describe(name, symbol=symbol, interval=interval, header=header)
    pending = None if header else (rows.line_num, first)
    return info, _records(info, rows, pending, index, name, ts_recv, refused)


def ohlcv_index(header: list[str], name: str) -> list[int]:
    """Where each of ``open_time_ms,open,high,low,close,volume`` sits in a header (other
    columns are ignored); a missing one refuses the file, naming it."""
    missing = [c for c in OHLCV_COLUMNS if c not in header]
    if missing:
        raise ArchiveError(
            f"{name}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"in its header {','.join(header)[:200]!r}; a candle file's header is "
            f"{','.join(OHLCV_COLUMNS)}"
        )
    return [header.index(c) for c in OHLCV_COLUMNS]


def _records(
    info: FileInfo,
    rows: Any,
    pending: tuple[int, list[str]] | None,
    index: list[int] | None,
    name: str,
    ts_recv: int,
    refused: list[Refused] | None,
) -> Iterator[Record]:
    sym, iv = info.symbol, info.interval or ""
    names = file_rows.header_names(index) if index is not None else []
    seen: dict[int, int] = {}  # open time (candles) or aggregate id (trades) -> line
    key_column = {"aggTrades": "agg_trade_id", "klines": "open_time"}.get(info.kind, "open_time_ms")
    while True:
        if pending is not None:
            (line, row), pending = pending, None
        else:
            try:
                row = next(rows)
            except StopIteration:
                return
            except csv.Error as e:
                _refuse(refused, name, Refused(rows.line_num, "-", "not_csv", f"not CSV ({e})"))
                continue
            line = rows.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line
        try:
            if info.kind == "aggTrades":
                key, rec = file_rows.agg_trade(row, sym, ts_recv)
            elif info.kind == "klines":
                key, rec = file_rows.kline(row, sym, iv, ts_recv)
            else:
                assert index is not None
                key, rec = file_rows.ohlcv(row, index, names, sym, iv, ts_recv)
        except file_rows.RowError as e:
            _refuse(refused, name, Refused(line, e.column, e.code, e.reason))
            continue
        if key in seen:
            _refuse(
                refused,
                name,
                Refused(line, key_column, "duplicate", f"{key} repeats line {seen[key]}"),
            )
            continue
        seen[key] = line
        yield rec


def _refuse(refused: list[Refused] | None, name: str, why: Refused) -> None:
    if refused is None:
        raise ArchiveError(why.text(name))
    refused.append(why)
