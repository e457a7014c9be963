"""Events/s end to end: the embedded backend against Kafka + PostgreSQL, and 1 -> 2 workers.

    python bench/bench_scale.py                 # all variants, 3 repeats each
    python bench/bench_scale.py --repeats 1 --variants kafka-2
    python bench/bench_scale.py --times 5 --variants backlog-1 backlog-2

The events are the collector's own records for the real BTCUSDT and ETHUSDT
recordings (``$CCF_SHARED/data/binance``): books, trades, quotes and gaps, both
symbols merged in receive order as one collector sends them. Each variant pushes all
of them through real processes and stops the clock when every feature row the data
allows is stored (and, for Kafka, when the sink has stored every raw record too):

- ``embedded``: a writer (the collector's StoreWriter) into SQLite, and one
  ``ccf features`` process following the SQLite raw store into features.sqlite.
- ``kafka-1``: the same records published to Kafka (a local Tansu broker) by the
  collector's sink; one ``ccf sink`` process (Kafka -> PostgreSQL raw tables) and one
  ``ccf features`` worker (Kafka -> PostgreSQL features).
- ``kafka-2``: the same with two feature workers in one group (one symbol each).
- ``backlog-1``, ``backlog-2``: the records are in Kafka before any worker starts; the
  clock runs from starting one or two feature workers (process start and group join
  included) to the last feature row stored: what a second worker buys when features,
  not the producer or the sink, are the bottleneck. Only what a feature worker reads
  (books, trades, gaps) is published. ``--times K`` plays the recordings K times back
  to back (shifted in time and ids) so the work outweighs the start (about 4 s: the
  process starting and joining its group). It also prints the CPU seconds the
  workers, the broker and PostgreSQL used, against what two cores allow.

Processes start, and Kafka consumers join their groups, before the clock starts. The
figure is records / (time from the first write to the last row stored). All parts share
this machine's cores with the broker and PostgreSQL, so on a small machine the second
worker competes with them for CPU: the benchmark shows what a second worker buys here,
not on a cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psutil
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.infra import (  # noqa: E402
    PG_PASSWORD,
    PG_PASSWORD_ENV,
    PG_ROLE,
    Broker,
    _psql,
    pg_overrides,
    start_postgres,
)
from tests.scale.kafka_data import market_records  # noqa: E402

from ccf.config import load_settings  # noqa: E402
from ccf.features.spec import feature_set  # noqa: E402
from ccf.records import Book, Gap, Trade  # noqa: E402
from ccf.storage.backends import open_feature_store, open_raw_store  # noqa: E402
from ccf.storage.writer import StoreWriter  # noqa: E402

CCF = [sys.executable, "-m", "ccf"]
SYMBOLS = ("btcusdt", "ethusdt")
FEATURE_INPUTS = (Book, Trade, Gap)  # what a book feature worker reads (no quotes)
NOT_YET = (sqlite3.OperationalError, psycopg.errors.UndefinedTable)
VARIANTS = ("embedded", "kafka-1", "kafka-2", "backlog-1", "backlog-2")
_TIMES = ("ts_event", "ts_recv", "start_ts", "end_ts")
_IDS = ("update_id", "trade_id")


def env() -> dict[str, str]:
    return {**os.environ, "CCF__METRICS__ENABLED": "false", PG_PASSWORD_ENV: PG_PASSWORD}


@contextmanager
def proc(args: list[str], log: Path) -> Any:
    with open(log, "wb") as out:
        p = subprocess.Popen([*CCF, *args], stdout=out, stderr=subprocess.STDOUT, env=env())
    try:
        yield p
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def feature_rows(settings: Any) -> int:
    try:
        store = open_feature_store(settings, feature_set(settings.features), readonly=True)
    except FileNotFoundError:
        return 0
    try:
        return sum(r[1] for r in store.summary())
    except NOT_YET:  # the table appears with the first row
        return 0
    finally:
        store.close()


def raw_rows(settings: Any) -> int:
    store = open_raw_store(settings, readonly=True)
    try:
        return sum(s.rows for s in store.summaries())
    finally:
        store.close()


def workers_joined(settings: Any, n: int) -> bool:
    store = open_raw_store(settings, readonly=True)
    try:
        parts = store.parts()
    except NOT_YET:  # no heartbeat table before the first beat
        return False
    finally:
        store.close()
    owned = [
        list(json.loads(detail or "{}").get("symbols") or {})
        for part, _, _, _, state, detail in parts
        if part.startswith("features@") and state == "running"
    ]
    return len(owned) == n and sorted(s for o in owned for s in o) == sorted(SYMBOLS)


def wait(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def publish(settings: Any, records: list[Any]) -> None:
    """What a collector does: hand batches to its StoreWriter, which writes them out."""
    from ccf.storage.backends import open_record_sink

    writer = StoreWriter(lambda: open_record_sink(settings), part="bench")
    for i in range(0, len(records), 2000):
        writer.submit(records[i : i + 2000])
    writer.close()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def postgres_cpu_s() -> float:
    """CPU seconds of every PostgreSQL process (server and backends) so far."""
    total = 0.0
    for p in psutil.process_iter(["name"]):
        if p.info["name"] == "postgres":
            with contextlib.suppress(psutil.NoSuchProcess):
                total += cpu_s(p.pid)
    return total


def repeated(records: list[Any], times: int) -> list[Any]:
    """The recordings played ``times`` times back to back: every later pass shifted by the
    span of the data in time and by 10**12 in ids, so each pass is new data to the engine."""
    if times <= 1:
        return records
    lo = min(r.ts_recv for r in records)
    span = max(r.ts_recv for r in records) - lo + 10**9
    out = list(records)
    for k in range(1, times):
        for r in records:
            changes = {f: getattr(r, f) + k * span for f in _TIMES if getattr(r, f, None)}
            changes |= {f: getattr(r, f) + k * 10**12 for f in _IDS if hasattr(r, f)}
            out.append(r._replace(**changes))
    return out


def run_variant(variant: str, records: list[Any], expected: int | None, work: Path) -> dict:
    """One timed run; returns the figures and the feature rows stored."""
    data = work / f"{variant}-{uuid.uuid4().hex[:6]}"
    base = [f"data_dir={data}", f"symbols=[{','.join(SYMBOLS)}]", "features.print_every_s=0"]
    with ExitStack() as stack:
        if variant == "embedded":
            overrides = base
            settings = load_settings(overrides, environ={})
            open_raw_store(settings).close()  # the schema, as a collector makes it at start
            stack.enter_context(proc(["features", *overrides], data.with_suffix(".features.log")))
            time.sleep(3)  # the process starts and polls an empty store
        else:
            db = f"ccf_bench_{uuid.uuid4().hex[:8]}"
            _psql(f"CREATE DATABASE {db} OWNER {PG_ROLE}")
            stack.callback(_psql, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            broker = stack.enter_context(Broker(work / f"tansu-{db}.log"))
            from ccf.config import PostgresConfig

            pg = PostgresConfig(dbname=db, user=PG_ROLE, password=f"env:{PG_PASSWORD_ENV}")
            os.environ[PG_PASSWORD_ENV] = PG_PASSWORD
            overrides = [
                *base,
                *pg_overrides(pg),
                "transport.backend=kafka",
                f"transport.kafka.bootstrap={broker.bootstrap}",
                "transport.kafka.partitions=4",  # btcusdt and ethusdt on different partitions
            ]
            settings = load_settings(overrides, environ={})
            open_raw_store(settings).close()
            from ccf.transport.codec import RAW_KINDS
            from ccf.transport.topics import ensure_topics, topic_name

            kafka = settings.transport.kafka
            ensure_topics(kafka, [topic_name(kafka, k) for k in (*RAW_KINDS, "feature")])
            workers = int(variant.split("-")[1])
            if variant.startswith("backlog"):
                # the records wait in Kafka; the clock runs from the workers' start
                publish(settings, [r for r in records if type(r) in FEATURE_INPUTS])
                assert broker.proc is not None
                pg_before, broker_before = postgres_cpu_s(), cpu_s(broker.proc.pid)
                t0 = time.perf_counter()
                procs = [
                    stack.enter_context(proc(["features", *overrides], work / f"f{i}-{db}.log"))
                    for i in range(workers)
                ]
                wait(lambda: feature_rows(settings) >= expected, 900, f"{expected} rows")
                t = time.perf_counter() - t0
                return {
                    "variant": variant,
                    "records": sum(type(r) in FEATURE_INPUTS for r in records),
                    "rows": feature_rows(settings),
                    "expected": expected,
                    "write_s": 0.0,
                    "features_s": t,
                    "total_s": t,
                    "events_per_s": sum(type(r) in FEATURE_INPUTS for r in records) / t,
                    "cpu_workers_s": sum(cpu_s(p.pid) for p in procs),
                    "cpu_broker_s": cpu_s(broker.proc.pid) - broker_before,
                    "cpu_postgres_s": postgres_cpu_s() - pg_before,
                }
            stack.enter_context(proc(["sink", *overrides], work / f"sink-{db}.log"))
            for i in range(workers):
                stack.enter_context(proc(["features", *overrides], work / f"f{i}-{db}.log"))
            wait(lambda: workers_joined(settings, workers), 120, f"{workers} feature workers")
        t0 = time.perf_counter()
        publish(settings, records)
        t_written = time.perf_counter() - t0
        want = expected
        if want is None:  # the reference run: until the count stops moving
            last, still = -1, 0
            while still < 20:
                n = feature_rows(settings)
                still = still + 1 if n == last and n > 0 else 0
                last = n
                time.sleep(0.1)
            want = last
            t_done = time.perf_counter() - t0 - 2.0
            t_features = t_done
        else:
            wait(lambda: feature_rows(settings) >= want, 600, f"{want} feature rows")
            t_features = time.perf_counter() - t0
            if variant != "embedded":
                wait(lambda: raw_rows(settings) >= len(records), 600, "the sink")
            t_done = time.perf_counter() - t0
        got = feature_rows(settings)
    return {
        "variant": variant,
        "records": len(records),
        "rows": got,
        "expected": want,
        "write_s": t_written,
        "features_s": t_features,
        "total_s": t_done,
        "events_per_s": len(records) / t_done,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--keep", action="store_true", help="keep the processes' logs; print where")
    ap.add_argument(
        "--times", type=int, default=1, help="play the recordings this many times back to back"
    )
    args = ap.parse_args()
    start_postgres()
    records = repeated(market_records(SYMBOLS), args.times)
    cpu = platform.processor() or platform.machine()
    print(f"{len(records):,} records ({', '.join(SYMBOLS)}); {cpu}, {os.cpu_count()} cores")
    work = Path(tempfile.mkdtemp(prefix="ccf-bench-scale-"))
    try:
        reference = run_variant("embedded", records, None, work)
        expected = reference["rows"]
        print(f"feature rows the data allows: {expected:,}")
        results: dict[str, list[dict]] = {v: [] for v in args.variants}
        for _ in range(args.repeats):
            for v in args.variants:  # interleaved, so drift in machine load hits all alike
                r = run_variant(v, records, expected, work)
                results[v].append(r)
                eps, rows = r["events_per_s"], r["rows"]
                print(
                    f"  {v:9s} written {r['write_s']:5.2f} s, features {r['features_s']:5.2f} s,"
                    f" all stored {r['total_s']:5.2f} s: {eps:9,.0f} events/s (rows {rows:,})"
                )
        print()
        print(
            "| variant | events/s end to end | records written s | features complete s "
            "| all stored s | runs |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for v, rs in results.items():
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0] if k.endswith("_s")}
            eps = statistics.median(r["events_per_s"] for r in rs)
            print(
                f"| {v} | {eps:,.0f} | {med['write_s']:.2f} | {med['features_s']:.2f} "
                f"| {med['total_s']:.2f} | {len(rs)} |"
            )
        if "backlog-1" in results and "backlog-2" in results:
            b1 = statistics.median(r["features_s"] for r in results["backlog-1"])
            b2 = statistics.median(r["features_s"] for r in results["backlog-2"])
            print(f"1 -> 2 feature workers draining a backlog: {b1 / b2:.2f}x")
            for v in ("backlog-1", "backlog-2"):
                rs = results[v]
                cpu = {k: statistics.median(r[k] for r in rs) for k in rs[0] if k.startswith("cpu")}
                wall = statistics.median(r["features_s"] for r in rs)

                print(
                    f"  {v}: CPU s in {wall:.2f} s of wall time: feature workers "
                    f"{cpu['cpu_workers_s']:.2f}, broker {cpu['cpu_broker_s']:.2f}, "
                    f"PostgreSQL {cpu['cpu_postgres_s']:.2f} (2 cores: {2 * wall:.2f} at most)"
                )
        if "kafka-1" in results and "kafka-2" in results:
            one = statistics.median(r["events_per_s"] for r in results["kafka-1"])
            two = statistics.median(r["events_per_s"] for r in results["kafka-2"])
            f1 = statistics.median(r["features_s"] for r in results["kafka-1"])
            f2 = statistics.median(r["features_s"] for r in results["kafka-2"])
            print(
                f"\n1 -> 2 feature workers: {two / one:.2f}x end to end, "
                f"{f1 / f2:.2f}x to complete features"
            )
    finally:
        if args.keep:
            print(f"logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
