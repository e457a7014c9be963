"""The dashboard's perpetual-spot basis, on the real overlapping spot and USD-M books:
the data function against a hand as-of join, and the market page drawing it when a
perpetual on the symbol's instrument is collected (and not otherwise)."""

from __future__ import annotations

import bisect
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import ccf.ui
from ccf.config import load_settings, shared_dir
from ccf.records import Book
from ccf.sources import venues
from ccf.sources.recording import read_frames
from ccf.storage import SqliteStore
from ccf.ui.data.db import Store
from ccf.ui.data.market import basis
from ccf.ui.pages.market import perp_of

APP = Path(ccf.ui.__file__).parent / "app.py"
VENUES = (
    "venues=[{name: binance, symbols: [btcusdt]}, {name: binance_usdm, symbols: [btcusdt], "
    "streams: [depth@0ms, trade, bookTicker], replay_port: 9444}]"
)


def books(venue: str, stream: str, name: str, limit: int) -> list[Book]:
    feed = venues.get(venue).make_feed(("btcusdt",), (stream,))
    out: list = []
    for n, (ts, frame) in enumerate(read_frames(shared_dir() / "data" / "binance" / name)):
        if n > limit:
            break
        if frame.startswith('{"lastUpdateId"'):
            feed.on_snapshot("btcusdt", frame, ts, out)
        else:
            feed.handle(frame, ts, out)
    return [r for r in out if type(r) is Book]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("basis") / "data"
    store = SqliteStore(d / "ccf.sqlite")
    store.write(books("binance", "depth@100ms", "spot_btcusdt_20240808.jsonl.gz", 60_000))
    store.write(books("binance_usdm", "depth@0ms", "usdm_btcusdt_20240808.jsonl.gz", 30_000))
    store.close()
    return d


def test_basis_is_each_spot_mid_against_the_last_perp_mid(data_dir: Path) -> None:
    s = load_settings([f"data_dir={data_dir}", VENUES], environ={})
    df = basis(Store(s, "raw"), ("binance", "btcusdt"), ("binance_usdm", "btcusdt"), 500)
    raw = SqliteStore(data_dir / "ccf.sqlite", readonly=True)

    def mids(ex: str) -> tuple[list[int], list[float]]:
        rows = raw.query(
            "SELECT ts_event, a_p_0, b_p_0 FROM book WHERE exchange=? ORDER BY update_id", (ex,)
        )
        return [r[0] for r in rows], [(r[1] + r[2]) / 2 for r in rows]

    st, sv = mids("binance")
    pt, pv = mids("binance_usdm")
    assert len(df) > 400  # the newest 500 spot books, those with a perp book before them
    for ts, spot, perp, bps in zip(df["ts"], df["spot"], df["perp"], df["basis_bps"], strict=True):
        assert spot == sv[st.index(ts)]
        assert perp == pv[bisect.bisect_right(pt, ts) - 1]
        assert bps == pytest.approx((perp - spot) / spot * 1e4, rel=1e-12)
    assert np.all(np.abs(df["basis_bps"]) < 20)  # a few bps either way, never a unit slip
    assert basis(Store(s, "raw"), ("binance", "btcusdt"), ("binance_usdm", "ethusdt")).empty


def test_the_perpetual_of_a_symbol_is_found_by_instrument() -> None:
    s = load_settings([VENUES], environ={})
    assert perp_of(s, "btcusdt") == ("binance_usdm", "btcusdt")
    assert perp_of(s, "ethusdt") is None
    assert perp_of(load_settings([], environ={}), "btcusdt") is None


def test_the_market_page_draws_the_basis(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = [f"data_dir={data_dir}", "symbols=[btcusdt]", VENUES]
    monkeypatch.setattr(sys, "argv", [str(APP), *args])
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    at.switch_page("pages/market.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Perpetual-spot basis" in [h.value for h in at.subheader]
    captions = "\n".join(c.value for c in at.caption)
    assert "venue: binance" in captions and "binance_usdm btcusdt against binance" in captions
