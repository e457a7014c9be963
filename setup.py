"""Builds the C order book (``ccf.sources.binance._cbook``); metadata is in pyproject.toml.

The collector's hot path: see src/ccf/sources/binance/book.py for why and
bench/bench_collector.py for what it buys. ``CCF_BOOK_IMPL=python`` selects the
pure-Python book, which stays the reference the tests compare against.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ccf.sources.binance._cbook",
            sources=["src/ccf/sources/binance/_cbook.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
        Extension(  # the string-keeping book of OKX, Coinbase, Kraken (venues/strbook.py)
            "ccf.sources.venues._strlevels",
            sources=["src/ccf/sources/venues/_strlevels.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
    ]
)
