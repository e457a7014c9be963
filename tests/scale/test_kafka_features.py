"""Feature workers over Kafka: two in one group share the symbols; one dies, the other
takes its partitions over, and the feature store ends up equal to a batch run, row for
row and bit for bit: none missing, none written twice.

The feature set keeps state over at most 30 buckets and the warmup is 45 s, so a worker
that takes over from the dead one's committed offset (45 s before its last stored bucket,
not the start of the topic) rebuilds every feature exactly: the equality checks where
the commits point, not only that everything was replayed.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from ccf.config import Settings, load_settings
from ccf.features.runner import run_backfill
from ccf.features.spec import feature_set
from ccf.features.store import FeatureStore
from ccf.records import Book, Gap, Trade
from ccf.storage import SqliteStore
from ccf.transport.client import consumer_config
from ccf.transport.consumer import END, BroadcastReader
from ccf.transport.kafka import KafkaRawSink
from ccf.transport.topics import partition_for, topic_name
from tests.infra import kafka, kafka_overrides, scale_env, spawn  # noqa: F401
from tests.scale.kafka_data import market_records

SYMBOLS = ("btcusdt", "ethusdt")
FEATURES = (
    "[{kind: m_p}, {kind: spread}, {kind: micro_price}, "
    "{kind: relative, columns: m_p, op: lograt, shift: 1}, "
    "{kind: depth_imbalance, levels: 5}, {kind: ofi, levels: 1, windows: [1, 10]}, "
    "{kind: trade_flow_imbalance, windows: [1, 10]}, "
    "{kind: realized_vol, column: m_p, windows: [10, 30]}]"
)


def split_partitions(n_members: int) -> int:
    """The smallest partition count at which the range assignor gives the two symbols to
    different members (it hands out consecutive runs of partitions)."""
    for n in range(2, 16):
        share = [partition_for(f"binance:{s}", n) * n_members // n for s in SYMBOLS]
        if len(set(share)) == len(SYMBOLS):
            return n
    raise AssertionError("no partition count splits the symbols")


def args_for(data_dir: Path, bootstrap: str, partitions: int) -> list[str]:
    return [
        f"data_dir={data_dir}",
        f"symbols=[{','.join(SYMBOLS)}]",
        *kafka_overrides(bootstrap),
        f"transport.kafka.partitions={partitions}",
        "transport.kafka.session_timeout_ms=6000",
        f"features.features={FEATURES}",
        "features.warmup=45s",
        "features.print_every_s=0.5",
        # The Kafka workers merge their topics by event time (transport/align.py), which is
        # what the lateness rule assumes; the per-stream rule decides in receive order, and
        # on the Kafka path that is not wired yet (issue 12): both sides use the lateness rule.
        "features.watermark=lateness",
    ]


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not after {timeout_s} s: {what}"
        time.sleep(0.1)


def heartbeats(settings: Settings) -> dict[int, tuple[str, dict[str, Any]]]:
    """pid -> (state, detail) of every feature worker that reported."""
    if not settings.db_path.exists():
        return {}
    store = SqliteStore(settings.db_path, readonly=True)
    try:
        return {
            pid: (state, json.loads(detail))
            for part, pid, _, _, state, detail in store.parts()
            if part.startswith("features@")
        }
    except sqlite3.OperationalError:  # the first worker is still making the tables
        return {}
    finally:
        store.close()


def stored(settings: Settings, path: Path | None = None) -> list[tuple[Any, ...]]:
    """The feature table as stored (blobs: exact bytes), in key order."""
    path = path or settings.features_path
    if not path.exists():
        return []
    store = FeatureStore(path, feature_set(settings.features), readonly=True)
    try:
        table = store.set.table
        return store._con.execute(
            f"SELECT symbol, ts, ts_end, row FROM {table} ORDER BY symbol, ts"
        ).fetchall()
    except sqlite3.OperationalError:  # the first worker is still making the table
        return []
    finally:
        store.close()


def rows_of(settings: Settings, symbol: str) -> int:
    return sum(1 for r in stored(settings) if r[0] == symbol)


def committed(settings: Settings, symbol: str, n: int) -> int:
    """The feature group's committed offset of the symbol's trade partition (-1: none)."""
    cfg = settings.transport.kafka
    c = Consumer(consumer_config(cfg, cfg.groups["features"], "test-offsets"))
    try:
        (tp,) = c.committed(
            [TopicPartition(topic_name(cfg, "trade"), partition_for(f"binance:{symbol}", n))],
            timeout=10,
        )
        return tp.offset
    finally:
        c.close()


def worker(args: list[str], log: Path) -> subprocess.Popen:
    return spawn(["ccf.features.stream", *args], log)


def test_a_worker_takes_over_a_dead_ones_symbols_and_the_rows_equal_batch(
    kafka: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    n = split_partitions(2)
    args = args_for(tmp_path / "data", kafka, n)
    settings = load_settings(args, environ={})
    records = market_records(SYMBOLS, (Book, Trade, Gap))

    # the batch run over the same records, from a raw store of its own
    batch = load_settings(args_for(tmp_path / "batch", kafka, n), environ={})
    raw = SqliteStore(batch.db_path)
    raw.write(records)
    raw.close()
    assert sum(run_backfill(batch).late.values()) == 0
    want = stored(batch)
    per_symbol = {s: sum(1 for r in want if r[0] == s) for s in SYMBOLS}
    assert min(per_symbol.values()) > 600  # 11 minutes of 1 s buckets

    sink = KafkaRawSink(settings)
    first = len(records) * 3 // 10
    sink.write(records[:first])
    logs = [tmp_path / "worker0.log", tmp_path / "worker1.log"]
    procs = [worker(args, log) for log in logs]
    try:
        # each owns one symbol's partition
        def split() -> bool:
            beats = heartbeats(settings)
            owned = [set(beats[p.pid][1]["symbols"]) for p in procs if p.pid in beats]
            return sorted(map(sorted, owned)) == [["btcusdt"], ["ethusdt"]]

        wait_for("the workers split the symbols", split)
        beats = heartbeats(settings)
        victim_i = next(i for i, p in enumerate(procs) if "btcusdt" in beats[p.pid][1]["symbols"])
        victim, survivor = procs[victim_i], procs[1 - victim_i]
        # the victim stored rows and committed past the start of its partition
        wait_for("the victim committed", lambda: committed(settings, "btcusdt", n) > 0)

        # the rest of the records come while the workers run; the victim dies amid them
        feeding = threading.Thread(
            target=lambda: [
                (sink.write(records[i : i + 1000]), time.sleep(0.03))
                for i in range(first, len(records), 1000)
            ]
        )
        feeding.start()
        wait_for(
            "the victim wrote 40% of its rows",
            lambda: rows_of(settings, "btcusdt") >= 0.4 * per_symbol["btcusdt"],
        )
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        at_kill = rows_of(settings, "btcusdt")
        assert at_kill < per_symbol["btcusdt"], "the victim was not killed mid-stream"
        feeding.join()
        sink.close()

        # the survivor takes the victim's partition over and finishes both symbols
        def done() -> bool:
            state, detail = heartbeats(settings).get(survivor.pid, ("", {}))
            return set(detail.get("symbols", ())) == set(SYMBOLS) and all(
                rows_of(settings, s) >= per_symbol[s] for s in SYMBOLS
            )

        wait_for("the survivor finished both symbols", done)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(30) for p in procs]
    assert codes[1 - victim_i] == 0, logs[1 - victim_i].read_text()[-3000:]

    got = stored(settings)
    assert [r[:3] for r in got] == [r[:3] for r in want]  # every bucket, none twice
    assert got == want  # and every value, bit for bit
    _, detail = heartbeats(settings)[survivor.pid]
    assert detail["rebuilds"] >= 2  # its own assignment, then the takeover
    assert set(detail["symbols"]) == set(SYMBOLS)
    assert all(d["late"] == d["late_gaps"] == 0 for d in detail["symbols"].values()), detail

    # every stored row was published too (a row may be published twice: keyed alike)
    reader = BroadcastReader(
        settings.transport.kafka, ("feature",), client_id="test", group="test-features"
    )
    published: dict[tuple[str, int], tuple[float, ...]] = {}
    ends: set[Any] = set()
    deadline = time.monotonic() + 30
    while len(ends) < len(reader.inputs) and time.monotonic() < deadline:
        for m in reader.poll(50_000, 0.2):
            if m.record is END:
                ends.add(m.input)
            else:
                published[(m.record.symbol, m.record.ts)] = m.record.values
    reader.close()
    fs = feature_set(settings.features)
    store = FeatureStore(settings.features_path, fs, readonly=True)
    for sym in SYMBOLS:
        window = store.last(sym, 10_000)
        for ts, values in zip(window.ts.tolist(), window.values, strict=True):
            assert np.array(published[(sym, ts)]).tobytes() == values.tobytes()
    store.close()
