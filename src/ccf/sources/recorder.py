"""Writes every raw frame as received, so any live run can be replayed.

Lines are ``<receive ns> <frame>``, the layout of the shared recordings, one
file per exchange, symbol and UTC day (``binance_btcusdt_20240808.jsonl``),
REST depth snapshots included, so ``ccf exchange replay.files=[...]`` serves
them through the same code. Plain text, line-buffered per batch: a killed
process leaves a readable file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import IO

from ccf.sources.recording import format_line

log = logging.getLogger(__name__)
_PREFIX = '{"stream":"'


def frame_symbol(frame: str) -> str:
    """The symbol of a combined-stream frame, or ``other``."""
    if frame.startswith(_PREFIX):
        at = frame.find("@", len(_PREFIX))
        if at > 0:
            return frame[len(_PREFIX) : at]
    return "other"


class Recorder:
    def __init__(self, directory: Path, exchange: str = "binance") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.exchange = exchange
        self._files: dict[tuple[str, str], IO[str]] = {}
        self.lines = 0

    def path_for(self, symbol: str, ts_ns: int) -> Path:
        day = time.strftime("%Y%m%d", time.gmtime(ts_ns / 1e9))
        return self.directory / f"{self.exchange}_{symbol}_{day}.jsonl"

    def _file(self, symbol: str, ts_ns: int) -> IO[str]:
        day = time.strftime("%Y%m%d", time.gmtime(ts_ns / 1e9))
        f = self._files.get((symbol, day))
        if f is None:
            for key in [k for k in self._files if k[0] == symbol]:  # the day rolled over
                self._files.pop(key).close()
            path = self.path_for(symbol, ts_ns)
            f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across calls
            self._files[(symbol, day)] = f
            log.info("part=record symbol=%s writing %s", symbol, path)
        return f

    def frame(self, ts_recv: int, frame: str) -> None:
        self._file(frame_symbol(frame), ts_recv).write(format_line(ts_recv, frame))
        self.lines += 1

    def snapshot(self, symbol: str, ts_recv: int, body: str) -> None:
        """A REST depth snapshot; it belongs to ``symbol``'s file, as in the shared recordings."""
        self._file(symbol, ts_recv).write(format_line(ts_recv, body))
        self.lines += 1

    def flush(self) -> None:
        for f in self._files.values():
            f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
