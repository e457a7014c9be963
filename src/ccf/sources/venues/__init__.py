"""Venues behind one interface, and the registry that finds them by name.

Layout: the contract is :mod:`ccf.sources.venues.base` (read its docstring:
it is the interface every venue implements). Each venue is one folder
holding its wire schemas, feed (book sync rule, checksum), symbol mapping,
connection rules and REST client: new venues live under
``ccf/sources/venues/<name>/`` (``binance_usdm/``, and OKX, Coinbase, Kraken
beside it). Binance spot stays where it always was, ``ccf/sources/binance/``,
and is put behind the interface by :mod:`ccf.sources.venues.binance` (which
also serves the USD-M venue: both speak Binance's combined-stream protocol);
moving that folder would only churn every import while its feed is being
rewritten on other branches.

The registry maps a venue name (the records' ``exchange`` value) to the
module that registers it, imported on first use, so naming a venue costs
nothing until it is used. A new venue adds one line to :data:`MODULES`.
"""

from __future__ import annotations

from importlib import import_module

from ccf.sources.venues.base import Venue

# venue name -> the module that registers it when imported
MODULES: dict[str, str] = {
    "binance": "ccf.sources.venues.binance",
    "binance_usdm": "ccf.sources.venues.binance_usdm",
    "okx": "ccf.sources.venues.okx.venue",
    "coinbase": "ccf.sources.venues.coinbase.venue",
    "kraken": "ccf.sources.venues.kraken.venue",
}
_REGISTRY: dict[str, Venue] = {}


def register(venue: Venue) -> Venue:
    """Make ``venue`` findable by its name (called by the venue's module)."""
    have = _REGISTRY.get(venue.name)
    if have is not None and have is not venue:
        raise ValueError(f"venue {venue.name!r} is registered twice")
    _REGISTRY[venue.name] = venue
    return venue


def get(name: str) -> Venue:
    """The venue called ``name``; a clear error naming the known ones otherwise."""
    if name not in _REGISTRY:
        module = MODULES.get(name)
        if module is None:
            raise KeyError(f"unknown venue {name!r}: known venues are {', '.join(names())}")
        import_module(module)
        if name not in _REGISTRY:
            raise KeyError(f"module {module} did not register venue {name!r}")
    return _REGISTRY[name]


def names() -> list[str]:
    return sorted(set(MODULES) | set(_REGISTRY))
