"""dropscale: dropout with an explicit rescaling rule.

The library (this namespace) is usable on its own; the study and the command
line live in :mod:`dropscale.study` and :mod:`dropscale.cli`.
"""

from dropscale.functional import dropout, dropout_mask
from dropscale.inference import mc_dropout, predict_mc
from dropscale.layers import Dropout
from dropscale.moments import (
    BatchNormShift,
    Constant,
    Empirical,
    LinearMoments,
    Moments,
    Normal,
    RectifiedNormal,
    Uniform,
    batchnorm_shift,
    linear_moments,
    moments,
    rule_names,
)
from dropscale.noise import (
    AlphaDropout,
    GaussianDropout,
    alpha_dropout,
    gaussian_dropout,
)
from dropscale.scaling import SCALINGS, Scaling, custom, get_scaling, scaling_names
from dropscale.simulate import simulate, simulate_batchnorm, simulate_linear
from dropscale.structured import EmbeddingDropout, RNNDropout, WeightDropout

__version__ = "0.1.0"

__all__ = [
    "AlphaDropout",
    "BatchNormShift",
    "SCALINGS",
    "Constant",
    "Dropout",
    "Empirical",
    "EmbeddingDropout",
    "GaussianDropout",
    "LinearMoments",
    "Moments",
    "Normal",
    "RectifiedNormal",
    "RNNDropout",
    "Scaling",
    "Uniform",
    "WeightDropout",
    "__version__",
    "alpha_dropout",
    "batchnorm_shift",
    "custom",
    "dropout",
    "dropout_mask",
    "gaussian_dropout",
    "get_scaling",
    "linear_moments",
    "mc_dropout",
    "moments",
    "rule_names",
    "predict_mc",
    "scaling_names",
    "simulate",
    "simulate_batchnorm",
    "simulate_linear",
]
