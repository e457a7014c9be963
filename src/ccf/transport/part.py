"""What every part that consumes Kafka shares: a member name and a loop in a thread.

The Kafka client blocks, so a consuming part runs its loop in a thread of its own and
the event loop only waits for ``stop``; the loop checks a :class:`threading.Event` between
polls and finishes its batch (write, commit) before it returns.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable


def member_name(part: str) -> str:
    """This process's name in its group and its ``part_status`` row: several members of
    one part run at once, each with a heartbeat of its own (``features@host:4242``)."""
    return f"{part}@{socket.gethostname()}:{os.getpid()}"


async def run_in_thread(loop: Callable[[threading.Event], None], stop: asyncio.Event) -> None:
    """Run ``loop(flag)`` in a thread until it returns; ``stop`` sets ``flag``. Raises what
    stopped the loop; cancelling waits for the loop to finish its batch first."""
    flag = threading.Event()
    task = asyncio.create_task(asyncio.to_thread(loop, flag), name=f"{loop.__qualname__}")
    waiter = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        flag.set()
        waiter.cancel()
        if not task.done():
            await asyncio.wait({task})  # the loop finishes its batch, even on a cancel
    task.result()
