"""The saved feeds, read independently of ccf (ElementTree), and a local feed server.

``expected_items`` is what the feed says in its own words, so the tests compare
ccf's parser against the XML rather than against guesses. ``FeedServer`` serves
routes from a dict of handlers on 127.0.0.1 and a free port, and logs every
request's headers.
"""

from __future__ import annotations

import html
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from ccf.config import shared_dir

NEWS_DIR = shared_dir() / "data" / "news"
COINDESK = NEWS_DIR / "coindesk_2026-09-30.xml"
COINTELEGRAPH = NEWS_DIR / "cointelegraph_2026-02-15.xml"
_DC = "{http://purl.org/dc/elements/1.1/}"


class Expected(NamedTuple):
    guid: str
    title: str
    link: str  # tracking parameters removed
    summary: str
    authors: list[str]
    tags: list[str]
    published_at: int  # ns
    published_raw: str


def _words(text: str | None) -> str:
    return " ".join((text or "").split())


def _untracked(link: str) -> str:
    parts = urlsplit(link.strip())
    query = [(k, v) for k, v in parse_qsl(parts.query) if not k.startswith("utm_")]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def expected_items(path: Path) -> list[Expected]:
    out = []
    for item in ET.parse(path).getroot().iter("item"):
        tags: list[str] = []
        for c in item.findall("category"):
            t = _words(c.text)
            if t.lower() not in [x.lower() for x in tags]:
                tags.append(t)
        desc = html.unescape(re.sub(r"<[^>]+>", " ", item.findtext("description") or ""))
        raw_date = _words(item.findtext("pubDate"))
        out.append(
            Expected(
                guid=_words(item.findtext("guid")),
                title=_words(item.findtext("title")),
                link=_untracked(item.findtext("link") or ""),
                summary=_words(desc),
                authors=[_words(c.text) for c in item.findall(f"{_DC}creator")],
                tags=tags,
                published_at=int(parsedate_to_datetime(raw_date).timestamp()) * 1_000_000_000,
                published_raw=raw_date,
            )
        )
    return out


def free_port() -> int:
    """A port nothing listens on (for connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FeedServer:
    def __init__(self, routes: dict[str, Handler]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p == path]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers)))
        handler = self.routes.get(request.path)
        if handler is None:
            raise web.HTTPNotFound()
        return await handler(request)

    async def start(self) -> FeedServer:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def static(
    body: bytes,
    content_type: str = "application/rss+xml; charset=utf-8",
    *,
    etag: str | None = None,
    last_modified: str | None = None,
) -> Handler:
    """A feed that answers 304 when the client's validators match."""

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {}
        if etag:
            headers["ETag"] = etag
        if last_modified:
            headers["Last-Modified"] = last_modified
        fresh = (etag and request.headers.get("If-None-Match") == etag) or (
            not etag and last_modified and request.headers.get("If-Modified-Since") == last_modified
        )
        if fresh:
            return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers={**headers, "Content-Type": content_type})

    return handle
