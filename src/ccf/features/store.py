"""The feature store: one SQLite table per feature-set version.

A row is keyed by (symbol, bucket start) and written with ``INSERT OR
IGNORE``, so a rerun or a restart rewrites nothing: the first row written
for a bucket is the one every reader ever sees. The float columns of a row
are packed in one little-endian float64 blob: reading a model's window of
N rows is one indexed range read and one ``numpy.frombuffer`` (well under a
millisecond), and NaN round-trips bit for bit. ``feature_sets`` records each
version's canonical config and columns, so other processes read a table
without the config that made it. ``feature_checkpoints`` holds, per table and
symbol, the live runner's feature state after the newest row it wrote, written
in the same transaction as those rows (see :mod:`ccf.features.checkpoint`).
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ccf.features.checkpoint import Checkpoint
from ccf.features.spec import FeatureSet, float_columns, table_name
from ccf.storage.sqlite import connect, symbol_time_filter

if TYPE_CHECKING:
    import pandas as pd

    from ccf.features.engine import FeatureRow

_REGISTRY = (
    "CREATE TABLE IF NOT EXISTS feature_sets (name TEXT, version TEXT, table_name TEXT, "
    "config TEXT, columns TEXT, bucket_ns INTEGER, lateness_ns INTEGER, created_at INTEGER, "
    "PRIMARY KEY (name, version))"
)
_CHECKPOINTS = (
    "CREATE TABLE IF NOT EXISTS feature_checkpoints (table_name TEXT, symbol TEXT, "
    "ts INTEGER, state BLOB, written_at INTEGER, PRIMARY KEY (table_name, symbol))"
)
# never back in time: an older state (a backfill of old buckets) keeps the newer one
_SAVE_CHECKPOINT = (
    "INSERT INTO feature_checkpoints VALUES (?, ?, ?, ?, ?) ON CONFLICT (table_name, symbol) "
    "DO UPDATE SET ts = excluded.ts, state = excluded.state, written_at = excluded.written_at "
    "WHERE excluded.ts >= feature_checkpoints.ts"
)


@dataclass(frozen=True, slots=True)
class StoredSet:
    """What the store knows of a feature-set version."""

    name: str
    version: str
    columns: tuple[str, ...]
    bucket_ns: int
    lateness_ns: int
    config: str  # canonical JSON

    @classmethod
    def of(cls, fs: FeatureSet) -> StoredSet:
        return cls(fs.name, fs.version, fs.columns, fs.bucket_ns, fs.lateness_ns, fs.canonical)

    @property
    def table(self) -> str:
        return table_name(self.name, self.version)

    @property
    def float_columns(self) -> tuple[str, ...]:
        return float_columns(self.columns)


class Window(NamedTuple):
    """A symbol's last rows, oldest first: what a model's encoder reads."""

    ts: np.ndarray  # int64 bucket starts, shape (n,)
    values: np.ndarray  # float64, shape (n, len(columns))
    columns: tuple[str, ...]


def list_sets(path: Path) -> list[StoredSet]:
    """Every feature-set version in the store at ``path`` (none when it does not exist)."""
    if not Path(path).exists():
        return []
    con = connect(Path(path), readonly=True)
    try:
        if not con.execute("SELECT 1 FROM sqlite_master WHERE name='feature_sets'").fetchone():
            return []
        rows = con.execute(
            "SELECT name, version, columns, bucket_ns, lateness_ns, config FROM feature_sets "
            "ORDER BY name, created_at"
        ).fetchall()
    finally:
        con.close()
    return [StoredSet(n, v, tuple(json.loads(c)), b, la, cfg) for n, v, c, b, la, cfg in rows]


def unpack(blobs: Sequence[bytes], k: int) -> np.ndarray:
    """Rows of k packed little-endian float64s as one (n, k) array."""
    return np.frombuffer(b"".join(blobs), dtype="<f8").reshape(len(blobs), k)


def rows_frame(
    rows: Sequence[Sequence[Any]], fset: StoredSet, floats: Sequence[str]
) -> pd.DataFrame:
    """``(symbol, ts, ts_end, packed values)`` rows as the frame every feature store returns:
    the set's columns in order, ``available_at``, and ``attrs`` naming the set."""
    import pandas as pd

    n = len(rows)
    values = unpack([r[3] for r in rows], len(floats))
    data: dict[str, Any] = {
        "symbol": pd.array([r[0] for r in rows], dtype=object),
        "ts": np.fromiter((r[1] for r in rows), dtype=np.int64, count=n),
        "ts_end": np.fromiter((r[2] for r in rows), dtype=np.int64, count=n),
    }
    by_name = dict(zip(floats, values.T, strict=True))
    df = pd.DataFrame({c: data[c] if c in data else by_name[c] for c in ("symbol", *fset.columns)})
    df["available_at"] = df["ts_end"] + fset.lateness_ns
    df.attrs.update(feature_set=fset.name, version=fset.version)
    return df


class FeatureStore:
    """Rows of one feature-set version: idempotent writes, offline frames, online windows."""

    def __init__(self, path: Path, fset: StoredSet | FeatureSet, *, readonly: bool = False):
        self.path = Path(path)
        self.set = fset if isinstance(fset, StoredSet) else StoredSet.of(fset)
        self.readonly = readonly
        self._floats = self.set.float_columns
        self._pack = struct.Struct(f"<{len(self._floats)}d").pack
        if readonly and not self.path.exists():
            raise FileNotFoundError(f"no feature store at {self.path}: run `ccf features` first")
        self._con = connect(self.path, readonly=readonly)
        if not readonly:
            self._create()
        t = self.set.table
        self._insert = f"INSERT OR IGNORE INTO {t} (symbol, ts, ts_end, row) VALUES (?, ?, ?, ?)"
        self._last_sql = f"SELECT ts, row FROM {t} WHERE symbol = ? ORDER BY ts DESC LIMIT ?"

    def _create(self) -> None:
        s, con = self.set, self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(_REGISTRY)
            con.execute(_CHECKPOINTS)
            had = con.execute(
                "SELECT columns FROM feature_sets WHERE name = ? AND version = ?",
                (s.name, s.version),
            ).fetchone()
            if had and tuple(json.loads(had[0])) != s.columns:
                raise ValueError(
                    f"feature set {s.name} version {s.version} is stored with other columns: "
                    "the kinds changed their output without a config change; rename the set "
                    "(features.name=...) to start a new table"
                )
            if not had:
                con.execute(
                    "INSERT INTO feature_sets VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        s.name,
                        s.version,
                        s.table,
                        s.config,
                        json.dumps(s.columns),
                        s.bucket_ns,
                        s.lateness_ns,
                        time.time_ns(),
                    ),
                )
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {s.table} (symbol TEXT, ts INTEGER, "
                "ts_end INTEGER, row BLOB, PRIMARY KEY (symbol, ts)) WITHOUT ROWID"
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    # -- writes -----------------------------------------------------------------------------

    def pack(self, values: Sequence[float]) -> bytes:
        return self._pack(*values)

    def write(self, rows: Sequence[FeatureRow], checkpoints: Sequence[Checkpoint] = ()) -> int:
        """Store rows, and the engine's checkpoints after them, in one transaction (so
        the two never disagree); returns how many rows were new."""
        if not rows:
            return 0
        pack = self._pack
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            before = con.total_changes
            con.executemany(
                self._insert, [(r.symbol, r.ts, r.ts_end, pack(*r.values)) for r in rows]
            )
            new = con.total_changes - before
            if checkpoints:
                self._save(checkpoints)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return new

    def save_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Checkpoints alone: only for a state after rows already stored (a clean stop)."""
        if not checkpoints:
            return
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            self._save(checkpoints)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _save(self, checkpoints: Sequence[Checkpoint]) -> None:
        now = time.time_ns()
        self._con.executemany(
            _SAVE_CHECKPOINT, [(self.set.table, c.symbol, c.ts, c.state, now) for c in checkpoints]
        )

    # -- reads ------------------------------------------------------------------------------

    def last_bucket(self, symbol: str) -> int | None:
        """Start of the newest stored bucket of ``symbol``."""
        return self._con.execute(
            f"SELECT max(ts) FROM {self.set.table} WHERE symbol = ?", (symbol,)
        ).fetchone()[0]

    def checkpoint(self, symbol: str) -> Checkpoint | None:
        """The newest checkpoint of ``symbol`` in this set (None when there is none)."""
        if not self._con.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'feature_checkpoints'"
        ).fetchone():
            return None
        row = self._con.execute(
            "SELECT ts, state FROM feature_checkpoints WHERE table_name = ? AND symbol = ?",
            (self.set.table, symbol),
        ).fetchone()
        return None if row is None else Checkpoint(symbol, row[0], row[1])

    def first_bucket(self, symbol: str) -> int | None:
        """Start of the oldest stored bucket of ``symbol``."""
        return self._con.execute(
            f"SELECT min(ts) FROM {self.set.table} WHERE symbol = ?", (symbol,)
        ).fetchone()[0]

    def last(self, symbol: str, n: int) -> Window:
        """Online: the last ``n`` rows of ``symbol`` (fewer if the store has fewer)."""
        rows = self._con.execute(self._last_sql, (symbol, n)).fetchall()
        rows.reverse()
        values = unpack([r[1] for r in rows], len(self._floats))
        ts = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return Window(ts, values, self._floats)

    def frame(
        self,
        symbols: Iterable[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        *,
        as_of: int | None = None,
    ) -> pd.DataFrame:
        """Offline: rows with bucket start in [start, end), by symbol then time.

        ``available_at`` is the bucket end plus the allowed lateness: the earliest event
        time the row could be known live. ``as_of`` keeps only rows available by then,
        so a training set sees nothing a live model could not have seen. The frame's
        ``attrs`` name the feature set and its version.
        """

        where, params = symbol_time_filter(symbols, start_ns, end_ns)
        if as_of is not None:
            where.append("ts_end <= ?")
            params.append(as_of - self.set.lateness_ns)
        rows = self._con.execute(
            f"SELECT symbol, ts, ts_end, row FROM {self.set.table} WHERE {' AND '.join(where)} "
            "ORDER BY symbol, ts",
            params,
        ).fetchall()
        return rows_frame(rows, self.set, self._floats)

    def summary(self) -> list[tuple[str, int, int, int]]:
        """Per symbol: rows, first and last bucket start."""
        return self._con.execute(
            f"SELECT symbol, count(*), min(ts), max(ts) FROM {self.set.table} GROUP BY symbol "
            "ORDER BY symbol"
        ).fetchall()

    def close(self) -> None:
        self._con.close()


def feature_status(path: Path, now_ns: int | None = None) -> list[dict[str, Any]]:
    """For ``ccf status``: per feature-set version and symbol, rows, last bucket and lag
    (wall clock minus the last bucket's end, s)."""
    return status_rows(list_sets(path), lambda s: FeatureStore(path, s, readonly=True), now_ns)


def status_rows(
    sets: Iterable[StoredSet], open_store: Callable[[StoredSet], Any], now_ns: int | None = None
) -> list[dict[str, Any]]:
    """:func:`feature_status` over any backend: ``open_store`` opens one set read-only."""
    now = time.time_ns() if now_ns is None else now_ns
    out = []
    for s in sets:
        store = open_store(s)
        try:
            for symbol, n, _, last in store.summary():
                out.append(
                    {
                        "set": s.name,
                        "version": s.version,
                        "symbol": symbol,
                        "rows": n,
                        "last_bucket": last,
                        "lag_s": round((now - last - s.bucket_ns) / 1e9, 3),
                    }
                )
        finally:
            store.close()
    return out
