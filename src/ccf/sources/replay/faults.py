"""Fault injection for the replay exchange: what to break, and when.

The exchange asks this state at a few points (each diff, each frame sent to a
connection, each REST call); everything is off until a FaultConfig field is
set, from the config at start or at runtime through ``POST /_replay/faults``.
Counters of injected faults are reported in ``GET /_replay/state`` so a test
can tell a fault that fired from one that was never reached.
"""

from __future__ import annotations

import enum
import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ccf.config import FaultConfig

log = logging.getLogger(__name__)

_PER_CONNECTION = (
    "drop_after_frames",
    "malformed_every",
    "stall_after_frames",
    "shutdown_after_frames",
)
# A truncated frame, an unknown stream, a payload missing its fields, and
# non-JSON text (valid UTF-8, or the client's websocket layer would fail first).
MALFORMED_KINDS = ("truncated", "unknown_stream", "missing_fields", "garbage")
_GARBAGE = bytes(range(1, 32)).decode("latin-1") + "\u00ff\u00fe\u2603 not json \ufffd\u0000"
_EVENT_BY_KIND = {"depth": "depthUpdate", "trade": "trade", "aggTrade": "aggTrade"}


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class Action(enum.Enum):
    """What the exchange must do to a connection after a frame."""

    MALFORMED = "malformed"
    DROP = "drop"
    SHUTDOWN = "shutdown"


@dataclass(slots=True)
class ConnFaults:
    """Per-connection fault progress; ``*_gen`` re-arm a one-shot fault when its config changes."""

    frames: int = 0
    stall_until: float = 0.0
    stall_gen: int = -1
    shutdown_gen: int = -1


class Faults:
    """Current faults (a FaultConfig whose one-shot counts go down as they fire) and counters."""

    def __init__(self, cfg: FaultConfig) -> None:
        self.counts: Counter[str] = Counter()
        self._cfg = cfg
        self._gens: Counter[str] = Counter()
        self._diffs = 0
        self._malformed_turn = 0
        self.per_connection = any(getattr(cfg, f) for f in _PER_CONNECTION)

    @property
    def config(self) -> FaultConfig:
        return self._cfg

    def update(self, changes: Mapping[str, Any]) -> FaultConfig:
        """Merge ``changes`` into the current faults; raises pydantic's ValidationError."""
        new = FaultConfig.model_validate({**self._cfg.model_dump(), **changes})
        for name in ("stall_after_frames", "stall_s", "shutdown_after_frames"):
            if name in changes:
                self._gens[name.split("_", 1)[0]] += 1
        if "skip_update_every" in changes:
            self._diffs = 0
        self._cfg = new
        self.per_connection = any(getattr(new, f) for f in _PER_CONNECTION)
        log.info("part=exchange faults set %s", " ".join(f"{k}={v}" for k, v in changes.items()))
        return new

    def _consume(self, name: str) -> None:
        self._cfg = self._cfg.model_copy(update={name: getattr(self._cfg, name) - 1})
        self.counts[name] += 1

    # --- stream-wide -------------------------------------------------------

    def skip_diff(self) -> bool:
        """True for one diff frame in every ``skip_update_every``: withheld from all clients."""
        every = self._cfg.skip_update_every
        if not every:
            return False
        self._diffs += 1
        if self._diffs % every:
            return False
        self.counts["skipped_updates"] += 1
        return True

    # --- REST --------------------------------------------------------------

    def rest_fault(self) -> tuple[int, int] | None:
        """``(status, retry_after_s)`` when this REST call must fail, else None."""
        for name, status in (("rest_418", 418), ("rest_429", 429)):
            if getattr(self._cfg, name):
                self._consume(name)
                return status, self._cfg.retry_after_s
        return None

    def duplicate_page(self) -> bool:
        """True when this paged history answer must start earlier, repeating rows."""
        if not self._cfg.rest_duplicate_pages:
            return False
        self._consume("rest_duplicate_pages")
        return True

    def stale_snapshot(self) -> bool:
        if not self._cfg.stale_snapshots:
            return False
        self._consume("stale_snapshots")
        return True

    # --- per connection ----------------------------------------------------

    def stalled(self, cf: ConnFaults, now: float) -> bool:
        """True while the connection must receive nothing (pings still go out)."""
        if cf.stall_until > now:
            self.counts["stalled_frames"] += 1
            return True
        cf.stall_until = 0.0
        return False

    def after_frame(self, cf: ConnFaults, now: float) -> list[Action]:
        """Count one frame sent on a connection and say which faults fire now."""
        cf.frames += 1
        c, out = self._cfg, []
        if c.malformed_every and cf.frames % c.malformed_every == 0:
            out.append(Action.MALFORMED)
        if c.stall_after_frames and c.stall_s and cf.frames >= c.stall_after_frames:
            if cf.stall_gen != self._gens["stall"]:
                cf.stall_gen = self._gens["stall"]
                cf.stall_until = now + c.stall_s
                self.counts["stalls"] += 1
        if c.shutdown_after_frames and cf.frames >= c.shutdown_after_frames:
            if cf.shutdown_gen != self._gens["shutdown"]:
                cf.shutdown_gen = self._gens["shutdown"]
                self.counts["shutdowns"] += 1
                out.append(Action.SHUTDOWN)
        if c.drop_after_frames and cf.frames >= c.drop_after_frames:
            self.counts["dropped_connections"] += 1
            out.append(Action.DROP)
        return out

    def malformed_frame(self, stream: str, combined: bool) -> str:
        """The next malformed frame in rotation, shaped for a frame of ``stream``."""
        kind = MALFORMED_KINDS[self._malformed_turn % len(MALFORMED_KINDS)]
        self._malformed_turn += 1
        self.counts["malformed_frames"] += 1
        self.counts[f"malformed_{kind}"] += 1
        sym, _, suffix = stream.partition("@")
        if kind == "garbage":
            return _GARBAGE
        if kind == "unknown_stream":
            data = _compact({"e": "replayNoise", "E": 0, "s": sym.upper()})
            return f'{{"stream":"{sym}@replayNoise","data":{data}}}' if combined else data
        event = _EVENT_BY_KIND.get(suffix.split("@", 1)[0])
        if suffix.startswith("depth") and suffix[5:6].isdigit():
            data = '{"lastUpdateId":1}'  # partial depth without bids/asks
        elif event is None:  # bookTicker and anything else: only the symbol
            data = _compact({"s": sym.upper()})
        else:
            data = _compact({"e": event, "s": sym.upper()})
        text = f'{{"stream":"{stream}","data":{data}}}' if combined else data
        return text[: max(8, len(text) // 2)] if kind == "truncated" else text

    def state(self) -> dict[str, Any]:
        return {"faults": self._cfg.model_dump(), "fault_counts": dict(self.counts)}
