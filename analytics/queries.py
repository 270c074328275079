"""The ``sql/`` query files, shipped inside the wheel as ``tdlog/analytics/sql/``."""

from __future__ import annotations

import functools
from importlib import resources


def _folder():
    return resources.files("tdlog.analytics") / "sql"


def available() -> list[str]:
    """Names of the shipped queries (``sql/NAME.sql``)."""
    return sorted(p.name[:-4] for p in _folder().iterdir() if p.name.endswith(".sql"))


@functools.cache
def load(name: str) -> str:
    """Text of ``sql/NAME.sql``; raises ``KeyError`` naming the shipped queries if there is none."""
    path = _folder() / f"{name}.sql"
    if not path.is_file():
        raise KeyError(f"query: no sql/{name}.sql; shipped queries are {available()}")
    return path.read_text()
