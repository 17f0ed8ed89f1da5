"""Exact moments of dropout's output under each scaling convention.

For an input ``x`` with mean ``mu`` and variance ``sigma^2``, a mask
``m ~ Bernoulli(q)`` independent of ``x`` and a convention with factors
``(a, b)``:

- training, ``y = a m x``:  ``E[y] = a q mu``,
  ``Var[y] = a^2 q (sigma^2 + (1 - q) mu^2)``;
- inference, ``y = b x``:  ``E[y] = b mu``,  ``Var[y] = b^2 sigma^2``.

The eval/train mean ratio is ``b / (a q)`` whatever the input.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from dropscale.functional import resolve_p
from dropscale.scaling import ScalingLike, get_scaling

__all__ = ["Moments", "moments"]


def _ratio(num: float, den: float) -> float:
    """``num / den``, with ``x / 0 = inf`` for ``x != 0`` and ``0 / 0 = 1``.

    Two zero moments are equal, so their ratio is reported as 1.
    """
    if den == 0.0:
        return 1.0 if num == 0.0 else math.copysign(math.inf, num)
    return num / den


@dataclass(frozen=True)
class Moments:
    """Exact output moments of one convention at one ``p`` for one input.

    Attributes:
        scaling, p, q: the convention's name and the drop and keep probabilities.
        a, b: its training and inference factors at this ``q``.
        input_mean, input_std: ``mu`` and ``sigma`` of the input.
        train_mean, train_std: ``a q mu`` and ``a sqrt(q (sigma^2 + p mu^2))``.
        eval_mean, eval_std: ``b mu`` and ``b sigma``.
        mean_ratio: ``b / (a q)``, which is ``eval_mean / train_mean`` whenever
            ``mu != 0`` (``inf`` at ``q = 0``).
        std_ratio: ``eval_std / train_std``.
    """

    scaling: str
    p: float
    q: float
    a: float
    b: float
    input_mean: float
    input_std: float
    train_mean: float
    train_std: float
    eval_mean: float
    eval_std: float
    mean_ratio: float
    std_ratio: float

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


def moments(
    p: float | None = None,
    *,
    keep_prob: float | None = None,
    mean: float = 0.0,
    std: float = 1.0,
    scaling: ScalingLike = "inverted",
) -> Moments:
    """Exact train and eval mean and std of dropout's output.

    Args:
        p: drop probability (or ``keep_prob=``, the keep probability ``q``).
        mean: the input mean ``mu``.
        std: the input standard deviation ``sigma`` (>= 0).
        scaling: the convention.

    Example::

        >>> round(moments(0.5).train_std, 4)  # inverted, N(0, 1) input
        1.4142
    """
    p = resolve_p(p, keep_prob)
    for name, value in (("mean", mean), ("std", std)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std!r}")
    conv = get_scaling(scaling)
    q = 1.0 - p
    a, b = conv.factors(q)
    train_mean = a * q * mean
    train_std = a * math.sqrt(q * (std**2 + p * mean**2))
    eval_mean = b * mean
    eval_std = b * std
    return Moments(
        scaling=conv.name,
        p=p,
        q=q,
        a=a,
        b=b,
        input_mean=float(mean),
        input_std=float(std),
        train_mean=train_mean,
        train_std=train_std,
        eval_mean=eval_mean,
        eval_std=eval_std,
        mean_ratio=conv.mean_ratio(q),
        std_ratio=_ratio(eval_std, train_std),
    )
