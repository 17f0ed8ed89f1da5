"""K trials of one model shape as one computation.

:class:`StackedSequential` turns K ``nn.Sequential`` models of identical shape
(Linear, ReLU, Tanh, Dropout layers) into one module whose weights are
stacked along a leading trial dimension: a linear layer with weights
``W_k`` (out, in) and biases ``c_k`` becomes ``baddbmm(c, x, W^T)`` on
x of shape (K, N, in). Each trial keeps its own initial weights (copied from
its single-trial model), its own dropout convention, ``p`` and mask stream
(see :class:`~dropscale.study.sites.Site`). Because the loss is the sum of the
trials' losses, the gradient of trial k's weights is the gradient of its own
loss, and an element-wise optimiser (Adam, SGD with momentum) on the stacked
tensors is exactly K independent optimisers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dropscale.layers import Dropout
from dropscale.study.sites import Site

__all__ = ["StackedLinear", "StackedSequential"]


class StackedLinear(nn.Module):
    """K linear layers: x (K, N, in) -> (K, N, out)."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.stack([lin.weight.detach().t() for lin in layers]).contiguous()
        )
        self.bias = nn.Parameter(
            torch.stack([lin.bias.detach() for lin in layers]).unsqueeze(1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class StackedSequential(nn.Module):
    """A stack of K same-shaped Sequential models (one per trial)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    @classmethod
    def from_models(
        cls, models: list[nn.Sequential], scalings: list[str] | None = None
    ) -> StackedSequential:
        """Stack ``models``; dropout layers become stacked sites.

        ``scalings`` gives each trial's convention name (``custom:A,B``
        strings are kept as given); by default it is read from the layers.
        """
        columns = list(zip(*[list(m) for m in models], strict=True))
        layers: list[nn.Module] = []
        for col in columns:
            first = col[0]
            if isinstance(first, nn.Linear):
                shapes = {tuple(m.weight.shape) for m in col}
                if len(shapes) != 1 or any(m.bias is None for m in col):
                    raise ValueError("stacked models must share layer shapes")
                layers.append(StackedLinear(list(col)))
            elif isinstance(first, nn.ReLU | nn.Tanh | nn.Identity):
                layers.append(type(first)())
            elif isinstance(first, Dropout):
                names = scalings or [m.scaling.name for m in col]
                layers.append(Site([m.p for m in col], names, stacked=True))
            else:
                raise ValueError(
                    f"cannot stack a layer of type {type(first).__name__}; "
                    "supported: Linear, ReLU, Tanh, Identity, Dropout"
                )
        return cls(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
