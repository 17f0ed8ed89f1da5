"""dropscale: dropout with an explicit rescaling rule.

The library (this namespace) is usable on its own; the study and the command
line live in :mod:`dropscale.study` and :mod:`dropscale.cli`.
"""

from dropscale.functional import dropout, dropout_mask
from dropscale.layers import Dropout
from dropscale.moments import Moments, moments
from dropscale.noise import (
    AlphaDropout,
    GaussianDropout,
    alpha_dropout,
    gaussian_dropout,
)
from dropscale.scaling import SCALINGS, Scaling, custom, get_scaling, scaling_names
from dropscale.simulate import simulate
from dropscale.structured import EmbeddingDropout, RNNDropout, WeightDropout

__version__ = "0.1.0"

__all__ = [
    "AlphaDropout",
    "SCALINGS",
    "Dropout",
    "EmbeddingDropout",
    "GaussianDropout",
    "Moments",
    "RNNDropout",
    "Scaling",
    "WeightDropout",
    "__version__",
    "alpha_dropout",
    "custom",
    "dropout",
    "dropout_mask",
    "gaussian_dropout",
    "get_scaling",
    "moments",
    "scaling_names",
    "simulate",
]
