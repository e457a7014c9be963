"""Where training data comes from: the feature store, or a candle file run through the
same feature engine the live path uses (so a model trained on a file sees the rows the
live engine would have made)."""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ccf.config import Settings
from ccf.features.engine import FeatureEngine
from ccf.features.spec import feature_set
from ccf.features.store import StoredSet
from ccf.records import Candle
from ccf.storage.backends import list_feature_sets, open_feature_store, uses_postgres
from ccf.storage.postgres.connect import describe

log = logging.getLogger(__name__)

CANDLE_COLUMNS = ("open_time_ms", "open", "high", "low", "close", "volume")
CANDLE_PRESET = Path(__file__).resolve().parents[1] / "conf" / "candles.yaml"


@dataclass(frozen=True, slots=True)
class Rows:
    """Feature rows with the identity of the set that made them."""

    frame: pd.DataFrame  # symbol, ts, ts_end, <columns>
    name: str
    version: str
    bucket_ns: int
    columns: tuple[str, ...]  # float columns


def _where(settings: Settings) -> str:
    """The feature store, for messages: the file, or the database (no password)."""
    if uses_postgres(settings):
        return describe(settings.storage.postgres)
    return str(settings.features_path)


def from_store(
    settings: Settings,
    symbols: tuple[str, ...] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> Rows:
    """Rows of the configured feature set's current version from the feature store."""
    fs = feature_set(settings.features)
    stored = {(s.name, s.version): s for s in list_feature_sets(settings)}
    s = stored.get((fs.name, fs.version))
    if s is None:
        others = [v for n, v in stored if n == fs.name]
        hint = f" (stored versions: {', '.join(others)})" if others else ""
        raise FileNotFoundError(
            f"no rows of feature set {fs.name} version {fs.version} in "
            f"{_where(settings)}{hint}: run `ccf features` first, or train on a candle "
            "file with --candles FILE"
        )
    return _read(settings, s, symbols or settings.symbols, start_ns, end_ns)


def _read(
    settings: Settings,
    s: StoredSet,
    symbols: tuple[str, ...],
    start_ns: int | None,
    end_ns: int | None,
) -> Rows:
    store = open_feature_store(settings, s, readonly=True)
    try:
        frame = store.frame(symbols, start_ns, end_ns)
    finally:
        store.close()
    if frame.empty:
        raise ValueError(
            f"feature set {s.name} version {s.version} holds no rows for {list(symbols)} in "
            "the range asked for"
        )
    return Rows(frame, s.name, s.version, s.bucket_ns, s.float_columns)


def check_candle_file(path: Path) -> None:
    """A candle file that can be read through, checked before any work: it exists, is not
    empty, a .gz is whole, and the header (or Parquet schema) has the columns. The error
    names the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"candle file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path}: not a file (give a candle file, CSV, CSV.gz or Parquet)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the candle file is empty")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable Parquet file ({e})") from None
    else:
        names = _csv_header(path)
    missing = [c for c in CANDLE_COLUMNS if c not in names]
    if missing:
        raise ValueError(
            f"{path}: candle file lacks columns {missing}; it needs {','.join(CANDLE_COLUMNS)} "
            f"(its header: {','.join(names[:12]) or 'none'})"
        )


def _csv_header(path: Path) -> list[str]:
    """The header of a CSV (or CSV.gz, read through to its end to find a truncation)."""
    if path.suffix != ".gz":
        with open(path, "rb") as f:
            first = f.readline()
    else:
        try:
            with gzip.open(path, "rb") as f:
                first = f.readline()
                while f.read(1 << 20):
                    pass
        except EOFError:
            raise ValueError(f"{path}: the gzip file is truncated (it ends mid-stream)") from None
        except gzip.BadGzipFile as e:
            raise ValueError(f"{path}: not a gzip file ({e})") from None
        except zlib.error as e:
            raise ValueError(f"{path}: the gzip file is corrupt ({e})") from None
    try:
        text = first.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text CSV (its first line is not UTF-8)") from None
    if not text:
        raise ValueError(f"{path}: the candle file has no header line (empty first line)")
    return [c.strip() for c in text.split(",")]


def read_candles(path: Path, symbol: str | None = None) -> tuple[str, pd.DataFrame]:
    """A candle file (CSV, CSV.gz or Parquet with open_time_ms,open,high,low,close,volume)."""
    path = Path(path)
    check_candle_file(path)
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, EOFError, OSError) as e:
        raise ValueError(f"{path}: cannot read the candle file ({e})") from None
    missing = [c for c in CANDLE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path.name}: candle file lacks columns {missing}; it needs {','.join(CANDLE_COLUMNS)}"
        )
    bad = df[list(CANDLE_COLUMNS)].isna().any(axis=1)
    if bad.any():
        raise ValueError(
            f"{path.name}: {int(bad.sum())} rows with missing values, first at "
            f"data row {int(np.flatnonzero(bad.to_numpy())[0]) + 1}"
        )
    sym = symbol or path.name.split("-")[0].split(".")[0]
    return sym.lower(), df.sort_values("open_time_ms").reset_index(drop=True)


def from_candles(settings: Settings, path: Path, symbol: str | None = None) -> Rows:
    """Rows from a candle file through the feature engine (``features.source`` must be
    ``candle``: ``ccf ... --candles`` adds ``conf/candles.yaml`` for that)."""
    path = Path(path)
    fs = feature_set(settings.features)
    if fs.source != "candle":
        raise ValueError(
            "features.source must be candle to build from a candle file: add "
            f"--config {CANDLE_PRESET}"
        )
    sym, df = read_candles(path, symbol)
    step = int(np.median(np.diff(df["open_time_ms"].to_numpy()))) if len(df) > 1 else 60_000
    iv_ns = step * 1_000_000
    engine = FeatureEngine(fs, [sym])
    rows = []
    o = df["open_time_ms"].to_numpy(dtype=np.int64) * 1_000_000
    cols = [df[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume")]
    push = engine.push
    for i in range(len(df)):
        ts = int(o[i])
        c = Candle(
            "file",
            sym,
            fs.candle_interval,
            ts,
            ts + iv_ns - 1,
            cols[0][i],
            cols[1][i],
            cols[2][i],
            cols[3][i],
            cols[4][i],
            float("nan"),
            None,
            float("nan"),
            float("nan"),
            True,
            ts + iv_ns - 1,
            ts + iv_ns - 1,
        )
        out = push(c)
        if out:
            rows += out
    if len(o):
        rows += engine.flush(int(o[-1]) + iv_ns)
    values = np.array([r.values for r in rows], dtype=float).reshape(len(rows), -1)
    frame = pd.DataFrame(values, columns=list(fs.float_columns))
    frame.insert(0, "ts_end", np.array([r.ts_end for r in rows], dtype=np.int64))
    frame.insert(0, "ts", np.array([r.ts for r in rows], dtype=np.int64))
    frame.insert(0, "symbol", sym)
    log.info(
        "part=ml symbol=%s %d candles from %s -> %d feature rows",
        sym,
        len(df),
        path.name,
        len(frame),
    )
    return Rows(frame, fs.name, fs.version, fs.bucket_ns, fs.float_columns)
