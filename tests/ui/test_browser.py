"""``ccf ui`` in a real browser: the command started on a free port over the filled data
dir, every page opened in headless Chromium (Debian's, driven by Playwright), its charts
checked for data, no exception box anywhere, and a screenshot of each page saved to
``docs/img/ui-<page>.png``."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.error import URLError

import pytest
from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

from tests.ui import overrides  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# screenshots land in a temporary folder unless CCF_SCREENSHOTS names one: the README's
# are refreshed with `CCF_SCREENSHOTS=docs/img make test`, so a test run dirties nothing
SHOTS = Path(os.environ.get("CCF_SCREENSHOTS") or Path(tempfile.gettempdir()) / "ccf-screenshots")
# page path, title, Plotly charts it draws
PAGES = {
    "live": ("", "Live", 1),
    "accuracy": ("accuracy", "Accuracy", 3),
    "market": ("market", "Market data", 4),
    "models": ("models", "Models", 0),
    "health": ("health", "Health", 2),
}
# per chart: the finite numbers its traces hold (y, x, z or close: whichever is numeric)
POINTS_JS = """() => {
  const finite = v => Array.from(v ?? []).flat(2)
    .filter(x => x !== null && x !== '' && Number.isFinite(+x)).length;
  return Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd =>
    (gd.data || []).reduce((n, t) =>
      n + Math.max(finite(t.y), finite(t.x), finite(t.z), finite(t.close)), 0));
}"""

if not Path(CHROMIUM).exists():  # `make test` installs it; say so rather than skip
    raise RuntimeError(f"{CHROMIUM} is missing: apt-get install -y chromium (make test does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard(filled: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``ccf ui`` over the filled data dir; its URL once Streamlit answers."""
    port = free_port()
    log = tmp_path_factory.mktemp("ui-log") / "ui.log"
    args = [sys.executable, "-m", "ccf", "ui", *overrides(filled), f"ui.port={port}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen([*args, "ui.refresh_s=1"], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (URLError, ConnectionError):
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        assert proc.wait(30) in (0, -15), log.read_text()[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, driven as is (Playwright never fetches a browser of its own)."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def wait_for_charts(page: Page, n: int, timeout_s: float = 45) -> list[int]:
    """Wait until the page draws ``n`` Plotly charts, each holding data."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = page.evaluate(POINTS_JS)
        if len(counts) >= n and all(c > 0 for c in counts):
            return counts
        assert time.monotonic() < deadline, f"charts with data: {counts}, want {n}"
        page.wait_for_timeout(300)


# the fan chart: how many there are and the lowest opacity on its way to the page's root
FADE_JS = """() => {
  const plots = document.querySelectorAll('.js-plotly-plot');
  let op = 1;
  for (let n = plots[0]; n; n = n.parentElement) {
    op = Math.min(op, parseFloat(getComputedStyle(n).opacity));
  }
  return [plots.length, op];
}"""


def assert_refreshes_in_place(page: Page, sent: list[int], seconds: float = 3.0) -> None:
    """With ui.refresh_s=1 the Live fragment asks for reruns by itself, and while it
    reruns its chart stays mounted and never fades (no flicker)."""
    before = len(sent)
    samples = []
    for _ in range(int(seconds * 10)):
        samples.append(page.evaluate(FADE_JS))
        page.wait_for_timeout(100)
    assert len(sent) - before >= 2, "the page did not refresh by itself"
    assert all(n == 1 and op == 1 for n, op in samples), samples


def screenshot(page: Page, name: str) -> Path:
    """The whole page (Streamlit scrolls inside its main block: the window grows to it)."""
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": max(900, min(int(height), 3600))})
    page.wait_for_timeout(800)  # the charts re-layout to the new size
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"ui-{name}.png"
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1400, "height": 900})
    return path


@pytest.mark.parametrize("name", list(PAGES))
def test_each_page_draws_its_data_in_a_browser(name: str, dashboard: str, browser: Browser) -> None:
    path, title, n_charts = PAGES[name]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    sent: list[int] = []  # messages the page sent to Streamlit: reruns it asked for
    page.on("websocket", lambda ws: ws.on("framesent", lambda _: sent.append(1)))
    try:
        page.goto(f"{dashboard}/{path}")
        page.get_by_role("heading", name=title, level=1).wait_for(timeout=60_000)
        counts = wait_for_charts(page, n_charts)
        assert len(counts) == n_charts
        if name == "live":
            signals = page.get_by_text(re.compile(r"^(BUY|SELL|HOLD)$"))
            signals.first.wait_for(timeout=30_000)
            assert signals.count() >= 3  # one per horizon (and in the table)
            assert_refreshes_in_place(page, sent)
        if name == "models":
            images = page.locator('[data-testid="stImage"] img')
            images.first.wait_for(timeout=60_000)
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('[data-testid=\"stImage\"] img'))"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            assert images.count() >= 5
        assert page.get_by_text("Replayed data.").count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
        shot = screenshot(page, name)
        assert shot.stat().st_size > 20_000
    finally:
        page.close()
