"""A multilayer perceptron with dropout after every hidden layer."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dropscale.layers import Dropout
from dropscale.scaling import ScalingLike

__all__ = ["MLP"]


class MLP(nn.Module):
    """``Linear -> ReLU -> Dropout`` per hidden layer, then a linear classifier.

    Args:
        n_in: input features.
        hidden: width of each hidden layer.
        n_out: output classes.
        p: drop probability at every dropout site.
        scaling: the convention of every dropout site.
    """

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int],
        n_out: int,
        *,
        p: float,
        scaling: ScalingLike = "inverted",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), Dropout(p, scaling=scaling)]
            width = h
        layers.append(nn.Linear(width, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
