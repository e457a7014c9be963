"""What the replay modules share: the JSON codec, frame kinds and time units."""

from __future__ import annotations

from typing import Any

try:  # orjson is several times faster; the stdlib keeps the module importable without it
    import orjson

    loads = orjson.loads

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

except ImportError:  # pragma: no cover - exercised only without orjson
    import json

    loads = json.loads

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()


NS_PER_MS = 1_000_000
DEPTH, TRADE, BOOK_TICKER = "depth", "trade", "bookTicker"
