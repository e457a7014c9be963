"""The exchange's own order book: levels keep their wire strings, so REST answers echo them."""

from __future__ import annotations

from bisect import bisect_left, insort

from ccf.sources.replay.frames import Snapshot

ZERO_QTY = "0.00000000"
Level = tuple[str, str]  # price, qty as sent


class Book:
    """Price levels with their wire strings, answering top N per side in order."""

    __slots__ = ("_bids", "_asks", "_bid_keys", "_ask_keys", "last_update_id")

    def __init__(self, snap: Snapshot) -> None:
        self.reset(snap)

    def reset(self, snap: Snapshot) -> None:
        self._bids = {float(p): (p, q) for p, q in snap.bids if float(q)}
        self._asks = {float(p): (p, q) for p, q in snap.asks if float(q)}
        self._bid_keys = sorted(self._bids)
        self._ask_keys = sorted(self._asks)
        self.last_update_id = snap.last_update_id

    @staticmethod
    def _apply_side(levels: dict[float, Level], keys: list[float], upd: list[list[str]]) -> None:
        for p, q in upd:
            fp = float(p)
            if float(q) == 0.0:
                if levels.pop(fp, None) is not None:
                    del keys[bisect_left(keys, fp)]
            else:
                if fp not in levels:
                    insort(keys, fp)
                levels[fp] = (p, q)

    def apply(self, bids: list[list[str]], asks: list[list[str]]) -> None:
        self._apply_side(self._bids, self._bid_keys, bids)
        self._apply_side(self._asks, self._ask_keys, asks)

    def top(self, n: int) -> tuple[list[Level], list[Level]]:
        bids = [self._bids[k] for k in reversed(self._bid_keys[-n:])] if n > 0 else []
        asks = [self._asks[k] for k in self._ask_keys[:n]]
        return bids, asks

    def levels(self) -> tuple[int, int]:
        return len(self._bids), len(self._asks)

    def diff_to(self, snap: Snapshot) -> tuple[list[Level], list[Level]]:
        """The level changes that turn this book into ``snap`` (removed levels get qty 0)."""
        return (
            _side_diff(self._bids, snap.bids, desc=True),
            _side_diff(self._asks, snap.asks, desc=False),
        )


def _side_diff(cur: dict[float, Level], target: tuple[Level, ...], desc: bool) -> list[Level]:
    want = {float(p): (p, q) for p, q in target if float(q)}
    out = [(p, ZERO_QTY) for k, (p, _) in cur.items() if k not in want]
    out += [(p, q) for k, (p, q) in want.items() if k not in cur or float(cur[k][1]) != float(q)]
    out.sort(key=lambda lv: float(lv[0]), reverse=desc)
    return out
