"""One conditional GET of a feed, bounded in time and size.

Every way a fetch can fail becomes a :class:`FetchError` whose message starts
with a short kind (``timeout``, ``connect``, ``http 500``, ``redirects``,
``too big``, ...): the feed's status shows it, and the log line changes only
when the kind does.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import aiohttp

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
CHUNK_BYTES = 64 * 1024


class Fetched(NamedTuple):
    status: int  # 2xx, or 304 when the feed has not changed (body is then b"")
    body: bytes
    content_type: str  # with its charset, as the server sent it
    url: str  # after redirects
    etag: str
    last_modified: str


class FetchError(Exception):
    """A poll that brought no usable body; the feed is retried with backoff."""

    def __init__(
        self,
        kind: str,
        detail: str = "",
        *,
        http_status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.http_status = http_status
        self.retry_after_s = retry_after_s


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After in seconds; the HTTP-date form is rare on feeds and ignored."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, or FetchError as soon as it passes ``max_bytes`` (nothing more is read)."""
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise FetchError("too big", f"Content-Length {resp.content_length} > {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
        size += len(chunk)
        if size > max_bytes:
            raise FetchError("too big", f"body over {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_feed(
    session: aiohttp.ClientSession,
    url: str,
    *,
    etag: str = "",
    last_modified: str = "",
    timeout_s: float = 20.0,
    max_bytes: int = 5_000_000,
    max_redirects: int = 5,
    user_agent: str = "ccf-news",
) -> Fetched:
    """GET ``url`` with the validators of the last good poll; raises :class:`FetchError`."""
    headers = {"User-Agent": user_agent, "Accept": ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    try:
        # One deadline for connect, headers and body: a server that trickles bytes
        # must not hold a poll past timeout_s.
        async with asyncio.timeout(timeout_s):
            async with session.get(
                url,
                headers=headers,
                allow_redirects=max_redirects > 0,
                max_redirects=max(max_redirects, 1),
            ) as resp:
                if resp.status == 304:
                    return Fetched(
                        304,
                        b"",
                        "",
                        str(resp.url),
                        resp.headers.get("ETag", etag),
                        resp.headers.get("Last-Modified", last_modified),
                    )
                if resp.status >= 300:
                    raise FetchError(
                        f"http {resp.status}",
                        resp.reason or "",
                        http_status=resp.status,
                        retry_after_s=_retry_after_s(resp.headers.get("Retry-After")),
                    )
                body = await _read_capped(resp, max_bytes)
                return Fetched(
                    resp.status,
                    body,
                    resp.headers.get("Content-Type", ""),
                    str(resp.url),
                    resp.headers.get("ETag", ""),
                    resp.headers.get("Last-Modified", ""),
                )
    except TimeoutError as e:
        raise FetchError("timeout", f"no complete answer within {timeout_s:g} s") from e
    except aiohttp.TooManyRedirects as e:
        raise FetchError("redirects", f"more than {max_redirects} (a loop?)") from e
    except aiohttp.ClientConnectorError as e:
        raise FetchError("connect", str(e.os_error)) from e
    except aiohttp.ClientPayloadError as e:
        raise FetchError("body", str(e)) from e
    except aiohttp.ClientError as e:  # the rest of aiohttp's tree: bad URL, bad headers, ...
        raise FetchError("http error", f"{type(e).__name__}: {e}") from e
