"""The ``sql/`` query files, shipped inside the wheel as ``analytics.sql``."""

from __future__ import annotations

from importlib import resources


def available() -> list[str]:
    """Names of the shipped queries (``sql/NAME.sql``)."""
    return sorted(p.name[:-4] for p in resources.files("analytics.sql").iterdir() if p.name.endswith(".sql"))


def load(name: str) -> str:
    """Text of ``sql/NAME.sql``; raises ``KeyError`` naming the shipped queries if there is none."""
    path = resources.files("analytics.sql") / f"{name}.sql"
    if not path.is_file():
        raise KeyError(f"query: no sql/{name}.sql; shipped queries are {available()}")
    return path.read_text()
