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


@app.command()
def collect(
    overrides: list[str] = OVERRIDES,
    config: list[Path] = CONFIG,
    record: bool = typer.Option(False, help="also write every raw frame (see ccf record)"),
) -> None:
    """Stream books, trades, quotes and candles into the store. Ctrl-C flushes and exits."""
    from ccf.sources.collector import Collector

    settings = _settings(overrides, config)
    run_until_stopped(Collector(settings, record=record).run)


@app.command()
def record(overrides: list[str] = OVERRIDES, config: list[Path] = CONFIG) -> None:
    """Collect as `ccf collect` does and write every raw frame, with its receive time, to
    <data_dir>/recordings, replayable with `ccf exchange replay.files=[...]`."""
    from ccf.sources.collector import Collector

    settings = _settings(overrides, config)
    run_until_stopped(Collector(settings, record=True).run)


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
    """The whole pipeline: for now the replay exchange (when source=replay) and the collector,
    each its own process, restarted if it dies. Ctrl-C stops everything cleanly."""
    from ccf.supervisor import run_pipeline

    settings = _settings(overrides, config)
    if settings.source == "replay":
        _missing_recordings(settings)
    sys.exit(run_pipeline(settings, overrides or [], config))


def main() -> None:
    app()
