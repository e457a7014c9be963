"""The prediction store: one SQLite table of :class:`~ccf.records.Prediction` rows.

Keyed by (symbol, target, origin bucket, horizon, role) and written with
``INSERT OR IGNORE``: a restarted predictor, or one that switches models
between two buckets, can never forecast a bucket twice. Quantiles are packed
as a little-endian float64 blob. Rows also get a rowid, so a follower (the
monitor, the dashboard) reads what is new with one indexed range read. Each row
carries its lead time (``delay_s``, ``horizon_left``: :mod:`ccf.serving.lead`);
a store made before those columns gets them added, NULL (NaN) in the old rows.

``quantiles`` are the ones served (calibrated, :mod:`ccf.ml.calibration`, when
``serve.calibration.method`` is not ``none``), what every reader scores and shows;
``raw_quantiles`` are the model's own (NULL in rows stored before the column was
added: those served the model's own). A store made before is given the column by
the first writer that opens it; readers of an older file read the raw as served.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from ccf.records import Prediction
from ccf.storage.sqlite import connect, symbol_time_filter

if TYPE_CHECKING:
    import pandas as pd

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS predictions (exchange TEXT, symbol TEXT, target TEXT, "
    "ts INTEGER, horizon INTEGER, target_ts INTEGER, role TEXT, model TEXT, version TEXT, "
    "made_at INTEGER, watermark INTEGER, last_value REAL, point REAL, levels BLOB, "
    "quantiles BLOB, flag TEXT, delay_s REAL, horizon_left REAL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS predictions_key "
    "ON predictions (symbol, target, ts, horizon, role)",
    "CREATE INDEX IF NOT EXISTS predictions_target_ts ON predictions (target_ts)",
    "CREATE TABLE IF NOT EXISTS serving (role TEXT PRIMARY KEY, model TEXT, version TEXT, "
    "kind TEXT, trained_from INTEGER, trained_to INTEGER, loaded_at INTEGER, from_ts INTEGER, "
    "spec TEXT)",
)
COLUMNS = Prediction._fields
LEAD_COLUMNS = ("delay_s", "horizon_left")  # the last two; NaN is stored as NULL
RAW = "raw_quantiles"  # the model's own quantiles, beside the served (calibrated) ones
Kind = Literal["calibrated", "raw"]  # which quantiles a reader wants


class Resolved(NamedTuple):
    """A stored forecast as the calibration replays it: both quantile sets."""

    target: str
    ts: int
    horizon: int
    version: str  # of the model that made it
    quantiles: tuple[float, ...]  # served
    raw: tuple[float, ...]  # the model's own


class ServingInfo(NamedTuple):
    """The model behind a role: its training window is the drift monitor's reference."""

    role: str
    model: str
    version: str
    kind: str
    trained_from: int | None  # first and last training origin, ns
    trained_to: int | None
    loaded_at: int  # wall clock, ns
    from_ts: int | None  # the first origin bucket it forecast
    spec: str  # DatasetSpec JSON


def _pack(values: Sequence[float]) -> bytes:
    return np.asarray(values, dtype="<f8").tobytes()


def _unpack(blob: bytes) -> tuple[float, ...]:
    return tuple(np.frombuffer(blob, dtype="<f8").tolist())


class PredictionStore:
    """Idempotent writes of predictions; reads by symbol and time or by rowid."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise FileNotFoundError(f"no prediction store at {self.path}: run `ccf predict`")
        self._con = connect(self.path, readonly=readonly)
        if not readonly:
            for sql in _SCHEMA:
                self._con.execute(sql)
            have = {r[1] for r in self._con.execute("PRAGMA table_info(predictions)")}
            for col in LEAD_COLUMNS:
                if col not in have:  # a store from before lead times
                    try:
                        self._con.execute(f"ALTER TABLE predictions ADD COLUMN {col} REAL")
                    except sqlite3.OperationalError as e:  # another writer added it just now
                        if "duplicate column" not in str(e):
                            raise
            if not self._has_raw():  # a store made before calibration: add the column
                try:
                    self._con.execute(f"ALTER TABLE predictions ADD COLUMN {RAW} BLOB")
                except sqlite3.OperationalError as e:  # another writer added it just now
                    if "duplicate column" not in str(e):
                        raise
        elif not self._con.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'predictions'"
        ).fetchone():
            # the writer makes the file a moment before its tables: not there yet either
            self._con.close()
            raise FileNotFoundError(f"no predictions in {self.path} yet: `ccf predict` is starting")
        self._raw = self._has_raw()
        have = {r[1] for r in self._con.execute("PRAGMA table_info(predictions)")}
        self._lead = all(c in have for c in LEAD_COLUMNS)  # a reader of an older file: NaN
        self._insert = (
            f"INSERT OR IGNORE INTO predictions ({', '.join(COLUMNS)}, {RAW}) "
            f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
        )

    def _has_raw(self) -> bool:
        cols = self._con.execute("PRAGMA table_info(predictions)").fetchall()
        return any(c[1] == RAW for c in cols)

    def _select(self, kind: Kind) -> str:
        """The columns of a record, with the quantiles of ``kind`` in the quantiles' place."""
        cols = list(COLUMNS)
        if kind == "raw" and self._raw:
            cols[COLUMNS.index("quantiles")] = f"coalesce({RAW}, quantiles)"
        if not self._lead:
            for c in LEAD_COLUMNS:
                cols[COLUMNS.index(c)] = "NULL"
        return ", ".join(cols)

    def write(
        self, rows: Sequence[Prediction], raw: Sequence[Sequence[float]] | None = None
    ) -> int:
        """Store in one transaction; returns how many were new. ``raw``: per row the model's
        own quantiles where ``quantiles`` are calibrated (default: the same)."""
        if not rows:
            return 0
        if raw is not None and len(raw) != len(rows):
            raise ValueError(f"write: {len(raw)} raw quantile rows for {len(rows)} predictions")
        con = self._con
        before = con.total_changes
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany(
                self._insert,
                [
                    (
                        *r[:13],
                        _pack(r.levels),
                        _pack(r.quantiles),
                        r.flag,
                        r[16],
                        r[17],
                        _pack(r.quantiles if raw is None else raw[i]),
                    )
                    for i, r in enumerate(rows)
                ],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return con.total_changes - before

    def set_serving(self, info: ServingInfo) -> None:
        """Record which model serves a role from which bucket on (one row per role)."""
        self._con.execute(
            "INSERT OR REPLACE INTO serving VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", tuple(info)
        )

    def serving(self) -> dict[str, ServingInfo]:
        """Role -> the model serving it now (what the monitor takes its reference from)."""
        rows = self._con.execute("SELECT * FROM serving").fetchall()
        return {r[0]: ServingInfo(*r) for r in rows}

    def last_ts(self, symbol: str, role: str = "champion") -> int | None:
        """The newest origin bucket forecast for ``symbol`` by ``role``: where a restart resumes."""
        return self._con.execute(
            "SELECT max(ts) FROM predictions WHERE symbol = ? AND role = ?", (symbol, role)
        ).fetchone()[0]

    def resolved(self, symbol: str, role: str, start_ns: int, end_ns: int) -> list[Resolved]:
        """``role``'s forecasts of ``symbol`` with origin in [start, end), oldest first, with
        both quantile sets: what the calibration replays after a restart."""
        raw = f"coalesce({RAW}, quantiles)" if self._raw else "quantiles"
        rows = self._con.execute(
            f"SELECT target, ts, horizon, version, quantiles, {raw} FROM predictions "
            "WHERE symbol = ? AND role = ? AND ts >= ? AND ts < ? ORDER BY ts, horizon, target",
            (symbol, role, start_ns, end_ns),
        ).fetchall()
        return [Resolved(r[0], r[1], r[2], r[3], _unpack(r[4]), _unpack(r[5])) for r in rows]

    def since(self, rowid: int, limit: int = 100_000) -> tuple[list[Prediction], int]:
        """Rows stored after ``rowid`` (oldest first) and the last rowid read."""
        rows = self._con.execute(
            f"SELECT rowid, {self._select('calibrated')} FROM predictions WHERE rowid > ? "
            "ORDER BY rowid LIMIT ?",
            (rowid, limit),
        ).fetchall()
        out = [_record(r[1:]) for r in rows]
        return out, (rows[-1][0] if rows else rowid)

    def frame(
        self,
        symbols: Sequence[str] | None = None,
        start_ns: int | None = None,
        end_ns: int | None = None,
        role: str | None = None,
        kind: Kind = "calibrated",
    ) -> pd.DataFrame:
        """Predictions with origin in [start, end) as a frame, one quantile column each:
        the served (``calibrated``) quantiles, or the model's own (``raw``)."""
        where, params = symbol_time_filter(symbols, start_ns, end_ns)
        if role is not None:
            where.append("role = ?")
            params.append(role)
        rows = self._con.execute(
            f"SELECT {self._select(kind)} FROM predictions WHERE {' AND '.join(where)} "
            "ORDER BY symbol, ts, horizon, role",
            params,
        ).fetchall()
        return predictions_frame([_record(r) for r in rows])

    def count(self) -> int:
        return self._con.execute("SELECT count(*) FROM predictions").fetchone()[0]

    def close(self) -> None:
        self._con.close()


def predictions_frame(recs: Sequence[Prediction]) -> pd.DataFrame:
    """Records as the frame ``frame`` returns (one ``q<level>`` column per quantile): one
    function for every backend, so a dashboard reads the same frame from each."""
    import pandas as pd

    df = pd.DataFrame(
        [r[:13] + (r.flag, r[16], r[17]) for r in recs],
        columns=[*COLUMNS[:13], "flag", *LEAD_COLUMNS],
    )
    if recs:
        levels = recs[0].levels
        q = np.array([r.quantiles for r in recs])
        for i, lv in enumerate(levels):
            df[f"q{lv:g}"] = q[:, i]
    return df


_NAN = float("nan")


def _record(r: Sequence) -> Prediction:
    """A row back as a record; SQLite keeps NaN as NULL, so NULL floats are NaN again."""
    point = _NAN if r[12] is None else r[12]
    last = _NAN if r[11] is None else r[11]
    delay = _NAN if r[16] is None else r[16]
    left = _NAN if r[17] is None else r[17]
    return Prediction(*r[:11], last, point, _unpack(r[13]), _unpack(r[14]), r[15], delay, left)
