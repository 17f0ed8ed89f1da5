"""Noise families beyond the ``(a, b)`` conventions: alpha and Gaussian dropout.

Both are identity at inference and have their own fixed training rule, so they
take no ``scaling=`` argument.

Alpha dropout (for SELU networks). With the SELU constants ``alpha`` and
``lambda`` and the saturation value ``alpha' = -lambda * alpha``, a dropped
unit is set to ``alpha'`` instead of 0, then an affine map restores the
moments of a standardised input (mean 0, variance 1)::

    y = a * (m * x + (1 - m) * alpha') + b
    a = (q + alpha'^2 * q * p) ** (-1/2)
    b = -a * alpha' * p

so kept units become ``a * x + b`` and dropped ones ``a * alpha' * q``. At
``p = 0.5``: ``a = 0.8864``, dropped value ``-0.7792``. At ``p = 1`` the output
is all zeros (mean 0; no variance can be kept), and so it is for every ``p``
whose mask keeps nothing, ``q_eff = effective_keep_prob(1 - p) = 0`` (``1 - p``
below ``2^-33``; see :func:`dropscale.functional.drops_all`), the rule all
masked dropout forms follow.

Gaussian dropout. Every unit is multiplied by ``e ~ N(1, p / q)``, which has
the first two moments of ``a * m`` under inverted dropout (``a = 1 / q``):
``E[y] = mu`` and ``Var[y] = (sigma^2 + p mu^2) / q``. ``p = 1`` would need
infinite noise variance and is refused. Gaussian dropout draws no mask, so it
uses the exact ``q = 1 - p``, not ``q_eff``: a ``p`` just below 1 (say
``1 - 1e-11``) is accepted and gives a huge but finite noise std
``sqrt(p / q)``; where that std is not finite in ``x``'s dtype (float16) it
is a ValueError.

``shared_dims`` shares one decision (or one noise draw) along the given dims,
as in :func:`dropscale.functional.dropout`; for example ``shared_dims=(2, 3)``
on ``(N, C, H, W)`` input is feature alpha dropout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dropscale.functional import (
    check_shared_dims,
    drops_all,
    effective_keep_prob,
    keep_mask,
    mask_shape,
    resolve_p,
)

__all__ = [
    "SELU_ALPHA",
    "SELU_LAMBDA",
    "AlphaDropout",
    "GaussianDropout",
    "alpha_dropout",
    "alpha_factors",
    "gaussian_dropout",
]

SELU_ALPHA = 1.6732632423543772
SELU_LAMBDA = 1.0507009873554805
_ALPHA_PRIME = -SELU_LAMBDA * SELU_ALPHA


def _check_real(x: Tensor, owner: str) -> None:
    if not x.is_floating_point():
        raise TypeError(
            f"{owner} needs a real floating-point tensor, got dtype {x.dtype}; "
            "convert it first, for example x.float()"
        )


def alpha_factors(p: float) -> tuple[float, float, float]:
    """``(a, b, dropped_value)`` of alpha dropout at drop probability ``p``.

    ``a = (q + alpha'^2 q p) ** (-1/2)``, ``b = -a alpha' p`` and the dropped
    value ``a alpha' + b = a alpha' q``, with ``q = effective_keep_prob(1 - p)``
    and ``p`` taken as ``1 - q``. At ``p = 1``, and wherever ``q_eff = 0``
    (:func:`~dropscale.functional.drops_all`), all three are 0.
    """
    p = resolve_p(p)
    if drops_all(p):
        return 0.0, 0.0, 0.0
    q = effective_keep_prob(1.0 - p)
    p = 1.0 - q
    a = (q + _ALPHA_PRIME**2 * q * p) ** -0.5
    b = -a * _ALPHA_PRIME * p
    return a, b, a * _ALPHA_PRIME + b


def alpha_dropout(
    x: Tensor,
    p: float | None = None,
    *,
    keep_prob: float | None = None,
    training: bool,
    generator: torch.Generator | None = None,
    shared_dims: Sequence[int] = (),
) -> Tensor:
    """Alpha dropout (module docstring): train ``a * x + b`` on kept units and
    ``a * alpha' * q`` on dropped ones; inference ``x``.

    Args:
        x: real floating-point input.
        p: drop probability in [0, 1] (or ``keep_prob=``).
        training: required; ``False`` returns ``x``.
        generator: random generator for reproducible masks.
        shared_dims: dims along which one decision is shared.
    """
    if not isinstance(training, bool):
        raise TypeError(f"training must be True or False, got {training!r}")
    p = resolve_p(p, keep_prob)
    shape = mask_shape(x.shape, shared_dims)
    if not training or p == 0.0 or x.numel() == 0:
        return x
    _check_real(x, "alpha_dropout")
    if drops_all(p):
        return x.masked_fill(torch.ones((), dtype=torch.bool, device=x.device), 0)
    a, b, dropped = alpha_factors(p)
    keep = keep_mask(shape, 1.0 - p, device=x.device, generator=generator)
    fill = torch.tensor(dropped, dtype=x.dtype, device=x.device)
    return torch.where(keep, x * a + b, fill)


def gaussian_dropout(
    x: Tensor,
    p: float | None = None,
    *,
    keep_prob: float | None = None,
    training: bool,
    generator: torch.Generator | None = None,
    shared_dims: Sequence[int] = (),
) -> Tensor:
    """Gaussian dropout: train ``x * e`` with ``e ~ N(1, p / q)``; inference ``x``.

    Args:
        x: real floating-point input.
        p: drop probability in [0, 1) (or ``keep_prob=`` in (0, 1]).
        training: required; ``False`` returns ``x``.
        generator: random generator for reproducible noise.
        shared_dims: dims along which one noise draw is shared.

    Raises:
        ValueError: ``p = 1``, where the noise variance ``p / q`` is infinite.
    """
    if not isinstance(training, bool):
        raise TypeError(f"training must be True or False, got {training!r}")
    p = _gaussian_p(p, keep_prob)
    shape = mask_shape(x.shape, shared_dims)
    if not training or p == 0.0 or x.numel() == 0:
        return x
    _check_real(x, "gaussian_dropout")
    std = math.sqrt(p / (1.0 - p))
    if std > torch.finfo(x.dtype).max:
        raise ValueError(
            f"gaussian_dropout: the noise std sqrt(p/q) = {std:.6g} at p={p!r} is "
            f"not finite in {x.dtype}; compute in float32, for example "
            "gaussian_dropout(x.float(), ...), or use a smaller p"
        )
    noise = torch.randn(shape, dtype=x.dtype, device=x.device, generator=generator)
    return x * (noise * std + 1.0)


def _gaussian_p(p: float | None, keep_prob: float | None) -> float:
    p = resolve_p(p, keep_prob)
    if p == 1.0:
        raise ValueError(
            "Gaussian dropout needs p < 1, got p=1.0: its noise N(1, p/q) has "
            "infinite variance at q = 0; use p < 1 or dropscale.Dropout(1.0)"
        )
    return p


class _NoiseDropout(nn.Module):
    """Shared body of the noise layers: ``p``, ``shared_dims``, the functional
    form they call and the name their ``repr`` shows."""

    p: float
    shared_dims: tuple[int, ...]
    _rule: str

    def __init__(
        self,
        p: float | None = None,
        *,
        keep_prob: float | None = None,
        shared_dims: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.p = 0.5 if p is None and keep_prob is None else self._p(p, keep_prob)
        self.shared_dims = check_shared_dims(shared_dims)

    @staticmethod
    def _p(p: float | None, keep_prob: float | None) -> float:
        return resolve_p(p, keep_prob)

    @staticmethod
    def _apply(x: Tensor, p: float, **kwargs) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Apply the noise in training; return ``x`` unchanged in eval mode."""
        return self._apply(
            x,
            self.p,
            training=self.training,
            generator=generator,
            shared_dims=self.shared_dims,
        )

    def extra_repr(self) -> str:
        shared = f", shared_dims={self.shared_dims}" if self.shared_dims else ""
        return f"p={self.p:g}, rule={self._rule!r}{shared}"


class AlphaDropout(_NoiseDropout):
    """Alpha dropout for self-normalising (SELU) networks.

    Training: kept units ``a * x + b``, dropped units ``a * alpha' * q``, with
    the constants of :func:`alpha_factors`; a standardised input keeps mean 0
    and variance 1. Inference: ``x``. See :mod:`dropscale.noise` for the maths.

    Args:
        p: drop probability in [0, 1]; default 0.5.
        keep_prob: the keep probability ``q`` instead of ``p`` (give one only).
        shared_dims: dims sharing one decision; ``(2, 3)`` on ``(N, C, H, W)``
            drops whole feature maps (feature alpha dropout).
    """

    _rule = "alpha"
    _apply = staticmethod(alpha_dropout)


class GaussianDropout(_NoiseDropout):
    """Multiplicative Gaussian noise ``N(1, p / q)`` in training, identity at
    inference: the first two moments of inverted dropout without zeros.

    Args:
        p: drop-probability equivalent in [0, 1); default 0.5. ``p = 1`` is a
            ValueError (infinite noise variance).
        keep_prob: the keep probability ``q`` instead of ``p`` (give one only).
        shared_dims: dims sharing one noise draw.
    """

    _rule = "gaussian"
    _p = staticmethod(_gaussian_p)
    _apply = staticmethod(gaussian_dropout)
