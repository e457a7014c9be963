"""What every page shares: the settings the dashboard runs with, the replay banner, empty
states and time formatting.

``ccf ui`` starts ``streamlit run app.py -- <overrides>``: the script's arguments are the
same ``key=value`` overrides (and ``--config FILE``) as every other command's.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import streamlit as st

from ccf.config import Settings, load_settings
from ccf.logs import setup_logging

log = logging.getLogger(__name__)


def parse_argv(argv: Sequence[str]) -> tuple[list[str], list[Path]]:
    """``key=value`` overrides and ``--config FILE`` (or ``--config=FILE``) files.

    >>> parse_argv(["data_dir=x", "--config", "a.yaml", "--config=b.yaml"])
    (['data_dir=x'], [PosixPath('a.yaml'), PosixPath('b.yaml')])
    """
    overrides: list[str] = []
    files: list[Path] = []
    args = iter(argv)
    for a in args:
        if a in ("--config", "-c"):
            files.append(Path(next(args, "")))
        elif a.startswith("--config="):
            files.append(Path(a.split("=", 1)[1]))
        else:
            overrides.append(a)
    return overrides, files


@st.cache_resource(show_spinner=False)
def _load(overrides: tuple[str, ...], files: tuple[str, ...]) -> Settings:
    settings = load_settings(overrides, [Path(f) for f in files])
    setup_logging(settings.log_level)
    log.info(
        "part=ui settings data_dir=%s storage=%s source=%s symbols=%s",
        settings.data_dir,
        settings.storage.backend,
        settings.source,
        ",".join(settings.symbols),
    )
    return settings


def settings() -> Settings:
    """The settings from the script's arguments (raises ConfigError on a bad value)."""
    overrides, files = parse_argv(sys.argv[1:])
    return _load(tuple(overrides), tuple(str(f) for f in files))


def header(settings: Settings, title: str) -> None:
    """A page's title, and a banner when the data is a replay rather than the live market."""
    st.title(title)
    if settings.source == "replay":
        st.info(
            "**Replayed data.** The market data is the recorded Binance session served by "
            "the replay exchange (`source=replay`), not the live market. Run with "
            "`source=binance` for live data.",
            icon=":material/replay:",
        )


def reachable(section: Callable[[Settings], None]) -> Callable[[Settings], None]:
    """A page section that, when the store's server cannot be reached, says so where its
    figures would be (the message names the server, never the password) and shows again
    at the next refresh once it is back."""

    @functools.wraps(section)
    def run(settings: Settings) -> None:
        try:
            section(settings)
        except ConnectionError as e:
            st.error(f"ccf: {e}", icon=":material/cloud_off:")

    return run


def waiting(message: str) -> None:
    """An empty state: what the page waits for and which part writes it."""
    st.info(message, icon=":material/hourglass_empty:")


def when(ts: pd.Timestamp | int | None) -> str:
    """A time as the pages print it: UTC, to the millisecond."""
    if ts is None or (isinstance(ts, float) and pd.isna(ts)) or ts is pd.NaT:
        return "-"
    t = ts if isinstance(ts, pd.Timestamp) else pd.Timestamp(int(ts), unit="ns", tz="UTC")
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def symbol_picker(settings: Settings, key: str) -> str:
    """One symbol of ``settings.symbols``."""
    return st.selectbox("symbol", settings.symbols, key=key, format_func=str.upper)
