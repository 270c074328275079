"""``tdlog.analytics``: the offline half. Reads runs written by ``tdlog.recorder`` with DuckDB (default) or
Spark; results as Polars DataFrames.

>>> import tdlog.analytics as analytics
>>> run = analytics.open_run("runs/exp1")
>>> run.scores()

Importing it loads DuckDB, Polars and PyArrow only; scikit-learn (GMM, evaluation), FAISS (MAP-D),
matplotlib (report) and pyspark load where they are used.
"""

from .engine import Engine
from .gmm import GMMResult, fit_gmm
from .run import Run, open_run
from .runs import Runs, open_runs
from .selection import filter_dataset

__all__ = ["Engine", "GMMResult", "Run", "Runs", "filter_dataset", "fit_gmm", "open_run", "open_runs"]
