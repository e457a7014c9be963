"""The news collector against a local feed server serving the saved feeds.

Every test runs the real parts: aiohttp client and server on 127.0.0.1, the
parser in its worker thread, deduplication, the writer thread and the SQLite
store. Expected values come from the XML files (``news_fixtures``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from aiohttp import web

from ccf.config import Settings, load_settings
from ccf.sources.news import NewsCollector, news_wanted
from ccf.sources.news.normalize import canonical_link
from ccf.status import format_status, gather_status
from ccf.storage import SqliteStore
from tests import parts
from tests.sources.news_fixtures import (
    COINDESK,
    COINTELEGRAPH,
    FeedServer,
    expected_items,
    free_port,
    static,
)

CD_ETAG = '"coindesk-v1"'
CD_LM = "Wed, 30 Sep 2026 17:27:11 GMT"
CT_LM = "Sun, 15 Feb 2026 07:06:27 GMT"
CAP = 300_000


def news_settings(tmp_path: Path, feeds: dict[str, str], *extra: str) -> Settings:
    listed = json.dumps([{"name": n, "url": u} for n, u in feeds.items()])
    return load_settings(
        [
            f"data_dir={tmp_path / 'data'}",
            "news.enabled=true",
            f"news.feeds={listed}",
            "news.interval_s=0.15",
            "news.jitter=0",
            "news.timeout_s=1",
            f"news.max_body_bytes={CAP}",
            "news.backoff.base_s=0.05",
            "news.backoff.cap_s=0.2",
            "storage.flush_interval_s=0.05",
            *extra,
        ],
        environ={},
    )


async def run_until(
    settings: Settings, done: Callable[[NewsCollector], bool], timeout_s: float = 10
) -> NewsCollector:
    return await parts.run_until(
        NewsCollector(settings), done, timeout_s, lambda c: c.statuses, poll_s=0.02
    )


def rows(settings: Settings, sql: str) -> list[tuple]:
    store = SqliteStore(settings.db_path, readonly=True)
    try:
        return store.query(sql)
    finally:
        store.close()


def all_ok(c: NewsCollector) -> bool:
    return bool(c.statuses) and all(st.state == "ok" for st in c.statuses.values())


def mirror_feed() -> bytes:
    """Another outlet re-publishing two CoinDesk stories under its own guids (one with a
    utm-tagged link, one under its own link with the headline in other case and
    punctuation) and one story of its own."""
    a, b = expected_items(COINDESK)[:2]
    items = [
        ("mirror-a", a.title.upper() + ".", a.link + "?utm_source=mirror&utm_medium=rss#top", a),
        ("mirror-b", b.title.lower().replace(",", "") + "!", "https://mirror.test/b?fbclid=1", b),
        ("mirror-c", "Mirror exclusive: a story nobody else carries", "https://mirror.test/c", a),
    ]
    xml = "".join(
        f"<item><title>{escape(title)}</title><link>{escape(link)}</link>"
        f'<guid isPermaLink="false">{guid}</guid><pubDate>{x.published_raw}</pubDate>'
        f"<description>Syndicated.</description></item>"
        for guid, title, link, x in items
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Mirror</title>'
        f"<link>https://mirror.test/</link>{xml}</channel></rss>"
    ).encode()


@pytest.fixture
async def server():
    srv = FeedServer(
        {
            "/coindesk.xml": static(COINDESK.read_bytes(), etag=CD_ETAG, last_modified=CD_LM),
            "/cointelegraph.xml": static(COINTELEGRAPH.read_bytes(), last_modified=CT_LM),
            "/plain.xml": static(COINTELEGRAPH.read_bytes(), "text/xml; charset=utf-8"),
            "/mirror.xml": static(mirror_feed()),
        }
    )
    await srv.start()
    yield srv
    await srv.stop()


async def test_two_feeds_exact_values_and_conditional_get(tmp_path: Path, server) -> None:
    s = news_settings(
        tmp_path,
        {
            "coindesk": server.url("/coindesk.xml"),
            "cointelegraph": server.url("/cointelegraph.xml"),
        },
    )
    assert news_wanted(s)
    started = time.time_ns()
    c = await run_until(
        s,
        lambda c: (
            len(server.hits("/coindesk.xml")) >= 3 and len(server.hits("/cointelegraph.xml")) >= 3
        ),
    )
    # Conditional GET: the first poll asks plainly, later ones with the validators.
    cd, ct = server.hits("/coindesk.xml"), server.hits("/cointelegraph.xml")
    assert "If-None-Match" not in cd[0] and "If-Modified-Since" not in cd[0]
    assert cd[1]["If-None-Match"] == CD_ETAG and cd[1]["If-Modified-Since"] == CD_LM
    assert "If-None-Match" not in ct[1] and ct[1]["If-Modified-Since"] == CT_LM
    assert cd[0]["User-Agent"] == s.news.user_agent

    cols = (
        "item_id, source, guid, title, summary, link, authors, tags, published_at, "
        "published_raw, date_flag, ingested_at"
    )
    stored = {r[2]: r for r in rows(s, f"SELECT {cols} FROM news")}
    assert len(stored) == 35
    for source, path in (("coindesk", COINDESK), ("cointelegraph", COINTELEGRAPH)):
        for x in expected_items(path):
            _, src, _, title, summary, link, authors, tags, pub, raw, flag, ingested = stored[
                x.guid
            ]
            assert (src, title, summary, link) == (source, x.title, x.summary, x.link)
            assert (json.loads(authors), json.loads(tags)) == (x.authors, x.tags)
            assert (pub, raw, flag) == (x.published_at, x.published_raw, "")
            assert started <= ingested <= c.statuses[source].last_success_at
    assert rows(s, "SELECT count(*), count(DISTINCT item_id) FROM news_source") == [(35, 35)]
    # One poll brought each feed's stories: one ingestion time per feed.
    assert rows(s, "SELECT source, count(DISTINCT ingested_at) FROM news GROUP BY source") == [
        ("coindesk", 1),
        ("cointelegraph", 1),
    ]

    status = {f.feed: f for f in SqliteStore(s.db_path, readonly=True).feed_statuses()}
    assert status == c.statuses
    cds, cts = status["coindesk"], status["cointelegraph"]
    assert (cds.state, cds.http_status, cds.items_seen, cds.new_items, cds.new_total) == (
        "ok",
        304,
        25,
        0,
        25,
    )
    assert (cds.etag, cds.last_modified, cds.consecutive_failures, cds.last_error) == (
        CD_ETAG,
        CD_LM,
        0,
        "",
    )
    assert (cts.state, cts.http_status, cts.items_seen, cts.new_total) == ("ok", 304, 10, 10)
    assert cds.next_poll_at > cds.last_poll_at

    store = SqliteStore(s.db_path, readonly=True)
    news = list(store.iter_news())
    assert len(news) == 35 and [n.ingested_at for n in news] == sorted(n.ingested_at for n in news)
    store.close()
    report = gather_status(s)
    assert report["news"]["stories"] == 35 and report["news"]["feeds_ok"] == 2
    assert {x["source"]: x["stories"] for x in report["news"]["sources"]} == {
        "coindesk": 25,
        "cointelegraph": 10,
    }
    text = format_status(report)
    assert "news: 35 stories" in text and "feeds 2 ok, 0 failing" in text
    assert any(p["part"] == "news" and p["state"] == "stopped" for p in report["parts"])


async def test_syndicated_story_is_one_item_with_two_sources(tmp_path: Path, server) -> None:
    s = news_settings(
        tmp_path, {"coindesk": server.url("/coindesk.xml"), "mirror": server.url("/mirror.xml")}
    )
    await run_until(s, all_ok)
    a, b = expected_items(COINDESK)[:2]
    assert rows(s, "SELECT count(*) FROM news") == [(26,)]
    assert rows(s, "SELECT count(*) FROM news_source") == [(28,)]
    # Whichever feed came first owns the story; both sightings point at it.
    for x, guid, mirror_link in ((a, "mirror-a", a.link), (b, "mirror-b", "https://mirror.test/b")):
        sightings = rows(
            s,
            "SELECT source, guid, link FROM news_source WHERE item_id = (SELECT item_id "
            f"FROM news_source WHERE source = 'coindesk' AND guid = '{x.guid}') ORDER BY source",
        )
        assert sightings == [("coindesk", x.guid, x.link), ("mirror", guid, mirror_link)]
    assert rows(s, "SELECT source FROM news WHERE guid = 'mirror-c'") == [("mirror",)]


async def test_restart_adds_no_duplicates_and_keeps_ingested_at(tmp_path: Path, server) -> None:
    feeds = {"coindesk": server.url("/coindesk.xml"), "plain": server.url("/plain.xml")}
    s = news_settings(tmp_path, feeds)
    await run_until(s, all_ok)
    news_sql = "SELECT * FROM news ORDER BY item_id"
    source_sql = "SELECT * FROM news_source ORDER BY source, guid"
    before_news, before_sources = rows(s, news_sql), rows(s, source_sql)
    assert len(before_news) == 35 and len(before_sources) == 35

    # Restart with a feed that re-publishes two stored stories: they must join them.
    first_hit = len(server.hits("/coindesk.xml"))
    s2 = news_settings(tmp_path, {**feeds, "mirror": server.url("/mirror.xml")})
    c2 = await run_until(
        s2, lambda c: len(server.hits("/plain.xml")) >= 3 and c.statuses["mirror"].state == "ok"
    )
    # The stored validators came back: the restarted collector asks conditionally at once.
    assert server.hits("/coindesk.xml")[first_hit]["If-None-Match"] == CD_ETAG
    assert c2.statuses["plain"].new_items == 0  # no validators: re-read, all known
    after_news = rows(s, news_sql)
    assert [r for r in after_news if r[2] != "mirror-c"] == before_news  # ingested_at kept
    assert len(after_news) == 36
    after_sources = rows(s, source_sql)
    assert set(before_sources) <= set(after_sources) and len(after_sources) == 38
    assert rows(s, "SELECT feed, new_total FROM feed_status ORDER BY feed") == [
        ("coindesk", 25),
        ("mirror", 1),
        ("plain", 10),
    ]


def _truncated_cointelegraph() -> tuple[bytes, int]:
    """Cut in the middle of the 6th item's title: 5 whole items."""
    body = COINTELEGRAPH.read_bytes()
    at = -1
    for _ in range(6):
        at = body.index(b"<item>", at + 1)
    return body[: body.index(b"<title>", at) + 25], 5


async def test_broken_feeds_are_reported_and_good_feeds_keep_producing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sent: list[int] = []  # bytes the server got out, per request of /huge.xml
    flaky_calls = {"n": 0}
    truncated, whole_items = _truncated_cointelegraph()

    async def html_page(request: web.Request) -> web.Response:
        return web.Response(
            text="<html><body><h1>Maintenance</h1></body></html>", content_type="text/html"
        )

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        await resp.prepare(request)
        chunk = b"<!-- padding -->" * 4096
        sent.append(0)
        try:
            for _ in range(50_000_000 // len(chunk)):
                await resp.write(chunk)
                sent[-1] += len(chunk)
        except ConnectionError:
            pass  # the client hung up: what we want
        return resp

    async def huge_declared(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        resp.content_length = 10_000_000
        await resp.prepare(request)
        await resp.write(b"<rss>")
        return resp

    async def e500(request: web.Request) -> web.Response:
        return web.Response(status=500, text="oops")

    async def flaky(request: web.Request) -> web.Response:
        flaky_calls["n"] += 1
        if flaky_calls["n"] <= 2:
            return web.Response(status=503, text="busy")
        return web.Response(body=COINTELEGRAPH.read_bytes(), content_type="application/rss+xml")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(body=COINDESK.read_bytes(), content_type="application/rss+xml")

    srv = FeedServer(
        {
            "/good.xml": static(COINDESK.read_bytes()),
            "/truncated.xml": static(truncated),
            "/latin1.xml": static(
                COINTELEGRAPH.read_bytes().decode().encode("cp1252"), "application/rss+xml"
            ),
            "/html": html_page,
            "/loop": loop,
            "/huge.xml": huge,
            "/declared.xml": huge_declared,
            "/e500.xml": e500,
            "/flaky.xml": flaky,
            "/slow.xml": slow,
        }
    )
    await srv.start()
    names = [
        "good",
        "truncated",
        "latin1",
        "html",
        "loop",
        "huge",
        "declared",
        "e500",
        "flaky",
        "slow",
    ]
    paths = [
        "/good.xml",
        "/truncated.xml",
        "/latin1.xml",
        "/html",
        "/loop",
        "/huge.xml",
        "/declared.xml",
        "/e500.xml",
        "/flaky.xml",
        "/slow.xml",
    ]
    feeds = {n: srv.url(p) for n, p in zip(names, paths, strict=True)}
    feeds["refused"] = f"http://127.0.0.1:{free_port()}/feed.xml"
    s = news_settings(tmp_path, feeds, "news.timeout_s=0.5")

    def done(c: NewsCollector) -> bool:
        st = c.statuses
        return (
            len(srv.hits("/good.xml")) >= 4
            and all(x.last_poll_at for x in st.values())
            and st["e500"].consecutive_failures >= 3
            and st["refused"].consecutive_failures >= 2
            and st["flaky"].state == "ok"
            and st["slow"].consecutive_failures >= 2
        )

    caplog.set_level(logging.INFO, logger="ccf.sources.news")
    try:
        c = await run_until(s, done, timeout_s=15)
    finally:
        await srv.stop()

    st = {f.feed: f for f in SqliteStore(s.db_path, readonly=True).feed_statuses()}
    assert st == c.statuses
    kinds = {n: (x.state, x.last_error.split(":")[0]) for n, x in st.items()}
    assert kinds == {
        "good": ("ok", ""),
        "truncated": ("ok", ""),
        "latin1": ("ok", ""),
        "html": ("failing", "not a feed"),
        "loop": ("failing", "redirects"),
        "huge": ("failing", "too big"),
        "declared": ("failing", "too big"),
        "e500": ("failing", "http 500"),
        "flaky": ("ok", "http 503"),  # the last error stays on record after recovery
        "slow": ("failing", "timeout"),
        "refused": ("failing", "connect"),
    }
    assert (st["good"].items_seen, st["good"].new_total) == (25, 25)
    assert st["truncated"].items_seen == whole_items and st["truncated"].bozo.startswith(
        "truncated"
    )
    assert st["latin1"].items_seen == 10 and "CharacterEncodingOverride" in st["latin1"].bozo
    assert (
        st["html"].last_error.startswith("not a feed: text/html") and st["html"].http_status == 200
    )
    assert st["huge"].last_error == f"too big: body over {CAP} bytes"
    # We hung up past the cap: the server never got far (socket buffers hold a few MB).
    assert sent and max(sent) < 50_000_000 // 2, sent
    assert st["declared"].last_error == f"too big: Content-Length 10000000 > {CAP} bytes"
    assert st["e500"].http_status == 500 and st["e500"].last_success_at is None
    assert (
        st["flaky"].consecutive_failures == 0
        and st["flaky"].last_success_at > st["flaky"].last_error_at
    )
    assert all(x.next_poll_at > x.last_poll_at for x in st.values())

    # Broken variants of Cointelegraph joined the same ten stories; nothing else was lost.
    assert rows(s, "SELECT count(*) FROM news") == [(35,)]
    assert rows(s, "SELECT source, count(*) FROM news_source GROUP BY source ORDER BY source") == [
        ("flaky", 10),
        ("good", 25),
        ("latin1", 10),
        ("truncated", 5),
    ]
    expected = {x.link: x for x in expected_items(COINTELEGRAPH)}
    for link, title, summary in rows(
        s, "SELECT link, title, summary FROM news WHERE link LIKE '%cointelegraph%'"
    ):
        assert (title, summary) == (expected[link].title, expected[link].summary)

    # One log line per change of state, not one per poll.
    def lines(feed: str, level: int) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if f"feed={feed} " in r.getMessage() and r.levelno == level
        ]

    assert len(lines("e500", logging.WARNING)) == 1
    assert len(lines("refused", logging.WARNING)) == 1
    assert len(lines("slow", logging.WARNING)) == 1
    assert len(lines("flaky", logging.WARNING)) == 1 and any(
        "recovered" in m for m in lines("flaky", logging.INFO)
    )
    assert lines("good", logging.WARNING) == []

    report = gather_status(s)["news"]
    assert (report["feeds_ok"], report["feeds_failing"]) == (4, 7)
    text = format_status(gather_status(s))
    assert "failing: e500: http 500: Internal Server Error" in text
    assert canonical_link(feeds["good"]) == feeds["good"]


async def test_news_off_returns_at_once(tmp_path: Path) -> None:
    s = load_settings([f"data_dir={tmp_path}"], environ={})
    assert not news_wanted(s)
    await asyncio.wait_for(NewsCollector(s).run(asyncio.Event()), 1)
    assert not (tmp_path / "ccf.sqlite").exists()
