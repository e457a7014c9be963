"""Reads cryptofeed raw-data recordings (``OKX.ws.1.0.gz`` and friends).

One line each: ``<url> <-> <ts>`` (connection opened), ``<url> <- <ts>: <json>``
(a message the client sent) or ``<ts>: <json>`` (a frame the venue sent, ``ts`` the
local receive time in seconds). Blank lines are skipped; anything else is an
error that names the line, since a recording that reads wrong gives wrong books.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from ccf.config import shared_dir

FILES = {
    "okx": "OKX.ws.1.0.gz",
    "coinbase": "COINBASE.ws.28.0.gz",
    "kraken": "KRAKEN.ws.50.0.gz",
}


class Line(NamedTuple):
    sent: bool  # True: the client sent it (a subscription); False: the venue did
    ts_ns: int  # local receive (or send) time
    text: str


def default_path(venue: str) -> Path:
    """The venue's recording under ``$CCF_SHARED`` (default ``../shared``)."""
    return shared_dir() / "data" / "venues" / FILES[venue]


def _ns(ts: str) -> int:
    sec, _, frac = ts.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def read_lines(path: Path) -> Iterator[Line]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            if line.startswith(("wss://", "ws://")):
                url_dir, _, rest = line.partition(" ")
                if rest.startswith("<-> "):
                    continue  # connection opened
                if rest.startswith("<- "):
                    ts, sep, text = rest[3:].partition(": ")
                    if sep:
                        yield Line(True, _ns(ts), text)
                        continue
                raise ValueError(f"{path}:{n}: unreadable client line {line[:80]!r}")
            ts, sep, text = line.partition(": ")
            if not sep:
                raise ValueError(f"{path}:{n}: no '<ts>: ' prefix in {line[:80]!r}")
            yield Line(False, _ns(ts), text)


def venue_frames(path: Path) -> list[tuple[int, str]]:
    """Every frame the venue sent, as ``(ts_recv_ns, text)``, in recorded order."""
    return [(ln.ts_ns, ln.text) for ln in read_lines(path) if not ln.sent]
