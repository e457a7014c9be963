"""The ``ccf`` command line: one subcommand per part.

Every command takes ``key=value`` overrides after its name (``ccf collect
symbols=[btcusdt] collect.book_cadence=100ms``) and ``--config FILE`` for
extra YAML. Imports of the parts are lazy, so ``--help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import typer

from ccf.config import ConfigError, Settings, load_settings, shared_dir
from ccf.logs import VERBOSE_ENV, setup_logging

if TYPE_CHECKING:
    from ccf.ml.pipeline import Round
    from ccf.ml.prepare import Source
    from ccf.monitoring.metrics import PartMetrics

T = TypeVar("T")

app = typer.Typer(
    help="CCF: real-time crypto forecasting. Collect, featurize, train, predict.",
    no_args_is_help=True,
    add_completion=False,
)

OVERRIDES = typer.Argument(
    None,
    # \[ : Rich would read [btcusdt] as a markup tag and drop it from the help
    help="key=value overrides, e.g. symbols=\\[btcusdt] replay.speed=10",
    show_default=False,
)
CONFIG = typer.Option([], "--config", "-c", help="extra YAML files merged over conf/ccf.yaml")


def _settings(overrides: list[str] | None, config: list[Path]) -> Settings:
    try:
        settings = load_settings(overrides or [], config)
    except ConfigError as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(2) from None
    setup_logging(settings.log_level)
    return settings


def run_until_stopped(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` in one loop; the first Ctrl-C or SIGTERM sets ``stop`` for a clean
    shutdown, a second Ctrl-C interrupts at once."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():
                raise KeyboardInterrupt
            typer.echo("stopping: flushing buffers (Ctrl-C again to force)", err=True)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        await main(stop)

    try:
        asyncio.run(runner())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _serve(metrics: PartMetrics) -> PartMetrics:
    """Open the part's Prometheus endpoint (metrics.host:metrics.ports.<part>); a port in use
    stops the command with a message naming the key."""
    from ccf.monitoring.metrics import MetricsPortError

    try:
        metrics.serve()
    except MetricsPortError as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(2) from None
    return metrics


def _missing_recordings(settings: Settings) -> None:
    files = settings.replay.recording_files()
    missing = [f for f in files if not Path(f).exists()]
    if not files or missing:
        where = missing or [shared_dir() / "data" / "binance" / "spot_*.jsonl.gz"]
        typer.echo(
            f"ccf: no recordings to replay (looked for {', '.join(map(str, where))}). "
            "Set CCF_SHARED to the folder holding data/binance/, name files with "
            "replay.files=[...], or collect live with source=binance.",
            err=True,
        )
        raise typer.Exit(2)


def _collect_all(settings: Settings, record: bool) -> None:
    """Market data and, when ``news.enabled`` with feeds listed, news, in one loop."""
    from ccf.monitoring.metrics import PartMetrics
    from ccf.sources.collector import Collector
    from ccf.sources.news import NewsCollector, news_wanted

    metrics = _serve(PartMetrics("collect", settings))

    async def main(stop: asyncio.Event) -> None:
        group: list[Collector] = []  # one metrics endpoint: part-wide counts are summed
        parts = [
            Collector(settings, record=record, metrics=metrics, venue=v, group=group).run(stop)
            for v in settings.venue_list()
        ]
        if news_wanted(settings):
            parts.append(NewsCollector(settings).run(stop))
        await asyncio.gather(*parts)

    try:
        run_until_stopped(main)
    finally:
        metrics.close()


@app.command()
def collect(
    overrides: list[str] = OVERRIDES,
    config: list[Path] = CONFIG,
    record: bool = typer.Option(False, help="also write every raw frame (see ccf record)"),
) -> None:
    """Stream books, trades, quotes and candles (and news, with news.enabled=true) into the
    store. Ctrl-C flushes and exits."""
    _collect_all(_settings(overrides, config), record)


@app.command()
def record(overrides: list[str] = OVERRIDES, config: list[Path] = CONFIG) -> None:
    """Collect as `ccf collect` does and write every raw frame, with its receive time, to
    <data_dir>/recordings, replayable with `ccf exchange replay.files=[...]`."""
    _collect_all(_settings(overrides, config), True)


@app.command()
def exchange(overrides: list[str] = OVERRIDES, config: list[Path] = CONFIG) -> None:
    """Serve recordings over the Binance protocol on replay.host:replay.port (https/wss with
    replay.tls=true). Exits non-zero, naming the cause, when it cannot start."""
    from ccf.sources.replay.exchange import ReplayStartError, replay_venues, serve
    from ccf.sources.replay.metrics import ExchangeMetrics
    from ccf.sources.replay.venues.server import venue_servers

    settings = _settings(overrides, config)
    _missing_recordings(settings)
    metrics = _serve(ExchangeMetrics(settings))

    async def main(stop: asyncio.Event) -> None:
        server = asyncio.create_task(serve(settings.replay, on_start=metrics.attach))
        # further venues (settings.venues) with their own recordings: one exchange each
        others = [asyncio.create_task(serve(cfg)) for cfg in replay_venues(settings)]
        # OKX, Coinbase, Kraken: their own protocols (ccf.sources.replay.venues)
        others += [asyncio.create_task(run) for run in venue_servers(settings)]
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([server, *others, waiter], return_when=asyncio.FIRST_COMPLETED)
        for task in (server, *others, waiter):
            task.cancel()
        await asyncio.gather(server, *others, waiter, return_exceptions=True)
        for task in (server, *others):
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    try:
        run_until_stopped(main)
    except ReplayStartError as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(2) from None
    finally:
        metrics.close()


backfill_app = typer.Typer(
    help="Market history into the store: REST walks and archive files. "
    "Rerun an interrupted backfill to resume it; a rerun of a finished "
    "one changes nothing.",
    no_args_is_help=True,
)
app.add_typer(backfill_app, name="backfill")
SYMBOL = typer.Option(..., "--symbol", "-s", help="e.g. btcusdt")
START = typer.Option(..., "--start", help="UTC time: 2024-08-08T23:54, 2024-08-08, or epoch ms")
END = typer.Option(..., "--end", help="UTC time (exclusive), same forms as --start")


def _time_ms(text: str, option: str) -> int:
    from datetime import UTC, datetime

    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        typer.echo(
            f"ccf: {option} {text!r}: use 2024-08-08T23:54, 2024-08-08 or epoch ms", err=True
        )
        raise typer.Exit(2) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _with_progress(
    run: Callable[..., object],
    total_ms: tuple[int, int] | None,
    label: str,
    *,
    transient: bool = False,
) -> object:
    """Run ``run(progress)`` under a progress bar over event time (or rows); a transient
    bar is gone when it ends."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    start, end = total_ms or (0, 0)
    percent = [TextColumn("{task.percentage:>5.1f}%")] if total_ms else []
    with Progress(
        TextColumn(label),
        BarColumn(),
        *percent,
        TextColumn("{task.fields[rows]:>10,} rows"),
        TimeElapsedColumn(),
        transient=transient,
    ) as bar:
        task = bar.add_task(label, total=max(1, end - start) if total_ms else None, rows=0)

        def progress(pos_ms: int, rows: int) -> None:
            bar.update(task, completed=(pos_ms - start) if total_ms else rows, rows=rows)

        result = run(progress)
        if total_ms:
            bar.update(task, completed=end - start)
    return result


@backfill_app.command("klines")
def backfill_klines(
    symbol: str = SYMBOL,
    start: str = START,
    end: str = END,
    interval: str = typer.Option("1m", help="1s 1m 3m 5m 15m 30m 1h ... 1w"),
    overrides: list[str] = OVERRIDES,
    config: list[Path] = CONFIG,
) -> None:
    """Candles for a symbol and time range over REST (/api/v3/klines)."""
    _backfill_rest("klines", symbol, start, end, interval, overrides, config)


@backfill_app.command("aggtrades")
def backfill_aggtrades(
    symbol: str = SYMBOL,
    start: str = START,
    end: str = END,
    overrides: list[str] = OVERRIDES,
    config: list[Path] = CONFIG,
) -> None:
    """Aggregate trades for a symbol and time range over REST (/api/v3/aggTrades)."""
    _backfill_rest("aggtrades", symbol, start, end, "1m", overrides, config)


def _backfill_rest(
    what: str,
    symbol: str,
    start: str,
    end: str,
    interval: str,
    overrides: list[str] | None,
    config: list[Path],
) -> None:
    from ccf.sources.backfill import run_rest_backfill
    from ccf.sources.binance.history import NoProgress
    from ccf.sources.binance.rest import RestError

    settings = _settings(overrides, config)
    start_ms, end_ms = _time_ms(start, "--start"), _time_ms(end, "--end")
    if end_ms <= start_ms:
        typer.echo("ccf: --end must be after --start", err=True)
        raise typer.Exit(2)
    try:
        summary = _with_progress(
            lambda progress: asyncio.run(
                run_rest_backfill(
                    settings, what, symbol.lower(), start_ms, end_ms, interval, progress
                )
            ),
            (start_ms, end_ms),
            f"{what} {symbol}",
        )
    except (RestError, NoProgress, ValueError) as e:
        typer.echo(
            f"ccf: backfill stopped: {e}. What was fetched is stored; run the same "
            "command again to resume.",
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(summary.text())


@backfill_app.command("import")
def backfill_import(
    source: str = typer.Argument(..., help="archive .zip/.csv/.csv.gz/.parquet path or URL"),
    symbol: str = typer.Option(None, "--symbol", "-s", help="when the file name does not say"),
    interval: str = typer.Option(None, help="when the file name does not say"),
    overrides: list[str] = OVERRIDES,
    config: list[Path] = CONFIG,
) -> None:
    """Import a Binance archive file (klines or aggTrades, ms or µs timestamps) or a plain
    open_time_ms,open,high,low,close,volume candle file."""
    from ccf.sources.archive import ArchiveError
    from ccf.sources.backfill import run_import

    settings = _settings(overrides, config)
    try:
        summary = _with_progress(
            lambda progress: run_import(
                settings, source, symbol=symbol, interval=interval, progress=progress
            ),
            None,
            f"import {source.rsplit('/', 1)[-1]}",
            transient=True,  # on an error, only the error shows
        )
    except ArchiveError as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(2) from None
    except ConnectionError as e:  # the store's server: the message names it, not the password
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(summary.text())


@app.command()
def features(
    overrides: list[str] = OVERRIDES,
    config: list[Path] = CONFIG,
    start: str = typer.Option(
        None, "--from", help="backfill from this UTC time (2024-08-08T23:54, epoch ms)"
    ),
    end: str = typer.Option(None, "--to", help="backfill up to this UTC time (exclusive)"),
) -> None:
    """Feature rows from the raw store: live, following what the collector writes (resumes
    after the last bucket written; Ctrl-C stops), or with --from/--to a backfill of history
    by the same engine. Rerunning a backfill rewrites nothing. With transport.backend=kafka
    it is one worker of the feature group: start several, they share the symbols."""
    from ccf.features.runner import FeatureRunner, require_sqlite_raw, run_backfill
    from ccf.features.spec import feature_set
    from ccf.monitoring.metrics import PartMetrics

    settings = _settings(overrides, config)
    try:
        fs = feature_set(settings.features)
    except ConfigError as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(2) from None
    if start is None and end is None:
        metrics = _serve(PartMetrics("features", settings))
        try:
            if settings.transport.backend == "kafka":
                from ccf.features.stream import KafkaFeatureWorker

                run_until_stopped(KafkaFeatureWorker(settings, fs, metrics=metrics).run)
            else:
                require_sqlite_raw(settings, "`ccf features`")
                run_until_stopped(FeatureRunner(settings, fs, metrics=metrics).run)
        except ConfigError as e:
            typer.echo(f"ccf: {e}", err=True)
            raise typer.Exit(2) from None
        except ConnectionError as e:  # PostgreSQL unreachable: its message says where
            typer.echo(f"ccf: {e}", err=True)
            raise typer.Exit(1) from None
        finally:
            metrics.close()
        return
    start_ns = None if start is None else _time_ms(start, "--from") * 1_000_000
    end_ns = None if end is None else _time_ms(end, "--to") * 1_000_000
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        typer.echo(
            f"ccf: --from {start} is not before --to {end}: no bucket lies between them; "
            "give --from earlier than --to (--to is exclusive)",
            err=True,
        )
        raise typer.Exit(2)
    try:
        summary = run_backfill(settings, start_ns, end_ns)
    except (FileNotFoundError, ConfigError) as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(2) from None
    except ConnectionError as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(summary.text())


@app.command()
def sink(overrides: list[str] = OVERRIDES, config: list[Path] = CONFIG) -> None:
    """Kafka -> store: one worker of the sink group copies the raw topics into the store
    (storage.backend; PostgreSQL in a cluster), committing offsets only after each batch
    is stored. Start several to share the partitions. Ctrl-C stops."""
    from ccf.monitoring.metrics import PartMetrics
    from ccf.transport.sink import KafkaSink

    settings = _settings(overrides, config)
    if settings.transport.backend != "kafka":
        typer.echo("ccf: `ccf sink` reads Kafka: set transport.backend=kafka", err=True)
        raise typer.Exit(2)
    metrics = _serve(PartMetrics("sink", settings))
    try:
        run_until_stopped(KafkaSink(settings, metrics=metrics).run)
    finally:
        metrics.close()


@app.command("registry-server")
def registry_server(overrides: list[str] = OVERRIDES, config: list[Path] = CONFIG) -> None:
    """The shared MLflow registry for several machines (ml.registry.server): its backend in
    PostgreSQL (backend_store=postgres) or SQLite, artifacts in a shared folder. Point the
    other machines at it with ml.registry.tracking_uri. Ctrl-C stops it."""
    from ccf.ml.server import RegistryServerError, serve_registry
    from ccf.secrets import SecretError

    settings = _settings(overrides, config)
    try:
        code = serve_registry(settings)
    except (RegistryServerError, ConnectionError, SecretError) as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@app.command()
def predict(overrides: list[str] = OVERRIDES, config: list[Path] = CONFIG) -> None:
    """Live forecasts: the registry's champion (serve.alias) forecasts every closed feature
    bucket, the naive yardstick beside it and the challenger in shadow. Resumes after the
    last bucket it forecast; a promotion takes over between two buckets. Ctrl-C stops.
    With transport.backend=kafka it is one worker of the predictor group: start several,
    they share the symbols."""
    from ccf.monitoring.metrics import PartMetrics
    from ccf.serving.predictor import Predictor
    from ccf.serving.source import RegistrySource

    settings = _settings(overrides, config)
    metrics = _serve(PartMetrics("predict", settings))
    try:
        if settings.transport.backend == "kafka":
            from ccf.serving.stream import KafkaPredictorWorker

            worker = KafkaPredictorWorker(settings, RegistrySource(settings), metrics)
            run_until_stopped(worker.run)
        else:
            predictor = Predictor(settings, RegistrySource(settings), metrics)
            run_until_stopped(predictor.run)
    except (LookupError, FileNotFoundError) as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(2) from None
    finally:
        metrics.close()


@app.command()
def monitor(overrides: list[str] = OVERRIDES, config: list[Path] = CONFIG) -> None:
    """Score every forecast once its target bucket closes (monitor.sqlite), roll accuracy up
    per monitor.windows, and every monitor.drift_every compare the newest feature rows with
    the champion's training data (Evidently reports under monitor.reports_dir, alerts past
    monitor.drift_share_alert / monitor.missing_alert). Prometheus on metrics.ports.monitor.
    Resumes after the last prediction it read; Ctrl-C stops."""
    from ccf.monitoring.metrics import MonitorMetrics
    from ccf.monitoring.monitor import Monitor

    settings = _settings(overrides, config)
    metrics = _serve(MonitorMetrics(settings))
    try:
        run_until_stopped(Monitor(settings, metrics).run)
    finally:
        metrics.close()


@app.command()
def status(
    overrides: list[str] = OVERRIDES,
    config: list[Path] = CONFIG,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """What the store holds per record kind and symbol, and which parts run."""
    from ccf.status import format_status, gather_status

    settings = _settings(overrides, config)
    report = gather_status(settings)
    typer.echo(json.dumps(report, indent=2) if as_json else format_status(report))


# -- ML: train, tune, evaluate, promote ----------------------------------------------------

CANDLES = typer.Option(
    [],
    "--candles",
    help="candle file(s) (CSV/Parquet: open_time_ms,open,high,low,close,volume), one symbol "
    "each, run through the feature engine instead of reading the feature store; repeat for "
    "several",
)
MODEL_URIS = typer.Option(
    [],
    "--model-uri",
    help="a registered model (models:/ccf-candles@champion, a version number or alias) or a "
    "saved model folder; repeat to score several on the same origins, in one report and one "
    "Holm family",
)
FROM = typer.Option(None, "--from", help="feature-store rows from this UTC time (epoch ms too)")
TO = typer.Option(None, "--to", help="feature-store rows up to this UTC time (exclusive)")


def _ml_settings(
    overrides: list[str] | None, config: list[Path], candles: list[Path], extra: list[str]
) -> Settings:
    """Settings for an ML command: options become overrides (named as the config keys, so a
    bad value names its key), and --candles adds conf/candles.yaml before the given files
    unless the configured features already read candles."""
    from ccf.config import CONF_DIR

    args = [*(overrides or []), *extra]
    settings = _settings(args, config)
    if candles and settings.features.source != "candle":
        settings = _settings(args, [CONF_DIR / "candles.yaml", *config])
    return settings


def _ml_source(candles: list[Path], start: str | None, end: str | None) -> Source:
    from ccf.ml.prepare import Source

    if candles and (start or end):
        typer.echo(
            "ccf: --from/--to select feature-store rows; with --candles the whole file is used",
            err=True,
        )
        raise typer.Exit(2)
    return Source(
        tuple(Path(c) for c in candles),
        None if start is None else _time_ms(start, "--from") * 1_000_000,
        None if end is None else _time_ms(end, "--to") * 1_000_000,
    )


def _ml_errors(run: Callable[[], T]) -> T:
    """Run an ML flow; its known failures end the command with their message."""
    from ccf.ml.prepare import MLError

    try:
        return run()
    except MLError as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(1) from None


def _models_option(models: str | None) -> list[str]:
    if not models:
        return []
    names = [m.strip() for m in models.split(",") if m.strip()]
    return [f"ml.models=[{','.join(names)}]"]


def _test_option(test: str) -> Literal["split", "all"]:
    if test not in ("split", "all"):
        typer.echo(f"ccf: --test: {test!r} is not one of split, all", err=True)
        raise typer.Exit(2)
    return "all" if test == "all" else "split"


def _print_round(rnd: Round) -> None:
    from ccf.ml.summary import headline

    if rnd.trained:  # one report for the round: every model on the same origins
        kinds = [t.kind for t in rnd.trained if t.kind != "naive"]
        typer.echo(headline(rnd.trained[0].report, ["naive", *kinds]))
    for t in rnd.trained:
        typer.echo(
            f"{t.kind}: version {t.version.version}, skill {t.skill:+.4f}, beats naive: "
            f"{'yes' if t.beats_naive else 'no'}, report {t.report_paths[0].parent}\n"
        )
    aliases = ", ".join(f"{a}={v}" for a, v in sorted(rnd.aliases.items()))
    typer.echo(f"aliases: {aliases or '(none)'}")
    decision = rnd.decision
    if decision is not None:
        moved = "promoted" if decision.allowed else "not promoted"
        typer.echo(f"challenger {decision.challenger.version} {moved}: {decision.reason}")


@app.command()
def train(
    overrides: list[str] = OVERRIDES,
    config: list[Path] = CONFIG,
    candles: list[Path] = CANDLES,
    start: str = FROM,
    end: str = TO,
    models: str = typer.Option(
        None, "--models", help="comma-separated kinds (default ml.models): naive,lightgbm,tft"
    ),
    every: str = typer.Option(
        None, "--every", help="retrain on this schedule (30m, 1h, 1d) until Ctrl-C"
    ),
    warm_start: bool = typer.Option(
        False, "--warm-start", help="continue from the champion when it is the same kind"
    ),
    retry: str = typer.Option(
        None,
        "--retry",
        help="with --every: while there is no champion, retry a failed round after this long",
    ),
    first_model: bool = typer.Option(
        False,
        "--first-model",
        help="with --retry: a first naive model on a short spec while there is no champion, "
        "replaced by the first full round (run.first_model)",
    ),
) -> None:
    """Train each model on the train split, walk it forward on the test split against
    naive, write its report, log an MLflow run and register a version (alias challenger;
    the first champion is the best that beats naive, else naive). With --every, keep
    retraining on fresh data and promote by the rule of `ccf promote`."""
    from ccf.features.buckets import parse_duration
    from ccf.ml import pipeline

    settings = _ml_settings(overrides, config, candles, _models_option(models))
    source = _ml_source(candles, start, end)
    kinds = settings.ml.models
    if every is None:
        rnd = _ml_errors(
            lambda: pipeline.train_round(settings, source, kinds, warm_start=warm_start)
        )
        _print_round(rnd)
        return
    try:
        every_s = parse_duration(every) / 1e9
    except ValueError as e:
        typer.echo(f"ccf: --every: {e}", err=True)
        raise typer.Exit(2) from None
    try:
        retry_s = None if retry is None else parse_duration(retry) / 1e9
    except ValueError as e:
        typer.echo(f"ccf: --retry: {e}", err=True)
        raise typer.Exit(2) from None
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        typer.echo("stopping after this round (Ctrl-C again to abort it)", err=True)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        rounds = _ml_errors(
            lambda: pipeline.train_loop(
                settings,
                source,
                kinds,
                every_s=every_s,
                stop=stop,
                warm_start=warm_start,
                retry_s=retry_s,
                on_round=lambda n, rnd: _print_round(rnd),
                first_model=first_model,
            )
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo(f"stopped after {rounds} round(s)")


@app.command()
def tune(
    overrides: list[str] = OVERRIDES,
    config: list[Path] = CONFIG,
    candles: list[Path] = CANDLES,
    start: str = FROM,
    end: str = TO,
    model: str = typer.Option(..., "--model", help="the kind to tune: lightgbm, tft, nhits"),
    trials: int = typer.Option(
        None, "--trials", help="trials in the study in total (default ml.tune.trials)"
    ),
) -> None:
    """Optuna search over the model's search space (TPE, seeded; median pruning), stored in
    ml.tune.storage so an interrupted study resumes with only the missing trials; the best
    parameters are then trained and registered as the challenger."""
    from ccf.ml import pipeline

    extra = [] if trials is None else [f"ml.tune.trials={trials}"]
    settings = _ml_settings(overrides, config, candles, extra)
    source = _ml_source(candles, start, end)
    result, rnd = _ml_errors(lambda: pipeline.tune(settings, source, model))
    typer.echo(
        f"study {result.study}: {result.complete} complete, {result.pruned} pruned, "
        f"{result.failed} failed ({result.ran} run now); best trial {result.best_trial} "
        f"value {result.best_value:.6g} params {result.best_params}"
    )
    _print_round(rnd)


@app.command()
def evaluate(
    overrides: list[str] = OVERRIDES,
    config: list[Path] = CONFIG,
    candles: list[Path] = CANDLES,
    start: str = FROM,
    end: str = TO,
    model_uri: list[str] = MODEL_URIS,
    test: str = typer.Option(
        "split",
        "--test",
        help="split: the test split (naive fitted before it); all: every origin of the "
        "file or --from/--to range, nothing refitted, the naive's intervals from the data "
        "before each origin (for registered models on new data)",
    ),
    models: str = typer.Option(
        None, "--models", help="fit these kinds on the train split instead (default ml.models)"
    ),
    refit_every: int = typer.Option(
        None, "--refit-every", help="refit every K walk-forward steps (0 = never)"
    ),
    out: str = typer.Option(None, "--out", help="report folder (default <data_dir>/reports/...)"),
) -> None:
    """Walk-forward evaluation on the test split against naive: prints the headline table
    (IC, direction vs break-even, coverage, MASE, DM verdict, leak flags), writes
    report.json and report.html (+ charts) and logs them as an MLflow run."""
    from ccf.ml import pipeline
    from ccf.ml.summary import headline

    if model_uri and models:
        typer.echo("ccf: give --model-uri or --models, not both", err=True)
        raise typer.Exit(2)
    test_mode = _test_option(test)
    extra = _models_option(models)
    if refit_every is not None:
        extra.append(f"ml.evaluate.refit_every={refit_every}")
    settings = _ml_settings(overrides, config, candles, extra)
    source = _ml_source(candles, start, end)
    result = _ml_errors(
        lambda: pipeline.evaluate(
            settings,
            source,
            model_uris=tuple(model_uri),
            kinds=settings.ml.models,
            test=test_mode,
            out_dir=Path(out) if out else None,
        )
    )
    typer.echo(headline(result.report, result.labels))
    typer.echo(f"\nreport: {result.paths[0].parent}  mlflow run: {result.run_id}")


@app.command()
def promote(
    overrides: list[str] = OVERRIDES,
    config: list[Path] = CONFIG,
    candles: list[Path] = CANDLES,
    start: str = FROM,
    end: str = TO,
    version: int = typer.Option(
        None, "--version", help="promote this version (default: the challenger)"
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    force: bool = typer.Option(False, "--force", help="skip the skill check (recorded as forced)"),
    test: str = typer.Option(
        "split",
        "--test",
        help="split: compare on the test split; all: on every origin of the file or range "
        "(new data; the naive's intervals from the data before each origin)",
    ),
) -> None:
    """Move the champion alias to the challenger (or --version N) only when, walked forward
    on the same origins of the newest data's test split, it beats naive (corrected DM
    test) and the champion's skill. Prints the comparison and asks before moving."""
    from ccf.ml import pipeline, promotion
    from ccf.ml.registry import Registry
    from ccf.ml.summary import headline

    settings = _ml_settings(overrides, config, candles, [])
    ref = "challenger" if version is None else str(version)
    if force:
        reg = Registry(settings)
        if not yes and not typer.confirm(
            f"--force: make {ref} champion WITHOUT the skill check?", default=False
        ):
            typer.echo("nothing changed")
            raise typer.Exit(1)
        v = _ml_errors(lambda: promotion.force(reg, ref))
        typer.echo(f"champion -> version {v.version} (forced: the skill check was skipped)")
        return
    source = _ml_source(candles, start, end)
    test_mode = _test_option(test)
    reg, d = _ml_errors(lambda: pipeline.promote(settings, source, ref, test_mode))
    champ = f"version {d.champion.version} ({d.champion.kind})" if d.champion else "none"
    typer.echo(
        f"challenger: version {d.challenger.version} ({d.challenger.kind})  champion: {champ}"
    )
    if d.report is not None:
        labels = [x for x in ("naive", "champion", "challenger") if x in d.report["models"]]
        typer.echo(headline(d.report, labels))
    if not d.allowed:
        typer.echo(f"refused: {d.reason}")
        raise typer.Exit(1)
    typer.echo(f"allowed: {d.reason}")
    if not yes and not typer.confirm(
        f"Move champion to version {d.challenger.version}?", default=False
    ):
        typer.echo("nothing changed")
        raise typer.Exit(1)
    promotion.apply(reg, d)
    typer.echo(f"champion -> version {d.challenger.version}")


@app.command()
def ui(overrides: list[str] = OVERRIDES, config: list[Path] = CONFIG) -> None:
    """The dashboard at http://ui.host:ui.port (default 127.0.0.1:8501): live forecasts,
    accuracy, market data, models (with promotion) and health, read from the stores of
    data_dir. The overrides and --config files apply to it as to every other part."""
    import os

    settings = _settings(overrides, config)
    script = Path(__file__).resolve().parent / "ui" / "app.py"
    argv = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.address",
        settings.ui.host,
        "--server.port",
        str(settings.ui.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",
        "--",
        *(overrides or []),
        *(f"--config={c}" for c in config),
    ]
    typer.echo(f"ccf ui: http://{settings.ui.host}:{settings.ui.port}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)  # Streamlit in this process: signals reach it directly


@app.command()
def run(overrides: list[str] = OVERRIDES, config: list[Path] = CONFIG) -> None:
    """The whole pipeline, each part its own process, restarted if it dies: the replay
    exchange (source=replay), collector, features, the training loop (a first model as
    soon as the data allows, then hourly retraining and promotion), predictor, monitor
    and the dashboard at http://127.0.0.1:8501. Ctrl-C stops everything cleanly."""
    from ccf.supervisor import run_pipeline

    settings = _settings(overrides, config)
    if settings.source == "replay":
        _missing_recordings(settings)
    sys.exit(run_pipeline(settings, overrides or [], config))


@app.callback()
def _options(
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="also show libraries' info messages, warnings and progress bars (MLflow's...)",
    ),
) -> None:
    """CCF: real-time crypto forecasting. Collect, featurize, train, predict."""
    if verbose:  # in the environment, so the parts `ccf run` starts are verbose too
        os.environ[VERBOSE_ENV] = "1"


def main() -> None:
    try:
        app()
    except ConnectionError as e:
        # a server the config names is unreachable (PostgreSQL, ...): its message says which;
        # a traceback would only bury it
        typer.echo(f"ccf: {e}", err=True)
        sys.exit(1)
