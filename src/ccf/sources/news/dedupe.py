"""One story, many sightings: deduplication across polls and across feeds.

A sighting is (feed, guid). It belongs to a known story when that feed already
sent that guid (a later poll), when its canonical link is a known story's
(syndication, or a feed that changed its guids), or when its title words are
a known story's and the two were published within ``title_window_ns`` (the
same headline from two outlets). The window keeps recurring headlines such as
"Here's what happened in crypto today" apart, and so does
``MIN_TITLE_WORDS``: short titles are too generic to match on.

A new story's id hashes its first sighting, so a replayed batch lands on the
same rows and the store's keys absorb it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import NamedTuple

from ccf.records import NewsItem, NewsSource
from ccf.sources.news.parse import Entry

MIN_TITLE_WORDS = 4


def item_id(source: str, guid: str) -> str:
    """Stable id of a story first seen as ``guid`` in ``source``.

    >>> item_id("coindesk", "aae5dfb1-54bc-455f-a89a-5ec5d919c3b0")
    '36550f634f4ed93239ba42f9'
    """
    return hashlib.sha256(f"{source}\n{guid}".encode()).hexdigest()[:24]


class Sighting(NamedTuple):
    """A known (feed, guid) as the store gives it back (see ``SqliteStore.news_keys``)."""

    item_id: str
    source: str
    guid: str
    link: str
    title_key: str
    when: int | None  # published_at, or ingested_at when the feed gave no date


class Outcome(NamedTuple):
    items: list[NewsItem]  # new stories
    sources: list[NewsSource]  # new sightings, of new and known stories
    known: int  # sightings seen before


class DedupeIndex:
    """Keys of every story seen, in memory; fed from the store at start."""

    def __init__(self, title_window_ns: int) -> None:
        self.title_window_ns = title_window_ns
        self._guids: dict[tuple[str, str], str] = {}
        self._links: dict[str, str] = {}
        self._titles: dict[str, list[tuple[str, int | None]]] = {}

    def __len__(self) -> int:
        return len(self._guids)

    def add(self, s: Sighting) -> None:
        self._guids[(s.source, s.guid)] = s.item_id
        if s.link:
            self._links.setdefault(s.link, s.item_id)
        if len(s.title_key.split()) >= MIN_TITLE_WORDS:
            seen = self._titles.setdefault(s.title_key, [])
            if all(i != s.item_id for i, _ in seen):
                seen.append((s.item_id, s.when))

    def load(self, sightings: Iterable[Sighting]) -> None:
        for s in sightings:
            self.add(s)

    def known(self, source: str, guid: str) -> bool:
        return (source, guid) in self._guids

    def match(self, e: Entry, when: int | None) -> str | None:
        """The story this new sighting belongs to, if any."""
        if e.link and e.link in self._links:
            return self._links[e.link]
        if len(e.title_key.split()) < MIN_TITLE_WORDS:
            return None
        for iid, t in self._titles.get(e.title_key, ()):
            if when is None or t is None or abs(when - t) <= self.title_window_ns:
                return iid
        return None


def assign(index: DedupeIndex, entries: Iterable[Entry], ingested_at: int) -> Outcome:
    """Split one poll's entries into new stories, new sightings and known sightings,
    updating ``index`` as it goes (two copies in one body count once)."""
    items: list[NewsItem] = []
    sources: list[NewsSource] = []
    known = 0
    for e in entries:
        if index.known(e.source, e.guid):
            known += 1
            continue
        when = e.published_at if e.published_at is not None else ingested_at
        iid = index.match(e, when)
        if iid is None:
            iid = item_id(e.source, e.guid)
            items.append(
                NewsItem(
                    iid,
                    e.source,
                    e.guid,
                    e.title,
                    e.summary,
                    e.link,
                    json.dumps(list(e.authors), ensure_ascii=False),
                    json.dumps(list(e.tags), ensure_ascii=False),
                    e.published_at,
                    e.published_raw,
                    e.date_flag,
                    e.title_key,
                    ingested_at,
                )
            )
        sources.append(NewsSource(iid, e.source, e.guid, e.link, e.title_key, ingested_at))
        index.add(Sighting(iid, e.source, e.guid, e.link, e.title_key, when))
    return Outcome(items, sources, known)
