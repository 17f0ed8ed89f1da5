"""``nn.Module`` wrappers around :mod:`dropscale.functional`.

The modules validate their arguments at construction and, under every ``(a, b)``
convention, hold no parameters or buffers, so ``dropscale.Dropout`` can replace
``torch.nn.Dropout`` in a model and load the same ``state_dict``. Only the
moment-matched rule (``scaling="moment"``) keeps state: per-unit running
estimates of ``mu`` and ``sigma^2`` as buffers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dropscale.functional import (
    check_shared_dims,
    dropout,
    drops_all,
    effective_keep_prob,
    keep_mask,
    mask_shape,
    resolve_p,
)
from dropscale.scaling import Scaling, ScalingLike, _one, get_scaling

__all__ = ["MOMENT", "Dropout"]


def _no_constant_train_factor(q: float) -> float:
    raise ValueError(
        "scaling='moment' has no constant training factor: its A and B are per "
        "unit and follow the running statistics; read them with "
        "Dropout.moment_factors()"
    )


MOMENT = Scaling(
    "moment",
    _no_constant_train_factor,
    _one,
    "train: A * m * x + B with A = sqrt(sigma^2 / (q sigma^2 + q (1-q) mu^2)), "
    "B = mu (1 - A q);  eval: x",
    "matches the mean and the variance of every unit, using running estimates",
)
"""The moment-matched rule; only :class:`Dropout` accepts it (``"moment"``)."""


def _is_moment(scaling: ScalingLike) -> bool:
    """Whether ``scaling`` names the moment-matched rule.

    Tested by name, not identity: ``copy.deepcopy``, ``pickle`` and
    ``torch.save``/``torch.load`` give a layer an equal copy of :data:`MOMENT`,
    not the object itself.
    """
    if isinstance(scaling, str):
        return scaling.strip().lower() == MOMENT.name
    return isinstance(scaling, Scaling) and scaling.name == MOMENT.name


class Dropout(nn.Module):
    """Element-wise dropout with an explicit scaling convention.

    In training each element is kept with probability ``q = 1 - p`` and
    multiplied by ``a(q)``; in eval mode every element is multiplied by
    ``b(q)``. With ``scaling="inverted"`` this is ``torch.nn.Dropout``.
    The ``q`` actually used, for the masks and for both factors, is
    ``effective_keep_prob(1 - p) = round((1 - p) * 2^32) / 2^32``, within
    ``2^-33`` of ``1 - p`` (equal to it when ``1 - p`` is a multiple of
    ``2^-32``, such as 0.5 or 0.75). ``shared_dims`` repeats one decision
    along the given dims (channel dropout shares over the spatial dims,
    time-locked dropout over time).

    ``scaling="moment"`` is the moment-matched affine rule. The units are the
    positions along ``unit_dim`` (default the last dim, the features); each
    has running estimates ``mu`` and ``sigma^2`` over all other dims, kept as
    the buffers ``running_mean`` and ``running_var``. Training output is
    ``A * m * x + B`` with ``A = sqrt(sigma^2 / (q sigma^2 + q (1-q) mu^2))``
    and ``B = mu (1 - A q)``, so its mean ``mu`` and variance ``sigma^2`` equal
    those of the inference output ``x``. Each training call first updates the
    estimates with the batch's mean and (unbiased) variance,
    ``running = (1 - momentum) * running + momentum * batch``, then uses them;
    the very first training batch sets them outright, so no warm-up period
    runs on the initial values. ``A`` and ``B`` carry no gradient. A unit with
    ``sigma^2 = mu = 0`` gets ``A = 1 / sqrt(q)`` (the limit along ``mu = 0``, as
    in :func:`dropscale.moments.matched_factors`), ``B = 0``. ``p = 1`` is refused
    (with every unit dropped the variance cannot be kept), and so is any ``p``
    with ``q_eff = 0`` (:func:`~dropscale.functional.drops_all`).

    Args:
        p: drop probability in [0, 1]; default 0.5.
        keep_prob: the keep probability ``q`` instead of ``p`` (give one only).
        scaling: ``"inverted"``, ``"classic"``, ``"variance"``, ``"none"``, a
            :class:`~dropscale.scaling.Scaling`, a custom pair ``(a, b)``, or
            ``"moment"``.
        shared_dims: dims along which one decision is shared; default none.
        num_features: number of units along ``unit_dim``; required by
            ``"moment"`` and refused otherwise.
        unit_dim: the dim whose positions are units (``"moment"`` only);
            default -1. Use 1 for ``(N, C, H, W)`` feature maps.
        momentum: weight of each new batch in the running estimates
            (``"moment"`` only), in (0, 1]; ``None`` gives the cumulative
            average over all batches. Default 0.1.

    Example::

        >>> import torch, dropscale
        >>> layer = dropscale.Dropout(0.25, scaling="classic").eval()
        >>> layer(torch.ones(3))
        tensor([0.7500, 0.7500, 0.7500])
    """

    p: float
    scaling: Scaling
    shared_dims: tuple[int, ...]
    update_running_stats: bool
    """``False`` freezes the running estimates of ``"moment"`` (as
    :func:`dropscale.mc_dropout` does); training calls then only read them."""

    def __init__(
        self,
        p: float | None = None,
        *,
        keep_prob: float | None = None,
        scaling: ScalingLike = "inverted",
        shared_dims: Sequence[int] = (),
        num_features: int | None = None,
        unit_dim: int = -1,
        momentum: float | None = 0.1,
    ) -> None:
        super().__init__()
        if p is None and keep_prob is None:
            p = 0.5
        self.p = resolve_p(p, keep_prob)
        self.shared_dims = check_shared_dims(shared_dims)
        self.update_running_stats = True
        if not _is_moment(scaling):
            if num_features is not None:
                raise ValueError(
                    f"Dropout: num_features={num_features!r} is only used by "
                    "scaling='moment'; leave it out for other rules"
                )
            self.scaling = get_scaling(scaling)
            return
        self.scaling = MOMENT
        self._init_moment(num_features, unit_dim, momentum)

    def _init_moment(
        self, num_features: int | None, unit_dim: int, momentum: float | None
    ) -> None:
        if drops_all(self.p):
            raise ValueError(
                f"Dropout: scaling='moment' needs p < 1, got p={self.p!r}: with "
                "every unit dropped (p = 1, or 1 - p below 2^-33, where the "
                "sampler's keep probability q_eff rounds to 0) the output is "
                "constant and its variance is lost"
            )
        if isinstance(num_features, bool) or not isinstance(num_features, int):
            raise TypeError(
                "Dropout: scaling='moment' needs num_features=, the number of "
                f"units along unit_dim, as an int; got {num_features!r}"
            )
        if num_features < 1:
            raise ValueError(
                f"Dropout: num_features must be >= 1, got {num_features!r}"
            )
        if isinstance(unit_dim, bool) or not isinstance(unit_dim, int):
            raise TypeError(f"Dropout: unit_dim must be an int, got {unit_dim!r}")
        if momentum is not None and (
            isinstance(momentum, bool)
            or not isinstance(momentum, int | float)
            or not 0.0 < momentum <= 1.0
        ):
            raise ValueError(
                f"Dropout: momentum must be in (0, 1] or None, got {momentum!r}"
            )
        self.num_features = num_features
        self.unit_dim = unit_dim
        self.momentum = None if momentum is None else float(momentum)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    @property
    def is_moment(self) -> bool:
        """Whether this layer uses the moment-matched rule (``"moment"``)."""
        return _is_moment(self.scaling)

    @property
    def factors(self) -> tuple[float, float]:
        """``(a, b)``: the training and inference factors at this ``p``, taken at
        ``q = effective_keep_prob(1 - p)`` as :func:`~dropscale.dropout` does."""
        return self.scaling.factors(effective_keep_prob(1.0 - self.p))

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Drop units of ``x`` in training; apply the inference rule in eval."""
        if self.is_moment:
            return self._moment_forward(x, generator)
        return dropout(
            x,
            self.p,
            scaling=self.scaling,
            training=self.training,
            generator=generator,
            shared_dims=self.shared_dims,
        )

    def moment_factors(self) -> tuple[Tensor, Tensor]:
        """``(A, B)`` per unit from the current running estimates (``"moment"``).

        Raises:
            ValueError: another rule, or no training batch seen yet.
        """
        if not self.is_moment:
            raise ValueError(
                f"Dropout: moment_factors() needs scaling='moment', this layer "
                f"uses {self.scaling.name!r}; read .factors instead"
            )
        if int(self.num_batches_tracked) == 0:
            raise ValueError(
                "Dropout(scaling='moment') has no running statistics yet; run "
                "at least one training batch through it first"
            )
        q = effective_keep_prob(1.0 - self.p)
        mu, var = self.running_mean, self.running_var
        denom = q * var + q * (1.0 - q) * mu**2
        safe = torch.where(denom > 0, denom, torch.ones_like(denom))
        # 0/0 (sigma^2 = mu = 0): the limit along mu = 0, 1 / sqrt(q), as in
        # dropscale.moments.matched_factors.
        limit = torch.full_like(mu, 1 / math.sqrt(q))
        scale = torch.where(denom > 0, (var / safe).sqrt(), limit)
        return scale, mu * (1.0 - scale * q)

    def _moment_forward(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        if not self.training or self.p == 0.0 or x.numel() == 0:
            return x
        if not x.is_floating_point():
            raise TypeError(
                f"dropout needs a real floating-point tensor, got dtype {x.dtype}; "
                "convert it first, for example x.float()"
            )
        dim = self._checked_unit_dim(x)
        if self.update_running_stats:
            self._update_running_stats(x, dim)
        scale, shift = self.moment_factors()
        # Per-unit factors shaped to broadcast along ``dim``: (1, ..., H, ..., 1).
        view = [1] * x.dim()
        view[dim] = self.num_features
        scale = scale.to(x.dtype).view(view)
        shift = shift.to(x.dtype).view(view)
        q = effective_keep_prob(1.0 - self.p)
        shape = mask_shape(x.shape, self.shared_dims)
        keep = keep_mask(shape, q, device=x.device, generator=generator)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return torch.where(keep, x * scale, zero) + shift

    def _checked_unit_dim(self, x: Tensor) -> int:
        if not -x.dim() <= self.unit_dim < x.dim():
            raise ValueError(
                f"Dropout: unit_dim={self.unit_dim} is out of range for input of "
                f"shape {tuple(x.shape)}"
            )
        dim = self.unit_dim % x.dim()
        if x.shape[dim] != self.num_features:
            raise ValueError(
                f"Dropout: input has {x.shape[dim]} units along unit_dim="
                f"{self.unit_dim} (shape {tuple(x.shape)}), but num_features="
                f"{self.num_features}"
            )
        return dim

    @torch.no_grad()
    def _update_running_stats(self, x: Tensor, dim: int) -> None:
        # (n, H): every position of every other dim is one sample of its unit.
        flat = x.detach().movedim(dim, -1).reshape(-1, self.num_features)
        if flat.shape[0] < 2:
            raise ValueError(
                "Dropout(scaling='moment') needs at least 2 values per unit in a "
                f"training batch to estimate the variance; got input of shape "
                f"{tuple(x.shape)}"
            )
        flat = flat.to(self.running_mean.dtype)
        batch_var, batch_mean = torch.var_mean(flat, dim=0, correction=1)
        seen = int(self.num_batches_tracked)
        if seen == 0:
            weight = 1.0
        elif self.momentum is None:
            weight = 1.0 / (seen + 1)
        else:
            weight = self.momentum
        self.running_mean.lerp_(batch_mean, weight)
        self.running_var.lerp_(batch_var, weight)
        self.num_batches_tracked += 1

    def extra_repr(self) -> str:
        text = f"p={self.p:g}, scaling={self.scaling.name!r}"
        if self.shared_dims:
            text += f", shared_dims={self.shared_dims}"
        if self.is_moment:
            text += (
                f", num_features={self.num_features}, unit_dim={self.unit_dim}, "
                f"momentum={self.momentum}"
            )
        return text
