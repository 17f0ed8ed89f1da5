"""Scaling conventions: how dropout rescales activations in training and inference.

A convention is a pair of factors that depend on the keep probability
``q = 1 - p``: in training a kept unit is multiplied by ``a(q)`` and a dropped
unit is zero, so the output is ``a * m * x`` with ``m ~ Bernoulli(q)``; at
inference every unit is multiplied by ``b(q)``.

==========  ===============  ========  =====================================
name        a (train)        b (eval)  what training and inference share
==========  ===============  ========  =====================================
inverted    1 / q            1         the mean (PyTorch, Keras, fastai)
classic     1                q         the mean (the original dropout paper)
variance    1 / sqrt(q)      1         E[x^2]; the variance only if mu = 0
none        1                1         nothing: eval mean is 1/q times train
custom      a                b         whatever the user chose
==========  ===============  ========  =====================================

Conventions are plain data: look one up with :func:`get_scaling`, build a
custom one with :func:`custom`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "Scaling",
    "SCALINGS",
    "ScalingLike",
    "custom",
    "get_scaling",
    "scaling_names",
]


@dataclass(frozen=True)
class Scaling:
    """A dropout scaling convention: the factors ``a(q)`` and ``b(q)``.

    Attributes:
        name: short name used in code, reports and the command line.
        train: ``a(q)``, the factor applied to kept units in training.
        eval: ``b(q)``, the factor applied to every unit at inference.
        formula: the convention in one line of maths, in this module's symbols.
        description: what the convention matches between training and inference.
    """

    name: str
    train: Callable[[float], float] = field(repr=False, compare=False)
    eval: Callable[[float], float] = field(repr=False, compare=False)
    formula: str = field(compare=False)
    description: str = field(compare=False)
    params: tuple[float, ...] = ()

    def factors(self, q: float) -> tuple[float, float]:
        """Return ``(a, b)`` at keep probability ``q``.

        At ``q = 0`` every unit is dropped, so the training factor multiplies
        nothing; it is returned as ``0.0`` rather than ``1 / 0``.
        """
        if q <= 0.0:
            return 0.0, float(self.eval(0.0))
        return float(self.train(q)), float(self.eval(q))

    def mean_ratio(self, q: float) -> float:
        """Eval/train mean ratio ``b / (a q)``.

        At ``q = 0`` the training mean is 0: the ratio is ``inf`` when the eval
        factor ``b`` is not 0, and 1 when both means are 0 (they agree).
        """
        a, b = self.factors(q)
        if a * q == 0.0:
            return 1.0 if b == 0.0 else math.inf
        return b / (a * q)

    def __str__(self) -> str:
        return self.name


def _inv_sqrt(q: float) -> float:
    return 1.0 / math.sqrt(q)


def _one(q: float) -> float:
    return 1.0


def _identity(q: float) -> float:
    return q


def _reciprocal(q: float) -> float:
    return 1.0 / q


@dataclass(frozen=True)
class _Constant:
    """A factor that does not depend on ``q`` (a module-level class, so that a
    custom convention, and a model holding one, can be pickled)."""

    value: float

    def __call__(self, q: float) -> float:
        return self.value


def _number(value: float) -> str:
    """Shortest text that reads back as exactly ``value`` ("2" for 2.0)."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


SCALINGS: dict[str, Scaling] = {
    s.name: s
    for s in (
        Scaling(
            "inverted",
            _reciprocal,
            _one,
            "train: m * x / q;  eval: x",
            "matches the mean; the train std grows by 1/sqrt(q) on zero-mean input",
        ),
        Scaling(
            "classic",
            _one,
            _identity,
            "train: m * x;  eval: q * x",
            "matches the mean by scaling at inference (the original dropout paper)",
        ),
        Scaling(
            "variance",
            _inv_sqrt,
            _one,
            "train: m * x / sqrt(q);  eval: x",
            "matches E[x^2], hence the spread of zero-mean input; the mean shrinks",
        ),
        Scaling(
            "none",
            _one,
            _one,
            "train: m * x;  eval: x",
            "matches nothing: the eval mean is 1/q times the train mean",
        ),
    )
}

ScalingLike = str | Scaling | tuple[float, float]


def scaling_names() -> list[str]:
    """The names :func:`get_scaling` accepts, in table order."""
    return [*SCALINGS, "custom:A,B"]


def custom(a: float, b: float) -> Scaling:
    """A convention with constant factors: train ``a * m * x``, eval ``b * x``.

    Both factors must be finite and non-negative. The name is ``custom:A,B``
    with the numbers written exactly, so ``get_scaling(custom(a, b).name)``
    gives the same convention back.

    ``a = 0`` drops everything in training: the dropout functions then return
    exact zeros, as at ``p = 1``, also where ``x`` is infinite (IEEE
    ``0 * inf`` would be NaN). Likewise ``b = 0`` gives exact zeros at
    inference.
    """
    for name, value in (("a", a), ("b", b)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                f"custom scaling: {name} must be a number, got {value!r} "
                f"of type {type(value).__name__}"
            )
        if not math.isfinite(value) or value < 0:
            raise ValueError(
                f"custom scaling: {name} must be finite and >= 0, got {value!r}"
            )
    a, b = float(a), float(b)
    return Scaling(
        f"custom:{_number(a)},{_number(b)}",
        _Constant(a),
        _Constant(b),
        f"train: {_number(a)} * m * x;  eval: {_number(b)} * x",
        "user-defined factors",
        params=(a, b),
    )


def get_scaling(scaling: ScalingLike) -> Scaling:
    """Resolve a convention given by name, as a ``Scaling``, or as a pair ``(a, b)``.

    Names are ``inverted``, ``classic``, ``variance``, ``none`` and
    ``custom:A,B`` (for example ``custom:2,0.5``).

    Raises:
        ValueError: unknown name, listing the valid ones.
        TypeError: anything that is not a name, a ``Scaling`` or a pair.
    """
    if isinstance(scaling, Scaling):
        return scaling
    if isinstance(scaling, tuple):
        if len(scaling) != 2:
            raise ValueError(
                f"scaling: a custom pair must be (a, b), got {len(scaling)} values"
            )
        return custom(*scaling)
    if not isinstance(scaling, str):
        raise TypeError(
            "scaling must be a name, a Scaling or a pair (a, b), "
            f"got {type(scaling).__name__}"
        )
    key = scaling.strip().lower()
    if key in SCALINGS:
        return SCALINGS[key]
    if key.startswith("custom:"):
        parts = key[len("custom:") :].split(",")
        try:
            a, b = (float(v) for v in parts)
        except ValueError:
            raise ValueError(
                f"scaling: cannot read {scaling!r}; write a custom convention as "
                "custom:A,B with two numbers, for example custom:2,0.5"
            ) from None
        return custom(a, b)
    raise ValueError(
        f"unknown scaling {scaling!r}; valid names: {', '.join(scaling_names())}"
    )
