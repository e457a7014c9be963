"""The recording line format shared by the recorder and the replay exchange.

One frame per line: ``<local receive time, ns> <raw frame>``, optionally
gzip-compressed (by the ``.gz`` suffix). This is the layout of the shared
hftbacktest recordings, so CCF's own recordings replay through the same code.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def open_text(path: Path, mode: str = "rt") -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode, encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def read_frames(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(ts_recv_ns, frame)`` for every line of a recording.

    A line without the leading timestamp raises ValueError naming the line,
    since a recording that cannot be trusted should not be replayed silently.
    """
    with open_text(Path(path)) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            head, sep, frame = line.partition(" ")
            if not sep or not head.isdigit():
                raise ValueError(f"{path}:{n}: expected '<ns> <frame>', got {line[:80]!r}")
            yield int(head), frame


def format_line(ts_recv_ns: int, frame: str) -> str:
    return f"{ts_recv_ns} {frame}\n"
