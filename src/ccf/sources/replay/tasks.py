"""The exchange's background tasks: named, kept until done, failures logged, never forgotten."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    """Tasks the exchange started; :meth:`cancel` and :meth:`wait` end them on stop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "part=exchange task failed name=%s", task.get_name(), exc_info=task.exception()
            )

    def cancel(self, name: str | None = None) -> None:
        """Cancel the tasks called ``name``, or all of them."""
        for task in list(self._tasks):
            if name is None or task.get_name() == name:
                task.cancel()

    async def wait(self) -> None:
        """Wait for every task to end (cancelled ones included)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)
