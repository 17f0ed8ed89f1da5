"""Models whose dropout sites follow a chosen scaling convention."""

from dropscale.models.awd_lstm import AWDLSTM
from dropscale.models.cnn import CNN
from dropscale.models.lm_training import (
    LMResult,
    LMTrainConfig,
    evaluate_perplexity,
    train_language_model,
)
from dropscale.models.mlp import MLP

__all__ = [
    "AWDLSTM",
    "CNN",
    "MLP",
    "LMResult",
    "LMTrainConfig",
    "evaluate_perplexity",
    "train_language_model",
]
