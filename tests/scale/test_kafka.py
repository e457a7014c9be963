"""The Kafka transport against a real Kafka-protocol broker (Tansu, one per test).

Records survive the wire exactly; names are checked before a broker is asked; a
collector's records reach the raw store through the topics and ``ccf sink`` exactly
once, also when the sink is killed in the middle and started again.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ccf.config import ConfigError, KafkaConfig, Settings, load_settings
from ccf.features.engine import FeatureRow
from ccf.records import AggTrade, DeadLetter, Gap, Prediction, Score, Trade
from ccf.storage import SqliteStore, StoreWriter
from ccf.storage.backends import open_record_sink
from ccf.transport.client import TransportError, client_config, describe
from ccf.transport.codec import KINDS, RAW_KINDS, decode, encode, kind_of
from ccf.transport.consumer import END, BroadcastReader, GroupConsumer
from ccf.transport.kafka import KafkaRawSink, Publisher
from ccf.transport.sink import KafkaSink
from ccf.transport.topics import TopicNameError, check_name, murmur2, partition_for
from tests import parts
from tests.infra import Broker, kafka, kafka_overrides, scale_env, spawn  # noqa: F401
from tests.scale.kafka_data import (
    candle_records,
    counts,
    feed_records,
    market_records,
    news_records,
    tables,
)

NS = 1_000_000_000


def settings_for(tmp_path: Path, bootstrap: str, *extra: str) -> Settings:
    return load_settings(
        [
            f"data_dir={tmp_path / 'data'}",
            *kafka_overrides(bootstrap),
            "transport.kafka.session_timeout_ms=6000",
            *extra,
        ],
        environ={},
    )


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not after {timeout_s} s: {what}"
        time.sleep(0.05)


# -- records on the wire ---------------------------------------------------------------------


def samples() -> dict[str, list[Any]]:
    """Real records of every kind the recordings hold, and made-up ones of the others."""
    btc = feed_records("btcusdt")
    news = news_records()
    t0 = btc[0].ts_event
    by_type: dict[type, list[Any]] = {}
    for r in (*btc[:3000], *news, *candle_records(50)):
        by_type.setdefault(type(r), []).append(r)
    nan = math.nan
    made = [
        AggTrade("binance", "btcusdt", 9, 61000.5, 0.25, 100, 104, "sell", t0, t0 + 7),
        Gap("binance", "btcusdt", "book", t0, None, "disconnect", "ws closed: 1006", t0 + 1),
        Gap("binance", "btcusdt", "trade", t0, t0 + 5 * NS, "sequence_gap", "", t0, True),
        DeadLetter("binance", "", "not JSON", '{"e": "trade", "s": "BTC\u00e9', t0),
        FeatureRow("btcusdt", t0, t0 + NS, (1.5, nan, -0.0, 1e-300, math.inf)),
        Prediction(
            "binance", "btcusdt", "m_p", t0, 5, t0 + 5 * NS, "champion", "ccf-default", "3",
            t0 + 2, t0 + NS, 61000.25, 1e-4, (0.1, 0.5, 0.9), (-1e-3, 1e-4, 2e-3), None,
        ),
        Prediction(
            "binance", "btcusdt", "m_p", t0, 1, t0 + NS, "naive", "naive", "", t0, t0, 1.0,
            nan, (0.1, 0.5, 0.9), (nan, nan, nan), "warming_up",
        ),
        Score(
            "binance", "btcusdt", "m_p", t0, 5, "champion", "ccf-default", "3", 1e-4, -2e-5,
            2e-5, 4e-10, 1e-4, 1.0, (1.0, 0.0), 3e-4, 1, 8.5e-5, t0 + 6 * NS,
        ),
    ]  # fmt: skip
    for r in made:
        by_type.setdefault(type(r), []).append(r)
    return {kind.name: by_type.get(kind.type, []) for kind in KINDS.values()}


def test_every_record_kind_round_trips_exactly() -> None:
    for name, records in samples().items():
        assert records, f"no sample of {name}"
        for r in records:
            assert kind_of(r).name == name
            back = decode(name, encode(r))
            assert type(back) is type(r)
            # repr is exact for floats (shortest round-trip form), tells -0.0 and NaN apart
            assert repr(back) == repr(r)


def test_keys_are_exchange_and_symbol_and_news_is_keyed_by_its_feed() -> None:
    s = samples()
    assert {KINDS[k].key(r, "") for k in ("book", "trade", "quote") for r in s[k]} == {
        "binance:btcusdt"
    }
    assert KINDS["feature"].key(s["feature"][0], "binance") == "binance:btcusdt"
    assert {KINDS["news"].key(r, "") for r in s["news"]} == {"coindesk", "cointelegraph"}
    assert {KINDS["feed_status"].key(r, "") for r in s["feed_status"]} == {
        "coindesk",
        "cointelegraph",
    }


def test_a_record_of_another_shape_is_refused_not_guessed() -> None:
    t = feed_records("btcusdt")[0]
    with pytest.raises(TypeError, match="no Kafka topic carries"):
        kind_of(t._asdict())
    bad = encode(Trade("binance", "btcusdt", 1, 1.0, 1.0, "hold", 1, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="enum"):
        decode("trade", bad)


def test_partitions_follow_kafkas_murmur2_so_a_symbol_has_one_number_everywhere() -> None:
    # Kafka's own test vectors for Utils.murmur2 (signed 32-bit)
    for key, want in [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ]:
        h = murmur2(key)
        assert (h - 2**32 if h >= 2**31 else h) == want
    assert partition_for("binance:btcusdt", 4) == 3
    assert partition_for("binance:ethusdt", 4) == 1


# -- names and credentials -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", ".", "..", "ccf trade", "ccf/trade", "x" * 250, "tr\u00e4de"])
def test_illegal_topic_names_are_refused(name: str) -> None:
    with pytest.raises(TopicNameError, match="not legal in Kafka"):
        check_name(name)


def test_names_are_checked_before_any_broker_is_asked(tmp_path: Path) -> None:
    # nothing listens on port 1: asking a broker first would end in a TransportError
    settings = settings_for(tmp_path, "127.0.0.1:1", "transport.kafka.topic_prefix=__ccf.")
    with pytest.raises(TopicNameError, match="internal topics"):
        KafkaRawSink(settings)
    with pytest.raises(TopicNameError, match="group name"):
        GroupConsumer(settings.transport.kafka, "my group", ["trade"], client_id="test")
    with pytest.raises(ConfigError, match="topic_prefix"):
        settings_for(tmp_path, "127.0.0.1:1", "transport.kafka.topic_prefix=ccf/")
    with pytest.raises(ConfigError, match="groups"):
        settings_for(tmp_path, "127.0.0.1:1", "transport.kafka.groups={sink: 'my sink'}")


def test_credentials_come_from_the_environment_and_never_show_in_describe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CCF_TEST_KAFKA_PW", "s3cret-kafka")
    key_pw = tmp_path / "key.pw"
    key_pw.write_text("s3cret-key\n")
    cfg = KafkaConfig(
        bootstrap="k1:9093,k2:9093",
        security_protocol="SASL_SSL",
        sasl_username="ccf",
        sasl_password="env:CCF_TEST_KAFKA_PW",
        ssl_ca_location=tmp_path / "ca.pem",
        ssl_key_password=f"file:{key_pw}",
    )
    conf = client_config(cfg)
    assert conf["sasl.password"] == "s3cret-kafka" and conf["ssl.key.password"] == "s3cret-key"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512" and conf["ssl.ca.location"].endswith("ca.pem")
    text = describe(cfg)
    assert "s3cret" not in text and "env:CCF_TEST_KAFKA_PW" in text
    with pytest.raises(TransportError, match="sasl_username"):
        client_config(KafkaConfig(security_protocol="SASL_PLAINTEXT"))


# -- collector -> topics -> sink -> raw store ---------------------------------------------------


def reference_tables(tmp_path: Path, records: list[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """The same records written straight into a store of their own."""
    path = tmp_path / "reference.sqlite"
    store = SqliteStore(path)
    store.write(records)
    store.close()
    return tables(path)


def test_the_sink_stores_exactly_what_the_collector_sent(kafka: str, tmp_path: Path) -> None:  # noqa: F811
    settings = settings_for(tmp_path, kafka, "storage.batch_rows=3000")
    records = [*market_records(), *news_records(), *candle_records()]
    # the collector's path: a StoreWriter in front of what open_record_sink() gives
    writer = StoreWriter(lambda: open_record_sink(settings), batch_rows=5000, part="collect")
    for i in range(0, len(records), 2000):
        writer.submit(records[i : i + 2000])
    writer.close()
    assert writer.rows_written == len(records)

    # every raw kind has its topic, and a symbol sits at one partition number in all of them
    reader = BroadcastReader(
        settings.transport.kafka, RAW_KINDS, client_id="test", group="test-reader"
    )
    n = settings.transport.kafka.partitions
    seen: dict[str, set[int]] = {}
    ends: set[Any] = set()
    wait_for(
        "the topics read to their ends", lambda: _read(reader, seen, ends) >= len(reader.inputs)
    )
    reader.close()
    assert seen["binance:btcusdt"] == {partition_for("binance:btcusdt", n)}
    assert seen["binance:ethusdt"] == {partition_for("binance:ethusdt", n)}

    sink = KafkaSink(settings)
    done = parts.run_until(sink, lambda s: s.rows.total() >= len(records), 90, KafkaSink.status)
    asyncio.run(done)
    assert sink.rows.total() == len(records)
    assert tables(settings.db_path) == reference_tables(tmp_path, records)
    beats = SqliteStore(settings.db_path, readonly=True).parts()
    assert [(p[0], p[4]) for p in beats] == [(sink.name, "stopped")]


def _read(reader: BroadcastReader, seen: dict[str, set[int]], ends: set[Any]) -> int:
    for m in reader.poll(50_000, 0.2):
        if m.record is END:
            ends.add(m.input)
        else:
            key = kind_of(m.record).key(m.record, "binance")
            seen.setdefault(key, set()).add(m.input.partition)
    return len(ends)


def sink_process(settings_args: list[str], log: Path) -> subprocess.Popen:
    return spawn(["ccf.transport.sink", *settings_args], log, append=True)


def test_a_sink_killed_mid_stream_loses_nothing_and_doubles_nothing(
    kafka: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    args = [
        f"data_dir={tmp_path / 'data'}",
        *kafka_overrides(kafka),
        "transport.kafka.session_timeout_ms=6000",
        "storage.batch_rows=1000",
        "storage.flush_interval_s=0.05",
    ]
    settings = load_settings(args, environ={})
    records = market_records()
    publisher = KafkaRawSink(settings)
    publisher.write(records[: len(records) // 4])

    first = sink_process(args, tmp_path / "sink1.log")
    # the rest comes while the sink works; it is killed in the middle of it
    feeding = threading.Thread(
        target=lambda: [
            (publisher.write(records[i : i + 2000]), time.sleep(0.02))
            for i in range(len(records) // 4, len(records), 2000)
        ]
    )
    feeding.start()
    wait_for("the sink stored a third", lambda: counts(settings.db_path) > len(records) // 3)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    at_kill = counts(settings.db_path)
    assert at_kill < len(records), "the sink was not killed mid-stream"
    feeding.join()
    publisher.close()

    second = sink_process(args, tmp_path / "sink2.log")
    try:
        wait_for("every record stored", lambda: counts(settings.db_path) >= len(records), 90)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, (tmp_path / "sink2.log").read_text()[-3000:]
    assert tables(settings.db_path) == reference_tables(tmp_path, records)
    # the restart began at the first sink's last commit, not at the beginning
    store = SqliteStore(settings.db_path, readonly=True)
    beats = {p[1]: json.loads(p[5]) for p in store.parts()}
    store.close()
    assert beats[second.pid]["received"] < len(records) - at_kill + 5000, beats[second.pid]


def test_a_record_the_brokers_never_acknowledge_fails_the_write(tmp_path: Path) -> None:
    trades = [r for r in feed_records("btcusdt") if type(r) is Trade][:100]
    with Broker(tmp_path / "tansu.log") as broker:
        settings = settings_for(tmp_path, broker.bootstrap)
        publisher = Publisher(settings, ("trade",), delivery_timeout_s=2.0)
        assert publisher.publish(trades) == 100
    with pytest.raises(TransportError, match="not delivered"):
        publisher.publish(trades)
