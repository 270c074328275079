"""tdlog: a training-dynamics log store and offline analytics engine.

- :mod:`tdlog.recorder` — the in-loop recorder (torch, pyarrow, numpy): ``from tdlog.recorder import Recorder``.
- :mod:`tdlog.analytics` — the offline engine (DuckDB or Spark, results as Polars):
  ``tdlog.analytics.open_run(path)``.
- :mod:`tdlog.format` — the on-disk format both sides share (FORMAT.md), torch-free.
- :mod:`tdlog.demo` — the noisy-digits demo application (``tdlog demo``); the library never imports it.

Importing ``tdlog`` itself loads nothing else.
"""

__version__ = "0.1.0"
