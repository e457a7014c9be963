"""The monitor's tables in PostgreSQL: scores, pending, progress, accuracy, drift, alerts.

The same tables, keys and semantics as :class:`~ccf.monitoring.store.MonitorStore`:
one scoring pass (scores, unscorable predictions, the predictions still waiting,
the prediction store's id read up to) commits in one transaction; keyed rows are
written with ``ON CONFLICT DO NOTHING`` (SQLite's ``INSERT OR IGNORE``) or
``DO UPDATE`` (``INSERT OR REPLACE``). The row builders and the aggregate
arithmetic are the SQLite store's own (:func:`~ccf.monitoring.store.score_row`,
:func:`~ccf.monitoring.store.aggregates`, ...); only the SQL differs. SQLite takes
the bare columns of a ``max(ts)`` group from that row; here ``array_agg(... ORDER BY
ts DESC)`` does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ccf.config import PostgresConfig
from ccf.monitoring.drift import DriftResult
from ccf.monitoring.scoring import Aggregate
from ccf.monitoring.store import (
    MAX_INTERVALS,
    Alert,
    accuracy_row,
    aggregates,
    column_check_rows,
    drift_run_row,
    score_row,
    scores_frame,
    unscored_row,
)
from ccf.records import Prediction, Score
from ccf.serving.store import LEAD_COLUMNS, RAW
from ccf.storage.postgres.connect import describe
from ccf.storage.postgres.predictions import (
    PREDICTIONS,
    Col,
    Table,
    copy_insert,
    ident,
    open_connection,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_KEY = ("symbol", "target", "ts", "horizon", "role")
_INSIDE = [f"in_{i}" for i in range(MAX_INTERVALS)]  # as ccf.monitoring.store names them
_KEY_SQL = ", ".join(_KEY)


def _cols(spec: str) -> tuple[Col, ...]:
    """``"name kind, ..."`` as columns (the SQLite DDL, read once more)."""
    return tuple(Col(*c.split()) for c in spec.split(","))


PROGRESS = Table("progress", _cols("name text, value int"), key=("name",))
# a pending prediction is scored on its served quantiles: the raw ones and the lead times
# stay behind
PENDING = Table(
    "pending",
    tuple(c for c in PREDICTIONS.columns if c.name != RAW and c.name not in LEAD_COLUMNS),
    key=_KEY,
)
SCORES = Table(
    "scores",
    _cols(
        "exchange text, symbol text, target text, ts int, horizon int, role text, model text, "
        "version text, truth real, error real, abs_error real, sq_error real, "
        "naive_abs_error real, direction_hit real, inside reals, pinball real, signal int, "
        "signal_return real, scored_at int, target_ts int, flag text, nominal text, "
        + ", ".join(f"{c} real" for c in _INSIDE)
    ),
    key=_KEY,
    indexes=(("symbol", "ts"),),
)
UNSCORED = Table(
    "unscored",
    _cols(
        "exchange text, symbol text, target text, ts int, horizon int, target_ts int, "
        "role text, model text, version text, flag text, reason text, at int"
    ),
    key=_KEY,
    indexes=(("symbol", "ts"),),
)
ACCURACY = Table(
    "accuracy",
    _cols(
        "computed_at int, symbol text, role text, model text, version text, horizon int, "
        "window text, start_ts int, end_ts int, n int, mae real, rmse real, naive_mae real, "
        "mase real, direction real, pinball real, coverage text, signal_return real, "
        "trades int, return_per_trade real, unscored int"
    ),
    key=("computed_at", "symbol", "role", "horizon", "window"),
)
DRIFT_RUNS = Table(
    "drift_runs",
    _cols(
        "computed_at int, symbol text, feature_set text, reference text, ref_from int, "
        "ref_to int, ref_rows int, cur_from int, cur_to int, cur_rows int, columns int, "
        "drifted int, share real, html text, json text"
    ),
    key=("computed_at", "symbol"),
)
COLUMN_CHECKS = Table(
    "column_checks",
    _cols(
        "computed_at int, symbol text, column_name text, drift_method text, drift_score real, "
        "drift_threshold real, drifted int, missing_share real, ref_missing_share real, "
        "constant int, out_of_range_share real"
    ),
    key=("computed_at", "symbol", "column_name"),
)
ALERTS = Table(
    "alerts",
    _cols(
        "ts int, updated_at int, cleared_at int, part text, symbol text, kind text, "
        "message text, active int"
    ),
    key=(),
    identity="id",
    indexes=(("active", "symbol", "kind"),),
)
TABLES = (PROGRESS, PENDING, SCORES, UNSCORED, ACCURACY, DRIFT_RUNS, COLUMN_CHECKS, ALERTS)
_FRAMES = {"scores", "unscored", "accuracy", "drift_runs", "column_checks"}
_COUNTS = {"scores", "unscored", "pending", "accuracy", "alerts", "drift_runs"}
# SQLite returns its WITHOUT ROWID tables in key order, the others in insertion order
_FRAME_ORDER = {"scores": f" ORDER BY {_KEY_SQL}", "unscored": f" ORDER BY {_KEY_SQL}"}


def _last(column: str) -> str:
    """The value of ``column`` in the group's newest row (SQLite's bare column)."""
    return f"(array_agg({column} ORDER BY ts DESC, target))[1]"


_AGGREGATE_SQL = (
    f"SELECT role, horizon, max(ts), {_last('model')}, {_last('version')}, {_last('nominal')}, "
    "count(*), sum(abs_error), sum(sq_error), sum(naive_abs_error), sum(direction_hit), "
    "count(direction_hit), sum(pinball), count(pinball), sum(signal_return), "
    "sum((signal <> 0)::int), "  # sum(int) is a bigint; sum(bigint) would be a numeric
    + ", ".join(f"sum({c}), count({c})" for c in _INSIDE)
    + " FROM scores WHERE symbol = %s AND ts > %s AND ts <= %s "
    "GROUP BY role, horizon ORDER BY role, horizon"
)
_MISSED_SQL = (
    f"SELECT role, horizon, count(*), max(ts), {_last('model')}, {_last('version')} "
    "FROM unscored WHERE symbol = %s AND ts > %s AND ts <= %s "
    "GROUP BY role, horizon ORDER BY role, horizon"
)


def _nan(v: float | None) -> float:
    return math.nan if v is None else v


def _list(values: Sequence[float]) -> list[float]:
    return list(values)


class PgMonitorStore:
    """:class:`~ccf.monitoring.store.MonitorStore` on PostgreSQL: same methods, same answers."""

    def __init__(self, cfg: PostgresConfig, *, readonly: bool = False) -> None:
        self.cfg = cfg
        self.where = describe(cfg)
        self._con = open_connection(
            cfg, TABLES, readonly=readonly, part="monitor", hint="run `ccf monitor`"
        )

    # -- scoring progress ----------------------------------------------------------------------

    def cursor(self) -> int:
        """The prediction store's id read up to (0 before the first pass)."""
        row = self._con.execute("SELECT value FROM progress WHERE name = 'rowid'").fetchone()
        return 0 if row is None else row[0]

    def pending(self) -> list[Prediction]:
        """Predictions read but not resolved yet: their target bucket had not closed."""
        rows = self._con.execute(
            f"SELECT {PENDING.column_list} FROM pending ORDER BY {_KEY_SQL}", binary=True
        ).fetchall()
        return [
            Prediction(*r[:11], _nan(r[11]), _nan(r[12]), tuple(r[13]), tuple(r[14]), r[15])
            for r in rows
        ]

    def commit(
        self,
        scored: Sequence[tuple[Prediction, Score]],
        unscored: Sequence[tuple[Prediction, str]],
        waiting: Sequence[Prediction],
        cursor: int,
        at: int,
    ) -> int:
        """One scoring pass, all or nothing; returns how many scores were new."""
        resolved = [p for p, _ in (*scored, *unscored)]
        with self._con.transaction(), self._con.cursor() as cur:
            new = copy_insert(cur, SCORES, [score_row(p, s, _list) for p, s in scored])
            copy_insert(cur, UNSCORED, [unscored_row(p, why, at) for p, why in unscored])
            if resolved:
                cur.execute(
                    f"DELETE FROM pending WHERE ({_KEY_SQL}) IN (SELECT * FROM unnest("
                    "%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::text[]))",
                    [list(col) for col in zip(*(_key(p) for p in resolved), strict=True)],
                )
            copy_insert(cur, PENDING, [p[:16] for p in waiting])
            cur.execute(
                "INSERT INTO progress VALUES ('rowid', %s) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (cursor,),
            )
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
        row = self._con.execute(
            "SELECT max(t) FROM (SELECT max(ts) AS t FROM scores WHERE symbol = %(s)s "
            "UNION ALL SELECT max(ts) FROM unscored WHERE symbol = %(s)s) AS resolved",
            {"s": symbol},
        ).fetchone()
        return None if row is None else row[0]

    def aggregate(self, symbol: str, window: str, start: int, end: int) -> list[Aggregate]:
        """Per role and horizon, the scores with origin in (start, end]."""
        params = (symbol, start, end)
        rows = self._con.execute(_AGGREGATE_SQL, params).fetchall()
        missed = self._con.execute(_MISSED_SQL, params).fetchall()
        return aggregates(symbol, window, (start, end), rows, missed)

    def write_accuracy(self, computed_at: int, rows: Iterable[Aggregate]) -> None:
        with self._con.transaction(), self._con.cursor() as cur:
            copy_insert(cur, ACCURACY, [accuracy_row(computed_at, a) for a in rows], replace=True)

    # -- drift and quality ---------------------------------------------------------------------

    def write_drift(
        self, r: DriftResult, feature_set: str, now: int, html: Path | None, js: Path
    ) -> None:
        """One drift run: its summary row and a row per column."""
        with self._con.transaction(), self._con.cursor() as cur:
            copy_insert(
                cur, DRIFT_RUNS, [drift_run_row(r, feature_set, now, html, js)], replace=True
            )
            copy_insert(cur, COLUMN_CHECKS, column_check_rows(r, now), replace=True)

    def last_drift_at(self) -> int | None:
        """When the newest drift run was computed (a restart keeps the schedule)."""
        row = self._con.execute("SELECT max(computed_at) FROM drift_runs").fetchone()
        return None if row is None else row[0]

    # -- alerts --------------------------------------------------------------------------------

    def raise_alert(self, part: str, symbol: str, kind: str, message: str, now: int) -> bool:
        """Record that a check failed; True when the alert is new (not already active)."""
        with self._con.transaction():
            row = self._con.execute(
                "SELECT id FROM alerts WHERE active = 1 AND part = %s AND symbol = %s "
                "AND kind = %s",
                (part, symbol, kind),
            ).fetchone()
            if row is not None:
                self._con.execute(
                    "UPDATE alerts SET updated_at = %s, message = %s WHERE id = %s",
                    (now, message, row[0]),
                )
                return False
            self._con.execute(
                "INSERT INTO alerts (ts, updated_at, cleared_at, part, symbol, kind, message, "
                "active) VALUES (%s, %s, NULL, %s, %s, %s, %s, 1)",
                (now, now, part, symbol, kind, message),
            )
        log.debug("part=monitor symbol=%s alert=%s raised in %s", symbol, kind, self.where)
        return True

    def clear_alert(self, part: str, symbol: str, kind: str, now: int) -> bool:
        """The check passed: an active alert becomes inactive; True when one was active."""
        cur = self._con.execute(
            "UPDATE alerts SET active = 0, cleared_at = %s "
            "WHERE active = 1 AND part = %s AND symbol = %s AND kind = %s",
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

        if table not in _FRAMES:
            raise ValueError(f"no table {table!r} in the monitor store")
        where, params = ("WHERE symbol = %s", (symbol,)) if symbol else ("", ())
        with self._con.cursor(binary=True) as cur:
            cur.execute(f"SELECT * FROM {table} {where}{_FRAME_ORDER.get(table, '')}", params)
            names = [d.name for d in cur.description or ()]
            # what pandas.read_sql_query does with SQLite's rows: the same dtypes
            df = pd.DataFrame.from_records(cur.fetchall(), columns=names, coerce_float=True)
        if table == "scores":
            df = scores_frame(df, [tuple(v) for v in df["inside"]])
        return df

    def scores(self) -> list[Score]:
        rows = self._con.execute(
            f"SELECT {', '.join(map(ident, Score._fields))} FROM scores "
            "ORDER BY symbol, ts, horizon, role, target",
            binary=True,
        ).fetchall()
        return [Score(*r[:13], _nan(r[13]), tuple(r[14]), _nan(r[15]), *r[16:]) for r in rows]

    def count(self, table: str) -> int:
        if table not in _COUNTS:
            raise ValueError(f"no table {table!r} in the monitor store")
        row = self._con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return 0 if row is None else row[0]

    def close(self) -> None:
        self._con.close()


def _key(p: Prediction) -> tuple[str, str, int, int, str]:
    return (p.symbol, p.target, p.ts, p.horizon, p.role)
