"""Credentials by reference: configs hold ``env:NAME`` or ``file:/path``, never the secret.

A config, a report or a registry entry that is written out therefore carries
only where the secret lives. :func:`resolve` reads it at connect time; the
value it returns goes straight into a client and is never logged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:\S+)$")


class SecretError(ValueError):
    """A secret reference that cannot be read; the message names it, never its value."""


def _check_ref(v: str) -> str:
    if not _REF.fullmatch(v):
        raise ValueError(
            "a secret is given by reference, never in the config: env:VARIABLE or "
            "file:/path/to/secret"
        )
    return v


SecretRef = Annotated[str, AfterValidator(_check_ref)]


def resolve(ref: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret ``ref`` points at (None for None); a missing one raises :class:`SecretError`."""
    if ref is None:
        return None
    kind, _, where = ref.partition(":")
    if kind == "env":
        env = os.environ if environ is None else environ
        if where not in env:
            raise SecretError(f"secret {ref}: environment variable {where} is not set")
        return env[where]
    if kind == "file":
        try:
            return Path(where).read_text().strip()
        except OSError as e:
            raise SecretError(f"secret {ref}: cannot read the file: {e.strerror}") from None
    raise SecretError(f"secret {ref}: not env:NAME or file:/path")


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret value in it replaced (for error messages from clients)."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text
