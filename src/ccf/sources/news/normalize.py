"""Pure text, link and date normalization for news items.

Feeds disagree on everything a reader would call the same: one outlet tags
its links with ``utm_*``, another escapes its summaries twice, a third
writes dates in the future. These functions make the copies comparable, so
deduplication can see one story where the feeds show several.
"""

from __future__ import annotations

import calendar
import re
import time
import unicodedata
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ccf.records import NewsDateFlag

NS = 1_000_000_000

# Query keys that identify the click, not the page.
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "igshid",
        "mc_cid",
        "mc_eid",
        "ref",
        "ref_src",
        "ref_url",
        "referrer",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "cmpid",
        "ncid",
        "ocid",
        "sr_share",
        "spm",
        "__twitter_impression",
    }
)
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SPACE = re.compile(r"\s+")
_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc`]")
_NOT_WORD = re.compile(r"[\W_]+")
_BLOCK_TAGS = frozenset(
    {"p", "br", "div", "li", "ul", "ol", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6"}
    | {"blockquote", "figure", "figcaption", "section", "article", "header", "footer", "hr"}
)
_SKIP_TAGS = frozenset({"script", "style", "noscript", "template"})


def collapse(text: str) -> str:
    """Runs of whitespace (newlines, tabs, non-breaking spaces) -> one space, trimmed."""
    return _SPACE.sub(" ", text).strip()


def _is_tracking(key: str) -> bool:
    k = key.lower()
    return k in TRACKING_PARAMS or k.startswith(TRACKING_PREFIXES)


def canonical_link(url: str) -> str:
    """The link with scheme and host lower-cased, default port, fragment and tracking
    parameters dropped; the remaining query keeps its order.

    >>> canonical_link("HTTPS://Example.COM:443/a/B?utm_source=rss&id=7&fbclid=x#top")
    'https://example.com/a/B?id=7'
    """
    url = url.strip()
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bracket or port that does not parse: keep the text as is
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        host = f"{host}:{port}"
    if parts.username or parts.password:
        auth = parts.username or ""
        auth += f":{parts.password}" if parts.password else ""
        host = f"{auth}@{host}"
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_tracking(k)
    ]
    path = parts.path or ("/" if host else "")
    return urlunsplit((scheme, host, path, urlencode(query, doseq=True), ""))


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag in _BLOCK_TAGS:
            self.chunks.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.chunks.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.chunks.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.chunks.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment: tags dropped, entities unescaped, whitespace
    collapsed; block elements separate words.

    >>> html_to_text("<p>BTC&nbsp;hits <b>$100k</b></p><p>again &amp; again</p>")
    'BTC hits $100k again & again'
    """
    if "<" not in html and "&" not in html:
        return collapse(html)
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return collapse("".join(parser.chunks))


def title_fingerprint(title: str) -> str:
    """Lower-case words of a title with punctuation gone: the same headline written by
    two outlets (other quotes, other case, a trailing period) gives the same key.

    >>> title_fingerprint("Bitcoin’s Rally: ETFs See $1B Inflows!")
    'bitcoins rally etfs see 1b inflows'
    """
    text = unicodedata.normalize("NFKC", title).casefold()
    text = _APOSTROPHES.sub("", text)  # "didn't" -> "didnt", not "didn t"
    return " ".join(_NOT_WORD.sub(" ", text).split())


def normalize_published(
    parsed: time.struct_time | None, raw: str, ingested_at: int, tolerance_ns: int
) -> tuple[int | None, NewsDateFlag]:
    """The publish time in UTC ns and a flag: ``missing`` (no date), ``unparsed`` (a date
    nobody could read), ``future`` (later than ingestion + tolerance: clamped to
    ``ingested_at``, since a story cannot be published after we read it).

    ``parsed`` is feedparser's ``*_parsed``: a struct_time already in UTC.
    """
    if parsed is None:
        return None, ("unparsed" if raw.strip() else "missing")
    try:
        ns = calendar.timegm(parsed) * NS
    except (TypeError, ValueError, OverflowError):
        return None, "unparsed"
    if ns > ingested_at + tolerance_ns:
        return ingested_at, "future"
    return ns, ""
