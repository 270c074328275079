"""``tdlog.recorder``: the in-loop half of tdlog. Imports torch, pyarrow and numpy only.

>>> from tdlog.recorder import Recorder
>>> with Recorder("runs/exp1", num_classes=10) as rec:
...     rec.log(ids, logits, targets, loss=loss, epoch=epoch)
"""

from tdlog import __version__
from tdlog.format import FORMAT_VERSION

from .aum_compat import AUMCalculator, AUMRecord
from .dataset import DatasetWithIndex
from .loss_check import LossMismatchError
from .manifest import WriterSupersededError
from .probes import ProbeSuites
from .recorder import Recorder
from .stats import batch_statistics
from .threshold import threshold_sample_indices, threshold_samples

__all__ = [
    "FORMAT_VERSION",
    "AUMCalculator",
    "AUMRecord",
    "DatasetWithIndex",
    "LossMismatchError",
    "ProbeSuites",
    "Recorder",
    "WriterSupersededError",
    "__version__",
    "batch_statistics",
    "threshold_sample_indices",
    "threshold_samples",
]
