"""Exact moments of what each dropout rule does to an activation.

Notation: ``p`` drop probability, ``q = 1 - p``, mask ``m ~ Bernoulli(q)``
independent of the input ``x``, which has mean ``mu``, variance ``sigma^2`` and
second moment ``E[x^2] = sigma^2 + mu^2``.

Rules whose training output is ``s x + t`` on a kept unit and the constant
``v`` on a dropped one (every rule below except Gaussian dropout) have

- ``E[y] = q (s mu + t) + p v``,
- ``Var[y] = q s^2 sigma^2 + q p (s mu + t - v)^2`` (within-group variance
  plus the spread between the kept and dropped groups).

==========  =============================  ==========  ==============
rule        training output                inference   s, t, v
==========  =============================  ==========  ==============
convention  ``a m x``                      ``b x``     a, 0, 0
alpha       ``c (m x + (1 - m) al') + d``  ``x``       c, d, c al' q
gaussian    ``x g``, g ~ N(1, p/q)         ``x``       (no mask)
moment      ``A m x + B``                  ``x``       A, B, B
==========  =============================  ==========  ==============

- conventions (:mod:`dropscale.scaling`): ``E[y] = a q mu``,
  ``Var[y] = a^2 q (sigma^2 + p mu^2)``; at inference ``b mu`` and
  ``b^2 sigma^2``.
- alpha dropout (SELU constants ``alpha = 1.6732632423543772``,
  ``lambda = 1.0507009873554805``, saturation value ``al' = -lambda alpha``):
  ``c = (q + al'^2 q p)^(-1/2)``, ``d = -c al' p`` (DESIGN.md's ``a`` and
  ``b``, the keys of :func:`alpha_constants`), so a dropped unit takes
  ``c al' + d = c al' q``. ``E[y] = c q mu``; for a standardised input
  (``mu = 0``, ``sigma = 1``) the output keeps mean 0 and variance 1.
- Gaussian dropout: ``E[y] = mu``, ``Var[y] = (sigma^2 + p mu^2) / q``, the
  same two moments as inverted dropout; undefined at ``p = 1``.
- moment-matched affine rule: ``A = sqrt(sigma^2 / (q sigma^2 + q p mu^2))``,
  ``B = mu (1 - A q)``; training and inference share mean ``mu`` and
  variance ``sigma^2`` for any input.

After a linear layer ``z = sum_i w_i y_i + bias`` with independent inputs,
``E[z] = sum_i w_i E[y_i] + bias`` and ``Var[z] = sum_i w_i^2 Var[y_i]``
(:func:`linear_moments`). A BatchNorm after dropout learns the training
moments as its running statistics and normalises the inference activations
with them (:func:`batchnorm_shift`).

Inputs are given by ``mean``/``std`` (a normal input) or as a distribution:
:class:`Normal`, :class:`RectifiedNormal` (ReLU of a normal), :class:`Uniform`,
:class:`Constant` or :class:`Empirical` (a tensor of observed activations).
Only ``mu`` and ``sigma^2`` enter the formulas; the family matters to the
simulation (:mod:`dropscale.simulate`) and to the notes a result carries.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from dropscale.functional import resolve_p
from dropscale.noise import SELU_ALPHA, SELU_LAMBDA
from dropscale.scaling import SCALINGS, Scaling, ScalingLike, get_scaling

__all__ = [
    "BN_ORDERS",
    "EXTRA_RULES",
    "INPUT_KINDS",
    "SELU_ALPHA",
    "SELU_LAMBDA",
    "BatchNormShift",
    "Constant",
    "Empirical",
    "InputDistribution",
    "MAX_INPUT_SCALE",
    "LinearMoments",
    "Moments",
    "Normal",
    "RectifiedNormal",
    "Uniform",
    "alpha_constants",
    "batchnorm_shift",
    "input_mean",
    "linear_moments",
    "make_input",
    "matched_factors",
    "moments",
    "resolve_input",
    "rule_names",
]

#: Rules beyond the ``(a, b)`` conventions of :mod:`dropscale.scaling`.
EXTRA_RULES = ("alpha", "gaussian", "moment")
_RULE_ALIASES = {
    "alpha": "alpha",
    "alpha-dropout": "alpha",
    "gaussian": "gaussian",
    "gaussian-dropout": "gaussian",
    "moment": "moment",
    "matched": "moment",
    "moment-matched": "moment",
}
INPUT_KINDS = ("normal", "relu", "uniform", "constant")


def rule_names() -> list[str]:
    """Every rule :func:`moments` accepts, conventions first."""
    return [*SCALINGS, *EXTRA_RULES, "custom:A,B"]


def _resolve_rule(scaling: ScalingLike) -> Scaling | str:
    """A :class:`Scaling` for a convention, or the name of an extra rule."""
    if isinstance(scaling, str):
        key = scaling.strip().lower().replace("_", "-")
        if key in _RULE_ALIASES:
            return _RULE_ALIASES[key]
        if key.startswith("custom:"):
            return get_scaling(scaling)  # its own error says how to write one
        try:
            return get_scaling(scaling)
        except ValueError:
            raise ValueError(
                f"scaling: unknown rule {scaling!r}; valid: {', '.join(rule_names())}"
            ) from None
    if isinstance(scaling, Scaling) and scaling.name == "moment":
        return "moment"  # the layers' Scaling object for the same rule
    return get_scaling(scaling)


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a number, got {value!r} of type {type(value).__name__}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _nonnegative(name: str, value: object) -> float:
    value = _finite(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


MAX_INPUT_SCALE = 1e100
"""Largest ``|mean|``, ``std`` (and uniform bound, constant value, sample
value) an input law may have: squares, fourth powers and the products with
factors up to ``1 / q_eff^2 <= 2^64`` then stay finite in float64."""


def _scale_checked(name: str, value: float) -> float:
    if abs(value) > MAX_INPUT_SCALE:
        raise ValueError(
            f"{name}={value!r} is too large: |{name}| must be at most "
            f"{MAX_INPUT_SCALE:g} so that the moments (squares of it) stay "
            "finite; rescale the input, the moments scale with it"
        )
    return value


def _input_value(name: str, value: object) -> float:
    """A finite input parameter with ``|value| <= MAX_INPUT_SCALE``."""
    return _scale_checked(name, _finite(name, value))


def _input_scale(name: str, value: object) -> float:
    """A std: finite, ``0 <= value <= MAX_INPUT_SCALE``."""
    return _scale_checked(name, _nonnegative(name, value))


# ------------------------------------------------------------ input families


def _phi(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


@dataclass(frozen=True)
class Normal:
    """``x ~ N(mean, std^2)``."""

    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _input_value("mean", self.mean))
        object.__setattr__(self, "std", _input_scale("std", self.std))

    @property
    def var(self) -> float:
        return self.std**2

    def describe(self) -> str:
        return f"normal(mean={self.mean:g}, std={self.std:g})"


@dataclass(frozen=True)
class RectifiedNormal:
    """``x = max(0, z)`` with ``z ~ N(mean, std^2)``: a ReLU after a normal.

    ``mean`` and ``std`` are those of ``z``, the pre-activation. With
    ``k = mean / std``, ``phi`` and ``Phi`` the standard normal density and
    distribution function:
    ``E[x] = mean Phi(k) + std phi(k)`` and
    ``E[x^2] = (mean^2 + std^2) Phi(k) + mean std phi(k)``.
    """

    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _input_value("mean", self.mean))
        object.__setattr__(self, "std", _input_scale("std", self.std))

    def _raw(self) -> tuple[float, float]:
        mu, s = self.mean, self.std
        if s == 0.0:
            v = max(mu, 0.0)
            return v, v * v
        k = mu / s
        first = mu * _cdf(k) + s * _phi(k)
        second = (mu * mu + s * s) * _cdf(k) + mu * s * _phi(k)
        return first, second

    @property
    def first(self) -> float:
        """``E[x]``, named apart from ``mean``, which is the pre-activation's."""
        return self._raw()[0]

    @property
    def var(self) -> float:
        first, second = self._raw()
        return max(second - first * first, 0.0)

    def describe(self) -> str:
        return f"relu(normal(mean={self.mean:g}, std={self.std:g}))"


@dataclass(frozen=True)
class Uniform:
    """``x ~ U(low, high)``: mean ``(low + high) / 2``, variance
    ``(high - low)^2 / 12``."""

    low: float = -math.sqrt(3.0)
    high: float = math.sqrt(3.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "low", _input_value("low", self.low))
        object.__setattr__(self, "high", _input_value("high", self.high))
        if self.high < self.low:
            raise ValueError(
                f"uniform input: high must be >= low, got low={self.low!r}, "
                f"high={self.high!r}"
            )

    @classmethod
    def from_moments(cls, mean: float, std: float) -> Uniform:
        """The uniform law with this mean and std: ``mean -+ sqrt(3) std``."""
        mean, std = _input_value("mean", mean), _input_scale("std", std)
        half = math.sqrt(3.0) * std
        return cls(mean - half, mean + half)

    @property
    def var(self) -> float:
        return (self.high - self.low) ** 2 / 12.0

    def describe(self) -> str:
        return f"uniform(low={self.low:g}, high={self.high:g})"


@dataclass(frozen=True)
class Constant:
    """Every unit equals ``value``: variance 0."""

    value: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _input_value("value", self.value))

    @property
    def var(self) -> float:
        return 0.0

    def describe(self) -> str:
        return f"constant({self.value:g})"


@dataclass(frozen=True)
class Empirical:
    """The empirical law of observed activations: each value equally likely.

    Its moments are the sample's own (``ddof = 0``), so they are exact for
    the simulation, which draws from the sample with replacement.
    """

    sample: Tensor = field(repr=False)

    def __post_init__(self) -> None:
        s = self.sample
        if not isinstance(s, Tensor):
            s = torch.as_tensor(s)
        if s.numel() == 0:
            raise ValueError(
                "sample: the empirical input is empty; give at least one value"
            )
        if not (s.is_floating_point() or s.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"sample: need a real-valued tensor, got dtype {s.dtype}")
        s = s.detach().reshape(-1).to("cpu", torch.float64)
        bad = ~torch.isfinite(s)
        if bool(bad.any()):
            raise ValueError(
                f"sample: {int(bad.sum())} of {s.numel()} values are NaN or "
                f"infinite (first: {s[bad][0].item()!r}); remove them first"
            )
        big = s.abs() > MAX_INPUT_SCALE
        if bool(big.any()):
            raise ValueError(
                f"sample: {int(big.sum())} of {s.numel()} values exceed "
                f"{MAX_INPUT_SCALE:g} in absolute value (first: "
                f"{s[big][0].item()!r}), so their squares would overflow; "
                "rescale the sample"
            )
        object.__setattr__(self, "sample", s)

    @property
    def first(self) -> float:
        return self.sample.mean().item()

    @property
    def var(self) -> float:
        return self.sample.var(correction=0).item()

    def describe(self) -> str:
        return f"empirical({self.sample.numel()} values)"


InputDistribution = Normal | RectifiedNormal | Uniform | Constant | Empirical
InputLike = InputDistribution | Tensor | str


def input_mean(dist: InputDistribution) -> float:
    """``mu = E[x]`` of an input distribution."""
    if isinstance(dist, RectifiedNormal | Empirical):
        return dist.first
    if isinstance(dist, Uniform):
        return 0.5 * (dist.low + dist.high)
    if isinstance(dist, Constant):
        return dist.value
    return dist.mean


def make_input(kind: str, *, mean: float = 0.0, std: float = 1.0) -> InputDistribution:
    """An input family by name, parametrised by a mean and a std.

    ``normal``: ``N(mean, std^2)``; ``relu``: ReLU of ``N(mean, std^2)`` (mean
    and std of the pre-activation); ``uniform``: the uniform law with this
    mean and std; ``constant``: every value equals ``mean`` (``std`` must be 0).
    """
    key = str(kind).strip().lower()
    if key == "normal":
        return Normal(mean, std)
    if key in ("relu", "rectified", "rectified-normal"):
        return RectifiedNormal(mean, std)
    if key == "uniform":
        return Uniform.from_moments(mean, std)
    if key == "constant":
        if _input_scale("std", std) != 0.0:
            raise ValueError(
                f"std: a constant input has std 0, got std={std!r}; give std=0 "
                "or another input family"
            )
        return Constant(mean)
    raise ValueError(
        f"input: unknown family {kind!r}; valid: {', '.join(INPUT_KINDS)}, "
        "or pass a tensor of observed values"
    )


def resolve_input(
    input: InputLike | None = None,
    *,
    mean: float | None = None,
    std: float | None = None,
) -> InputDistribution:
    """The input distribution from ``input`` and/or ``mean``/``std``.

    ``input`` may be a distribution object (then ``mean`` and ``std`` must be
    left out), a tensor (its empirical law) or a family name for
    :func:`make_input`. With no ``input`` the law is ``N(mean, std^2)``
    (default ``N(0, 1)``).
    """
    if isinstance(input, str) or input is None:
        return make_input(
            input or "normal",
            mean=0.0 if mean is None else mean,
            std=1.0 if std is None else std,
        )
    if mean is not None or std is not None:
        raise TypeError(
            "give the input as mean=/std= or as a distribution or sample in "
            f"input=, not both (got input={type(input).__name__}, mean={mean!r}, "
            f"std={std!r})"
        )
    if isinstance(input, Tensor):
        return Empirical(input)
    if isinstance(input, Normal | RectifiedNormal | Uniform | Constant | Empirical):
        return input
    raise TypeError(
        "input must be a family name, a tensor of values or one of Normal, "
        f"RectifiedNormal, Uniform, Constant, Empirical; got {type(input).__name__}"
    )


# ------------------------------------------------------------ rule constants


def alpha_constants(p: float) -> dict[str, float]:
    """Alpha dropout's constants at drop probability ``p``.

    Returns ``alpha_prime = -lambda alpha`` (the SELU saturation value), the
    affine map's scale ``a = (q + alpha_prime^2 q p)^(-1/2)`` and shift
    ``b = -a alpha_prime p``, and ``dropped_value = a alpha_prime + b``, what
    a dropped unit outputs. At ``p = 1`` every unit is dropped and the output
    is 0 (PyTorch's choice): ``a = 0``, ``b = 0``.
    """
    p = resolve_p(p)
    q = 1.0 - p
    alpha_prime = -SELU_LAMBDA * SELU_ALPHA
    if q == 0.0:
        return {"alpha_prime": alpha_prime, "a": 0.0, "b": 0.0, "dropped_value": 0.0}
    a = (q + alpha_prime**2 * q * p) ** -0.5
    b = -a * alpha_prime * p
    return {
        "alpha_prime": alpha_prime,
        "a": a,
        "b": b,
        "dropped_value": a * alpha_prime + b,
    }


def matched_factors(p: float, mean: float, std: float) -> tuple[float, float]:
    """``(A, B)`` of the moment-matched rule for an input of this mean and std.

    ``A = sqrt(sigma^2 / (q sigma^2 + q p mu^2))`` and ``B = mu (1 - A q)``.
    Where the fraction is 0/0 (``sigma = mu = 0``) ``A`` takes its limit along
    ``mu = 0``, ``1 / sqrt(q)``. At ``q = 0`` nothing is kept: ``A = 0`` and
    ``B = mu``, which matches the mean but cannot match ``sigma^2 > 0``.
    """
    q = 1.0 - resolve_p(p)
    mu, sigma = _input_value("mean", mean), _input_scale("std", std)
    if q == 0.0:
        return 0.0, mu
    den = q * sigma**2 + q * (1.0 - q) * mu**2
    big_a = 1.0 / math.sqrt(q) if den == 0.0 else math.sqrt(sigma**2 / den)
    return big_a, mu * (1.0 - big_a * q)


# --------------------------------------------------------------- one unit


def _ratio(num: float, den: float) -> float:
    """``num / den``, with ``x / 0 = inf`` for ``x != 0`` and ``0 / 0 = 1``.

    Two zero moments are equal, so their ratio is reported as 1.
    """
    if den == 0.0:
        return 1.0 if num == 0.0 else math.copysign(math.inf, num)
    return num / den


@dataclass(frozen=True)
class _UnitMoments:
    train_mean: float
    train_var: float
    eval_mean: float
    eval_var: float
    a: float
    b: float
    mean_ratio: float
    constants: dict[str, float]
    notes: tuple[str, ...]
    #: training map as (kept scale s, kept shift t, dropped value v); None for
    #: Gaussian dropout, whose training map has no mask.
    train_map: tuple[float, float, float] | None
    eval_scale: float


def _mask_rule(
    q: float, mu: float, var: float, s: float, t: float, v: float
) -> tuple[float, float]:
    p = 1.0 - q
    mean = q * (s * mu + t) + p * v
    variance = q * s * s * var + q * p * (s * mu + t - v) ** 2
    return mean, variance


def _unit_moments(
    rule: Scaling | str, p: float, mu: float, var: float, standardised: bool
) -> _UnitMoments:
    """Exact train and eval moments of one unit with mean ``mu``, variance ``var``."""
    q = 1.0 - p
    notes: list[str] = []
    constants: dict[str, float] = {}
    if isinstance(rule, Scaling):
        a, b = rule.factors(q)
        train_map: tuple[float, float, float] | None = (a, 0.0, 0.0)
        eval_scale, mean_ratio = b, rule.mean_ratio(q)
    elif rule == "alpha":
        constants = alpha_constants(p)
        a, b = constants["a"], 1.0
        train_map = (a, constants["b"], constants["dropped_value"])
        eval_scale = 1.0
        mean_ratio = math.inf if a * q == 0.0 else 1.0 / (a * q)
        if not standardised:
            notes.append(
                "alpha dropout's constants assume a standardised input (mean 0, "
                f"std 1); this input has mean {mu:.4g} and std {math.sqrt(var):.4g}, "
                "so training no longer keeps its mean and variance (the numbers "
                "are exact all the same)"
            )
        if q == 0.0:
            notes.append("at p = 1 alpha dropout outputs zeros (PyTorch's choice)")
    elif rule == "gaussian":
        if q == 0.0:
            raise ValueError(
                "p: Gaussian dropout needs p < 1, got p=1.0; its noise "
                "N(1, p/q) has infinite variance at q = 0"
            )
        constants = {"noise_var": p / q}
        a, b, train_map, eval_scale, mean_ratio = 1.0, 1.0, None, 1.0, 1.0
    else:  # moment
        big_a, big_b = matched_factors(p, mu, math.sqrt(var))
        constants = {"A": big_a, "B": big_b}
        a, b, eval_scale, mean_ratio = big_a, 1.0, 1.0, 1.0
        train_map = (big_a, big_b, big_b)
        if q == 0.0 and var > 0.0:
            notes.append(
                "at p = 1 every unit is dropped: the moment-matched rule outputs "
                "the constant B = mu, which keeps the mean but not the variance"
            )
    if train_map is None:  # gaussian: y = x g, g ~ N(1, p/q)
        train_mean = mu
        train_var = (var + p * mu * mu) / q
    else:
        train_mean, train_var = _mask_rule(q, mu, var, *train_map)
    return _UnitMoments(
        train_mean=train_mean,
        train_var=train_var,
        eval_mean=eval_scale * mu,
        eval_var=eval_scale**2 * var,
        a=a,
        b=b,
        mean_ratio=mean_ratio,
        constants=constants,
        notes=tuple(notes),
        train_map=train_map,
        eval_scale=eval_scale,
    )


def _is_standardised(mu: float, var: float) -> bool:
    return abs(mu) <= 1e-9 and abs(var - 1.0) <= 1e-9


@dataclass(frozen=True)
class Moments:
    """Exact output moments of one rule at one ``p`` for one input.

    Attributes:
        scaling: the rule's name; p, q: drop and keep probabilities.
        a, b: the factor on a kept unit in training and the factor at
            inference (for alpha dropout ``a`` is the affine scale, for the
            moment-matched rule ``A``; both have ``b = 1``).
        input: the input distribution, in words.
        input_mean, input_std: ``mu`` and ``sigma`` of the input.
        train_mean, train_std, train_second: ``E[y]``, ``sqrt(Var[y])`` and
            ``E[y^2]`` in training.
        eval_mean, eval_std, eval_second: the same at inference.
        mean_ratio: eval over train mean per unit of ``mu`` (both means are
            proportional to ``mu`` for every rule): ``b / (a q)`` for a
            convention, ``1 / (a q)`` for alpha, 1 for Gaussian and moment;
            ``inf`` when training outputs mean 0 whatever ``mu``.
        std_ratio, var_ratio: ``eval_std / train_std`` and its square
            (``0 / 0`` is reported as 1).
        constants: rule-specific constants (alpha: ``alpha_prime``, ``a``,
            ``b``, ``dropped_value``; Gaussian: ``noise_var``; moment: ``A``,
            ``B``).
        notes: plain-words caveats, e.g. a rule used outside its assumptions.
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
    input: str = "normal"
    train_second: float = 0.0
    eval_second: float = 0.0
    var_ratio: float = 1.0
    constants: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


def _rule_name(rule: Scaling | str) -> str:
    return rule.name if isinstance(rule, Scaling) else rule


def moments(
    p: float | None = None,
    *,
    keep_prob: float | None = None,
    mean: float | None = None,
    std: float | None = None,
    scaling: ScalingLike = "inverted",
    input: InputLike | None = None,
) -> Moments:
    """Exact train and eval mean, std and second moment of dropout's output.

    Args:
        p: drop probability (or ``keep_prob=``, the keep probability ``q``).
        mean, std: ``mu`` and ``sigma`` of a normal input (default 0 and 1),
            or of the family named in ``input``.
        scaling: a convention (``inverted``, ``classic``, ``variance``,
            ``none``, ``custom:A,B``, a pair ``(a, b)``) or one of ``alpha``,
            ``gaussian``, ``moment`` (the moment-matched rule).
        input: a family name (``normal``, ``relu``, ``uniform``,
            ``constant``), a distribution object, or a tensor of observed
            activations.

    Example::

        >>> round(moments(0.5).train_std, 4)  # inverted, N(0, 1) input
        1.4142
        >>> round(moments(0.5, scaling="alpha").constants["a"], 4)
        0.8864
    """
    p = resolve_p(p, keep_prob)
    rule = _resolve_rule(scaling)
    dist = resolve_input(input, mean=mean, std=std)
    mu, var = input_mean(dist), dist.var
    u = _unit_moments(rule, p, mu, var, _is_standardised(mu, var))
    return Moments(
        scaling=_rule_name(rule),
        p=p,
        q=1.0 - p,
        a=u.a,
        b=u.b,
        input_mean=mu,
        input_std=math.sqrt(var),
        train_mean=u.train_mean,
        train_std=math.sqrt(u.train_var),
        eval_mean=u.eval_mean,
        eval_std=math.sqrt(u.eval_var),
        mean_ratio=u.mean_ratio,
        std_ratio=_ratio(math.sqrt(u.eval_var), math.sqrt(u.train_var)),
        input=dist.describe(),
        train_second=u.train_var + u.train_mean**2,
        eval_second=u.eval_var + u.eval_mean**2,
        var_ratio=_ratio(u.eval_var, u.train_var),
        constants=u.constants,
        notes=u.notes,
    )


# ------------------------------------------------------------- linear layer


@dataclass(frozen=True)
class LinearMoments:
    """Exact moments of every output unit of ``z = W y + bias``.

    ``y`` is dropout's output on independent inputs. Tensors are float64 of
    shape ``(out_features,)``.
    """

    scaling: str
    p: float
    in_features: int
    out_features: int
    train_mean: Tensor
    train_std: Tensor
    eval_mean: Tensor
    eval_std: Tensor
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "scaling": self.scaling,
            "p": self.p,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "train_mean": self.train_mean.tolist(),
            "train_std": self.train_std.tolist(),
            "eval_mean": self.eval_mean.tolist(),
            "eval_std": self.eval_std.tolist(),
            "notes": list(self.notes),
        }


def _weight_and_bias(
    weight: Tensor | nn.Linear, bias: Tensor | float | None
) -> tuple[Tensor, Tensor]:
    if isinstance(weight, nn.Linear):
        if bias is not None:
            raise TypeError("bias: an nn.Linear brings its own bias; leave bias out")
        layer = weight
        weight = layer.weight
        bias = layer.bias
    if not isinstance(weight, Tensor):
        raise TypeError(
            f"weight must be a tensor or an nn.Linear, got {type(weight).__name__}"
        )
    w = weight.detach().to("cpu", torch.float64)
    if w.dim() == 1:
        w = w.unsqueeze(0)
    if w.dim() != 2 or w.numel() == 0:
        raise ValueError(
            "weight must be a non-empty (out_features, in_features) matrix, got "
            f"shape {tuple(weight.shape)}"
        )
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weight contains NaN or infinite values")
    if bias is None:
        bvec = torch.zeros(w.shape[0], dtype=torch.float64)
    else:
        bvec = torch.as_tensor(bias, dtype=torch.float64).detach().cpu().reshape(-1)
        if bvec.numel() == 1:
            bvec = bvec.expand(w.shape[0]).clone()
        if bvec.numel() != w.shape[0]:
            raise ValueError(
                f"bias has {bvec.numel()} values but the weight has "
                f"{w.shape[0]} outputs (weight shape {tuple(w.shape)})"
            )
    return w, bvec


def _per_input(name: str, value: object, n_in: int, shape: tuple[int, ...]) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).detach().cpu().reshape(-1)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values: {t.tolist()[:5]}")
    if name in ("mean", "std") and bool((t.abs() > MAX_INPUT_SCALE).any()):
        raise ValueError(
            f"{name}: |{name}| must be at most {MAX_INPUT_SCALE:g} so that the "
            f"moments stay finite, got {t.abs().max().item()!r}; rescale the input"
        )
    if t.numel() == 1:
        return t.expand(n_in)
    if t.numel() != n_in:
        raise ValueError(
            f"{name} has {t.numel()} values but the weight has {n_in} inputs "
            f"(weight shape {shape}); give one {name} per input or a single number"
        )
    return t


def linear_moments(
    weight: Tensor | nn.Linear,
    p: float | None = None,
    *,
    keep_prob: float | None = None,
    bias: Tensor | float | None = None,
    mean: float | Sequence[float] | Tensor | None = None,
    std: float | Sequence[float] | Tensor | None = None,
    input: InputLike | None = None,
    scaling: ScalingLike = "inverted",
) -> LinearMoments:
    """Exact train and eval mean and std of every unit of ``z = W y + bias``.

    Each input ``x_i`` goes through dropout independently, giving ``y_i``;
    ``E[z] = W E[y] + bias`` and ``Var[z] = (W * W) Var[y]``. At inference
    ``y_i`` is the rule's inference output.

    Args:
        weight: an ``(out_features, in_features)`` tensor (a 1-D tensor is one
            output unit) or an ``nn.Linear`` (whose bias is used).
        p: drop probability (or ``keep_prob=``).
        bias: added to every output; a number or one value per output.
        mean, std: per-input ``mu`` and ``sigma`` (a number for all inputs or
            one value per input); or give ``input`` for one law shared by all.
        input: as in :func:`moments`.
        scaling: as in :func:`moments`.
    """
    p = resolve_p(p, keep_prob)
    rule = _resolve_rule(scaling)
    w, bvec = _weight_and_bias(weight, bias)
    n_in = w.shape[1]
    if input is not None or not (
        isinstance(mean, Tensor | Sequence) or isinstance(std, Tensor | Sequence)
    ):
        dist = resolve_input(input, mean=mean, std=std)  # type: ignore[arg-type]
        mus = torch.full((n_in,), input_mean(dist), dtype=torch.float64)
        sds = torch.full((n_in,), math.sqrt(dist.var), dtype=torch.float64)
    else:
        mus = _per_input("mean", 0.0 if mean is None else mean, n_in, tuple(w.shape))
        sds = _per_input("std", 1.0 if std is None else std, n_in, tuple(w.shape))
        if bool((sds < 0).any()):
            raise ValueError(f"std must be >= 0 for every input, got {sds.min()!r}")
    pairs, inverse = torch.unique(
        torch.stack([mus, sds], 1), dim=0, return_inverse=True
    )
    per_pair = [
        _unit_moments(rule, p, mu, sd * sd, _is_standardised(mu, sd * sd))
        for mu, sd in pairs.tolist()
    ]
    cols = torch.tensor(
        [[u.train_mean, u.train_var, u.eval_mean, u.eval_var] for u in per_pair],
        dtype=torch.float64,
    )[inverse]
    w2 = w * w
    notes = tuple(dict.fromkeys(n for u in per_pair for n in u.notes))
    return LinearMoments(
        scaling=_rule_name(rule),
        p=p,
        in_features=n_in,
        out_features=w.shape[0],
        train_mean=w @ cols[:, 0] + bvec,
        train_std=(w2 @ cols[:, 1]).sqrt(),
        eval_mean=w @ cols[:, 2] + bvec,
        eval_std=(w2 @ cols[:, 3]).sqrt(),
        notes=notes,
    )


# ---------------------------------------------------------------- BatchNorm

BN_ORDERS = ("dropout-bn", "bn-dropout")


@dataclass(frozen=True)
class BatchNormShift:
    """What a BatchNorm (no affine part) next to dropout sees and outputs.

    ``order="dropout-bn"``: BN's running statistics converge to dropout's
    training moments, ``running_mean = E_t`` and ``running_var = V_t``; at
    inference BN normalises dropout's inference output (mean ``E_e``,
    variance ``V_e``) with them, so its output has mean
    ``(E_e - E_t) / sqrt(V_t + eps)`` and std ``sqrt(V_e / (V_t + eps))``.
    ``variance_shift = V_e / V_t``.

    ``order="bn-dropout"``: BN sees the undropped input, so its statistics
    are ``mu`` and ``sigma^2`` in both modes; dropout then acts on a unit of
    mean 0 and variance ``sigma^2 / (sigma^2 + eps)``, and the mismatch is
    dropout's own: ``variance_shift`` is eval over train variance of the
    final output.

    Attributes ``train_out_*`` and ``eval_out_*`` are the final output's
    moments in each mode.
    """

    scaling: str
    p: float
    order: str
    eps: float
    running_mean: float
    running_var: float
    train_out_mean: float
    train_out_std: float
    eval_out_mean: float
    eval_out_std: float
    variance_shift: float
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        return d


def _bn_scale(name: str, var: float, eps: float) -> float:
    if var + eps <= 0.0:
        raise ValueError(
            f"eps: BatchNorm divides by sqrt({name} + eps) = 0 because the "
            "activation has variance 0; give eps > 0 (PyTorch uses 1e-5)"
        )
    return 1.0 / math.sqrt(var + eps)


def batchnorm_shift(
    p: float | None = None,
    *,
    keep_prob: float | None = None,
    mean: float | None = None,
    std: float | None = None,
    input: InputLike | None = None,
    scaling: ScalingLike = "inverted",
    order: str = "dropout-bn",
    eps: float = 1e-5,
) -> BatchNormShift:
    """The variance shift at a BatchNorm next to dropout (see :class:`BatchNormShift`).

    Example: ``mu = 0``, ``p = 0.5``, inverted dropout before BN: the running
    variance converges to ``sigma^2 / q = 2.0`` (for ``sigma = 1``) and the
    normalised inference output has std ``sqrt(1 / 2) = 0.7071`` (as ``eps``
    goes to 0; 0.70711 at the default ``eps = 1e-5``).

    Args:
        p, keep_prob, mean, std, input, scaling: as in :func:`moments`.
        order: ``"dropout-bn"`` (dropout feeds BatchNorm) or ``"bn-dropout"``.
        eps: BatchNorm's ``eps`` (PyTorch's default 1e-5; 0 gives the
            limiting values).
    """
    p = resolve_p(p, keep_prob)
    eps = _nonnegative("eps", eps)
    if order not in BN_ORDERS:
        raise ValueError(f"order must be one of {', '.join(BN_ORDERS)}, got {order!r}")
    rule = _resolve_rule(scaling)
    dist = resolve_input(input, mean=mean, std=std)
    mu, var = input_mean(dist), dist.var
    if order == "dropout-bn":
        u = _unit_moments(rule, p, mu, var, _is_standardised(mu, var))
        k = _bn_scale("running_var", u.train_var, eps)
        return BatchNormShift(
            scaling=_rule_name(rule),
            p=p,
            order=order,
            eps=eps,
            running_mean=u.train_mean,
            running_var=u.train_var,
            train_out_mean=0.0,
            train_out_std=math.sqrt(u.train_var) * k,
            eval_out_mean=(u.eval_mean - u.train_mean) * k,
            eval_out_std=math.sqrt(u.eval_var) * k,
            variance_shift=_ratio(u.eval_var, u.train_var),
            notes=u.notes,
        )
    k = _bn_scale("running_var", var, eps)
    z_var = var * k * k
    u = _unit_moments(rule, p, 0.0, z_var, _is_standardised(0.0, z_var))
    return BatchNormShift(
        scaling=_rule_name(rule),
        p=p,
        order=order,
        eps=eps,
        running_mean=mu,
        running_var=var,
        train_out_mean=u.train_mean,
        train_out_std=math.sqrt(u.train_var),
        eval_out_mean=u.eval_mean,
        eval_out_std=math.sqrt(u.eval_var),
        variance_shift=_ratio(u.eval_var, u.train_var),
        notes=u.notes,
    )
