"""A feature set: the configured rows, their columns and their version.

The version is a hash of the canonical form of everything that decides a
row's values (bucket, lateness, sources, depth, the feature list and the
engine's own format), so a changed config never writes into an old table.
Durations are hashed in ns: ``1s`` and ``1000ms`` are the same set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ccf.config import ConfigError, FeaturesConfig
from ccf.features.buckets import interval_ns, parse_duration
from ccf.features.kinds.base import Feature, build
from ccf.records import book_columns

# Bump when the engine changes what a row holds: every feature set gets a new version.
ENGINE_FORMAT = 1
INT_COLUMNS = ("ts", "ts_end")
"""Stored as int64; every other column is a float64."""
TRADE_COLUMNS = (
    "buy_count",
    "buy_qty",
    "buy_notional",
    "sell_count",
    "sell_qty",
    "sell_notional",
    "last_trade_ts",
    "last_trade_price",
)
CANDLE_COLUMNS = ("open", "high", "low", "close", "volume")


def base_columns(depth: int) -> tuple[str, ...]:
    """The columns every row has before any feature runs (see ``kinds/base.py``)."""
    return (
        "ts",
        "ts_end",
        *book_columns(depth),
        "book_updates",
        "carried",
        "gap",
        *TRADE_COLUMNS,
        *CANDLE_COLUMNS,
        "news_count",
    )


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """A validated feature set; ``make()`` gives one symbol's fresh feature objects."""

    name: str
    version: str
    canonical: str  # the JSON the version hashes
    bucket_ns: int
    lateness_ns: int
    warmup_ns: int
    watermark: str
    idle_ns: int
    source: str
    candle_interval: str
    book_depth: int
    book_source: str
    columns: tuple[str, ...]
    make: Callable[[], list[Feature]]

    @property
    def table(self) -> str:
        return table_name(self.name, self.version)

    @property
    def float_columns(self) -> tuple[str, ...]:
        return float_columns(self.columns)


def table_name(name: str, version: str) -> str:
    """The store table of one feature-set version."""
    return f"features_{name}_{version}"


def float_columns(columns: tuple[str, ...]) -> tuple[str, ...]:
    """The columns stored as float64 (all but the int64 bucket times)."""
    return tuple(c for c in columns if c not in INT_COLUMNS)


def canonical_form(cfg: FeaturesConfig) -> dict[str, Any]:
    """What defines the rows, normalized (durations in ns)."""
    return {
        "engine_format": ENGINE_FORMAT,
        "name": cfg.name,
        "bucket_ns": parse_duration(cfg.bucket),
        "allowed_lateness_ns": parse_duration(cfg.allowed_lateness),
        "source": cfg.source,
        "candle_interval": cfg.candle_interval if cfg.source == "candle" else None,
        "book_depth": cfg.book_depth,
        "book_source": cfg.book_source if cfg.source == "book" else None,
        "features": [dict(f) for f in cfg.features],
    }


def version_of(canonical: dict[str, Any]) -> tuple[str, str]:
    """(12 hex digits of sha256, the canonical JSON hashed)."""
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12], text


def feature_set(cfg: FeaturesConfig) -> FeatureSet:
    """Build a feature set from its config; a ConfigError names the key at fault."""
    import ccf.features.kinds  # noqa: F401  (registers the built-in kinds)

    bucket = parse_duration(cfg.bucket)
    if bucket <= 0:
        raise ConfigError("features.bucket: must be longer than 0, e.g. 1s")
    if cfg.source == "candle":
        try:
            candle_ns = interval_ns(cfg.candle_interval)
        except ValueError as e:
            raise ConfigError(f"features.candle_interval: {e}") from None
        if bucket % candle_ns:
            raise ConfigError(
                f"features.bucket: {cfg.bucket} is not a multiple of features.candle_interval "
                f"{cfg.candle_interval}; with source=candle use e.g. bucket={cfg.candle_interval}"
            )
    try:
        columns, make = build(cfg.features, base_columns(cfg.book_depth))
    except ValueError as e:
        raise ConfigError(f"features.{e}") from None
    if cfg.watermark == "streams" and parse_duration(cfg.idle_timeout) <= 0:
        raise ConfigError(
            "features.idle_timeout: must be longer than 0 with watermark=streams, e.g. 150ms"
        )
    canon = canonical_form(cfg)
    version, text = version_of(canon)
    return FeatureSet(
        name=cfg.name,
        version=version,
        canonical=text,
        bucket_ns=bucket,
        lateness_ns=parse_duration(cfg.allowed_lateness),
        warmup_ns=parse_duration(cfg.warmup),
        watermark=cfg.watermark,
        idle_ns=parse_duration(cfg.idle_timeout),
        source=cfg.source,
        candle_interval=cfg.candle_interval,
        book_depth=cfg.book_depth,
        book_source=cfg.book_source,
        columns=columns,
        make=make,
    )
