"""A small convolutional network with channel dropout, for 28x28 image sets.

Layout, for an input image of shape (C, H, W) given flattened as (N, C*H*W)::

    per conv block:  Conv3x3 (padding 1) -> ReLU -> MaxPool 2x2 -> channel dropout
    head:            Flatten -> Linear -> ReLU -> Dropout -> Linear (logits)

Channel dropout is :class:`dropscale.Dropout` with ``shared_dims=(2, 3)``: on a
feature map of shape (N, C, H, W) one decision ``m[n, c] ~ Bernoulli(q)`` covers
the whole H x W map of channel ``c`` of image ``n``, so a kept map is multiplied
by ``a`` and a dropped one is zero (training), and every map is multiplied by
``b`` at inference. Neighbouring pixels of a map are strongly correlated, which
is why dropping single pixels regularises a CNN little and whole maps are
dropped instead. Every dropout site follows the same convention and ``p``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from dropscale.layers import Dropout
from dropscale.scaling import ScalingLike

__all__ = ["CNN"]


class CNN(nn.Module):
    """Conv blocks with channel dropout, then an MLP head with element dropout.

    Args:
        image_shape: (channels, height, width) of one input image; inputs may
            arrive flattened, (N, C*H*W), or as (N, C, H, W).
        n_out: number of classes.
        channels: output channels of each conv block; each block halves H and
            W (rounding down), so at most log2(min(H, W)) blocks fit.
        hidden: width of the hidden layer of the head.
        p: drop probability of every dropout site.
        scaling: convention of every dropout site.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        n_out: int,
        *,
        channels: Sequence[int] = (16, 32),
        hidden: int = 128,
        p: float,
        scaling: ScalingLike = "inverted",
    ) -> None:
        super().__init__()
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(
                f"image_shape must be (channels, height, width), got {image_shape!r}"
            )
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be positive widths, got {channels!r}")
        c, h, w = shape
        if min(h, w) >> len(channels) < 1:
            raise ValueError(
                f"{len(channels)} conv blocks halve {h}x{w} images below one pixel; "
                f"use at most {int(math.log2(min(h, w)))} blocks"
            )
        self.image_shape = shape
        blocks: list[nn.Module] = []
        for width in channels:
            blocks += [
                nn.Conv2d(c, width, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                Dropout(p, scaling=scaling, shared_dims=(2, 3)),
            ]
            c, h, w = width, h // 2, w // 2
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, hidden),
            nn.ReLU(),
            Dropout(p, scaling=scaling),
            nn.Linear(hidden, n_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        n_pixels = math.prod(self.image_shape)
        if x.dim() == 2 and x.shape[1] == n_pixels:
            x = x.view(x.shape[0], *self.image_shape)  # (N, C, H, W)
        elif x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(
                f"CNN expects inputs (N, {n_pixels}) or "
                f"(N, {', '.join(map(str, self.image_shape))}), got "
                f"{tuple(x.shape)}"
            )
        return self.head(self.features(x))
