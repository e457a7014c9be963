"""monitor.sqlite: scores, rolling accuracy, drift and quality results, alerts.

Scores and unscorable predictions are keyed like predictions, (symbol, target,
origin, horizon, role), and written with ``INSERT OR IGNORE``. One scoring pass
commits its scores, its unscorable predictions, the predictions still waiting
for their target bucket (``pending``) and the prediction store's rowid it read
up to (``progress``) in one transaction: a monitor killed at any point resumes
from a consistent state and scores every prediction exactly once.

The other tables are time series the dashboard reads: ``accuracy`` (one row per
computation, symbol, role, horizon and window), ``drift_runs`` and
``column_checks`` (one row per drift run and symbol, and per column), and
``alerts`` (one row per raised alert, ``active`` until its check passes again).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ccf.monitoring.drift import METHOD, DriftResult
from ccf.monitoring.scoring import Aggregate, Sums, central_intervals, finish
from ccf.records import Prediction, Score
from ccf.storage.sqlite import connect

if TYPE_CHECKING:
    import pandas as pd

MAX_INTERVALS = 8  # central intervals kept per score (17 quantiles); more are not aggregated
_KEY = "symbol, target, ts, horizon, role"
_INSIDE = [f"in_{i}" for i in range(MAX_INTERVALS)]
_SCORE_COLS = (*Score._fields, "target_ts", "flag", "nominal", *_INSIDE)
_PRED_COLS = Prediction._fields[:16]  # pending forecasts keep no lead times
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS progress (name TEXT PRIMARY KEY, value INTEGER)",
    "CREATE TABLE IF NOT EXISTS pending (exchange TEXT, symbol TEXT, target TEXT, ts INTEGER, "
    "horizon INTEGER, target_ts INTEGER, role TEXT, model TEXT, version TEXT, made_at INTEGER, "
    "watermark INTEGER, last_value REAL, point REAL, levels BLOB, quantiles BLOB, flag TEXT, "
    f"PRIMARY KEY ({_KEY})) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS scores (exchange TEXT, symbol TEXT, target TEXT, ts INTEGER, "
    "horizon INTEGER, role TEXT, model TEXT, version TEXT, truth REAL, error REAL, "
    "abs_error REAL, sq_error REAL, naive_abs_error REAL, direction_hit REAL, inside BLOB, "
    "pinball REAL, signal INTEGER, signal_return REAL, scored_at INTEGER, target_ts INTEGER, "
    f"flag TEXT, nominal TEXT, {', '.join(c + ' REAL' for c in _INSIDE)}, "
    f"PRIMARY KEY ({_KEY})) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS scores_time ON scores (symbol, ts)",
    "CREATE TABLE IF NOT EXISTS unscored (exchange TEXT, symbol TEXT, target TEXT, ts INTEGER, "
    "horizon INTEGER, target_ts INTEGER, role TEXT, model TEXT, version TEXT, flag TEXT, "
    f"reason TEXT, at INTEGER, PRIMARY KEY ({_KEY})) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS unscored_time ON unscored (symbol, ts)",
    "CREATE TABLE IF NOT EXISTS accuracy (computed_at INTEGER, symbol TEXT, role TEXT, "
    "model TEXT, version TEXT, horizon INTEGER, window TEXT, start_ts INTEGER, end_ts INTEGER, "
    "n INTEGER, mae REAL, rmse REAL, naive_mae REAL, mase REAL, direction REAL, pinball REAL, "
    "coverage TEXT, signal_return REAL, trades INTEGER, return_per_trade REAL, "
    "unscored INTEGER, PRIMARY KEY (computed_at, symbol, role, horizon, window))",
    "CREATE TABLE IF NOT EXISTS drift_runs (computed_at INTEGER, symbol TEXT, "
    "feature_set TEXT, reference TEXT, ref_from INTEGER, ref_to INTEGER, ref_rows INTEGER, "
    "cur_from INTEGER, cur_to INTEGER, cur_rows INTEGER, columns INTEGER, drifted INTEGER, "
    "share REAL, html TEXT, json TEXT, PRIMARY KEY (computed_at, symbol))",
    "CREATE TABLE IF NOT EXISTS column_checks (computed_at INTEGER, symbol TEXT, "
    "column_name TEXT, drift_method TEXT, drift_score REAL, drift_threshold REAL, "
    "drifted INTEGER, missing_share REAL, ref_missing_share REAL, constant INTEGER, "
    "out_of_range_share REAL, PRIMARY KEY (computed_at, symbol, column_name))",
    "CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY, ts INTEGER, "
    "updated_at INTEGER, cleared_at INTEGER, part TEXT, symbol TEXT, kind TEXT, "
    "message TEXT, active INTEGER)",
    "CREATE INDEX IF NOT EXISTS alerts_active ON alerts (active, symbol, kind)",
)


class Alert(NamedTuple):
    id: int
    ts: int  # raised, wall clock ns
    updated_at: int  # the last check that found it
    cleared_at: int | None
    part: str
    symbol: str
    kind: str  # drift, missing
    message: str
    active: bool


def _pack(values: Sequence[float]) -> bytes:
    return np.asarray(values, dtype="<f8").tobytes()


def _unpack(blob: bytes) -> tuple[float, ...]:
    return tuple(np.frombuffer(blob, dtype="<f8").tolist())


def _nan(v: float | None) -> float:
    """SQLite stores NaN as NULL: read it back as NaN."""
    return math.nan if v is None else v


def _key(p: Prediction | Score) -> tuple[str, str, int, int, str]:
    return (p.symbol, p.target, p.ts, p.horizon, p.role)


class MonitorStore:
    """The monitor's tables; one writer (``ccf monitor``), any number of readers."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise FileNotFoundError(f"no monitor store at {self.path}: run `ccf monitor`")
        self._con = connect(self.path, readonly=readonly)
        if not readonly:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                for sql in _SCHEMA:
                    self._con.execute(sql)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise

    # -- scoring progress ----------------------------------------------------------------------

    def cursor(self) -> int:
        """The prediction store's rowid read up to (0 before the first pass)."""
        row = self._con.execute("SELECT value FROM progress WHERE name = 'rowid'").fetchone()
        return 0 if row is None else row[0]

    def pending(self) -> list[Prediction]:
        """Predictions read but not resolved yet: their target bucket had not closed."""
        rows = self._con.execute(f"SELECT {', '.join(_PRED_COLS)} FROM pending").fetchall()
        return [Prediction(*r[:13], _unpack(r[13]), _unpack(r[14]), r[15]) for r in rows]

    def commit(
        self,
        scored: Sequence[tuple[Prediction, Score]],
        unscored: Sequence[tuple[Prediction, str]],
        waiting: Sequence[Prediction],
        cursor: int,
        at: int,
    ) -> int:
        """One scoring pass, all or nothing; returns how many scores were new."""
        con = self._con
        before = con.total_changes
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany(
                f"INSERT OR IGNORE INTO scores ({', '.join(_SCORE_COLS)}) "
                f"VALUES ({', '.join('?' * len(_SCORE_COLS))})",
                [score_row(p, s) for p, s in scored],
            )
            new = con.total_changes - before
            con.executemany(
                "INSERT OR IGNORE INTO unscored VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [unscored_row(p, reason, at) for p, reason in unscored],
            )
            con.executemany(
                f"DELETE FROM pending WHERE ({_KEY}) = (?, ?, ?, ?, ?)",
                [_key(p) for p, _ in (*scored, *unscored)],
            )
            con.executemany(
                f"INSERT OR IGNORE INTO pending VALUES ({', '.join('?' * len(_PRED_COLS))})",
                [(*p[:13], _pack(p.levels), _pack(p.quantiles), p.flag) for p in waiting],
            )
            con.execute("INSERT OR REPLACE INTO progress VALUES ('rowid', ?)", (cursor,))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return new

    # -- rolling aggregates --------------------------------------------------------------------

    def symbols(self) -> list[str]:
        """Symbols with a resolved prediction (scored or not)."""
        rows = self._con.execute(
            "SELECT DISTINCT symbol FROM scores UNION SELECT DISTINCT symbol FROM unscored"
        ).fetchall()
        return sorted(r[0] for r in rows)

    def newest_origin(self, symbol: str) -> int | None:
        """The newest origin resolved (scored or not) for ``symbol``: where windows end."""
        return self._con.execute(
            "SELECT max(t) FROM (SELECT max(ts) AS t FROM scores WHERE symbol = ?1 "
            "UNION ALL SELECT max(ts) FROM unscored WHERE symbol = ?1)",
            (symbol,),
        ).fetchone()[0]

    def aggregate(self, symbol: str, window: str, start: int, end: int) -> list[Aggregate]:
        """Per role and horizon, the scores with origin in (start, end]."""
        inside = ", ".join(f"sum({c}), count({c})" for c in _INSIDE)
        # SQLite takes the bare columns (model, version, nominal) from the max(ts) row
        rows = self._con.execute(
            "SELECT role, horizon, max(ts), model, version, nominal, count(*), sum(abs_error), "
            "sum(sq_error), sum(naive_abs_error), sum(direction_hit), count(direction_hit), "
            f"sum(pinball), count(pinball), sum(signal_return), sum(signal != 0), {inside} "
            "FROM scores WHERE symbol = ? AND ts > ? AND ts <= ? GROUP BY role, horizon",
            (symbol, start, end),
        ).fetchall()
        missed = self._con.execute(
            "SELECT role, horizon, count(*), max(ts), model, version FROM unscored "
            "WHERE symbol = ? AND ts > ? AND ts <= ? GROUP BY role, horizon",
            (symbol, start, end),
        ).fetchall()
        return aggregates(symbol, window, (start, end), rows, missed)

    def write_accuracy(self, computed_at: int, rows: Iterable[Aggregate]) -> None:
        self._con.executemany(
            "INSERT OR REPLACE INTO accuracy VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [accuracy_row(computed_at, a) for a in rows],
        )

    # -- drift and quality ---------------------------------------------------------------------

    def write_drift(
        self, r: DriftResult, feature_set: str, now: int, html: Path | None, js: Path
    ) -> None:
        """One drift run: its summary row and a row per column."""
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute(
                "INSERT OR REPLACE INTO drift_runs VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                drift_run_row(r, feature_set, now, html, js),
            )
            con.executemany(
                "INSERT OR REPLACE INTO column_checks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                column_check_rows(r, now),
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def last_drift_at(self) -> int | None:
        """When the newest drift run was computed (a restart keeps the schedule)."""
        return self._con.execute("SELECT max(computed_at) FROM drift_runs").fetchone()[0]

    # -- alerts --------------------------------------------------------------------------------

    def raise_alert(self, part: str, symbol: str, kind: str, message: str, now: int) -> bool:
        """Record that a check failed; True when the alert is new (not already active)."""
        row = self._con.execute(
            "SELECT id FROM alerts WHERE active = 1 AND part = ? AND symbol = ? AND kind = ?",
            (part, symbol, kind),
        ).fetchone()
        if row is not None:
            self._con.execute(
                "UPDATE alerts SET updated_at = ?, message = ? WHERE id = ?", (now, message, row[0])
            )
            return False
        self._con.execute(
            "INSERT INTO alerts (ts, updated_at, cleared_at, part, symbol, kind, message, active) "
            "VALUES (?, ?, NULL, ?, ?, ?, ?, 1)",
            (now, now, part, symbol, kind, message),
        )
        return True

    def clear_alert(self, part: str, symbol: str, kind: str, now: int) -> bool:
        """The check passed: an active alert becomes inactive; True when one was active."""
        cur = self._con.execute(
            "UPDATE alerts SET active = 0, cleared_at = ? "
            "WHERE active = 1 AND part = ? AND symbol = ? AND kind = ?",
            (now, part, symbol, kind),
        )
        return cur.rowcount > 0

    def alerts(self, active_only: bool = False) -> list[Alert]:
        where = "WHERE active = 1" if active_only else ""
        rows = self._con.execute(f"SELECT * FROM alerts {where} ORDER BY id").fetchall()
        return [Alert(*r[:8], bool(r[8])) for r in rows]

    # -- reads for the dashboard and tests -----------------------------------------------------

    def frame(self, table: str, symbol: str | None = None) -> pd.DataFrame:
        """A whole table (of one symbol) as a frame; scores get one column per interval."""
        import pandas as pd

        if table not in {"scores", "unscored", "accuracy", "drift_runs", "column_checks"}:
            raise ValueError(f"no table {table!r} in the monitor store")
        where, params = ("WHERE symbol = ?", (symbol,)) if symbol else ("", ())
        df = pd.read_sql_query(f"SELECT * FROM {table} {where}", self._con, params=params)
        if table == "scores":
            df = scores_frame(df, [_unpack(b) for b in df["inside"]])
        return df

    def scores(self) -> list[Score]:
        rows = self._con.execute(
            f"SELECT {', '.join(Score._fields)} FROM scores ORDER BY symbol, ts, horizon, role"
        ).fetchall()
        return [Score(*r[:13], _nan(r[13]), _unpack(r[14]), _nan(r[15]), *r[16:]) for r in rows]

    def count(self, table: str) -> int:
        if table not in {"scores", "unscored", "pending", "accuracy", "alerts", "drift_runs"}:
            raise ValueError(f"no table {table!r} in the monitor store")
        return self._con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    def close(self) -> None:
        self._con.close()


# -- rows in, rows out: shared with the PostgreSQL store (ccf.storage.postgres.monitor) --------


def score_row(
    p: Prediction, s: Score, pack: Callable[[Sequence[float]], Any] = _pack
) -> tuple[Any, ...]:
    """A ``scores`` row (``_SCORE_COLS``); ``pack`` stores ``inside`` (a blob here, an array
    in PostgreSQL)."""
    intervals = central_intervals(p.levels)[:MAX_INTERVALS]
    nominal = ",".join(f"{nom:g}" for _, _, nom in intervals)
    ins = list(s.inside[:MAX_INTERVALS]) + [None] * (MAX_INTERVALS - len(s.inside))
    return (*s[:14], pack(s.inside), *s[15:], p.target_ts, p.flag, nominal, *ins)


def unscored_row(p: Prediction, reason: str, at: int) -> tuple[Any, ...]:
    return (*p[:6], p.role, p.model, p.version, p.flag, reason, at)


def aggregates(
    symbol: str,
    window: str,
    span: tuple[int, int],
    rows: Iterable[Sequence[Any]],
    missed_rows: Iterable[Sequence[Any]],
) -> list[Aggregate]:
    """The window's aggregates from the grouped sums of ``scores`` (``rows``: role, horizon,
    max(ts), model, version, nominal, count, sums and counts as :meth:`MonitorStore.aggregate`
    selects them) and the grouped ``unscored`` rows (role, horizon, count, max(ts), model,
    version). Both backends run the same SQL shape, so the arithmetic is written once."""
    start, end = span
    missed = {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in missed_rows}
    out = []
    for r in rows:
        role, horizon, _, model, version, nominal = r[:6]
        n, ae, se, nae, hits, directed, pb, pbn, ret, trades = r[6:16]
        noms = [float(x) for x in nominal.split(",")] if nominal else []
        k = len(noms)
        ins = r[16 : 16 + 2 * k]
        sums = Sums(
            n,
            ae,
            se,
            nae,
            hits or 0.0,
            directed,
            pb or 0.0,
            pbn,
            tuple(x or 0.0 for x in ins[0::2]),
            tuple(ins[1::2]),
            ret,
            trades,
        )
        bad = missed.pop((role, horizon), (0, None, None, None))[0]
        out.append(
            finish((symbol, role, model, version, horizon), window, (start, end), sums, noms, bad)
        )
    for (role, horizon), (bad, _, model, version) in missed.items():
        empty = Sums(0, 0.0, 0.0, 0.0, 0.0, 0, 0.0, 0, (), (), 0.0, 0)
        out.append(
            finish((symbol, role, model, version, horizon), window, (start, end), empty, [], bad)
        )
    return out


def accuracy_row(computed_at: int, a: Aggregate) -> tuple[Any, ...]:
    """An ``accuracy`` row (the table's column order)."""
    return (
        computed_at,
        a.symbol,
        a.role,
        a.model,
        a.version,
        a.horizon,
        a.window,
        a.start_ts,
        a.end_ts,
        a.n,
        a.mae,
        a.rmse,
        a.naive_mae,
        a.mase,
        a.direction,
        a.pinball,
        json.dumps(a.coverage),
        a.signal_return,
        a.trades,
        a.return_per_trade,
        a.unscored,
    )


def drift_run_row(
    r: DriftResult, feature_set: str, now: int, html: Path | None, js: Path
) -> tuple[Any, ...]:
    """A ``drift_runs`` row (the table's column order)."""
    return (
        now,
        r.symbol,
        feature_set,
        r.reference.label,
        r.reference.start,
        r.reference.end,
        len(r.reference.frame),
        r.current.start,
        r.current.end,
        len(r.current.frame),
        len(r.drift_columns),
        len(r.drifted),
        r.share,
        None if html is None else str(html),
        str(js),
    )


def column_check_rows(r: DriftResult, now: int) -> list[tuple[Any, ...]]:
    """The ``column_checks`` rows of a drift run, one per column."""
    return [
        (
            now,
            r.symbol,
            c.column,
            None if c.drifted is None else METHOD,
            c.drift_score,
            None if c.drifted is None or not math.isfinite(c.threshold) else c.threshold,
            c.drifted,
            c.missing_share,
            c.ref_missing_share,
            c.constant,
            c.out_of_range_share,
        )
        for c in r.columns
    ]


def scores_frame(df: pd.DataFrame, inside: list[tuple[float, ...]]) -> pd.DataFrame:
    """The ``scores`` table as :meth:`MonitorStore.frame` shows it: the per-interval columns
    folded back into ``inside`` (one tuple per row)."""
    df = df.drop(columns=[*_INSIDE, "inside"]).assign(inside=inside)
    df["direction_hit"] = df["direction_hit"].astype(float)
    return df
