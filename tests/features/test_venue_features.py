"""Features keyed by (venue, symbol): one raw store holding Binance spot and USD-M
BTCUSDT, the same symbol name on both; the feature runner's reads of each venue give
that venue's rows only (``exchange`` = venue)."""

from __future__ import annotations

from pathlib import Path

from ccf.config import load_settings
from ccf.features.raw import RawReader
from ccf.features.runner import compute_rows
from ccf.features.spec import feature_set
from ccf.storage import SqliteStore
from ccf.storage.sqlite import connect
from tests.features.test_cross_venue import mid_at, mids, perp_records, spot_records


def test_each_venue_reads_its_own_rows(tmp_path: Path) -> None:
    db = tmp_path / "ccf.sqlite"
    raw = SqliteStore(db)
    raw.write(list(spot_records()))
    raw.write(list(perp_records()))
    raw.close()
    s = load_settings(["features.bucket=1s", "features.features=[{kind: m_p}]"], environ={})
    fs = feature_set(s.features)
    at = fs.float_columns.index("m_p")
    con = connect(db, readonly=True)
    rows = {
        venue: compute_rows(RawReader(con, fs, venue), fs, "btcusdt")[0]
        for venue in ("binance", "binance_usdm")
    }
    con.close()
    for venue, records in (("binance", spot_records()), ("binance_usdm", perp_records())):
        times, values = mids(records)
        got = rows[venue]
        assert len(got) > 300
        assert all(r.values[at] == mid_at(times, values, r.ts_end) for r in got), venue
    # the perpetual's rows cover only its 5.7 minutes, spot's its 11
    assert len(rows["binance_usdm"]) < len(rows["binance"])
    assert load_settings(["exchange=binance_usdm"], environ={}).exchange == "binance_usdm"
