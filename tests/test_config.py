"""Configuration: composition, overrides, and errors that name the key."""

from pathlib import Path

import pytest

from ccf.config import ConfigError, load_settings, parse_override


def test_defaults_come_from_conf_yaml() -> None:
    s = load_settings(environ={})
    assert s.symbols == ("btcusdt", "ethusdt")
    assert s.collect.book_depth == 20
    assert s.source == "replay"
    assert s.ws_url() == "ws://127.0.0.1:9443"


def test_overrides_files_and_environment_compose_in_order(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("collect:\n  book_depth: 10\n  book_cadence: 1s\nsymbols: [solusdt]\n")
    s = load_settings(
        ["collect.book_depth=5", "symbols=[BTCUSDT,ethusdt]"],
        [extra],
        environ={"CCF__REPLAY__SPEED": "10", "CCF__COLLECT__BOOK_DEPTH": "7"},
    )
    assert s.collect.book_depth == 5  # command line beats environment beats file
    assert s.collect.book_cadence == "1s"  # from the file
    assert s.replay.speed == 10.0  # from the environment
    assert s.symbols == ("btcusdt", "ethusdt")  # normalized to lower case


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("collect.book_depth=0", "collect.book_depth"),
        ("collect.book_cadence=5ms", "collect.book_cadence"),
        ("collect.streams=[depth@100ms,bogus]", "collect.streams"),
        ("replay.speed=-1", "replay.speed"),
        ("replay.port=70000", "replay.port"),
        ("symbols=[]", "symbols"),
        ("symbols=[btc-usdt]", "symbols"),
        ("collect.book_dept=20", "collect.book_dept"),
        ("storage.backend=mongodb", "storage.backend"),
        ("replay.faults.rest_429=many", "replay.faults.rest_429"),
    ],
)
def test_bad_values_stop_with_the_key_named(override: str, names: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings([override], environ={})
    assert names in str(err.value)


def test_unknown_key_says_so() -> None:
    with pytest.raises(ConfigError, match=r"collect\.nope: unknown key"):
        load_settings(["collect.nope=1"], environ={})


def test_malformed_override_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must look like key=value"):
        parse_override("replay.speed")
    with pytest.raises(ConfigError, match="not a dotted key"):
        parse_override("a..b=1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("collect: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings([], [bad], environ={})
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings([], [listy], environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings([], [tmp_path / "missing.yaml"], environ={})


def test_settings_are_frozen() -> None:
    s = load_settings(environ={})
    with pytest.raises(Exception, match="frozen"):
        s.collect.book_depth = 3  # type: ignore[misc]
