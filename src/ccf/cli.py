"""The ``ccf`` command line: one subcommand per part.

Every command takes ``key=value`` overrides after its name (``ccf collect
symbols=[btcusdt] collect.book_cadence=100ms``) and ``--config FILE`` for
extra YAML. Imports of the parts are lazy, so ``--help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import typer

from ccf.config import ConfigError, Settings, load_settings, shared_dir
from ccf.logs import setup_logging

app = typer.Typer(
    help="CCF: real-time crypto forecasting. Collect, featurize, train, predict.",
    no_args_is_help=True,
    add_completion=False,
)

OVERRIDES = typer.Argument(
    None, help="key=value overrides, e.g. symbols=[btcusdt] replay.speed=10", show_default=False
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
    from ccf.sources.collector import Collector
    from ccf.sources.news import NewsCollector, news_wanted

    async def main(stop: asyncio.Event) -> None:
        parts = [Collector(settings, record=record).run(stop)]
        if news_wanted(settings):
            parts.append(NewsCollector(settings).run(stop))
        await asyncio.gather(*parts)

    run_until_stopped(main)


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
    """Serve recordings over the Binance protocol on replay.host:replay.port."""
    from ccf.sources.replay.exchange import serve

    settings = _settings(overrides, config)
    _missing_recordings(settings)

    async def main(stop: asyncio.Event) -> None:
        server = asyncio.create_task(serve(settings.replay))
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([server, waiter], return_when=asyncio.FIRST_COMPLETED)
        server.cancel()
        waiter.cancel()
        await asyncio.gather(server, waiter, return_exceptions=True)

    run_until_stopped(main)


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
    run: Callable[..., object], total_ms: tuple[int, int] | None, label: str
) -> object:
    """Run ``run(progress)`` under a progress bar over event time (or rows)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    start, end = total_ms or (0, 0)
    percent = [TextColumn("{task.percentage:>5.1f}%")] if total_ms else []
    with Progress(
        TextColumn(label),
        BarColumn(),
        *percent,
        TextColumn("{task.fields[rows]:>10,} rows"),
        TimeElapsedColumn(),
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
    typer.echo(summary.text())  # type: ignore[attr-defined]


@backfill_app.command("import")
def backfill_import(
    source: str = typer.Argument(..., help="archive .zip/.csv/.csv.gz path or URL"),
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
        )
    except ArchiveError as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary.text())  # type: ignore[attr-defined]


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
    by the same engine. Rerunning a backfill rewrites nothing."""
    from ccf.features.runner import FeatureRunner, run_backfill
    from ccf.features.spec import feature_set

    settings = _settings(overrides, config)
    try:
        fs = feature_set(settings.features)
    except ConfigError as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(2) from None
    if start is None and end is None:
        run_until_stopped(FeatureRunner(settings, fs).run)
        return
    start_ns = None if start is None else _time_ms(start, "--from") * 1_000_000
    end_ns = None if end is None else _time_ms(end, "--to") * 1_000_000
    try:
        summary = run_backfill(settings, start_ns, end_ns)
    except FileNotFoundError as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary.text())


@app.command()
def predict(overrides: list[str] = OVERRIDES, config: list[Path] = CONFIG) -> None:
    """Live forecasts: the registry's champion (serve.alias) forecasts every closed feature
    bucket, the naive yardstick beside it and the challenger in shadow. Resumes after the
    last bucket it forecast; a promotion takes over between two buckets. Ctrl-C stops."""
    from ccf.serving.predictor import Predictor
    from ccf.serving.source import RegistrySource

    settings = _settings(overrides, config)
    try:
        predictor = Predictor(settings, RegistrySource(settings))
        run_until_stopped(predictor.run)
    except (LookupError, FileNotFoundError) as e:
        typer.echo(f"ccf: {e}", err=True)
        raise typer.Exit(2) from None


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


@app.command()
def run(overrides: list[str] = OVERRIDES, config: list[Path] = CONFIG) -> None:
    """The whole pipeline: for now the replay exchange (when source=replay), the collector and
    the feature runner, each its own process, restarted if it dies. Ctrl-C stops everything
    cleanly."""
    from ccf.supervisor import run_pipeline

    settings = _settings(overrides, config)
    if settings.source == "replay":
        _missing_recordings(settings)
    sys.exit(run_pipeline(settings, overrides or [], config))


def main() -> None:
    app()
