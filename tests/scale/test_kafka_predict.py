"""Predictor workers over Kafka: two in one group share the symbols; one is killed
mid-stream, the other takes its symbol over, and every closed bucket of both symbols ends
up with exactly one champion forecast per target and horizon: none missing, none doubled.

The feature rows are the recorded ones, written to the PostgreSQL feature store and
published to the ``feature`` topic a few buckets at a time, as a feature worker does
(publish, then store); the workers serve a registered naive model.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer, TopicPartition

from ccf.config import PostgresConfig, Settings, load_settings
from ccf.features.engine import FeatureRow
from ccf.features.runner import run_backfill
from ccf.features.spec import feature_set
from ccf.features.store import FeatureStore
from ccf.ml.pipeline import train_round
from ccf.ml.prepare import Source
from ccf.storage.backends import open_feature_store, open_prediction_store, open_raw_store
from ccf.transport.client import consumer_config
from ccf.transport.consumer import END, BroadcastReader
from ccf.transport.kafka import Publisher
from ccf.transport.topics import partition_for, topic_name
from tests.features.test_runner import fill
from tests.infra import kafka_overrides, pg_overrides, spawn

SYMBOLS = ("btcusdt", "ethusdt")
GROUP = "ccf-predict"  # the default of transport.kafka.groups.predict


def split_partitions(n_members: int) -> int:
    """The smallest partition count at which the range assignor gives the two symbols to
    different members (it hands out consecutive runs of partitions)."""
    for n in range(2, 16):
        share = [partition_for(f"binance:{s}", n) * n_members // n for s in SYMBOLS]
        if len(set(share)) == len(SYMBOLS):
            return n
    raise AssertionError("no partition count splits the symbols")


def base_args(data_dir: Path) -> list[str]:
    return [
        f"data_dir={data_dir}",
        f"symbols=[{','.join(SYMBOLS)}]",
        "features.print_every_s=0",
        "serve.max_input_lag_s=1e12",  # recorded in 2024: not stale here
        "ml.evaluate.step=5",
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A registry whose champion is the naive model trained on the recorded feature rows
    (made on the embedded store), and those rows."""
    root = tmp_path_factory.mktemp("kafka-predict")
    settings = load_settings([*base_args(root), "log_level=WARNING"], environ={})
    fill(settings)
    run_backfill(settings)
    assert "champion" in train_round(settings, Source(), ("naive",)).aliases
    rows = FeatureStore(settings.features_path, feature_set(settings.features)).frame()
    return root / "mlflow.db", rows


def wait_for(what: str, check: Callable[[], bool], procs: list[subprocess.Popen]) -> None:
    """Poll ``check``; a worker that exits meanwhile fails the test at once."""
    deadline = time.monotonic() + 90
    while not check():
        for p in procs:
            assert p.poll() is None, f"worker {p.pid} exited with {p.returncode} before: {what}"
        assert time.monotonic() < deadline, f"not after 90 s: {what}"
        time.sleep(0.1)


def heartbeats(settings: Settings) -> dict[int, tuple[str, dict[str, Any]]]:
    """pid -> (state, detail) of every predictor worker that reported."""
    raw = open_raw_store(settings, readonly=True)
    try:
        return {
            pid: (state, json.loads(detail))
            for part, pid, _, _, state, detail in raw.parts()
            if part.startswith("predict@")
        }
    finally:
        raw.close()


def last_origin(settings: Settings, symbol: str) -> int:
    try:
        preds = open_prediction_store(settings, readonly=True)
    except FileNotFoundError:  # no worker has made the tables yet
        return -1
    try:
        return preds.last_ts(symbol, "champion") or -1
    finally:
        preds.close()


def committed(settings: Settings, partitions: list[int]) -> dict[int, int]:
    """partition -> the predictor group's committed offset in the feature topic (-1: none)."""
    cfg = settings.transport.kafka
    topic = topic_name(cfg, "feature")
    c = Consumer(consumer_config(cfg, GROUP, "test-offsets"))
    try:
        tps = c.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def published(settings: Settings) -> dict[tuple[int, int], tuple[str, int]]:
    """(partition, offset) -> (symbol, bucket) of every message in the feature topic."""
    reader = BroadcastReader(
        settings.transport.kafka, ("feature",), client_id="test", group="test-read"
    )
    out: dict[tuple[int, int], tuple[str, int]] = {}
    ends: set[Any] = set()
    try:
        while len(ends) < len(reader.inputs):
            for m in reader.poll(10_000, 0.2):
                if m.record is END:
                    ends.add(m.input)
                else:
                    out[(m.input.partition, m.offset)] = (m.record.symbol, m.record.ts)
    finally:
        reader.close()
    return out


class Feed:
    """The feature part's output: rows published to the feature topic, then stored."""

    def __init__(self, settings: Settings, rows: pd.DataFrame) -> None:
        self.fs = feature_set(settings.features)
        self.rows = rows.sort_values(["ts", "symbol"])
        self.store = open_feature_store(settings, self.fs)
        self.publisher = Publisher(settings, ("feature",), client_id="test-features")

    def put(self, since: int, upto: int) -> None:
        """The rows with bucket start in (since, upto]."""
        part = self.rows[(self.rows.ts > since) & (self.rows.ts <= upto)]
        values = part[list(self.fs.float_columns)].to_numpy()
        rows = [
            FeatureRow(sym, int(ts), int(te), tuple(v.tolist()))
            for sym, ts, te, v in zip(part.symbol, part.ts, part.ts_end, values, strict=True)
        ]
        self.publisher.publish(rows)
        self.store.write(rows)

    def close(self) -> None:
        self.publisher.close()
        self.store.close()


def worker(args: list[str], log: Path) -> subprocess.Popen:
    return spawn(["ccf", "predict", *args], log)


def test_predictor_workers_share_the_symbols_and_one_takes_over_a_killed_ones(
    trained: tuple[Path, pd.DataFrame],
    kafka: str,
    pg: PostgresConfig,
    tmp_path: Path,
) -> None:
    registry, rows = trained
    n = split_partitions(2)
    part_of = {s: partition_for(f"binance:{s}", n) for s in SYMBOLS}
    assert part_of["btcusdt"] != part_of["ethusdt"]  # one symbol per partition
    args = [
        *base_args(tmp_path / "data"),
        "log_level=INFO",
        f"ml.registry.tracking_uri=sqlite:///{registry}",
        *pg_overrides(pg),
        *kafka_overrides(kafka),
        f"transport.kafka.partitions={n}",
        "transport.kafka.session_timeout_ms=6000",
        "serve.first_start=oldest",  # every stored bucket is to be forecast
        "serve.poll_interval_s=2",  # the topic wakes the workers, not the store's polls
        "serve.alias_check_s=1",
        "serve.print_every_s=0.5",
    ]
    settings = load_settings(args, environ={})
    buckets = np.sort(rows.ts.unique())
    open_raw_store(settings).close()  # the heartbeat table, before anyone reads it
    feed = Feed(settings, rows)
    feed.put(-1, int(buckets[150]))
    logs = [tmp_path / "worker0.log", tmp_path / "worker1.log"]
    procs = [worker(args, log) for log in logs]
    failed: list[BaseException] = []
    killed = threading.Event()
    feeder: threading.Thread | None = None
    try:
        # each owns one symbol: the one keyed to its partition
        def split() -> bool:
            beats = heartbeats(settings)
            owned = [beats[p.pid][1] for p in procs if p.pid in beats]
            return sorted(sorted(d["symbols"]) for d in owned) == [["btcusdt"], ["ethusdt"]]

        wait_for("the workers split the symbols", split, procs)
        beats = heartbeats(settings)
        shares = [beats[p.pid][1] for p in procs]
        assert sorted(shares[0]["partitions"] + shares[1]["partitions"]) == list(range(n))
        for share in shares:  # a symbol's partition goes with it
            assert {part_of[s] for s in share["symbols"]} <= set(share["partitions"])
        victim_i = next(i for i, p in enumerate(procs) if "btcusdt" in beats[p.pid][1]["symbols"])
        victim, survivor = procs[victim_i], procs[1 - victim_i]
        btc = part_of["btcusdt"]
        wait_for("the victim committed", lambda: committed(settings, [btc])[btc] > 0, procs)

        # the rest of the rows come while the workers run; the victim dies amid them
        # (the feed holds at bucket 450 until it is dead, so rows come after the kill)
        def feeding() -> None:
            try:
                since = int(buckets[150])
                for upto in [*buckets[155::5], buckets[-1]]:
                    if upto >= buckets[450]:
                        killed.wait()
                    feed.put(since, int(upto))
                    since = int(upto)
                    time.sleep(0.05)
            except BaseException as e:
                failed.append(e)

        feeder = threading.Thread(target=feeding, name="feed")
        feeder.start()
        wait_for(
            "the victim forecast bucket 300",
            lambda: last_origin(settings, "btcusdt") >= buckets[300],
            procs,
        )
        # what the victim committed so far: all of it forecast before the kill
        before_kill = committed(settings, [btc])[btc]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed_at = time.time_ns()
        killed.set()
        feeder.join()
        assert not failed, failed

        # the survivor takes the victim's symbol over and forecasts both to the end
        def done() -> bool:
            _, detail = heartbeats(settings).get(survivor.pid, ("", {"symbols": {}}))
            return set(detail["symbols"]) == set(SYMBOLS) and all(
                last_origin(settings, s) == buckets[-1] for s in SYMBOLS
            )

        wait_for("the survivor forecast both symbols to the end", done, [survivor])
    finally:
        killed.set()
        if feeder is not None:
            feeder.join()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(60) for p in procs]
        feed.close()
    assert codes[1 - victim_i] == 0, logs[1 - victim_i].read_text()[-3000:]

    # every bucket in the feature store: one champion row per target and horizon
    store = open_feature_store(settings, feed.fs, readonly=True)
    preds = open_prediction_store(settings, readonly=True)
    try:
        df = preds.frame(role="champion")
        stored = {s: np.sort(store.frame([s]).ts.to_numpy()) for s in SYMBOLS}
    finally:
        preds.close()
        store.close()
    per_bucket = df.target.nunique() * df.horizon.nunique()
    assert per_bucket >= 1
    for sym in SYMBOLS:
        c = df[df.symbol == sym]
        assert np.array_equal(stored[sym], np.sort(rows[rows.symbol == sym].ts.to_numpy()))
        assert np.array_equal(np.sort(c.ts.unique()), stored[sym])  # none missing ...
        assert len(c) == len(stored[sym]) * per_bucket  # ... none doubled
        assert not c.duplicated(["target", "ts", "horizon"]).any()

    # the survivor resumed the victim's symbol after the last origin the victim forecast
    btc_rows = df[df.symbol == "btcusdt"]
    victims_last = int(btc_rows[btc_rows.made_at < killed_at].ts.max())
    assert victims_last < buckets[450]  # killed mid-stream: the feed held there till then
    resumed = re.findall(
        r"part=predict symbol=btcusdt resuming after origin (\d+)",
        logs[1 - victim_i].read_text(),
    )
    assert resumed and int(resumed[-1]) == victims_last
    assert (btc_rows[btc_rows.ts > victims_last].made_at > killed_at).all()

    # offsets follow the predictions: what the victim committed was forecast by it, and
    # at the end everything the topic holds is committed
    messages = published(settings)
    assert before_kill > 0
    symbol, ts = messages[(btc, before_kill - 1)]
    assert symbol == "btcusdt" and ts <= victims_last
    ends = {p: 1 + max(o for q, o in messages if q == p) for p in part_of.values()}
    assert committed(settings, sorted(ends)) == ends

    # the survivor's last heartbeat: stopped, owning both symbols and partitions
    state, detail = heartbeats(settings)[survivor.pid]
    assert state == "stopped" and set(detail["symbols"]) == set(SYMBOLS)
    assert detail["partitions"] == list(range(n))
    assert detail["waiting"] == 0 and detail["rebalances"] >= 2
