"""Builds the optional C order book (``ccf.sources.binance._cbook``); metadata is in pyproject.toml.

``optional=True``: where no C compiler is available the install still succeeds
and ``ccf.sources.binance.book`` falls back to its pure-Python ``BookSide``.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ccf.sources.binance._cbook",
            sources=["src/ccf/sources/binance/_cbook.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
