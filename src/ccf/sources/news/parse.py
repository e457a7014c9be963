"""Feed bodies -> normalized entries (pure; feedparser does the XML).

An RSS item as CoinDesk sends it, and what :func:`parse_feed` keeps::

    <item>
      <title><![CDATA[Crypto industry gave $8 million to ...]]></title>
      <link>https://www.coindesk.com/news-analysis/2026/09/30/...</link>
      <guid isPermaLink="false">aae5dfb1-54bc-455f-a89a-5ec5d919c3b0</guid>
      <pubDate>Wed, 30 Sep 2026 17:16:31 +0000</pubDate>
      <description><![CDATA[In the first half of this year, ...]]></description>
      <dc:creator>Jesse Hamilton</dc:creator>
      <dc:description/>
      <category domain="tag"><![CDATA[Regulation]]></category>
    </item>

    -> Entry(guid="aae5dfb1-...", title="Crypto industry gave $8 million to ...",
             link="https://www.coindesk.com/...", authors=("Jesse Hamilton",),
             tags=("News Analysis", "Regulation", ...), published_at=1790788591000000000, ...)
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterable
from typing import Any, NamedTuple

import feedparser

from ccf.records import NewsDateFlag
from ccf.sources.news.normalize import (
    canonical_link,
    collapse,
    html_to_text,
    normalize_published,
    title_fingerprint,
)

SUMMARY_MAX_CHARS = 2000
BOZO_MAX_CHARS = 300
# feedparser maps <description>, <dc:description>, <summary> and friends onto one
# `summary` and lets the last one win: CoinDesk's empty <dc:description/> after
# its <description> would blank every summary. Empty ones carry nothing; drop them.
_EMPTY_TEXT_ELEMENT = re.compile(
    rb"<((?:dc:|atom:|media:)?(?:description|summary)|content:encoded)(?:\s[^<>]*)?"
    rb"(?:/>|>\s*(?:<!\[CDATA\[\s*\]\]>)?\s*</\1\s*>)"
)
_DOCUMENT_END = re.compile(rb"</(?:[\w-]+:)?(?:rss|feed|RDF)\s*>\s*$")


class Entry(NamedTuple):
    """One feed item after normalization, before deduplication gives it an id."""

    source: str
    guid: str
    title: str
    summary: str
    link: str  # canonical
    authors: tuple[str, ...]
    tags: tuple[str, ...]
    published_at: int | None
    published_raw: str
    date_flag: NewsDateFlag
    title_key: str


class ParsedFeed(NamedTuple):
    entries: tuple[Entry, ...]
    version: str  # "rss20", "atom10", ...; "" when the body is no feed at all
    bozo: str  # feedparser's complaint, "" for a clean feed
    skipped: int  # items with neither title, link nor guid


def _bozo_text(parsed: Any) -> str:
    if not parsed.get("bozo"):
        return ""
    exc = parsed.get("bozo_exception")
    text = f"{type(exc).__name__}: {exc}" if exc is not None else "malformed feed"
    return collapse(text)[:BOZO_MAX_CHARS]


def _text(detail: Any, value: str) -> str:
    """Plain text of a title or summary, whichever way the feed typed it."""
    if detail is not None and "html" in str(detail.get("type", "")):
        return html_to_text(value)
    # Plain text is unescaped once by the XML parser; feeds that escape twice leave
    # entities like &#8217; behind.
    return collapse(html.unescape(value))


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    out = []
    for v in values:
        v = collapse(v)
        if v and v.casefold() not in seen:
            seen.add(v.casefold())
            out.append(v)
    return tuple(out)


def _summary(e: Any) -> str:
    text = _text(e.get("summary_detail"), e.get("summary", ""))
    if not text:  # some feeds only send the article (content:encoded)
        for c in e.get("content", ()):
            text = _text(c, c.get("value", ""))
            if text:
                break
    if len(text) > SUMMARY_MAX_CHARS:
        text = text[:SUMMARY_MAX_CHARS].rsplit(" ", 1)[0] + " …"
    return text


def _entry(e: Any, source: str, ingested_at: int, tolerance_ns: int) -> Entry | None:
    title = _text(e.get("title_detail"), e.get("title", ""))
    # feedparser's fallback parser for broken XML leaves entities in ids and links
    # (&amp;): unescape, or the same item gets another key when its feed breaks.
    link = canonical_link(html.unescape(e.get("link", "")))
    if not link.startswith(("http://", "https://")):
        link = ""  # an Atom tag: URI taken for a link is no link
    title_key = title_fingerprint(title)
    guid = collapse(html.unescape(e.get("id", "")))
    guid = guid or link or (f"title:{title_key}" if title_key else "")
    if not guid:
        return None
    raw_date = ""
    parsed_date = None
    for field in ("published", "updated", "created"):
        if e.get(field):
            raw_date = collapse(e[field])
            parsed_date = e.get(f"{field}_parsed")
            break
    published_at, flag = normalize_published(parsed_date, raw_date, ingested_at, tolerance_ns)
    authors = _unique(a.get("name") or a.get("email") or "" for a in e.get("authors", ()))
    if not authors and e.get("author"):
        authors = _unique([e["author"]])
    tags = _unique(t.get("term") or t.get("label") or "" for t in e.get("tags", ()))
    return Entry(
        source,
        guid,
        title,
        _summary(e),
        link,
        authors,
        tags,
        published_at,
        raw_date,
        flag,
        title_key,
    )


def parse_feed(
    body: bytes,
    *,
    source: str,
    url: str,
    ingested_at: int,
    content_type: str = "",
    future_tolerance_ns: int = 300 * 1_000_000_000,
) -> ParsedFeed:
    """Entries of an RSS/Atom body in feed order; never raises on a bad body.

    ``content_type`` (with its charset) and ``url`` are the response's: feedparser
    uses the first to pick the encoding and the second to resolve relative links.
    """
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    # A BytesIO, never the bytes: feedparser takes a short string for a URL or a path.
    parsed = feedparser.parse(
        io.BytesIO(_EMPTY_TEXT_ELEMENT.sub(b"", body)), response_headers=headers
    )
    raw_entries = list(parsed.get("entries", ()))
    bozo = _bozo_text(parsed)
    if raw_entries and bozo and not _DOCUMENT_END.search(body[-256:]):
        # A cut-off body: the last item may have lost its tail (half a title, no date),
        # and the first sighting of a story is the one kept. Drop it; the next poll
        # that reads the whole feed brings it back.
        raw_entries.pop()
        bozo = f"truncated, last item dropped; {bozo}"[:BOZO_MAX_CHARS]
    entries = []
    skipped = 0
    for e in raw_entries:
        entry = _entry(e, source, ingested_at, future_tolerance_ns)
        if entry is None:
            skipped += 1
        else:
            entries.append(entry)
    return ParsedFeed(tuple(entries), parsed.get("version", "") or "", bozo, skipped)
