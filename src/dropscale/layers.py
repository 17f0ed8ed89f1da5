"""``nn.Module`` wrappers around :mod:`dropscale.functional`.

The modules validate their arguments at construction and hold no parameters or
buffers, so ``dropscale.Dropout`` can replace ``torch.nn.Dropout`` in a model and
load the same ``state_dict``.
"""

from __future__ import annotations

from torch import Tensor, nn

from dropscale.functional import dropout, resolve_p
from dropscale.scaling import Scaling, ScalingLike, get_scaling

__all__ = ["Dropout"]


class Dropout(nn.Module):
    """Element-wise dropout with an explicit scaling convention.

    In training each element is kept with probability ``q = 1 - p`` and
    multiplied by ``a(q)``; in eval mode every element is multiplied by
    ``b(q)``. With ``scaling="inverted"`` this is ``torch.nn.Dropout``.

    Args:
        p: drop probability in [0, 1]; default 0.5.
        keep_prob: the keep probability ``q`` instead of ``p`` (give one only).
        scaling: ``"inverted"``, ``"classic"``, ``"variance"``, ``"none"``, a
            :class:`~dropscale.scaling.Scaling` or a custom pair ``(a, b)``.

    Example::

        >>> import torch, dropscale
        >>> layer = dropscale.Dropout(0.25, scaling="classic").eval()
        >>> layer(torch.ones(3))
        tensor([0.7500, 0.7500, 0.7500])
    """

    p: float
    scaling: Scaling

    def __init__(
        self,
        p: float | None = None,
        *,
        keep_prob: float | None = None,
        scaling: ScalingLike = "inverted",
    ) -> None:
        super().__init__()
        if p is None and keep_prob is None:
            p = 0.5
        self.p = resolve_p(p, keep_prob)
        self.scaling = get_scaling(scaling)

    @property
    def factors(self) -> tuple[float, float]:
        """``(a, b)``: the training and inference factors at this ``p``."""
        return self.scaling.factors(1.0 - self.p)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, scaling=self.scaling, training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:g}, scaling={self.scaling.name!r}"
