"""Models whose dropout sites follow a chosen scaling convention."""

from dropscale.models.cnn import CNN
from dropscale.models.mlp import MLP

__all__ = ["CNN", "MLP"]
