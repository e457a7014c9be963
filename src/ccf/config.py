"""Typed configuration: YAML files under ``conf/``, composed and overridden.

Settings apply in this order: ``conf/ccf.yaml`` -> extra files given with
``--config`` -> ``CCF__SECTION__KEY`` environment variables -> ``key=value``
on the command line. Values on the command line are read as YAML, so
``symbols=[btcusdt,ethusdt]`` and ``replay.speed=10`` both work. The merged
mapping is validated once at start into frozen pydantic models: an unknown
key or a bad value stops the program with a message that names the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ccf.secrets import SecretRef

CONF_DIR = Path(__file__).resolve().parent / "conf"  # conf/ at the top links here
ENV_PREFIX = "CCF__"
_STREAM_RE = re.compile(
    r"^(depth(@0ms|@100ms|@250ms|@500ms|@1000ms)?|depth(5|10|20)(@100ms|@1000ms)?|trade|bookTicker"
    r"|kline_(1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M))$"
)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def shared_dir() -> Path:
    """Where the shared recordings live: ``$CCF_SHARED``, default ``../shared``."""
    env = os.environ.get("CCF_SHARED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared"


SQL_NAME = r"^[a-z_][a-z0-9_]{0,62}$"  # a PostgreSQL identifier that needs no quoting
TOPIC_NAME = r"^[A-Za-z0-9._-]{1,200}$"  # Kafka's legal topic characters


class PostgresConfig(_Section):
    """PostgreSQL for the tables (``storage.backend=postgres``); libpq names and defaults."""

    host: str = Field("127.0.0.1", description="host name, or a socket directory")
    port: int = Field(5432, gt=0, le=65535)
    dbname: str = Field("ccf", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    user: str = Field("ccf", pattern=r"^[A-Za-z0-9_.@-]{1,63}$")
    password: SecretRef | None = Field(None, description="env:NAME or file:/path; never the value")
    db_schema: str = Field("public", pattern=SQL_NAME, description="schema holding CCF's tables")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: Path | None = Field(None, description="CA bundle for verify-ca/verify-full")
    sslcert: Path | None = Field(None, description="client certificate (mutual TLS)")
    sslkey: Path | None = Field(None, description="its key")
    connect_timeout_s: int = Field(10, gt=0)
    pool_size: int = Field(4, gt=0, description="connections a reader process keeps at most")


class StorageConfig(_Section):
    backend: Literal["sqlite", "postgres"] = Field(
        "sqlite", description="sqlite: files under data_dir; postgres: storage.postgres"
    )
    path: Path | None = Field(None, description="SQLite file; default <data_dir>/ccf.sqlite")
    batch_rows: int = Field(5000, gt=0, description="rows per write transaction at most")
    flush_interval_s: float = Field(0.25, gt=0, description="longest a record waits in memory")
    postgres: PostgresConfig = PostgresConfig()
    wake: Literal["push", "poll"] = Field(
        "push",
        description="push: writers commit when their queue drains and wake the parts that "
        "follow the store (loopback UDP); poll: fixed flush and poll intervals (the old path)",
    )
    wake_fallback_s: float = Field(
        1.0, gt=0, description="with push: a follower reads the store this often without a wake-up"
    )


class KafkaConfig(_Section):
    """The Kafka transport: one topic per record kind, keyed by ``exchange:symbol``."""

    bootstrap: str = Field("127.0.0.1:9092", pattern=r"^[A-Za-z0-9._:,\[\]-]+$")
    topic_prefix: str = Field(
        "ccf.", pattern=r"^[A-Za-z0-9._-]{0,100}$", description="ccf.trade, ..."
    )
    partitions: int = Field(6, gt=0, le=1024, description="partitions of each topic it creates")
    replication: int = Field(1, gt=0, le=16, description="replicas of each topic it creates")
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    linger_ms: float = Field(5.0, ge=0, description="a producer batch waits at most this long")
    batch_bytes: int = Field(1_000_000, gt=0, description="producer batch size")
    session_timeout_ms: int = Field(
        8000, ge=1000, description="a consumer that is silent this long leaves its group"
    )
    groups: dict[str, str] = Field(
        {"features": "ccf-features", "sink": "ccf-sink", "predict": "ccf-predict"},
        description="consumer group per part: workers in one group share the partitions",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretRef | None = Field(None, description="env:NAME or file:/path")
    ssl_ca_location: Path | None = Field(None, description="CA bundle to verify the brokers")
    ssl_certificate_location: Path | None = Field(None, description="client certificate")
    ssl_key_location: Path | None = Field(None, description="its key")
    ssl_key_password: SecretRef | None = None

    @field_validator("groups")
    @classmethod
    def _group_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [g for g in v.values() if not re.fullmatch(TOPIC_NAME, g)]
        if bad:
            raise ValueError(f"group names may hold letters, digits and . _ - only: {bad}")
        return v


class TransportConfig(_Section):
    """How records travel between parts: through the store (embedded) or through Kafka."""

    backend: Literal["store", "kafka"] = Field(
        "store", description="store: parts follow the tables; kafka: transport.kafka topics"
    )
    kafka: KafkaConfig = KafkaConfig()


class InfluxConfig(_Section):
    """An optional sink that also writes records to InfluxDB as line protocol."""

    enabled: bool = False
    url: str = Field("http://127.0.0.1:8086", pattern=r"^https?://\S+$")
    api: Literal["v1", "v2"] = Field("v1", description="v1: /write?db=; v2: /api/v2/write")
    database: str = Field("ccf", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="v1 database")
    retention_policy: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    org: str | None = Field(None, pattern=r"^[A-Za-z0-9_ .-]{1,64}$", description="v2 org")
    bucket: str = Field("ccf", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="v2 bucket")
    username: str | None = Field(None, pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    password: SecretRef | None = Field(None, description="v1 password: env:NAME or file:/path")
    token: SecretRef | None = Field(None, description="v2 token: env:NAME or file:/path")
    ca_bundle: Path | None = Field(None, description="CA bundle for an https url")
    measurement_prefix: str = Field("ccf_", pattern=r"^[A-Za-z0-9_]{0,32}$")
    kinds: tuple[Literal["raw", "features", "predictions", "scores"], ...] = (
        "raw",
        "features",
        "predictions",
        "scores",
    )
    batch_lines: int = Field(5000, gt=0, description="lines per request at most")
    flush_interval_s: float = Field(1.0, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    max_buffer_lines: int = Field(
        1_000_000, gt=0, description="lines held while InfluxDB is down; past it, oldest dropped"
    )


class BinanceConfig(_Section):
    ws_url: str = "wss://stream.binance.com:9443"
    rest_url: str = "https://api.binance.com"


class BackoffConfig(_Section):
    base_s: float = Field(0.5, gt=0)
    cap_s: float = Field(30.0, gt=0)


class CollectConfig(_Section):
    streams: tuple[str, ...] = ("depth@100ms", "trade", "bookTicker")
    book_depth: int = Field(20, gt=0, le=5000, description="levels per side in book records")
    book_cadence: Literal["update", "100ms", "1s"] = "update"
    snapshot_limit: int = Field(1000, gt=0, le=5000)
    max_streams_per_connection: int = Field(1024, gt=0, le=1024)
    max_connection_age_s: float = Field(
        23.5 * 3600, gt=0, description="reconnect before Binance's 24 h cut"
    )
    silence_timeout_s: float = Field(
        30.0, gt=0, description="reconnect after this long without a frame"
    )
    reconnect: BackoffConfig = BackoffConfig()
    rest_weight_limit: int = Field(6000, gt=0, description="REQUEST_WEIGHT per minute")
    rest_timeout_s: float = Field(10.0, gt=0)
    print_every_s: float = Field(5.0, ge=0, description="progress line interval; 0 = quiet")
    max_id_jump: int = Field(
        1_000_000,
        gt=0,
        description="an update or trade id further than this from its stream's last one is "
        "not trusted: a diff is a dead letter and the book resyncs, a trade waits for the next "
        "to confirm it",
    )

    @field_validator("streams")
    @classmethod
    def _known_streams(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if not _STREAM_RE.match(s)]
        if bad:
            raise ValueError(
                f"unknown stream kind(s) {bad}; use e.g. depth@100ms, depth20@100ms, trade, "
                "bookTicker, kline_1m (without the symbol)"
            )
        if not v:
            raise ValueError("at least one stream is needed")
        return v


class FaultConfig(_Section):
    """Faults the replay exchange injects (all off by default)."""

    drop_after_frames: int = Field(0, ge=0, description="close each connection after N frames")
    skip_update_every: int = Field(0, ge=0, description="drop one diff-depth frame every N")
    malformed_every: int = Field(0, ge=0, description="send a malformed frame every N frames")
    rest_429: int = Field(0, ge=0, description="answer the next N REST calls with 429")
    rest_418: int = Field(0, ge=0, description="answer the next N REST calls with 418")
    retry_after_s: int = Field(1, ge=0)
    stall_after_frames: int = Field(0, ge=0, description="stop sending after N frames...")
    stall_s: float = Field(0.0, ge=0, description="...for this long")
    stale_snapshots: int = Field(0, ge=0, description="serve the next N depth snapshots stale")
    rest_duplicate_pages: int = Field(
        0,
        ge=0,
        description="the next N paged history answers (klines, aggTrades, historicalTrades with "
        "startTime/fromId) start half a page early, repeating rows: clients must dedupe",
    )
    shutdown_after_frames: int = Field(0, ge=0, description="send serverShutdown after N frames")
    corrupt_checksum_every: int = Field(
        0, ge=0, description="alter the checksum of one checksummed book update in N (OKX, Kraken)"
    )


class ReplayConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(9443, ge=0, le=65535, description="0 picks a free port")
    files: tuple[Path, ...] = Field(
        (), description="recordings to serve; default: the spot_*.jsonl.gz under $CCF_SHARED"
    )
    klines: tuple[Path, ...] = Field(
        (),
        description="one-minute candle CSVs (SYMBOL-1m-*.csv[.gz]) played alongside the "
        "recordings from the replay's start: their symbols' minute klines, REST and @kline_*",
    )
    speed: float = Field(
        1.0, ge=0, description="1 = real time, 10 = ten times faster, 0 = flat out"
    )
    loop: bool = True
    rebase_time: bool = Field(
        True,
        description="shift every exchange time so the first event happens when the replay "
        "starts (looks live); false keeps the recorded times",
    )
    max_passes: int = Field(
        0, ge=0, description="with loop: stop after this many passes; 0 = forever"
    )
    start: Literal["first_subscribe", "immediately"] = "first_subscribe"
    ping_interval_s: float = Field(20.0, gt=0)
    pong_timeout_s: float = Field(60.0, gt=0)
    max_connection_age_s: float = Field(24 * 3600, gt=0)
    max_streams_per_connection: int = Field(1024, gt=0)
    max_incoming_per_s: int = Field(5, gt=0)
    weight_limit_per_minute: int = Field(6000, gt=0)
    ban_after_429s: int = Field(2, ge=0, description="429s in a row tolerated before a 418 ban")
    ban_s: float = Field(120.0, gt=0, description="length of a 418 ban (Binance starts at 2 min)")
    faults: FaultConfig = FaultConfig()
    tls: bool = Field(
        False,
        description="serve https:// and wss:// with a certificate made locally on first use; "
        "clients trust <tls_dir>/ca.pem (e.g. SSL_CERT_FILE=<tls_dir>/ca.pem)",
    )
    tls_dir: Path | None = Field(
        None, description="where the CA and certificate live; default ~/.cache/ccf/replay-tls"
    )
    admin_token: SecretRef | None = Field(
        None,
        description="env:NAME or file:/path of the token POST /_replay/faults requires "
        "(header X-Replay-Token); unset: runtime fault changes are refused",
    )

    def recording_files(self) -> tuple[Path, ...]:
        if self.files:
            return self.files
        return tuple(sorted((shared_dir() / "data" / "binance").glob("spot_*.jsonl.gz")))


class RecordConfig(_Section):
    dir: Path | None = Field(None, description="default <data_dir>/recordings")


class FeedConfig(_Section):
    """One RSS/Atom feed: its name (the ``source`` of its news) and URL."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="e.g. coindesk")
    url: str = Field(pattern=r"^https?://\S+$")
    interval_s: float | None = Field(None, gt=0, description="default news.interval_s")


class NewsConfig(_Section):
    """RSS/Atom news, polled by ``ccf collect`` when enabled and ``feeds`` is not empty."""

    enabled: bool = Field(False, description="off by default: the offline demo stays offline")
    feeds: tuple[FeedConfig, ...] = ()
    interval_s: float = Field(120.0, gt=0, description="poll interval of a feed")
    jitter: float = Field(0.1, ge=0, le=1, description="+- this fraction of the interval")
    timeout_s: float = Field(20.0, gt=0, description="whole request, body included")
    max_body_bytes: int = Field(5_000_000, gt=0, description="stop reading a body past this")
    max_redirects: int = Field(5, ge=0)
    concurrency: int = Field(16, gt=0, description="requests in flight at most")
    user_agent: str = "ccf-news/0.1 (RSS reader)"
    backoff: BackoffConfig = BackoffConfig(base_s=30.0, cap_s=1800.0)
    future_tolerance_s: float = Field(
        300.0, ge=0, description="publish dates later than now + this are clamped"
    )
    title_window_s: float = Field(
        3 * 86400.0, ge=0, description="same title counts as the same story within this span"
    )
    dedupe_days: float = Field(
        30.0, ge=0, description="stories loaded from the store at start to deduplicate; 0 = all"
    )

    @field_validator("feeds")
    @classmethod
    def _unique_names(cls, v: tuple[FeedConfig, ...]) -> tuple[FeedConfig, ...]:
        names = [f.name for f in v]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"feed names must be unique; repeated: {dup}")
        return v


_DURATION = r"^\d+(ns|us|ms|s|m|h|d)$"


def _check_duration(v: str) -> str:
    if not re.fullmatch(_DURATION, v):
        raise ValueError("not a duration: write e.g. 100ms, 1s, 5m, 1h, 7d (0s for none)")
    return v


Duration = Annotated[str, AfterValidator(_check_duration)]
"""A duration in config: a whole number and a unit (ns, us, ms, s, m, h, d)."""


class FeaturesConfig(_Section):
    """One feature set (``ccf features``): buckets, sources and the feature list.

    The keys from ``name`` to ``features`` define the rows; a hash of them is the
    set's version, so changing any of them writes a new table. The others only
    say how the part runs.
    """

    name: str = Field("default", pattern=r"^[a-z][a-z0-9_]{0,39}$")
    bucket: Duration = Field("1s", description="bucket length: 100ms, 1s, 1m, ...")
    allowed_lateness: Duration = Field(
        "1s", description="event time an event may trail the newest one"
    )
    source: Literal["book", "candle"] = Field(
        "book", description="book: books and trades; candle: closed candles"
    )
    candle_interval: str = Field("1m", pattern=r"^\d+[smhdw]$|^1M$")
    book_depth: int = Field(5, gt=0, le=5000, description="levels per side in the rows")
    book_source: str = Field("diff", description="book records' source: diff or depth20, ...")
    features: tuple[dict[str, Any], ...] = Field(
        (), description="feature kinds in order: [{kind: m_p}, {kind: spread}, ...]"
    )
    warmup: Duration = Field("10m", description="history replayed before the first row written")
    path: Path | None = Field(None, description="SQLite file; default <data_dir>/features.sqlite")
    poll_interval_s: float = Field(0.2, gt=0, description="how often the raw store is read")
    max_rows_per_poll: int = Field(50_000, gt=0, description="per table and symbol")
    online_rows: int = Field(1000, gt=0, description="rows kept in memory per symbol")
    print_every_s: float = Field(5.0, ge=0, description="progress line interval; 0 = quiet")
    checkpoint_every: Duration = Field(
        "5s", description="event time between feature-state checkpoints; 0s = every write"
    )
    watermark: Literal["streams", "lateness"] = Field(
        "streams",
        description="streams: a bucket closes once every stream passed its end (or went idle); "
        "lateness: only allowed_lateness after the newest event (the old rule)",
    )
    idle_timeout: Duration = Field(
        "150ms", description="receive-clock silence after which a stream no longer holds buckets"
    )

    @field_validator("features")
    @classmethod
    def _kinds_named(cls, v: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        bad = [i for i, f in enumerate(v) if not isinstance(f.get("kind"), str)]
        if bad:
            raise ValueError(f"entries {bad} lack a kind: write e.g. {{kind: spread}}")
        return v


class SplitConfig(_Section):
    """Fractions of the time range, in time order; the embargo between them is automatic."""

    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.15, ge=0, lt=1)
    test: float = Field(0.15, ge=0, lt=1)

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        if self.train + self.val + self.test > 1 + 1e-9:
            raise ValueError("train + val + test must not exceed 1")
        return self


class TrainConfig(_Section):
    """How deep models train (Lightning); tabular models read ``seed`` only."""

    max_epochs: int = Field(20, gt=0)
    batch_size: int = Field(256, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    patience: int = Field(3, ge=0, description="epochs without a better val loss before stopping")
    accelerator: str = Field("auto", description="auto uses a GPU where present; cpu, gpu")
    compile: bool = Field(False, description="torch.compile the training step (fixed shapes)")
    max_train_samples: int | None = Field(
        None, gt=0, description="use only the newest N training windows (warm starts, tests)"
    )
    progress_bar: bool = True
    num_threads: int | None = Field(None, gt=0, description="torch CPU threads; default all")


_URL_PASSWORD = re.compile(r"^[A-Za-z0-9+.-]+://[^/@?#]*:[^/@?#]*@")


def _no_url_password(data: Any, key: str) -> Any:
    """URLs land in logs, run tags and ``ps``: a password in one would leak. Checked on the
    section's raw mapping, so the error names the key without echoing the value."""
    v = data.get(key) if isinstance(data, dict) else None
    if isinstance(v, str) and _URL_PASSWORD.match(v):
        raise ValueError(
            f"{key}: a URL here must not hold a password: give it by reference "
            "(password=env:NAME or file:/path; for PostgreSQL the word postgres uses "
            "storage.postgres)"
        )
    return data


class TuneConfig(_Section):
    trials: int = Field(
        20, gt=0, description="finished trials in the study in total, all workers and runs together"
    )
    timeout_s: float | None = Field(None, gt=0, description="stop starting trials after this")
    storage: str | None = Field(
        None,
        description="default sqlite:///<data_dir>/optuna.db; postgres: the database of "
        "storage.postgres (several machines tune one study); or a URL without a password",
    )
    study: str | None = Field(None, description="study name; default ccf-<model>-<feature set>")
    pruning: bool = True

    @model_validator(mode="before")
    @classmethod
    def _storage_url(cls, data: Any) -> Any:
        return _no_url_password(data, "storage")


class RegistryServerConfig(_Section):
    """``ccf registry-server``: an MLflow tracking server that several machines share."""

    host: str = Field("127.0.0.1", description="0.0.0.0 to accept other machines")
    port: int = Field(5000, gt=0, le=65535)
    backend_store: Literal["sqlite", "postgres"] = Field(
        "sqlite",
        description="sqlite: <data_dir>/registry/mlflow.db; postgres: storage.postgres",
    )
    artifacts_dir: Path | None = Field(
        None,
        description="the folder the server keeps artifacts in; default <data_dir>/registry/"
        "artifacts",
    )
    workers: int = Field(1, ge=1, le=8, description="uvicorn workers (about 300 MB each)")
    allowed_hosts: tuple[str, ...] = Field(
        (), description="Host headers accepted beyond localhost and private IPs, e.g. mlflow.lan"
    )
    tls_cert: Path | None = Field(None, description="serve https with this certificate...")
    tls_key: Path | None = Field(None, description="...and its key")
    start_timeout_s: float = Field(120.0, gt=0, description="wait this long for /health")

    @model_validator(mode="after")
    def _tls_pair(self) -> RegistryServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give tls_cert and tls_key together (or neither, for plain http)")
        return self


class RegistryConfig(_Section):
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; default sqlite:///<data_dir>/mlflow.db; "
        "http(s)://host:port for a registry server",
    )
    artifact_dir: Path | None = Field(None, description="default <data_dir>/mlartifacts")
    model_name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,100}$", description="default ccf-<feature set name>"
    )
    experiment: str = Field("ccf", pattern=r"^[A-Za-z0-9_. -]{1,100}$")
    username: str | None = Field(None, description="a tracking server's user (basic auth)")
    password: SecretRef | None = Field(None, description="its password: env:NAME or file:/path")
    token: SecretRef | None = Field(None, description="or a bearer token: env:NAME or file:/path")
    ca_bundle: Path | None = Field(None, description="CA bundle to verify an https server")
    client_cert: Path | None = Field(None, description="client certificate (mutual TLS)")
    insecure_tls: bool = Field(False, description="skip verifying the server (tests only)")
    server: RegistryServerConfig = RegistryServerConfig()

    @model_validator(mode="before")
    @classmethod
    def _tracking_url(cls, data: Any) -> Any:
        return _no_url_password(data, "tracking_uri")

    @model_validator(mode="after")
    def _credentials(self) -> RegistryConfig:
        if self.password is not None and self.username is None:
            raise ValueError("a password needs its username: set ml.registry.username")
        if self.password is not None and self.token is not None:
            raise ValueError("give password (basic auth) or token (bearer), not both")
        if self.insecure_tls and self.ca_bundle is not None:
            raise ValueError("ca_bundle verifies the server and insecure_tls skips that: pick one")
        return self


class EvaluateConfig(_Section):
    step: int = Field(1, gt=0, description="buckets between two walk-forward forecast origins")
    refit_every: int = Field(0, ge=0, description="refit every K steps; 0 = never")
    fee_bps: float = Field(7.5, ge=0, description="cost of one trade (both sides), basis points")
    threshold_bps: float = Field(
        2.0, ge=0, description="BUY/SELL when the forecast return passes this, basis points"
    )
    alpha: float = Field(
        0.05, gt=0, lt=1, description="significance after multiple-test correction"
    )
    leak_mae_ratio: float = Field(0.99, gt=0, description="MAE/naive below this looks like a leak")
    leak_direction: float = Field(0.56, gt=0.5, lt=1, description="hit rate above this, too")
    promote_on: Literal["pinball", "absolute"] = Field(
        "pinball", description="loss whose corrected DM test decides 'beats naive'"
    )
    min_history: int = Field(
        1000,
        gt=0,
        description="targets a naive yardstick's interval quantiles need (fitted or online): "
        "fewer make it miscalibrated, and every model then 'beats' it",
    )
    online_refresh: int = Field(
        60, gt=0, description="buckets between two updates of the online naive's quantiles"
    )
    range_sd: float = Field(
        8.0,
        gt=0,
        description="an input further than this many training sds outside the training "
        "range flags the forecast (range check)",
    )


class MLConfig(_Section):
    """Datasets, models, training, tuning, registry and evaluation (``ccf train`` ...)."""

    targets: tuple[str, ...] = Field(
        ("m_p",), min_length=1, description="columns forecast as log returns: m_p, close, ..."
    )
    horizons: tuple[int, ...] = Field((1, 5, 10), min_length=1, description="in buckets")
    encoder_length: int = Field(60, gt=0, description="buckets of history a window holds")
    inputs: tuple[str, ...] = Field(
        (), description="covariates (globs); empty = every stationary feature column"
    )
    known_inputs: tuple[Literal["time_of_day", "day_of_week"], ...] = Field(
        ("time_of_day",), description="covariates known ahead, from the bucket time"
    )
    normalizer: Literal["standard", "robust", "none"] = "standard"
    input_units: Literal["relative", "drop", "raw"] = Field(
        "relative",
        description="default inputs with units (volumes, quantities, notionals, OFI): "
        "relative to their recent level (scale-free), dropped, or raw",
    )
    vol_halflife: int = Field(
        30, gt=0, description="EWMA half-life (buckets) of the vol that scales targets"
    )
    quantiles: tuple[float, ...] = Field((0.1, 0.25, 0.5, 0.75, 0.9))
    models: tuple[str, ...] = Field(("naive", "lightgbm", "tft"), min_length=1)
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per model: {tft: {hidden_size: 16}, ...}"
    )
    seed: int = 42
    split: SplitConfig = SplitConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    registry: RegistryConfig = RegistryConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    @field_validator("horizons")
    @classmethod
    def _horizons(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(h <= 0 for h in v) or list(v) != sorted(set(v)):
            raise ValueError("horizons must be positive, distinct and increasing, e.g. [1, 5, 10]")
        return v

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if list(v) != sorted(set(v)) or any(not 0 < q < 1 for q in v):
            raise ValueError("quantiles must be increasing and inside (0, 1)")
        if 0.5 not in v:
            raise ValueError("quantiles must include 0.5 (the point forecast)")
        if any(round(1 - q, 9) not in {round(x, 9) for x in v} for q in v):
            raise ValueError("quantiles must pair up around 0.5 (0.1 with 0.9, ...)")
        return v


class CalibrationConfig(_Section):
    """Online conformal calibration of the served quantiles (:mod:`ccf.ml.calibration`)."""

    method: Literal["none", "regime", "aci", "both"] = Field(
        "both",
        description="regime: rolling conformal quantile per volatility tercile; aci: adaptive "
        "conformal inference on the level; both; none: serve the model's own quantiles",
    )
    window: int = Field(10_000, gt=0, description="resolved forecasts per stream in the pool")
    min_scores: int = Field(
        300, gt=0, description="fewer resolved forecasts: the model's own quantiles are served"
    )
    gamma: float = Field(0.0002, ge=0, lt=1, description="ACI step per resolved forecast")
    shrink: float = Field(
        0.0,
        ge=0,
        description="each conformal shift is shrunk by this many of its standard errors "
        "(James-Stein: a shift the pool cannot tell from noise is not served); 0: none",
    )

    @model_validator(mode="after")
    def _sizes(self) -> CalibrationConfig:
        if self.min_scores > self.window:
            raise ValueError(
                f"min_scores ({self.min_scores}) must not exceed window ({self.window})"
            )
        return self


class ServeConfig(_Section):
    """The live predictor (``ccf predict``)."""

    alias: str = Field("champion", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="model served")
    shadow: bool = Field(True, description="run the challenger beside the champion")
    poll_interval_s: float = Field(0.2, gt=0, description="how often the feature store is read")
    alias_check_s: float = Field(5.0, gt=0, description="how often the registry's aliases are read")
    max_model_age: Duration | None = Field(
        None, description="flag forecasts of a model trained longer ago than this (e.g. 7d)"
    )
    max_input_lag_s: float = Field(
        30.0, gt=0, description="flag forecasts whose newest input is older than this (wall clock)"
    )
    naive_history: int = Field(
        20_000, gt=100, description="rows per symbol the live naive yardstick is fitted on"
    )
    first_start: Literal["newest", "oldest"] = Field(
        "newest", description="where a first start begins: the newest bucket, or every stored one"
    )
    torch_threads: int = Field(
        1, gt=0, description="CPU threads for a deep model's forecasts (one window: 1 is fastest)"
    )
    compiled: bool = Field(
        True,
        description="deep models forecast through ONNX Runtime (eager PyTorch when the export "
        "fails, or with false)",
    )
    wait_for_model: bool = Field(
        False, description="wait for a champion (and enough history) instead of stopping"
    )
    print_every_s: float = Field(5.0, ge=0, description="progress line interval; 0 = quiet")
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)


class MonitorConfig(_Section):
    """Scoring, rolling accuracy, drift and quality (``ccf monitor``)."""

    poll_interval_s: float = Field(1.0, gt=0)
    windows: tuple[Duration, ...] = Field(
        ("5m", "1h", "24h"), min_length=1, description="rolling windows of the accuracy aggregates"
    )
    drift_every: Duration = Field("10m", description="how often drift and quality reports run")
    drift_rows: int = Field(
        2000, gt=10, description="newest rows per symbol compared with the reference"
    )
    drift_share_alert: float = Field(
        0.5, gt=0, le=1, description="alert when this share of columns drifted"
    )
    missing_alert: float = Field(
        0.2, ge=0, le=1, description="alert when a column has more missing values than this"
    )
    reports_dir: Path | None = Field(None, description="default <data_dir>/reports")


class MetricsConfig(_Section):
    """Prometheus endpoints: one per part, on 127.0.0.1 unless configured."""

    enabled: bool = True
    host: str = "127.0.0.1"
    ports: dict[str, int] = Field(
        default_factory=lambda: {
            "exchange": 9100,
            "collect": 9101,
            "features": 9102,
            "predict": 9103,
            "monitor": 9104,
            "sink": 9105,
        },
        description="part -> port; 0 picks a free port",
    )


class UIConfig(_Section):
    """The dashboard (``ccf ui``): where Streamlit listens and how often pages refresh."""

    host: str = Field("127.0.0.1", description="address the dashboard listens on")
    port: int = Field(8501, gt=0, le=65535, description="its port")
    refresh_s: float = Field(
        2.0,
        gt=0,
        description="live pages (Live, Market data, Health) re-read the stores this often",
    )


RUN_PARTS = ("exchange", "collect", "features", "train", "predict", "monitor", "ui")


class RunConfig(_Section):
    """``ccf run``: which parts run and how the retraining loop goes."""

    parts: tuple[Literal[RUN_PARTS], ...] = Field(  # type: ignore[valid-type]
        RUN_PARTS, min_length=1, description="parts started (exchange only with source=replay)"
    )
    train_models: tuple[str, ...] = Field(
        ("naive", "lightgbm"), min_length=1, description="kinds the retraining loop trains"
    )
    retrain_every: Duration = Field("1h", description="retrain (warm start) and promote this often")
    first_train_retry: Duration = Field(
        "5s", description="retry the first training this often until data allows one"
    )
    first_model: bool = Field(
        True,
        description="while there is no champion, train naive alone on a short spec first "
        "(a forecast within a minute), replaced once the configured models train",
    )
    first_encoder_length: int = Field(5, gt=0, description="the first model's encoder_length")
    first_vol_halflife: int = Field(10, gt=0, description="the first model's vol_halflife")
    status_every_s: float = Field(10.0, ge=0, description="a status line per part; 0 = quiet")


class VenueConfig(_Section):
    """One venue to collect (issue 15): its name in ``ccf.sources.venues`` (the records'
    ``exchange``), its symbols and streams; with source=replay, the recordings a replay
    exchange serves for it and that exchange's port. Unset ``venues`` = one venue,
    ``exchange`` with ``symbols`` and ``collect.streams``, exactly as before."""

    name: str
    symbols: tuple[str, ...]
    streams: tuple[str, ...] = Field((), description="() = collect.streams")
    ws_url: str = Field("", description="live websocket base; '' = the venue's own")
    rest_url: str = Field("", description="live REST base; '' = the venue's own")
    replay_files: tuple[Path, ...] = Field(
        (), description="recordings served for this venue; () = replay.files (first venue only)"
    )
    replay_port: int = Field(0, ge=0, le=65535, description="0 = replay.port (first venue only)")

    @field_validator("symbols")
    @classmethod
    def _lower(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("a venue needs at least one symbol")
        return tuple(s.lower() for s in v)

    @model_validator(mode="after")
    def _known(self) -> VenueConfig:
        from ccf.sources import venues

        try:
            venue = venues.get(self.name)
        except KeyError as e:
            raise ValueError(str(e).strip("'\"")) from None
        bad = [s for s in self.streams if not venue.supports(s)]
        if bad:
            raise ValueError(f"venue {self.name} has no stream(s) {bad}")
        return self


class Settings(_Section):
    data_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    exchange: str = Field(
        "binance",
        description="the venue (ccf.sources.venues) the parts read and key their rows by: "
        "binance (spot) or binance_usdm; the collector's default venue",
    )
    source: Literal["replay", "binance"] = "replay"
    symbols: tuple[str, ...] = ("btcusdt", "ethusdt")
    storage: StorageConfig = StorageConfig()
    transport: TransportConfig = TransportConfig()
    influx: InfluxConfig = InfluxConfig()
    binance: BinanceConfig = BinanceConfig()
    collect: CollectConfig = CollectConfig()
    replay: ReplayConfig = ReplayConfig()
    record: RecordConfig = RecordConfig()
    news: NewsConfig = NewsConfig()
    features: FeaturesConfig = FeaturesConfig()
    ml: MLConfig = MLConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    metrics: MetricsConfig = MetricsConfig()
    run: RunConfig = RunConfig()
    ui: UIConfig = UIConfig()
    venues: tuple[VenueConfig, ...] = Field(
        (), description="venues collected at once; () = exchange with symbols (see VenueConfig)"
    )

    @field_validator("exchange")
    @classmethod
    def _known_venue(cls, v: str) -> str:
        from ccf.sources import venues

        if v not in venues.names():
            raise ValueError(f"unknown venue {v!r}: known venues are {', '.join(venues.names())}")
        return v

    @field_validator("symbols")
    @classmethod
    def _lower_symbols(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one symbol is needed, e.g. symbols=[btcusdt]")
        bad = [s for s in v if not re.fullmatch(r"[A-Za-z0-9]{2,20}", s)]
        if bad:
            raise ValueError(f"not a Binance symbol: {bad}; write them like btcusdt")
        return tuple(s.lower() for s in v)

    @property
    def db_path(self) -> Path:
        return self.storage.path or self.data_dir / "ccf.sqlite"

    @property
    def features_path(self) -> Path:
        return self.features.path or self.data_dir / "features.sqlite"

    @property
    def predictions_path(self) -> Path:
        return self.data_dir / "predictions.sqlite"

    @property
    def monitor_path(self) -> Path:
        return self.data_dir / "monitor.sqlite"

    @property
    def reports_dir(self) -> Path:
        return self.monitor.reports_dir or self.data_dir / "reports"

    @property
    def tracking_uri(self) -> str:
        """MLflow's tracking URI: the configured server, else SQLite under the data dir."""
        uri = self.ml.registry.tracking_uri
        return uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_dir(self) -> Path:
        return (self.ml.registry.artifact_dir or self.data_dir / "mlartifacts").resolve()

    @property
    def model_name(self) -> str:
        return self.ml.registry.model_name or f"ccf-{self.features.name}"

    @property
    def optuna_storage(self) -> str:
        return self.ml.tune.storage or f"sqlite:///{(self.data_dir / 'optuna.db').resolve()}"

    @property
    def recordings_dir(self) -> Path:
        return self.record.dir or self.data_dir / "recordings"

    def venue_list(self) -> tuple[VenueConfig, ...]:
        """The venues collected: ``venues``, or the one ``exchange`` with ``symbols``."""
        return self.venues or (VenueConfig(name=self.exchange, symbols=self.symbols),)

    def venue_urls(self, v: VenueConfig) -> tuple[str, str]:
        """(websocket base, REST base) of venue ``v``: the replay exchange serving it with
        source=replay (the first venue on replay.port), else the venue's live endpoints."""
        first = v == self.venue_list()[0]
        if self.source == "replay":
            port = v.replay_port or (self.replay.port if first else 0)
            if not port:
                raise ConfigError(
                    f"venue {v.name}: set replay_port (only the first venue uses replay.port)"
                )
            ws, rest = ("wss", "https") if self.replay.tls else ("ws", "http")
            return f"{ws}://{self.replay.host}:{port}", f"{rest}://{self.replay.host}:{port}"
        if v.name == "binance":  # the `binance` section holds the spot endpoints
            return v.ws_url or self.binance.ws_url, v.rest_url or self.binance.rest_url
        from ccf.sources import venues

        ends = venues.get(v.name).endpoints
        return v.ws_url or ends.ws_url, v.rest_url or ends.rest_url

    def ws_url(self) -> str:
        if self.source == "replay":
            scheme = "wss" if self.replay.tls else "ws"
            return f"{scheme}://{self.replay.host}:{self.replay.port}"
        return self.binance.ws_url

    def rest_url(self) -> str:
        if self.source == "replay":
            scheme = "https" if self.replay.tls else "http"
            return f"{scheme}://{self.replay.host}:{self.replay.port}"
        return self.binance.rest_url

    @model_validator(mode="after")
    def _no_ignored_binance_urls(self) -> Settings:
        """With source=replay the parts connect to replay.host:replay.port, so a changed
        binance.ws_url/rest_url would be ignored without a word: refuse it instead."""
        if self.source == "replay":
            default = BinanceConfig()
            changed = [
                f"binance.{k}"
                for k in ("ws_url", "rest_url")
                if getattr(self.binance, k) != getattr(default, k)
            ]
            if changed:
                raise ValueError(
                    f"{' and '.join(changed)} would be ignored with source=replay (the parts "
                    "connect to the replay exchange at replay.host:replay.port); drop the "
                    "override, use source=binance to connect there, or move the replay "
                    "with replay.host=... replay.port=..."
                )
        return self


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.get(k)
        if not isinstance(child, dict):
            child = {}
            node[k] = child
        node = child
    node[keys[-1]] = value


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys, not {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` -> (``key.sub``, YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. replay.speed=10")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ConfigError(f"override {text!r}: {key!r} is not a dotted key like collect.book_depth")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML: {e}") from e
    return key, value


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[str, Any]]:
    out = []
    for name, raw in environ.items():
        if name.startswith(ENV_PREFIX):
            key = ".".join(p.lower() for p in name[len(ENV_PREFIX) :].split("__"))
            out.append(parse_override(f"{key}={raw}"))
    return out


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(
                f"  {key}: unknown key (check the spelling; see conf/ccf.yaml for the keys)"
            )
        else:
            got = e.get("input")
            secret = str(e["loc"][-1]).endswith(("password", "token")) if e["loc"] else False
            shown = "" if isinstance(got, dict) or secret else f" (got {got!r})"
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  {key}: {msg}{shown}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_settings(
    overrides: Iterable[str] = (),
    files: Iterable[Path] = (),
    *,
    base: Path | None = CONF_DIR / "ccf.yaml",
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Compose and validate the configuration; raises :class:`ConfigError`."""
    tree: dict[str, Any] = {}
    if base is not None and base.exists():
        tree = _read_yaml(base)
    for f in files:
        tree = _merge(tree, _read_yaml(Path(f)))
    for key, value in _env_overrides(os.environ if environ is None else environ):
        _set_dotted(tree, key, value)
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value)
    try:
        return Settings.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_error(e)) from None
