"""tdlog analytics: the offline half. Reads runs written by ``recorder`` with DuckDB; returns Polars."""

from .run import Run, open_run

__all__ = ["Run", "open_run"]
