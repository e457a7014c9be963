"""Wake-ups between parts: a commit to a store wakes the parts that follow it at once.

Why loopback UDP with a folder of subscriptions: it needs no server, no extra library and
nothing Linux-only (inotify, eventfd, abstract sockets): UDP on 127.0.0.1 works the same
on Linux, macOS and Windows, and asyncio's datagram endpoints run on every event loop. A
follower binds a socket on an ephemeral port and writes its address as a file named
``<pid>-<port>`` into the store's wake folder (``<store file>.wake/``); a writer, after
each commit, sends one tiny datagram to every address there (re-listed at most every
``RELIST_S``; files of dead processes are removed). A datagram carries no data: the store
stays the one truth, so a lost datagram (or a writer that cannot send) loses nothing. The
follower waits for a wake-up *or* its fallback interval, then reads the store as before.

    waker = Waker(path)             # in the writer, once
    waker.wake()                    # after each commit: a few microseconds per follower
    async with Wakeups(path) as w:  # in the follower
        await w.wait(stop, fallback_s)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

RELIST_S = 0.5  # how often a waker looks for new followers
_PING = b"w"


def wake_dir(store_path: Path) -> Path:
    """The folder where the followers of ``store_path`` leave their addresses."""
    return Path(f"{store_path}.wake")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:  # Windows raises other errors for a dead or foreign pid: keep it
        return True
    return True


class Waker:
    """The writer's side: ``wake()`` after every commit."""

    def __init__(self, store_path: Path, part: str = "-") -> None:
        self.dir = wake_dir(store_path)
        self.part = part
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._ports: list[int] = []
        self._listed = 0.0
        self.sent = 0

    def _relist(self) -> None:
        self._listed = time.monotonic()
        ports = []
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            names = []
        for name in names:
            pid, _, port = name.partition("-")
            if not (pid.isdigit() and port.isdigit()):
                continue
            if not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(self.dir / name)  # a follower killed without cleaning up
                continue
            ports.append(int(port))
        self._ports = ports

    def wake(self) -> None:
        """Tell every follower there is something new. Never raises on a send: a follower
        that misses it reads on its fallback interval."""
        if time.monotonic() - self._listed >= RELIST_S:
            self._relist()
        for port in self._ports:
            try:
                self._sock.sendto(_PING, ("127.0.0.1", port))
                self.sent += 1
            except OSError as e:  # a full buffer or a follower gone: it will poll
                log.debug("part=%s symbol=- wake-up to port %d not sent: %s", self.part, port, e)

    def close(self) -> None:
        self._sock.close()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, event: asyncio.Event) -> None:
        self.event = event

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.event.set()


class Wakeups:
    """The follower's side, on its event loop: ``await wait(stop, fallback_s)``."""

    def __init__(self, store_path: Path, part: str = "-") -> None:
        self.dir = wake_dir(store_path)
        self.part = part
        self.received = 0  # wake-ups that ended a wait
        self.fallbacks = 0  # waits that ended on the fallback interval
        self._event = asyncio.Event()
        self._transport: asyncio.DatagramTransport | None = None
        self._file: Path | None = None

    async def __aenter__(self) -> Wakeups:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self._event), local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        port = transport.get_extra_info("sockname")[1]
        self.dir.mkdir(parents=True, exist_ok=True)
        self._file = self.dir / f"{os.getpid()}-{port}"
        self._file.touch()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.unlink()
            self._file = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def wait(self, stop: asyncio.Event, fallback_s: float) -> bool:
        """Until a wake-up, ``stop`` or ``fallback_s``; True when woken. Wake-ups that came
        while the caller was busy end the next wait at once (nothing is missed)."""
        ev = self._event
        if not ev.is_set() and not stop.is_set():
            waiters = [asyncio.ensure_future(ev.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=fallback_s, return_when="FIRST_COMPLETED")
            finally:
                for w in waiters:
                    w.cancel()
        woken = ev.is_set()
        ev.clear()
        if woken:
            self.received += 1
        elif not stop.is_set():
            self.fallbacks += 1
        return woken
