"""Models whose dropout sites follow a chosen scaling convention."""

from dropscale.models.mlp import MLP

__all__ = ["MLP"]
