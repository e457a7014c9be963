"""The parts' heartbeats (``part_status`` in the raw store) and the metrics they carry.

Each part writes its state and a ``detail`` JSON every few seconds; ``detail["metrics"]``
is its Prometheus snapshot as ``name{label=value,...} -> value`` (see
:meth:`ccf.monitoring.metrics.PartMetrics.snapshot`). Parsing those keys gives per part
throughput, lag per stage, reconnects, dead letters, CPU and memory without scraping.

>>> parse_key("ccf_lag_seconds_sum{stage=receive,symbol=btcusdt}")
('ccf_lag_seconds_sum', {'stage': 'receive', 'symbol': 'btcusdt'})
"""

from __future__ import annotations

import json

import pandas as pd

from ccf.status import STALE_HEARTBEAT_S, pid_alive
from ccf.ui.data.db import Store, readonly, to_time
from ccf.ui.data.units import readable_s


def parse_key(key: str) -> tuple[str, dict[str, str]]:
    """A snapshot key -> (metric name, labels)."""
    name, _, rest = key.partition("{")
    labels = dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if "=" in p)
    return name, labels


def heartbeats(store: Store, now_ns: int) -> pd.DataFrame:
    """One row per part: state (running, stopped, not responding), pid, since, heartbeat
    age (s) and its detail."""
    cols = ["part", "state", "pid", "since", "heartbeat_age_s", "uptime_s", "detail"]
    with readonly(store) as r:
        if r is None or "part_status" not in r.tables():
            return pd.DataFrame(columns=cols)
        df = r.frame("SELECT * FROM part_status ORDER BY part")
    df["heartbeat_age_s"] = (now_ns - df["heartbeat_at"]) / 1e9
    running = (
        (df["state"] == "running")
        & df["pid"].map(pid_alive)
        & (df["heartbeat_age_s"] < STALE_HEARTBEAT_S)
    )
    df["state"] = df["state"].where(running | (df["state"] != "running"), "not responding")
    df["since"] = to_time(df["started_at"])
    df["uptime_s"] = (df["heartbeat_at"] - df["started_at"]) / 1e9
    df["detail"] = [json.loads(d) if d else {} for d in df["detail"]]
    return df[cols]


def _metrics(detail: dict) -> list[tuple[str, dict[str, str], float]]:
    return [(*parse_key(k), v) for k, v in (detail.get("metrics") or {}).items()]


def part_figures(beats: pd.DataFrame) -> pd.DataFrame:
    """Per part: events in and out (totals and per second since it started), reconnects,
    dead letters, gaps, resyncs, CPU and memory."""
    rows = []
    for _, b in beats.iterrows():
        total: dict[str, float] = {}
        for name, _, v in _metrics(b["detail"]):
            total[name] = total.get(name, 0.0) + v
        up_s = max(b["uptime_s"], 1e-9)
        rows.append(
            {
                "part": b["part"],
                "state": b["state"],
                "events_in": total.get("ccf_events_in_total", 0.0),
                "events_out": total.get("ccf_events_out_total", 0.0),
                "in_per_s": total.get("ccf_events_in_total", 0.0) / up_s,
                "out_per_s": total.get("ccf_events_out_total", 0.0) / up_s,
                "reconnects": total.get("ccf_reconnects_total", 0.0),
                "dead_letters": total.get("ccf_dead_letters_total", 0.0),
                "gaps": total.get("ccf_gaps_total", 0.0),
                "resyncs": total.get("ccf_resyncs_total", 0.0),
                "cpu_pct": _percent(total.get("ccf_process_cpu_usage_ratio")),
                "memory_mb": total.get("ccf_process_resident_memory_bytes", float("nan")) / 2**20,
                "threads": total.get("ccf_process_threads"),
            }
        )
    return pd.DataFrame(rows)


def leads(beats: pd.DataFrame) -> pd.DataFrame:
    """Lead time of the stored forecasts per part, stage and symbol, from the heartbeats:
    event-clock delay after the origin bucket's end (p50/p99), forecasts stored after
    their target bucket closed, and the least share of a horizon left."""
    rows = []
    for _, b in beats.iterrows():
        detail = b["detail"] if isinstance(b["detail"], dict) else {}
        for sym, d in (detail.get("symbols") or {}).items():
            lead = d.get("lead") if isinstance(d, dict) else None
            if not lead or not lead.get("n"):
                continue
            rows.append(
                {
                    "part": b["part"],
                    "stage": "forecast stored",
                    "symbol": sym,
                    "delay_p50": readable_s(lead["delay_p50_s"]),
                    "delay_p99": readable_s(lead["delay_p99_s"]),
                    "after_target": sum(lead["after_target"].values()),
                    "horizon_left_min": lead["horizon_left_min"],
                    "n": lead["n"],
                }
            )
    cols = ["part", "stage", "symbol", "delay_p50", "delay_p99", "after_target"]
    return pd.DataFrame(rows, columns=[*cols, "horizon_left_min", "n"])


def lags(beats: pd.DataFrame) -> pd.DataFrame:
    """Mean delay from exchange time to each stage, per part, stage and symbol (s)."""
    sums: dict[tuple[str, str, str], list[float]] = {}
    for _, b in beats.iterrows():
        for name, labels, v in _metrics(b["detail"]):
            if name in ("ccf_lag_seconds_sum", "ccf_lag_seconds_count"):
                key = (b["part"], labels.get("stage", "-"), labels.get("symbol", "-"))
                pair = sums.setdefault(key, [0.0, 0.0])
                pair[0 if name.endswith("_sum") else 1] += v
    rows = [
        {
            "part": p,
            "stage": st,
            "symbol": sym,
            "mean_lag": readable_s(s / n if n else None),
            "mean_lag_s": s / n if n else None,
            "n": int(n),
        }
        for (p, st, sym), (s, n) in sorted(sums.items())
    ]
    return pd.DataFrame(rows, columns=["part", "stage", "symbol", "mean_lag", "mean_lag_s", "n"])


def _percent(ratio: float | None) -> float | None:
    """The heartbeat's CPU ratio (0-1 of the machine) as the percent the page shows."""
    return None if ratio is None else ratio * 100
