"""The long fuzz run of the collector's edge (issue 17): hostile frames, snapshots and
REST bodies made from the real recordings, far more of them than ``tests/fuzz`` runs.

Per target it prints the frames run (real and hostile), the crashes (an exception
out of the feed, a snapshot or a REST decoder: the goal is 0), the dead letters by
reason kind, and in how many rounds the records equalled the rebuild:

- ``invalid frames``: certainly invalid mutations of real frames between the real
  ones; equal = the books, trades and quotes are exactly the clean run's, one dead
  letter per hostile frame, of the expected kind;
- ``any mutation``: random mutations (byte flips, splices, hostile values,
  jumps); equal = every record in range and the C and Python books agree;
- ``id jumps``: diffs and trades whose ids jump far ahead; equal = every book
  equals the plain-dict rebuild at its update id and the trades are exactly the
  clean run's;
- ``bad snapshots``: unusable REST depth answers first (crossed, NaN, negative,
  HTML, truncated, nested); equal = refused, then synced, records as the clean run;
- ``any snapshot``: randomly mutated snapshots; equal = every record in range;
- ``REST bodies``: mutated ``historicalTrades`` pages and ``Retry-After`` values;
  equal = rows in range or a RestError, a bounded wait.

Every round plays both book implementations (C and Python) and requires them to
give the same records. The same mutators and checks as the test suite
(``tests/fuzz/hostile.py``).

    python bench/bench_fuzz.py                 # 60 s a target
    python bench/bench_fuzz.py --seconds 300 --frames 5000 --seed 7
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz import hostile  # noqa: E402
from tests.fuzz.hostile import Recording, Run, play  # noqa: E402

from ccf.records import Trade  # noqa: E402
from ccf.sources.binance.book import IMPLEMENTATIONS  # noqa: E402
from ccf.sources.binance.history import _decode_trades  # noqa: E402
from ccf.sources.binance.rest import MAX_RETRY_AFTER_S, RestError, retry_after_s  # noqa: E402

BOUND = 1_000_000


@dataclass
class Tally:
    rounds: int = 0
    frames: int = 0
    crashes: int = 0
    equal: int = 0
    dead: Counter[str] = field(default_factory=Counter)
    first_crash: str = ""
    first_unequal: str = ""


def both(rec: Recording, inject: dict[int, list[str]], **kw: object) -> tuple[Run, bool]:
    runs = [play(rec, inject, impl=impl, **kw) for impl in IMPLEMENTATIONS]  # type: ignore[arg-type]
    return runs[0], all(r.records == runs[0].records for r in runs[1:])


def positions(rng: random.Random, n: int, k: int) -> list[int]:
    return sorted(rng.randrange(n) for _ in range(k))


def invalid_frames(rng: random.Random, rec: Recording, clean: Run, t: Tally) -> str:
    inject: dict[int, list[str]] = {}
    kinds = []
    for i in positions(rng, len(rec.frames), rng.randint(1, 200)):
        bad, k = hostile.invalid_frame(rng, rng.choice(rec.frames))
        inject.setdefault(i, []).append(bad)
        kinds.append(k)
    run, agree = both(rec, inject)
    record(t, run)
    letters = run.of(hostile.DeadLetter)
    ok = agree and run.market() == clean.market() and len(letters) == len(kinds)
    ok = ok and all(
        letter.reason.split(":", 1)[0] in k.split("|")
        for letter, k in zip(letters, kinds, strict=False)
    )
    return "" if ok else f"agree={agree} letters={len(letters)}/{len(kinds)}"


def any_mutation(rng: random.Random, rec: Recording, clean: Run, t: Tally) -> str:
    inject: dict[int, list[str]] = {}
    for i in positions(rng, len(rec.frames), rng.randint(1, 200)):
        inject.setdefault(i, []).append(hostile.any_frame(rng, rng.choice(rec.frames)))
    run, agree = both(rec, inject)
    record(t, run)
    bad = hostile.out_of_range(run)
    return "" if agree and not bad else f"agree={agree} {bad[:2]}"


def id_jumps(rng: random.Random, rec: Recording, clean: Run, t: Tally) -> str:
    first_trade = next(i for i, f in enumerate(rec.frames) if "@trade" in f[:30])
    inject: dict[int, list[str]] = {}
    jumps = 0
    for k, i in enumerate(positions(rng, len(rec.frames), rng.randint(1, 50))):
        frame = rng.choice(rec.frames)
        if hostile.kind_of(frame) == "bookTicker":
            continue
        bad = hostile.jump_frame(rng, frame, BOUND, (3 * k + 2) * BOUND)
        inject.setdefault(max(i, first_trade + 1), []).append(bad)
        jumps += 1
    run, agree = both(rec, inject, max_id_jump=BOUND)
    record(t, run)
    bad = hostile.problems(run, clean)
    ok = agree and not bad and run.dead["id_jump"] == jumps == sum(run.dead.values())
    return "" if ok else f"agree={agree} {bad[:2]} id_jump={run.dead['id_jump']}/{jumps}"


def bad_snapshots(rng: random.Random, rec: Recording, clean: Run, t: Tally) -> str:
    n = rng.randint(1, 3)
    run, agree = both(
        rec, {}, snapshots={k: hostile.invalid_snapshot(rng, rec.snapshot) for k in range(n)}
    )
    record(t, run)
    bad = hostile.problems(run, clean)
    ok = agree and not bad and run.snapshots["refused"] == n == run.dead["bad_snapshot"]
    return "" if ok else f"agree={agree} {bad[:2]} refused={run.snapshots['refused']}/{n}"


def any_snapshot(rng: random.Random, rec: Recording, clean: Run, t: Tally) -> str:
    run, agree = both(rec, {}, snapshots={0: hostile.any_snapshot(rng, rec.snapshot)})
    record(t, run)
    bad = hostile.out_of_range(run)
    return "" if agree and not bad else f"agree={agree} {bad[:2]}"


def rest_bodies(rng: random.Random, rec: Recording, clean: Run, t: Tally) -> str:
    trades = clean.of(Trade)
    i = rng.randrange(len(trades))
    page = [
        {
            "id": x.trade_id,
            "price": repr(x.price),
            "qty": repr(x.qty),
            "quoteQty": repr(x.price * x.qty),
            "time": x.ts_event // 1_000_000,
            "isBuyerMaker": x.side == "sell",
            "isBestMatch": True,
        }
        for x in trades[i : i + rng.randint(1, 50)]
    ]
    body = hostile.any_json(rng, json.dumps(page))
    t.frames += 1
    problem = ""
    try:
        rows = _decode_trades(body.encode("utf-8", "replace"))
        for r in rows:
            if not (0 < r.price < math.inf and 0 < r.qty < math.inf and 0 <= r.id < 2**63):
                problem = f"row out of range: {r}"
    except RestError:
        t.dead["rest_refused"] += 1
    header = rng.choice(
        [None, "", "soon", "nan", "-1", "1e999", str(rng.random() * 1e6), body[:20]]
    )
    wait = retry_after_s(header, rng.randint(0, 40))
    t.frames += 1
    if not (math.isfinite(wait) and 0 <= wait <= MAX_RETRY_AFTER_S):
        problem = f"Retry-After {header!r} -> {wait}"
    return problem


def record(t: Tally, run: Run) -> None:
    t.frames += run.frames
    t.dead.update(run.dead)


TARGETS: dict[str, Callable[[random.Random, Recording, Run, Tally], str]] = {
    "invalid frames": invalid_frames,
    "any mutation": any_mutation,
    "id jumps": id_jumps,
    "bad snapshots": bad_snapshots,
    "any snapshot": any_snapshot,
    "REST bodies": rest_bodies,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="per target")
    p.add_argument("--frames", type=int, default=5000, help="real frames a round plays")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the parts' warnings per dead letter: not here
    rec = hostile.real(args.frames)
    clean = play(rec)
    assert hostile.problems(clean, clean) == [] and not clean.dead, "the clean run is wrong"
    load = os.getloadavg()
    print(
        f"Python {platform.python_version()} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"book implementations {', '.join(IMPLEMENTATIONS)} (each round plays all)"
    )
    print(
        f"BTCUSDT recording: {len(rec.frames):,} real frames a round, {len(clean.of(Trade)):,} "
        f"trades, {len(clean.ref.tops):,} book updates; {args.seconds:.0f} s a target, "
        f"seed {args.seed}\n"
    )
    head = f"{'target':<16}{'rounds':>8}{'frames':>12}{'crashes':>9}{'equal':>16}  dead letters"
    print(head)
    print("-" * len(head))
    failed = False
    for name in args.targets.split(","):
        fn = TARGETS[name]
        rng = random.Random(f"{args.seed}:{name}")
        t = Tally()
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            t.rounds += 1
            try:
                problem = fn(rng, rec, clean, t)
            except Exception:  # the figure this bench exists for: count it, keep going
                t.crashes += 1
                t.first_crash = t.first_crash or traceback.format_exc(limit=3)
                continue
            if problem:
                t.first_unequal = t.first_unequal or problem
            else:
                t.equal += 1
        dead = ", ".join(f"{k} {v:,}" for k, v in t.dead.most_common())
        print(
            f"{name:<16}{t.rounds:>8,}{t.frames:>12,}{t.crashes:>9}"
            f"{f'{t.equal:,}/{t.rounds:,}':>16}  {dead or '-'}"
        )
        for what in (t.first_crash, t.first_unequal):
            if what:
                print("    first: " + what.strip().replace("\n", "\n    "))
        failed |= bool(t.crashes or t.equal != t.rounds)
    print("\nall rounds crash-free and equal to the rebuild" if not failed else "\nFAILURES above")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
