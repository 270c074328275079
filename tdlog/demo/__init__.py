"""``tdlog.demo``: the noisy-digits demo application (``tdlog demo``), built on ``tdlog.recorder`` and
``tdlog.analytics``; neither library imports it. Needs torch and scikit-learn (and cleanlab for its
baseline row: ``pip install 'tdlog[demo]'``).

>>> from tdlog.demo import DemoConfig, run_demo
>>> result = run_demo(Path("demo-out"), DemoConfig(epochs=40, seed=0))
"""

from .pipeline import DemoConfig, DemoResult, run_demo

__all__ = ["DemoConfig", "DemoResult", "run_demo"]
