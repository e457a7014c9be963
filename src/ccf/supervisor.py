"""``ccf run``: every part as its own process, watched and restarted.

Each part is ``python -m ccf <part> <the same overrides>``. A part that
exits unexpectedly is restarted with capped backoff and the restart is
logged; Ctrl-C or SIGTERM sends SIGTERM to every part (each flushes and
exits cleanly) and waits for them.
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
    extra = [a for c in config for a in ("--config", str(c))]
    parts = []
    if settings.source == "replay":
        parts.append(
            Part("exchange", [sys.executable, "-m", "ccf", "exchange", *overrides, *extra])
        )
    for name in ("collect", "features"):
        parts.append(Part(name, [sys.executable, "-m", "ccf", name, *overrides, *extra]))
    return parts


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
    while not stopping:
        time.sleep(0.5)
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
