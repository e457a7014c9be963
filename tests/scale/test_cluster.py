"""The scale-out system as separate processes on the replay of the real recordings.

Two collectors (one symbol each) publish to Kafka (a real Tansu broker); a sink copies
the raw topics into PostgreSQL; two feature workers in one consumer group share the
symbols and write features to PostgreSQL; a model trained on those features is served by
the predictor and scored by the monitor, both on PostgreSQL. One feature worker is
killed mid-stream: the other takes its partitions over. At the end, the features in
PostgreSQL equal those the embedded engine computes in batch over the same raw records
(a second sink copies the same topics into SQLite): none missing, none doubled.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg

from ccf.config import PostgresConfig, Settings, load_settings
from ccf.features.spec import feature_set
from ccf.storage.backends import open_feature_store, open_monitor_store, open_prediction_store
from tests.infra import free_port, kafka_overrides, pg_overrides, scale_env, spawn
from tests.test_cli import port_open, wait_for

CCF = [sys.executable, "-m", "ccf"]
SYMBOLS = ("btcusdt", "ethusdt")


@contextmanager
def part(name: str, *args: str, logs: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A ``ccf`` process; stopped with Ctrl-C (a clean stop) unless already gone."""
    proc = spawn(["ccf", *args], logs / f"{name}.log")
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def status(overrides: list[str]) -> dict:
    out = subprocess.run(
        [*CCF, "status", "--json", *overrides],
        capture_output=True,
        text=True,
        timeout=60,
        env=scale_env(),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def feature_workers(overrides: list[str]) -> dict[int, set[str]]:
    """pid -> the symbols each running feature worker owns, from their heartbeats."""
    owned: dict[int, set[str]] = {}
    for p in status(overrides)["parts"]:
        if p["part"].startswith("features@") and p["running"]:
            owned[p["pid"]] = set(p["detail"].get("symbols", {}))
    return owned


def features(settings: Settings) -> pd.DataFrame:
    store = open_feature_store(settings, feature_set(settings.features), readonly=True)
    try:
        return store.frame(SYMBOLS)
    finally:
        store.close()


def pg_rows(settings: Settings, what: str) -> int:
    if what == "features":
        return len(features(settings))
    opener = open_prediction_store if what == "predictions" else open_monitor_store
    store = opener(settings, readonly=True)
    try:
        return store.count() if what == "predictions" else store.count("scores")
    finally:
        store.close()


def safe(count: Callable[[], int]) -> int:
    """A count that is 0 while the store or its tables do not exist yet."""
    try:
        return count()
    except (FileNotFoundError, psycopg.errors.UndefinedTable):
        return 0


def test_a_cluster_of_processes_matches_the_embedded_engine(
    tmp_path: Path, pg: PostgresConfig, kafka: str
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    base = [
        f"data_dir={tmp_path / 'data'}",
        f"replay.port={port}",
        "replay.speed=5",
        "replay.loop=false",
        f"symbols=[{','.join(SYMBOLS)}]",
        "transport.kafka.partitions=4",
        "features.print_every_s=1",
        "collect.print_every_s=0",
    ]
    cluster = [*base, *pg_overrides(pg), *kafka_overrides(kafka)]
    settings = load_settings(cluster, environ={})
    # the embedded reference: the same topics into SQLite by a sink of its own group
    embedded_dir = tmp_path / "embedded"
    embedded = [
        *base[1:],
        f"data_dir={embedded_dir}",
        *kafka_overrides(kafka),
        "transport.kafka.groups.sink=embedded-sink",
    ]

    with ExitStack() as parts:
        parts.enter_context(part("exchange", "exchange", *cluster, logs=logs))
        wait_for(lambda: port_open(port), 60, "the replay exchange")
        collectors = [
            parts.enter_context(
                part(f"collect-{s}", "collect", *cluster, f"symbols=[{s}]", logs=logs)
            )
            for s in SYMBOLS
        ]
        parts.enter_context(part("sink", "sink", *cluster, logs=logs))
        parts.enter_context(part("sink-embedded", "sink", *embedded, logs=logs))
        w1 = parts.enter_context(part("features-1", "features", *cluster, logs=logs))
        w2 = parts.enter_context(part("features-2", "features", *cluster, logs=logs))

        # the two workers share the symbols: one each
        wait_for(
            lambda: sorted(map(len, feature_workers(cluster).values())) == [1, 1],
            120,
            "two feature workers owning one symbol each",
        )
        owned = feature_workers(cluster)
        assert set().union(*owned.values()) == set(SYMBOLS), owned
        wait_for(lambda: safe(lambda: pg_rows(settings, "features")) > 200, 120, "feature rows")

        # kill one worker mid-stream: the other takes its partitions over
        victim = w1
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        wait_for(
            lambda: feature_workers(cluster).get(w2.pid) == set(SYMBOLS),
            120,
            "the surviving worker owning both symbols",
        )
        before = safe(lambda: pg_rows(settings, "features"))
        wait_for(
            lambda: safe(lambda: pg_rows(settings, "features")) > before + 100,
            120,
            "features after the takeover",
        )

        # a model on the PostgreSQL features, served and scored on PostgreSQL
        def trained() -> bool:
            out = subprocess.run(
                [*CCF, "train", *cluster, "ml.models=[naive]", "ml.train.progress_bar=false"],
                capture_output=True,
                text=True,
                env=scale_env(),
                timeout=300,
            )
            return out.returncode == 0

        wait_for(trained, 240, "a first model trained on PostgreSQL features")
        parts.enter_context(part("predict", "predict", *cluster, logs=logs))
        parts.enter_context(
            part("monitor", "monitor", *cluster, "monitor.poll_interval_s=0.5", logs=logs)
        )
        wait_for(lambda: safe(lambda: pg_rows(settings, "predictions")) > 0, 180, "forecasts")
        wait_for(lambda: safe(lambda: pg_rows(settings, "scores")) > 0, 180, "scores")

        # stop the sources cleanly and let the pipeline drain
        for c in collectors:
            stop(c)
        last = -1
        while (n := pg_rows(settings, "features")) != last:  # until a few polls change nothing
            last = n
            time.sleep(5)

    # the embedded engine over the same raw records, in batch
    out = subprocess.run(
        [*CCF, "features", *embedded, "storage.backend=sqlite", "--from", "0"],
        capture_output=True,
        text=True,
        env=scale_env(),
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    reference = features(
        load_settings([f"data_dir={embedded_dir}", f"symbols=[{','.join(SYMBOLS)}]"], environ={})
    )
    live = features(settings)

    assert len(live) > 300
    assert not live.duplicated(["symbol", "ts"]).any()  # none doubled
    for sym in SYMBOLS:
        got = live[live.symbol == sym].set_index("ts")
        want = reference[reference.symbol == sym].set_index("ts")
        # the batch run closes the last buckets a live stream cannot yet: compare up to
        # the newest bucket the live workers wrote
        want = want[want.index <= got.index.max()]
        assert list(got.index) == list(want.index), f"{sym}: buckets missing or extra"
        cols = [c for c in got.columns if c not in ("symbol",)]
        np.testing.assert_array_equal(got[cols].to_numpy(), want[cols].to_numpy(), err_msg=sym)
