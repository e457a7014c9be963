"""``ccf run``: every part as its own process, watched and restarted.

Each part is ``python -m ccf <part> <the same overrides>``: the replay
exchange (with source=replay), the collector, features, the training loop
(it trains a first model as soon as the data allows one, then retrains and
promotes on ``run.retrain_every``), the predictor (it waits for that first
champion), the monitor and the dashboard. A part that exits unexpectedly is
restarted with capped backoff and the restart is logged and counted; a status
line per part is printed every ``run.status_every_s``. Ctrl-C or SIGTERM sends
SIGTERM to every part, consumers first (each flushes and exits cleanly), and
waits for them.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ccf.config import Settings
from ccf.sources.backoff import backoff_s

log = logging.getLogger(__name__)
STOP_GRACE_S = 15


@dataclass
class Part:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)
    next_start: float = 0.0


def _wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.2)
    return False


def plan_parts(settings: Settings, overrides: list[str], config: list[Path]) -> list[Part]:
    """The parts ``run.parts`` names, in start order, each with its command line."""
    extra = [a for c in config for a in ("--config", str(c))]
    run = settings.run
    special: dict[str, list[str]] = {
        "train": [
            "--every",
            run.retrain_every,
            "--retry",
            run.first_train_retry,
            "--warm-start",
            "--models",
            ",".join(run.train_models),
            *(["--first-model"] if run.first_model else []),
        ],
        "predict": ["serve.wait_for_model=true"],
    }
    parts = []
    for name in run.parts:
        if name == "exchange" and settings.source != "replay":
            continue
        argv = [sys.executable, "-m", "ccf", name, *overrides, *extra, *special.get(name, [])]
        parts.append(Part(name, argv))
    return parts


def status_lines(parts: list[Part], now: float) -> list[str]:
    """One line per part: running (pid, for how long) or waiting to restart, and restarts."""
    lines = []
    for p in parts:
        if p.proc is not None and p.proc.poll() is None:
            state = f"running pid {p.proc.pid} for {_span(now - p.started_at)}"
        else:
            state = f"restarting in {max(0.0, p.next_start - now):.0f} s"
        lines.append(f"part=run {p.name:<9} {state}, restarts {p.restarts}")
    return lines


def _span(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_pipeline(settings: Settings, overrides: list[str], config: list[Path]) -> int:
    parts = plan_parts(settings, overrides, config)
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log.info(
        "part=run starting %s (source=%s, store=%s)",
        ", ".join(p.name for p in parts),
        settings.source,
        settings.db_path,
    )
    if {"train", "predict", "monitor", "ui"} & {p.name for p in parts}:
        _open_registry(settings)
    for part in parts:
        _start(part)
        if part.name == "exchange" and not _wait_for_port(
            settings.replay.host, settings.replay.port, 60
        ):
            log.error(
                "part=run the replay exchange did not open %s:%d",
                settings.replay.host,
                settings.replay.port,
            )
    next_status = time.monotonic() + settings.run.status_every_s
    while not stopping:
        time.sleep(0.5)
        if settings.run.status_every_s and time.monotonic() >= next_status:
            next_status = time.monotonic() + settings.run.status_every_s
            for line in status_lines(parts, time.monotonic()):
                log.info(line)
        for part in parts:
            if part.proc is None:
                if time.monotonic() >= part.next_start:
                    _start(part)
                continue
            code = part.proc.poll()
            if code is not None and not stopping:
                part.restarts += 1
                delay = backoff_s(part.restarts, base=1.0, cap=60.0, rng=lambda: 1.0)
                log.error(
                    "part=run part %s exited with code %s after %.0f s; restart %d in %.0f s",
                    part.name,
                    code,
                    time.monotonic() - part.started_at,
                    part.restarts,
                    delay,
                )
                part.proc = None
                part.next_start = time.monotonic() + delay
    return _stop_all(parts)


def _open_registry(settings: Settings) -> None:
    """Create the registry's tables once, before the parts that read it start: several
    processes creating a fresh MLflow database at once trip over each other."""
    from ccf.ml.registry import Registry

    Registry(settings)


def _start(part: Part) -> None:
    part.proc = subprocess.Popen(part.argv)
    part.started_at = time.monotonic()
    log.info("part=run started %s pid=%d", part.name, part.proc.pid)


def _stop_all(parts: list[Part]) -> int:
    log.info("part=run stopping all parts")
    for part in reversed(parts):  # consumers first, so the collector flushes before its source goes
        if part.proc and part.proc.poll() is None:
            part.proc.send_signal(signal.SIGTERM)
            try:
                part.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.error("part=run %s did not stop in %d s: killing it", part.name, STOP_GRACE_S)
                part.proc.kill()
                part.proc.wait()
    return 0
