"""Feature sets: columns, versions, and errors that name the key."""

from __future__ import annotations

import pytest

from ccf.config import ConfigError, load_settings
from ccf.features.spec import base_columns, feature_set
from tests.features.helpers import tiny_set


def test_the_version_is_a_hash_of_what_defines_the_rows() -> None:
    a = tiny_set()
    assert tiny_set().version == a.version  # deterministic
    assert tiny_set(bucket="1000ms").version == a.version  # durations hashed in ns
    assert tiny_set(bucket="100ms").version != a.version
    assert tiny_set(book_depth=3).version != a.version
    assert tiny_set(features="[{kind: t_mid}]").version != a.version
    # how the part runs is not part of the rows
    assert tiny_set(poll_interval_s=5, online_rows=10, warmup="1h").version == a.version
    assert a.table == f"features_default_{a.version}"


def test_columns_are_the_base_columns_then_each_kinds_own() -> None:
    fs = tiny_set()
    assert fs.columns == (*base_columns(2), "t_mid", "t_rows")
    assert fs.float_columns[0] == "a_p_0" and "ts" not in fs.float_columns


def test_the_default_feature_set_builds() -> None:
    fs = feature_set(load_settings(environ={}).features)
    assert {"m_p", "spread", "lograt_m_p_1", "time_since_last_trade"} <= set(fs.columns)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("features.features=[{kind: t_mid}, {kind: nope}]", "features.features[1]: unknown kind"),
        ("features.bucket=1x", "features.bucket"),
        ("features.features=[{window: 3}]", "features.features"),
    ],
)
def test_a_bad_feature_config_names_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        feature_set(load_settings([override], environ={}).features)


def test_candle_buckets_must_hold_whole_candles() -> None:
    with pytest.raises(ConfigError, match="features.bucket"):
        tiny_set(source="candle", bucket="30s")
