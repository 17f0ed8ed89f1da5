"""Structured dropout: the forms AWD-LSTM builds from one mask helper.

Notation as in :mod:`dropscale.functional`: ``p`` drop probability,
``q = 1 - p``, ``m ~ Bernoulli(q)``, a convention with training factor ``a(q)``
on kept units and inference factor ``b(q)``. What changes between the three
forms is *what* one decision ``m`` covers:

- :class:`RNNDropout`: one decision per (sequence, feature), shared by every
  time step; eval output ``b * x``.
- :class:`EmbeddingDropout`: one decision per vocabulary row, so a dropped word
  is zero everywhere it occurs; eval uses the matrix ``b * W``.
- :class:`WeightDropout` (DropConnect): one decision per weight entry, fresh at
  every call; eval runs the module with ``b * W``.

Every mask is drawn by :func:`dropscale.functional.dropout`, so each form works
under every convention of :mod:`dropscale.scaling` (inverted, classic, variance,
none, custom). The moment-matched rule needs per-unit running statistics and
lives on :class:`dropscale.Dropout` only; these layers refuse it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from dropscale.functional import dropout, effective_keep_prob, resolve_p
from dropscale.scaling import Scaling, ScalingLike, get_scaling

__all__ = ["EmbeddingDropout", "RNNDropout", "WeightDropout"]

# Raised by the cuDNN RNN kernel when the weights it receives are not views of
# one flat buffer, which is always the case for freshly dropped weights. It is
# a note about speed, not correctness; we filter this one message and nothing
# else (the CPU kernel never emits it).
_RNN_NONCONTIGUOUS_WARNING = re.escape(
    "RNN module weights are not part of single contiguous chunk of memory"
)


def _structured_scaling(owner: str, scaling: ScalingLike) -> Scaling:
    name = scaling.strip().lower() if isinstance(scaling, str) else None
    if isinstance(scaling, Scaling):
        name = scaling.name
    if name == "moment":
        raise ValueError(
            f"{owner}: scaling='moment' is not available here, because it needs "
            "running per-unit statistics of the dropped tensor; use "
            "dropscale.Dropout(p, scaling='moment', num_features=...) or pick "
            "one of inverted, classic, variance, none, custom:A,B"
        )
    return get_scaling(scaling)


def _default_p(p: float | None, keep_prob: float | None) -> float:
    if p is None and keep_prob is None:
        return 0.5
    return resolve_p(p, keep_prob)


class RNNDropout(nn.Module):
    """Time-locked (variational) dropout: one mask per sequence and feature.

    Training: ``y[b, t, h] = a(q) * m[b, h] * x[b, t, h]``, the same decision at
    every time step ``t``; the mask has shape ``(B, 1, H)`` for batch-first
    input and ``(1, B, H)`` for time-first input. Inference: ``y = b(q) * x``.
    A sequence of length zero is returned unchanged.

    Args:
        p: drop probability in [0, 1]; default 0.5.
        keep_prob: the keep probability ``q`` instead of ``p`` (give one only).
        scaling: convention name, :class:`~dropscale.scaling.Scaling` or a
            pair ``(a, b)``; default ``"inverted"``.
        batch_first: ``True`` for ``(B, T, H)`` input, ``False`` for
            ``(T, B, H)``.

    Example::

        >>> import torch, dropscale
        >>> layer = dropscale.RNNDropout(0.5)
        >>> y = layer(torch.ones(2, 4, 3), generator=torch.Generator().manual_seed(0))
        >>> bool((y == y[:, :1]).all())  # constant along time
        True
    """

    p: float
    scaling: Scaling
    batch_first: bool

    def __init__(
        self,
        p: float | None = None,
        *,
        keep_prob: float | None = None,
        scaling: ScalingLike = "inverted",
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        self.p = _default_p(p, keep_prob)
        self.scaling = _structured_scaling("RNNDropout", scaling)
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
        self.batch_first = batch_first

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Drop features of ``x`` with one mask shared over the time dim."""
        layout = "(B, T, H)" if self.batch_first else "(T, B, H)"
        if not isinstance(x, Tensor):
            raise TypeError(
                f"RNNDropout expects a tensor {layout}, got {type(x).__name__}; "
                "pad packed sequences before dropout"
            )
        if x.dim() != 3:
            raise ValueError(
                f"RNNDropout(batch_first={self.batch_first}) expects a 3-D tensor "
                f"{layout}, got shape {tuple(x.shape)}"
            )
        time_dim = 1 if self.batch_first else 0
        return dropout(
            x,
            self.p,
            scaling=self.scaling,
            training=self.training,
            generator=generator,
            shared_dims=(time_dim,),
        )

    def extra_repr(self) -> str:
        return (
            f"p={self.p:g}, scaling={self.scaling.name!r}, "
            f"batch_first={self.batch_first}"
        )


class EmbeddingDropout(nn.Module):
    """Word dropout on an ``nn.Embedding``: whole rows of its weight are dropped.

    With ``W`` the ``(V, D)`` embedding matrix, training uses
    ``W' = a(q) * m * W`` with one ``m[i] ~ Bernoulli(q)`` per row, so a
    dropped word is the zero vector wherever it occurs in the batch and a kept
    word is exactly ``a(q) * W[i]``. Inference uses ``W' = b(q) * W``. The
    wrapped embedding's weight is never modified (``W'`` is a new tensor), the
    ``padding_idx`` row receives no gradient, and at ``p = 1`` every output is
    exactly zero. The rows are looked up first and then scaled, which gives
    the same values and gradients as looking up in ``W'`` at the cost of the
    batch rather than of the whole ``(V, D)`` matrix, and keeps
    ``sparse=True`` gradients sparse.

    Args:
        embedding: the ``nn.Embedding`` to wrap; it stays the owner of the
            trained weight (``state_dict`` key ``embedding.weight``).
        p: drop probability in [0, 1]; default 0.5.
        keep_prob: the keep probability ``q`` instead of ``p`` (give one only).
        scaling: convention name, :class:`~dropscale.scaling.Scaling` or a
            pair ``(a, b)``; default ``"inverted"``.

    .. warning:: ``max_norm`` embeddings are refused: their renormalisation
       rewrites the stored weight in place, which this wrapper promises never
       to do.
    """

    p: float
    scaling: Scaling

    def __init__(
        self,
        embedding: nn.Embedding,
        p: float | None = None,
        *,
        keep_prob: float | None = None,
        scaling: ScalingLike = "inverted",
    ) -> None:
        super().__init__()
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(
                "EmbeddingDropout: embedding must be an nn.Embedding, got "
                f"{type(embedding).__name__}"
            )
        if embedding.max_norm is not None:
            raise NotImplementedError(
                "EmbeddingDropout does not support nn.Embedding(max_norm=...), got "
                f"max_norm={embedding.max_norm!r}: renormalising rewrites the "
                "weight in place; renormalise the weight yourself before training"
            )
        self.embedding = embedding
        self.p = _default_p(p, keep_prob)
        self.scaling = _structured_scaling("EmbeddingDropout", scaling)

    def forward(
        self, indices: Tensor, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Look up ``indices`` in the row-dropped (or eval-scaled) matrix."""
        if indices.is_floating_point() or indices.is_complex():
            raise TypeError(
                f"EmbeddingDropout needs integer indices, got dtype {indices.dtype}; "
                "convert them first, for example indices.long()"
            )
        weight = self.embedding.weight
        out = F.embedding(
            indices,
            weight,
            padding_idx=self.embedding.padding_idx,
            scale_grad_by_freq=self.embedding.scale_grad_by_freq,
            sparse=self.embedding.sparse,
        )
        _, b = self.scaling.factors(effective_keep_prob(1.0 - self.p))
        if self.p == 0.0 or (not self.training and b == 1.0):
            return out
        # One factor per vocabulary row, (V, 1): a(q) * m in training, b(q) in
        # eval. Scaling the looked-up rows equals looking up in the scaled
        # matrix, without building a (V, D) copy at every call.
        ones = torch.ones(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        rows = dropout(
            ones,
            self.p,
            scaling=self.scaling,
            training=self.training,
            generator=generator,
        )
        factor = rows[indices]  # (*indices.shape, 1)
        zero = torch.zeros((), dtype=out.dtype, device=out.device)
        # where() rather than a product keeps dropped rows exactly zero even
        # when they hold inf.
        return torch.where(factor != 0, out * factor, zero)

    def extra_repr(self) -> str:
        return f"p={self.p:g}, scaling={self.scaling.name!r}"


class WeightDropout(nn.Module):
    """DropConnect on named parameters of any module (``nn.LSTM``, ``nn.GRU``,
    ``nn.Linear``, ...).

    For every named weight ``W`` the wrapped module runs with
    ``W' = a(q) * m * W`` in training, a fresh ``m ~ Bernoulli(q)`` per entry
    at every call, and with ``W' = b(q) * W`` at inference (so under
    ``inverted`` the eval module is exactly the unwrapped module). ``W`` stays
    the trained parameter, registered where it always was (``state_dict`` key
    ``module.<name>``, loadable into a fresh wrapper or the bare module) and
    never written to by a forward pass; ``W'`` is passed in for one call with
    :func:`torch.func.functional_call`, so gradients flow to ``W`` through the
    mask.

    Args:
        module: the module whose weights are dropped.
        p: drop probability in [0, 1]; default 0.5.
        names: parameter names of ``module`` to drop, for example
            ``("weight_hh_l0", "weight_hh_l1")`` for a two-layer LSTM; a dotted
            name reaches into a submodule. Default ``("weight_hh_l0",)``.
        keep_prob: the keep probability ``q`` instead of ``p`` (give one only).
        scaling: convention name, :class:`~dropscale.scaling.Scaling` or a
            pair ``(a, b)``; default ``"inverted"``.

    On CUDA the dropped weights are not views of cuDNN's flat weight buffer, so
    cuDNN copies them at every call; its warning saying so is filtered by that
    exact message.
    """

    p: float
    scaling: Scaling
    names: tuple[str, ...]

    def __init__(
        self,
        module: nn.Module,
        p: float | None = None,
        *,
        names: str | Iterable[str] = ("weight_hh_l0",),
        keep_prob: float | None = None,
        scaling: ScalingLike = "inverted",
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"WeightDropout: module must be an nn.Module, got "
                f"{type(module).__name__}"
            )
        self.module = module
        self.p = _default_p(p, keep_prob)
        self.scaling = _structured_scaling("WeightDropout", scaling)
        self.names = self._check_names(module, names)

    @staticmethod
    def _check_names(module: nn.Module, names: str | Iterable[str]) -> tuple[str, ...]:
        checked = (names,) if isinstance(names, str) else tuple(names)
        if not checked:
            raise ValueError("WeightDropout: names is empty; name at least one weight")
        known = dict(module.named_parameters())
        for name in checked:
            if not isinstance(name, str) or name not in known:
                raise ValueError(
                    f"WeightDropout: {type(module).__name__} has no parameter "
                    f"{name!r}; its parameters are {', '.join(known) or 'none'}"
                )
        if len(set(checked)) != len(checked):
            raise ValueError(f"WeightDropout: names has duplicates: {checked!r}")
        return checked

    def forward(
        self, *args: Any, generator: torch.Generator | None = None, **kwargs: Any
    ) -> Any:
        """Call the wrapped module with its named weights dropped (or eval-scaled)."""
        _, b = self.scaling.factors(effective_keep_prob(1.0 - self.p))
        if self.p == 0.0 or (not self.training and b == 1.0):
            return self.module(*args, **kwargs)
        params = dict(self.module.named_parameters())
        dropped = {
            name: dropout(
                params[name],
                self.p,
                scaling=self.scaling,
                training=self.training,
                generator=generator,
            )
            for name in self.names
        }
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=_RNN_NONCONTIGUOUS_WARNING, category=UserWarning
            )
            return functional_call(self.module, dropped, args, kwargs)

    def extra_repr(self) -> str:
        return f"p={self.p:g}, scaling={self.scaling.name!r}, names={self.names!r}"
