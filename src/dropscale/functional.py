"""Functional dropout with an explicit scaling convention.

Notation (used throughout dropscale): ``p`` is the drop probability, ``q = 1 - p``
the keep probability, ``m ~ Bernoulli(q)`` the mask. Under a convention with
factors ``(a, b)`` the training output is ``a * m * x`` and the inference output
is ``b * x`` (see :mod:`dropscale.scaling`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from dropscale import _sampler
from dropscale.scaling import ScalingLike, get_scaling

__all__ = [
    "check_shared_dims",
    "drops_all",
    "dropout",
    "dropout_mask",
    "effective_keep_prob",
    "keep_mask",
    "mask_shape",
    "resolve_p",
]

_P_HELP = (
    "p is the probability of dropping a unit (PyTorch's meaning); "
    "to give the probability of keeping it, pass keep_prob= instead"
)


def _check_probability(name: str, value: object) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError(
                f"{name} must be a single number, got a tensor of shape "
                f"{tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a number in [0, 1], got {value!r} "
            f"of type {type(value).__name__}"
        )
    value = float(value)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}; {_P_HELP}")
    return value


def resolve_p(p: float | None = None, keep_prob: float | None = None) -> float:
    """Return the drop probability from exactly one of ``p`` and ``keep_prob``.

    ``keep_prob`` is ``q``; the result is ``p = 1 - q``.

    Raises:
        TypeError: both or neither given, or a value that is not a number.
        ValueError: a value outside [0, 1] or NaN, naming the value received.
    """
    if p is None and keep_prob is None:
        raise TypeError("give the drop probability p (or keep_prob=), not neither")
    if p is not None and keep_prob is not None:
        raise TypeError(
            f"give p or keep_prob, not both (got p={p!r}, keep_prob={keep_prob!r})"
        )
    if keep_prob is not None:
        return 1.0 - _check_probability("keep_prob", keep_prob)
    return _check_probability("p", p)


def _check_dtype(x: Tensor) -> None:
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(
            f"dropout needs a floating-point tensor, got dtype {x.dtype}; "
            "convert it first, for example x.float()"
        )


def check_shared_dims(shared_dims: Sequence[int]) -> tuple[int, ...]:
    """``shared_dims`` as a tuple of ints, checked when a layer is built (their
    range is checked against each input by :func:`mask_shape`)."""
    dims = tuple(shared_dims)
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"shared_dims: dims must be integers, got {d!r}")
    return dims


def mask_shape(shape: Sequence[int], shared_dims: Sequence[int]) -> tuple[int, ...]:
    """``shape`` with every dim in ``shared_dims`` set to 1 (one decision shared
    along it). Negative dims count from the end.

    Raises:
        ValueError: a dim out of range for ``shape``, naming it.
    """
    out = list(shape)
    for d in check_shared_dims(shared_dims):
        if not -len(out) <= d < len(out):
            raise ValueError(
                f"shared_dims: dim {d} is out of range for a tensor with "
                f"{len(out)} dims (valid: {-len(out)} to {len(out) - 1})"
            )
        out[d] = 1
    return tuple(out)


def effective_keep_prob(q: float) -> float:
    """The keep probability the mask sampler actually uses for a requested ``q``.

    Masks compare a uniform 32-bit draw with ``t = round(q * 2^32)``, so
    ``q_eff = t / 2^32``, within ``2^-33`` of ``q`` (for example ``q = 0.9``
    gives ``3865470566 / 2^32``, 9.3e-11 below 0.9). Rescaling factors, in
    training and at inference, are computed from ``q_eff``, so the mean is
    preserved exactly for the masks that are really drawn.
    """
    return _sampler.effective_keep_prob(q)


def drops_all(p: float) -> bool:
    """Whether drop probability ``p`` drops every unit: ``p = 1``, or ``p`` so
    close to 1 that ``q_eff = effective_keep_prob(1 - p)`` is 0 (``1 - p``
    below ``2^-33``, for example ``p = 1 - 1e-11``).

    The rule every dropout form follows: such a ``p`` behaves exactly like
    ``p = 1`` (exact zeros in training for the ``(a, b)`` conventions, alpha
    dropout and the structured forms; a ValueError where ``p = 1`` is one, as
    for ``scaling="moment"``), since no mask drawn at ``q_eff = 0`` keeps
    anything and a factor such as ``1 / q_eff`` does not exist.
    """
    return p >= 1.0 or effective_keep_prob(1.0 - p) == 0.0


def _check_size(size: object) -> tuple[int, ...]:
    if isinstance(size, int | Tensor) or not isinstance(size, Sequence | torch.Size):
        raise TypeError(
            f"dropout_mask: size must be a sequence of integers such as (B, 1, H), "
            f"got {size!r}"
        )
    out = []
    for s in size:
        if isinstance(s, Tensor) and s.numel() == 1 and not s.is_floating_point():
            s = int(s.item())
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            raise TypeError(
                f"dropout_mask: size entries must be integers, got {s!r} of type "
                f"{type(s).__name__} in size={tuple(size)!r}"
            )
        if s < 0:
            raise ValueError(
                f"dropout_mask: size entries must be >= 0, got {s} in "
                f"size={tuple(size)!r}"
            )
        out.append(int(s))
    return tuple(out)


def _check_factor(kind: str, value: float, x: Tensor, p: float) -> None:
    """Refuse a factor that overflows ``x``'s dtype (``1 / q`` in float16 at p
    near 1) instead of returning inf."""
    dtype = x.dtype
    if not dtype.is_floating_point and not dtype.is_complex:
        return
    if abs(value) > torch.finfo(dtype).max:
        raise ValueError(
            f"dropout: the {kind} factor {value:.6g} at p={p!r} is not finite in "
            f"{dtype} (largest {torch.finfo(dtype).max:.6g}); compute in float32, "
            "for example dropout(x.float(), ...), or use a smaller p"
        )


def keep_mask(
    shape: Sequence[int],
    q: float,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Boolean mask of ``shape`` with ``P(True) = effective_keep_prob(q)``.

    Every dropout form in dropscale draws its decisions here. Each call takes
    one 64-bit seed from ``generator`` (PyTorch's default CPU generator when
    None) and derives the whole mask from it with a counter-based hash, so
    the mask depends only on the generator's state and the shape: the same
    on every device and however the work is split over threads (see
    :mod:`dropscale._sampler`). On the CPU it costs about one pass over a
    byte per element.
    """
    return _sampler.keep_mask(shape, q, device=device, generator=generator)


def dropout_mask(
    x: Tensor,
    size: Sequence[int],
    p: float | None = None,
    *,
    keep_prob: float | None = None,
    scaling: ScalingLike = "inverted",
    generator: torch.Generator | None = None,
) -> Tensor:
    """A training mask of shape ``size``: 0 where dropped, ``a(q)`` where kept.

    It has ``x``'s dtype and device, so ``x * dropout_mask(x, (B, 1, H), p)``
    is dropout with one mask shared over dimension 1. At ``p = 1`` the mask is
    all zeros; at ``p = 0`` it is all ones in every convention, matching
    :func:`dropout`, which returns ``x`` itself there.

    Args:
        x: tensor whose dtype and device the mask takes.
        size: shape of the mask; broadcast it against ``x``.
        p: drop probability (or ``keep_prob=``, the keep probability ``q``).
        scaling: the convention whose training factor ``a(q)`` kept units get.
        generator: random generator for reproducible masks.
    """
    p = resolve_p(p, keep_prob)
    _check_dtype(x)
    size = _check_size(size)
    conv = get_scaling(scaling)
    if p == 0.0:
        # p = 0 disables dropout in every convention, as in dropout(): the mask
        # is the identity, so x * mask == dropout(x, 0, training=True).
        return torch.ones(size, dtype=x.dtype, device=x.device)
    if drops_all(p):
        return torch.zeros(size, dtype=x.dtype, device=x.device)
    q = effective_keep_prob(1.0 - p)
    a, _ = conv.factors(q)
    if a == 0.0:
        return torch.zeros(size, dtype=x.dtype, device=x.device)
    _check_factor("training", a, x, p)
    keep = keep_mask(size, q, device=x.device, generator=generator)
    return keep.to(x.dtype).mul_(a)


def dropout(
    x: Tensor,
    p: float | None = None,
    *,
    keep_prob: float | None = None,
    scaling: ScalingLike = "inverted",
    training: bool,
    generator: torch.Generator | None = None,
    shared_dims: Sequence[int] = (),
) -> Tensor:
    """Dropout under an explicit scaling convention.

    Training: ``y = a(q) * m * x`` with ``m ~ Bernoulli(q)`` per element.
    Inference: ``y = b(q) * x``. Both factors are computed at
    ``q = effective_keep_prob(1 - p)``, the keep probability the sampler really
    uses (within ``2^-33`` of ``1 - p``); only inverted dropout of a CUDA tensor
    without a ``generator`` differs: it runs PyTorch's fused kernel, with the
    exact ``q = 1 - p`` and PyTorch's random stream. For backward, a CPU
    float32/float64 input with an unshared mask keeps only the 64-bit seed and
    redraws the mask; other inputs keep a boolean mask, 1 byte per element.

    Edge cases: ``p = 0`` returns ``x`` itself in every convention (nothing is
    dropped, so nothing is rescaled); ``p = 1`` in training returns exact zeros
    with zero gradient, also for infinite inputs, and so does every ``p`` with
    :func:`drops_all` (``q_eff = 0``, ``1 - p < 2^-33``) and a training factor
    ``a = 0`` (``custom(0, b)``); a factor too large for ``x``'s dtype (``1 / q``
    in float16 at ``p`` near 1) is a ValueError, not inf; an integer or bool
    tensor is
    returned unchanged unless dropout would act (training with ``p > 0``), where
    it is a ``TypeError``.

    Args:
        x: input tensor.
        p: drop probability in [0, 1] (or ``keep_prob=``, the keep probability).
        scaling: convention name, :class:`~dropscale.scaling.Scaling` or ``(a, b)``.
        training: required; ``True`` drops units, ``False`` applies ``b(q)``.
        generator: random generator for reproducible masks.
        shared_dims: dims along which one mask decision is shared (for example
            the spatial dims for channel dropout, the time dim for RNNs).
    """
    if not isinstance(training, bool):
        raise TypeError(f"training must be True or False, got {training!r}")
    p = resolve_p(p, keep_prob)
    conv = get_scaling(scaling)
    shape = mask_shape(x.shape, shared_dims)
    if p == 0.0 or x.numel() == 0:
        return x
    if not training:
        if not (x.is_floating_point() or x.is_complex()):
            return x
        _, b = conv.factors(effective_keep_prob(1.0 - p))
        if b == 0.0:
            # classic at p = 1: exact zeros, not inf * 0 = NaN.
            return x.masked_fill(torch.ones((), dtype=torch.bool, device=x.device), 0)
        if b == 1.0:
            return x
        _check_factor("inference", b, x, p)
        return x * b
    _check_dtype(x)
    q = effective_keep_prob(1.0 - p)
    a, _ = conv.factors(q)
    if drops_all(p) or a == 0.0:
        # Multiplying by zero would turn inf into NaN; masking keeps exact zeros
        # and gives a zero gradient.
        return x.masked_fill(torch.ones((), dtype=torch.bool, device=x.device), 0)
    _check_factor("training", a, x, p)
    if x.is_cuda and generator is None and conv.name == "inverted" and shape == x.shape:
        # PyTorch's fused CUDA kernel: one pass, exact q, its own random stream.
        return torch.nn.functional.dropout(x, p, training=True)
    return _sampler.dropout_train(x, q, a, mask_shape=shape, generator=generator)
