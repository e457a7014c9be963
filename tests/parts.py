"""Running a part (anything with ``async run(stop)``) inside a test."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pytest


class Part(Protocol):
    async def run(self, stop: asyncio.Event) -> None: ...


P = TypeVar("P", bound=Part)


async def run_until(
    part: P,
    done: Callable[[P], bool],
    timeout_s: float,
    describe: Callable[[P], Any] = lambda p: "",
    poll_s: float = 0.05,
) -> P:
    """Run ``part`` until ``done(part)`` holds, then stop it cleanly (everything flushed).

    Fails with ``describe(part)`` when time runs out, and re-raises whatever
    stopped the part if it ends by itself.
    """
    stop = asyncio.Event()
    task = asyncio.create_task(part.run(stop))
    deadline = time.monotonic() + timeout_s
    try:
        while not done(part):
            if task.done():
                task.result()  # raises what stopped it
                pytest.fail(f"{type(part).__name__} stopped by itself")
            if time.monotonic() > deadline:
                pytest.fail(f"not done after {timeout_s} s: {describe(part)}")
            await asyncio.sleep(poll_s)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    return part
