"""tdlog analytics: the offline half. Reads runs written by ``recorder`` with DuckDB; returns Polars."""

from .gmm import GMMResult, fit_gmm
from .run import Run, open_run
from .threshold import combine_threshold_runs

__all__ = ["GMMResult", "Run", "combine_threshold_runs", "fit_gmm", "open_run"]
