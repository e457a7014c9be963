"""News from RSS/Atom feeds: poll, parse, deduplicate, store (part of ``ccf collect``).

``normalize`` and ``parse`` are pure (feed body -> entries), ``dedupe`` turns
entries into stories and sightings, ``poller`` fetches one feed, ``health``
keeps each feed's status and schedule, and ``collector`` runs them all.
"""

from ccf.sources.news.collector import NewsCollector, news_wanted
from ccf.sources.news.parse import Entry, ParsedFeed, parse_feed

__all__ = ["Entry", "NewsCollector", "ParsedFeed", "news_wanted", "parse_feed"]
