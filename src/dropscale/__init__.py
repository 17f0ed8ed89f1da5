"""dropscale: dropout with an explicit rescaling rule.

The library (this namespace) is usable on its own; the study and the command
line live in :mod:`dropscale.study` and :mod:`dropscale.cli`.
"""

from dropscale.functional import dropout, dropout_mask
from dropscale.layers import Dropout
from dropscale.moments import Moments, moments
from dropscale.scaling import SCALINGS, Scaling, custom, get_scaling, scaling_names
from dropscale.simulate import simulate
from dropscale.structured import EmbeddingDropout, RNNDropout, WeightDropout

__version__ = "0.1.0"

__all__ = [
    "SCALINGS",
    "Dropout",
    "EmbeddingDropout",
    "Moments",
    "RNNDropout",
    "Scaling",
    "WeightDropout",
    "__version__",
    "custom",
    "dropout",
    "dropout_mask",
    "get_scaling",
    "moments",
    "scaling_names",
    "simulate",
]
