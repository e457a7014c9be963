"""News parsing, normalization, deduplication and feed health: the pure parts.

Expected values come from the saved feeds, read with ElementTree
(``news_fixtures.expected_items``), never from ccf's own parser.
"""

from __future__ import annotations

import json
import time

import pytest

from ccf.config import BackoffConfig, ConfigError, FeedConfig, load_settings
from ccf.sources.news.dedupe import DedupeIndex, Sighting, assign, item_id
from ccf.sources.news.health import condition, initial_status, next_delay_s, on_failure, on_success
from ccf.sources.news.normalize import (
    canonical_link,
    html_to_text,
    normalize_published,
    title_fingerprint,
)
from ccf.sources.news.parse import parse_feed
from tests.sources.news_fixtures import COINDESK, COINTELEGRAPH, expected_items

NS = 1_000_000_000
NOW = 1_900_000_000 * NS  # after both saved feeds were written
RSS = "application/rss+xml; charset=utf-8"


def _parse(body: bytes, source: str = "test", now: int = NOW, ctype: str = RSS):
    return parse_feed(
        body, source=source, url="http://feeds.test/x.xml", ingested_at=now, content_type=ctype
    )


@pytest.mark.parametrize("path", [COINDESK, COINTELEGRAPH], ids=["coindesk", "cointelegraph"])
def test_saved_feeds_parse_to_exactly_what_the_xml_says(path) -> None:
    expected = expected_items(path)
    parsed = _parse(path.read_bytes(), source=path.stem)
    assert parsed.version == "rss20" and parsed.bozo == "" and parsed.skipped == 0
    assert len(parsed.entries) == len(expected)
    for e, x in zip(parsed.entries, expected, strict=True):
        assert e.source == path.stem
        assert e.guid == x.guid
        assert e.title == x.title
        assert e.link == x.link
        assert e.summary == x.summary
        assert list(e.authors) == x.authors
        assert list(e.tags) == x.tags
        assert e.published_at == x.published_at
        assert e.published_raw == x.published_raw
        assert e.date_flag == ""
        assert e.title_key == title_fingerprint(x.title)


def test_coindesk_specifics() -> None:
    """CDATA, several authors, an empty description, categories with domains, and an
    empty <dc:description/> that must not blank the real <description>."""
    entries = _parse(COINDESK.read_bytes()).entries
    assert len(entries) == 25
    first = entries[0]
    assert (
        first.title
        == "Crypto industry gave $8 million to Clarity Act lobbyists who didn't close the deal"
    )
    assert first.summary.startswith("In the first half of this year, the sector poured millions")
    assert first.published_at == 1790788591 * NS  # Wed, 30 Sep 2026 17:16:31 +0000
    assert first.tags == ("News Analysis", "Regulation", "Clarity Act", "Coinbase", "News")
    # Item 4 has <description/>: an empty summary, not another element's text.
    assert entries[3].title == "Crypto Long & Short: What will the AI agents run on?"
    assert entries[3].summary == ""
    # "U.S. CFTC  seeks": whitespace collapsed.
    assert entries[2].title.startswith("U.S. CFTC seeks event")
    many = [e for e in entries if len(e.authors) > 1]
    assert many and many[0].authors == (
        "Shaurya Malwa",
        "James Van Straten",
        "Omkar Godbole",
        "Stephen Alpher",
        "Helene Braun",
    )
    # "Crypto Daybook Americas" is both a section and a tag: kept once.
    daybook = entries[6]
    assert daybook.tags == ("Crypto Daybook Americas", "News")
    assert sum(bool(e.summary) for e in entries) == 24


def test_cointelegraph_links_lose_tracking_parameters() -> None:
    entries = _parse(COINTELEGRAPH.read_bytes()).entries
    assert len(entries) == 10
    assert all("utm_" in e.guid for e in entries)  # the guid is an id: kept verbatim
    assert all(
        "?" not in e.link and e.link.startswith("https://cointelegraph.com/news/") for e in entries
    )
    assert (
        entries[0].link
        == "https://cointelegraph.com/news/memecoin-season-crypto-social-media-sentiment-low-santiment"
    )
    assert all(e.authors == () and e.tags == () for e in entries)


ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>Atom test</title>
  <entry>
    <title type="html">Fed &amp;amp; &lt;b&gt;BTC&lt;/b&gt;:  rates</title>
    <link href="/news/1?utm_campaign=x&amp;id=5&amp;fbclid=abc#section"/>
    <id>tag:test,2026:1</id>
    <updated>2026-03-01T12:00:00+02:00</updated>
    <summary type="html">&lt;p&gt;First&amp;nbsp;para&lt;/p&gt;
      &lt;p&gt;Second &amp;amp; last&lt;/p&gt;
      &lt;script&gt;x()&lt;/script&gt;</summary>
    <author><name>Ann Lee</name></author>
    <category term="macro"/><category term="Macro"/><category term="btc"/>
  </entry>
  <entry>
    <title>No date</title>
    <link href="https://Feeds.Test:443/news/2"/>
    <id>tag:test,2026:2</id>
  </entry>
  <entry>
    <title>From the future</title>
    <link href="https://feeds.test/news/3"/>
    <id>tag:test,2026:3</id>
    <published>2031-01-01T00:00:00Z</published>
  </entry>
  <entry>
    <title>Bad date</title>
    <id>tag:test,2026:4</id>
    <published>sometime last week</published>
  </entry>
  <entry><summary>neither title, link nor id</summary></entry>
</feed>"""


def test_atom_html_dates_and_flags() -> None:
    now = 1_800_000_000 * NS  # 2027-01-15
    parsed = _parse(ATOM, now=now, ctype="application/atom+xml; charset=utf-8")
    assert parsed.version == "atom10" and parsed.skipped == 1
    a, b, c, d = parsed.entries
    assert a.title == "Fed & BTC: rates"
    assert a.summary == "First para Second & last"
    assert a.link == "http://feeds.test/news/1?id=5"  # resolved against the feed URL
    assert a.published_at == 1772359200 * NS  # 2026-03-01T10:00:00Z
    assert a.published_raw == "2026-03-01T12:00:00+02:00" and a.date_flag == ""
    assert a.authors == ("Ann Lee",) and a.tags == ("macro", "btc")
    assert (b.published_at, b.date_flag, b.link) == (None, "missing", "https://feeds.test/news/2")
    assert (c.published_at, c.date_flag) == (now, "future")
    assert (d.published_at, d.date_flag, d.published_raw) == (
        None,
        "unparsed",
        "sometime last week",
    )
    assert d.link == "" and d.guid == "tag:test,2026:4"


def test_broken_bodies_never_raise() -> None:
    body = COINTELEGRAPH.read_bytes()
    cut = body.index(b"<title>", body.index(b"<item>", body.index(b"</item>"))) + 20
    truncated = _parse(body[:cut])
    assert [e.guid for e in truncated.entries] == [
        x.guid for x in expected_items(COINTELEGRAPH)[:1]
    ]
    assert truncated.bozo.startswith("truncated, last item dropped")
    # feedparser's fallback parser read it: the same values as the strict parse.
    assert truncated.entries[0] == _parse(body).entries[0]
    page = _parse(b"<html><body><h1>502 Bad Gateway</h1></body></html>", ctype="text/html")
    assert page.entries == () and page.version == "" and "NonXMLContentType" in page.bozo
    assert _parse(b"").entries == ()
    cp1252 = body.decode().encode("cp1252")  # declared UTF-8, written in Windows-1252
    mislabelled = _parse(cp1252, ctype="application/rss+xml")
    assert "CharacterEncodingOverride" in mislabelled.bozo
    assert [e.summary for e in mislabelled.entries] == [
        x.summary for x in expected_items(COINTELEGRAPH)
    ]


@pytest.mark.parametrize(
    "url, canonical",
    [
        (
            "HTTPS://WWW.Example.com/Path/A?utm_source=rss&utm_medium=x&id=3#frag",
            "https://www.example.com/Path/A?id=3",
        ),
        ("http://example.com:80?fbclid=1&gclid=2&mc_cid=3&mc_eid=4&ref=tw", "http://example.com/"),
        ("https://example.com:8443/a?b=1&ref_src=x&a=2", "https://example.com:8443/a?b=1&a=2"),
        ("  https://example.com/a?q=%20x  ", "https://example.com/a?q=+x"),
        ("", ""),
    ],
)
def test_canonical_link(url: str, canonical: str) -> None:
    assert canonical_link(url) == canonical


def test_text_helpers() -> None:
    assert html_to_text("a<br/>b<div>c</div>&lt;tag&gt; &#8217; &eacute;") == "a b c <tag> \u2019 é"
    assert html_to_text("  plain\n\ttext  ") == "plain text"
    assert title_fingerprint("BITCOIN Hits $100K — Again!") == title_fingerprint(
        "Bitcoin hits $100k: again"
    )
    assert title_fingerprint("Wood’s ARK didn't sell") == "woods ark didnt sell"
    assert normalize_published(None, "", NOW, 0) == (None, "missing")
    assert normalize_published(None, "yesterday", NOW, 0) == (None, "unparsed")
    t = time.gmtime(NOW // NS + 10)
    assert normalize_published(t, "x", NOW, 60 * NS) == (NOW + 10 * NS, "")
    assert normalize_published(t, "x", NOW, 5 * NS) == (NOW, "future")


def test_dedupe_by_guid_link_and_title_window() -> None:
    entries = _parse(COINTELEGRAPH.read_bytes(), source="ct").entries
    index = DedupeIndex(title_window_ns=86400 * NS)
    first = assign(index, entries, NOW)
    assert len(first.items) == 10 and len(first.sources) == 10 and first.known == 0
    assert first.items[0].item_id == item_id("ct", entries[0].guid)
    assert json.loads(first.items[0].authors) == [] and first.items[0].ingested_at == NOW
    again = assign(index, entries, NOW + NS)
    assert (again.items, again.sources, again.known) == ([], [], 10)
    e = entries[0]
    # Another feed, same canonical link: a sighting of the same story.
    copy = e._replace(source="mirror", guid="m-1", title="Other words entirely here")
    # Another feed, another link, same headline in other case and punctuation.
    retitled = entries[1]._replace(
        source="mirror",
        guid="m-2",
        link="https://mirror.test/2",
        title=entries[1].title.upper() + "!!",
        title_key=title_fingerprint(entries[1].title.upper() + "!!"),
    )
    # The same headline two days later is another story (recurring titles).
    later = retitled._replace(
        guid="m-3", link="https://mirror.test/3", published_at=e.published_at + 2 * 86400 * NS
    )
    # Short titles never match.
    short_a = e._replace(
        source="a", guid="s1", link="https://a.test/1", title="Markets", title_key="markets"
    )
    short_b = short_a._replace(source="b", guid="s2", link="https://b.test/1")
    out = assign(index, [copy, retitled, later, short_a, short_b], NOW + 2 * NS)
    assert [s.item_id for s in out.sources[:2]] == [first.items[0].item_id, first.items[1].item_id]
    assert [i.guid for i in out.items] == ["m-3", "s1", "s2"]
    assert index.match(copy._replace(guid="zzz"), None) == first.items[0].item_id
    # What the store gives back at start rebuilds the same index.
    rebuilt = DedupeIndex(86400 * NS)
    rebuilt.load(
        Sighting(s.item_id, s.source, s.guid, s.link, s.title_key, None) for s in first.sources
    )
    assert assign(rebuilt, entries, NOW).known == 10


def test_health_transitions_and_schedule() -> None:
    feed = FeedConfig(name="f", url="http://x.test/f")
    st = initial_status(feed, NOW)
    assert (st.state, st.next_poll_at, condition(st)) == ("pending", NOW, "pending")
    ok = on_success(
        st,
        now=NOW,
        http_status=200,
        items_seen=10,
        new_items=4,
        bozo="",
        etag='"e1"',
        last_modified="",
    )
    assert (ok.state, ok.new_total, ok.etag, ok.consecutive_failures) == ("ok", 4, '"e1"', 0)
    same = on_success(
        ok,
        now=NOW + 1,
        http_status=304,
        items_seen=None,
        new_items=0,
        bozo="",
        etag='"e1"',
        last_modified="",
    )
    assert (same.items_seen, same.new_items, same.new_total) == (10, 0, 4)
    bad = on_failure(same, now=NOW + 2, error="http 500: Internal Server Error", http_status=500)
    bad2 = on_failure(bad, now=NOW + 3, error="http 500: boom", http_status=500)
    assert (bad2.state, bad2.consecutive_failures, bad2.last_success_at, bad2.etag) == (
        "failing",
        2,
        NOW + 1,
        '"e1"',
    )
    assert condition(bad) == condition(bad2) == "failing:http 500"
    assert initial_status(feed, NOW + 9, bad2) == bad2._replace(
        next_poll_at=NOW + 9, updated_at=NOW + 9
    )
    assert (
        initial_status(FeedConfig(name="f", url="http://moved.test/f"), NOW, bad2).state
        == "pending"
    )
    backoff = BackoffConfig(base_s=10, cap_s=100)
    kw = {"interval_s": 120.0, "jitter": 0.1, "backoff": backoff}
    assert next_delay_s(ok, rng=lambda: 0.0, **kw) == pytest.approx(108)
    assert next_delay_s(ok, rng=lambda: 1.0, **kw) == pytest.approx(132)
    delays = [
        next_delay_s(bad._replace(consecutive_failures=n), rng=lambda: 1.0, **kw)
        for n in range(1, 7)
    ]
    assert delays == [10, 20, 40, 80, 100, 100]  # doubling, capped
    assert next_delay_s(bad, rng=lambda: 0.0, **kw) == 5  # equal jitter: at least half
    assert next_delay_s(bad, rng=lambda: 0.0, retry_after_s=60, **kw) == 60


def test_news_config() -> None:
    s = load_settings(environ={})
    assert s.news.enabled is False  # the offline demo never reaches the internet
    assert len(s.news.feeds) >= 10 and all(f.url.startswith("https://") for f in s.news.feeds)
    feeds = '[{name: a, url: "http://x.test/a"}, {name: a, url: "http://x.test/b"}]'
    with pytest.raises(ConfigError, match="repeated"):
        load_settings([f"news.feeds={feeds}"], environ={})
    with pytest.raises(ConfigError, match="news.feeds.0.url"):
        load_settings(['news.feeds=[{name: a, url: "ftp://x"}]'], environ={})
