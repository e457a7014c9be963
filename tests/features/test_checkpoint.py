"""Checkpoints: a restored state continues exactly like the run that never stopped.

Per kind (every registered one, on the adversarial random stream), per engine (the
default set on the real recording, and a candle set), and through the store: the
checkpoint is written with its rows, never goes back in time, and a blob that does not
fit is refused with a reason.
"""

from __future__ import annotations

import pickle
import struct

import pytest

from ccf.config import load_settings
from ccf.features.checkpoint import Checkpoint, CheckpointError, decode_state, encode_state
from ccf.features.engine import FeatureEngine, FeatureRow
from ccf.features.kinds.base import build
from ccf.features.spec import feature_set
from ccf.features.store import FeatureStore
from ccf.records import Book, Trade
from tests.features.helpers import SYM, S, bits, candle
from tests.features.kinds_rows import KINDS, base_columns, random_rows
from tests.features.test_kinds import documented_example
from tests.features.test_runner import recorded_records

ROWS = random_rows(300, seed=11)


def packed(rows: list[dict], columns: tuple[str, ...]) -> list[bytes]:
    return [struct.pack(f"<{len(columns)}d", *(r[c] for c in columns)) for r in rows]


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("split", [0, 1, 37, 299])
def test_every_kind_continues_bit_equal_from_its_checkpoint(name: str, split: int) -> None:
    spec = documented_example(name)
    specs = [spec] if name == "m_p" else [{"kind": "m_p"}, spec]
    columns, make = build(specs, base_columns())

    def step(features: list, rows: list[dict]) -> list[dict]:
        out = []
        for row in rows:
            row = dict(row)
            for f in features:
                f.step(row)
            out.append(row)
        return out

    whole = step(make(), ROWS)
    first = make()
    head = step(first, ROWS[:split])
    blob = encode_state(first, (None, 0.0, 0.0, 0.0))
    restored, _ = decode_state(blob, make())
    tail = step(restored, ROWS[split:])
    assert packed(head + tail, columns[2:]) == packed(whole, columns[2:])


def engine_order(records: list) -> list:
    """Records as a batch reader hands them over: (event time, stream, id)."""
    key = {
        Book: lambda r: (r.ts_event, 0, r.update_id),
        Trade: lambda r: (r.ts_event, 1, r.trade_id),
    }
    return sorted((r for r in records if type(r) in key), key=lambda r: key[type(r)](r))


def run_all(engine: FeatureEngine, records: list, until: int) -> list[FeatureRow]:
    rows: list[FeatureRow] = []
    for r in records:
        rows += engine.push(r)
    return rows + engine.flush(until)


@pytest.mark.parametrize("share", [0.05, 0.5, 0.9])
def test_the_default_set_restored_mid_recording_equals_the_uninterrupted_run(
    share: float,
) -> None:
    fs = feature_set(load_settings(environ={}).features)
    records = engine_order(recorded_records("btcusdt"))
    until = records[-1].ts_event - fs.lateness_ns
    whole = run_all(FeatureEngine(fs, ["btcusdt"]), records, until)

    # the first run stops somewhere mid-stream, its open bucket half full
    first = FeatureEngine(fs, ["btcusdt"])
    cut = int(share * len(records))
    for r in records[:cut]:
        first.push(r)
    cp = first.checkpoint("btcusdt")
    assert cp is not None and first.stats("btcusdt").next_bucket == cp.ts + fs.bucket_ns
    cp = Checkpoint(*pickle.loads(pickle.dumps(tuple(cp))))  # as it comes back from a store

    # the second starts from the checkpoint and reads from its bucket's end, plus some
    # records from before it (a reader's floor is a time, a story may be older): dropped
    second = FeatureEngine(fs, ["btcusdt"])
    second.restore(cp)
    end = cp.ts + fs.bucket_ns
    again = [r for r in records if r.ts_event >= end - 3 * S]
    rows = run_all(second, again, until)
    assert second.stats("btcusdt").late == 0
    assert second._syms["btcusdt"].replayed > 0  # the older ones were read and dropped
    want = [r for r in whole if r.ts > cp.ts]
    assert len(want) > 50 and bits(rows) == bits(want)


def test_a_candle_set_restores_its_last_close() -> None:
    fs = feature_set(
        load_settings(
            [
                "features.source=candle",
                "features.bucket=1m",
                "features.allowed_lateness=0s",
                "features.features=[{kind: candle_return, periods: [1, 3]}, "
                "{kind: volume_zscore, windows: [5]}, {kind: ema, columns: close, alpha: 0.2}]",
            ],
            environ={},
        ).features
    )
    bars = [candle(i * 60 * S, 100 + i, 101 + i, 99 + i, 100.5 + i, 10 + i % 3) for i in range(40)]
    del bars[20:23]  # three missing bars: carried buckets at the last close
    whole = run_all(FeatureEngine(fs, [SYM]), bars, 41 * 60 * S)
    first = FeatureEngine(fs, [SYM])
    run_all(first, bars[:20], 0)
    cp = first.checkpoint(SYM)
    assert cp is not None
    second = FeatureEngine(fs, [SYM])
    second.restore(cp)
    rows = run_all(second, bars[19:], 41 * 60 * S)
    assert bits(rows) == bits([r for r in whole if r.ts > cp.ts])


def test_a_checkpoint_of_other_kinds_or_garbage_is_refused() -> None:
    fs = feature_set(load_settings(environ={}).features)
    other = feature_set(load_settings(["features.features=[{kind: m_p}]"], environ={}).features)
    engine = FeatureEngine(other, [SYM])
    for b in (
        Book("binance", SYM, "diff", i, i * S, i * S, (101.0, 1.0, 99.0, 1.0)) for i in range(5)
    ):
        engine.push(b)
    cp = engine.checkpoint(SYM)
    assert cp is not None
    with pytest.raises(CheckpointError, match="holds kinds"):
        FeatureEngine(fs, [SYM]).restore(cp)
    with pytest.raises(CheckpointError, match="unreadable"):
        FeatureEngine(fs, [SYM]).restore(cp._replace(state=b"not a pickle"))
    with pytest.raises(CheckpointError, match="format"):
        FeatureEngine(other, [SYM]).restore(
            cp._replace(state=pickle.dumps((99, [], (None, 0, 0, 0))))
        )


def test_the_store_writes_a_checkpoint_with_its_rows_and_never_back_in_time(tmp_path) -> None:
    fs = feature_set(load_settings(["features.features=[{kind: m_p}]"], environ={}).features)
    store = FeatureStore(tmp_path / "f.sqlite", fs)
    width = len(fs.float_columns)
    row = lambda t: FeatureRow(SYM, t * S, (t + 1) * S, (1.0,) * width)  # noqa: E731
    assert store.checkpoint(SYM) is None
    assert store.write([row(1), row(2)], [Checkpoint(SYM, 2 * S, b"two")]) == 2
    assert store.checkpoint(SYM) == Checkpoint(SYM, 2 * S, b"two")
    store.write([row(0)], [Checkpoint(SYM, 0, b"zero")])  # an older range written later
    assert store.checkpoint(SYM) == Checkpoint(SYM, 2 * S, b"two")
    store.write([row(3)], [Checkpoint(SYM, 3 * S, b"three")])
    assert store.checkpoint(SYM) == Checkpoint(SYM, 3 * S, b"three")
    assert store.last_bucket(SYM) == 3 * S
    # a failed write stores neither the rows nor the checkpoint
    with pytest.raises(struct.error):
        store.write([row(4), FeatureRow(SYM, 5 * S, 6 * S, ())], [Checkpoint(SYM, 5 * S, b"x")])
    assert store.last_bucket(SYM) == 3 * S and store.checkpoint(SYM).state == b"three"
    store.close()
