"""Streaming Monte Carlo of what dropout does to activations, with 95 % intervals.

Every exact value of :mod:`dropscale.moments` has a simulated twin here:
:func:`simulate` (one unit, any rule, any input family),
:func:`simulate_linear` (every unit of a linear layer after dropout) and
:func:`simulate_batchnorm` (a real ``nn.BatchNorm1d`` next to dropout). Each
measured figure comes with its exact value and the agreement
``z = |measured - exact| / standard error``.

How :func:`simulate` draws, chunk by chunk (memory does not grow with ``n``):

1. ``k`` input values are drawn and centred at the input's exact mean
   ``c``, ``d = x - c`` (for a normal input ``d = sigma * z`` directly).
2. The mask: with ``mask="count"`` (default) the chunk's number of kept units
   ``K ~ Binomial(k, q)`` is drawn and the first ``K`` values of the chunk
   are the kept ones. The values are i.i.d. and independent of the mask, so
   which positions are kept does not change the joint law of what is
   measured; this is the same experiment as an element-wise mask, drawn
   with one random number per chunk instead of one per element.
   ``mask="elementwise"`` draws ``m ~ Bernoulli(q)`` per element instead
   (as :func:`torch.nn.functional.dropout` does); it is several times
   slower (one more random number per element, and the kept values are
   gathered into a copy).
3. The sums of ``d^j`` (``j = 1..4``) over the kept and the dropped units
   are reduced in float32 within the chunk and accumulated in float64.
   A kept unit's output ``s x + t`` and a dropped unit's ``v`` are affine in
   ``d``, so the output's power sums about its own centre follow exactly
   from these by the binomial theorem (Gaussian dropout, which has no mask,
   draws its noise ``g ~ N(1, p/q)`` per element and reduces ``x g``).

The work is split into two streams with their own seeded generators; they
run on two threads when :func:`torch.get_num_threads` allows, and the
result depends on the seed only.

What bounds the time: drawing the values. One core of the development
machine draws about 380 million float32 normals per second with
:func:`torch.randn` (2.6 ns each; the generator is sequential, and drawing
uniforms costs the same, so the random bits, not the normal transform, are
the limit). The four power sums add about 0.4 ns per value, in cache, and
the rest is interpreter start-up (about 1.2 s to import torch). The plain
way, ``x * bernoulli(q) / q`` on a full tensor, draws the same normals,
then one Bernoulli per element (about 90 million per second) and moves
several 400 MB tensors through memory (about 3 billion float32 per second);
neither is needed here. ``benchmarks/bench_simulate.py`` measures both.

Intervals (95 %, normal approximation, valid for large ``n``):

- mean: ``m +- 1.96 s / sqrt(n)``;
- std: ``s +- 1.96 se_s`` with ``se_s = sqrt((m4 - s^4) / n) / (2 s)``, the
  delta-method standard error of the sample std from the sample's fourth
  central moment ``m4``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from dropscale.functional import resolve_p
from dropscale.moments import (
    BatchNormShift,
    Constant,
    Empirical,
    InputDistribution,
    InputLike,
    LinearMoments,
    Moments,
    Normal,
    RectifiedNormal,
    Uniform,
    _resolve_rule,
    _unit_moments,
    _UnitMoments,
    _weight_and_bias,
    batchnorm_shift,
    input_mean,
    linear_moments,
    moments,
    resolve_input,
)
from dropscale.scaling import ScalingLike

__all__ = [
    "BatchNormSimulation",
    "MAX_SEED",
    "LinearSimulation",
    "Measured",
    "SimulationResult",
    "simulate",
    "simulate_batchnorm",
    "simulate_linear",
]

Z95 = 1.959963984540054
MASK_MODES = ("count", "elementwise")
#: Independent streams of draws per simulation, each with its own generator;
#: fixed, so that results do not depend on how many threads run them.
STREAMS = 2


# ---------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Measured:
    """A measured mean and std, their standard errors and the exact values."""

    mean: float
    std: float
    se_mean: float
    se_std: float
    exact_mean: float
    exact_std: float

    @property
    def mean_interval(self) -> tuple[float, float]:
        return self.mean - Z95 * self.se_mean, self.mean + Z95 * self.se_mean

    @property
    def std_interval(self) -> tuple[float, float]:
        return self.std - Z95 * self.se_std, self.std + Z95 * self.se_std

    @property
    def z_mean(self) -> float:
        """``|measured - exact|`` of the mean, in standard errors."""
        return _z(self.mean, self.exact_mean, self.se_mean)

    @property
    def z_std(self) -> float:
        """``|measured - exact|`` of the std, in standard errors."""
        return _z(self.std, self.exact_std, self.se_std)

    def as_dict(self) -> dict[str, float | list[float]]:
        d: dict[str, float | list[float]] = dict(asdict(self))
        d.update(
            mean_ci=list(self.mean_interval),
            std_ci=list(self.std_interval),
            z_mean=self.z_mean,
            z_std=self.z_std,
        )
        return d


def _z(value: float, exact: float, se: float) -> float:
    diff = abs(value - exact)
    if diff <= 1e-9 * max(1.0, abs(exact)):  # equal up to rounding
        return 0.0
    return math.inf if se == 0.0 else diff / se


def _measured(
    sums: Sequence[float], n: int, center: float, exact_mean: float, exact_std: float
) -> Measured:
    """Moments from ``sums[j-1] = sum (v - center)^j`` over ``n`` values."""
    e1, e2, e3, e4 = (s / n for s in sums)
    var = max(e2 - e1 * e1, 0.0)
    m4 = e4 - 4 * e1 * e3 + 6 * e1 * e1 * e2 - 3 * e1**4
    std = math.sqrt(var)
    se_std = math.sqrt(max(m4 - var * var, 0.0) / n) / (2 * std) if std else 0.0
    return Measured(
        mean=center + e1,
        std=std,
        se_mean=std / math.sqrt(n),
        se_std=se_std,
        exact_mean=exact_mean,
        exact_std=exact_std,
    )


def _shifted(
    sums: Sequence[float], count: float, s: float, delta: float
) -> list[float]:
    """Power sums of ``s d + delta`` from those of ``d`` (binomial theorem).

    ``sums[j-1] = sum d^j`` over ``count`` values; returns
    ``sum (s d + delta)^j`` for ``j = 1..4``.
    """
    raw = [count, *sums]
    out = []
    for j in range(1, 5):
        out.append(
            sum(
                math.comb(j, i) * s**i * delta ** (j - i) * raw[i] for i in range(j + 1)
            )
        )
    return out


def _power_sums(v: Tensor, scratch: Tensor | None = None) -> Tensor:
    """``[sum v, sum v^2, sum v^3, sum v^4]`` of a 1-D tensor, in float64.

    The sums run in ``v``'s dtype; ``scratch`` (at least as long as ``v``)
    receives ``v^2``, which spares an allocation per call.
    """
    if v.numel() == 0:
        return torch.zeros(4, dtype=torch.float64)
    v2 = v * v if scratch is None else torch.mul(v, v, out=scratch[: v.numel()])
    sums = torch.stack((v.sum(), v2.sum(), torch.dot(v2, v), torch.dot(v2, v2)))
    return sums.double()


# ------------------------------------------------------------------ drawing


def _check_n(name: str, n: object, minimum: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(
            f"{name} must be an integer, got {n!r} of type {type(n).__name__}"
        )
    if n < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {n}")
    return n


MAX_SEED = (1 << 63) - 1
"""Largest ``seed``: stream ``i`` seeds its generator with ``2 seed + i``,
which must fit in 64 bits."""


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(
            f"seed must be an integer, got {seed!r} of type {type(seed).__name__}"
        )
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(
            f"seed must be in [0, 2^63 - 1] = [0, {MAX_SEED}], got {seed}; "
            "pick a smaller seed"
        )
    return seed


def _draw_centered(
    dist: InputDistribution, out: Tensor, center: float, gen: torch.Generator
) -> Tensor:
    """Fill ``out`` with values of ``x - center``, ``x`` drawn from ``dist``."""
    if isinstance(dist, Normal):
        out.normal_(generator=gen)
        if dist.std != 1.0:
            out.mul_(dist.std)
        if dist.mean != center:
            out.add_(dist.mean - center)
    elif isinstance(dist, RectifiedNormal):
        out.normal_(generator=gen).mul_(dist.std).add_(dist.mean)
        out.clamp_(min=0.0).sub_(center)
    elif isinstance(dist, Uniform):
        if dist.high > dist.low:
            out.uniform_(dist.low - center, dist.high - center, generator=gen)
        else:
            out.fill_(dist.low - center)
    elif isinstance(dist, Constant):
        out.fill_(dist.value - center)
    else:  # Empirical: draw with replacement
        assert isinstance(dist, Empirical)
        pool = dist.sample.sub(center).to(out.dtype)
        idx = torch.randint(pool.numel(), (out.numel(),), generator=gen)
        torch.index_select(pool, 0, idx, out=out.view(-1))
    return out


def _binomial(k: int, q: float, gen: torch.Generator) -> int:
    if q >= 1.0:
        return k
    if q <= 0.0:
        return 0
    count = torch.tensor([float(k)], dtype=torch.float64)
    prob = torch.tensor([q], dtype=torch.float64)
    return int(torch.binomial(count, prob, generator=gen).item())


# --------------------------------------------------------------- one unit


@dataclass(frozen=True)
class SimulationResult:
    """Measured input, training output and inference output of one rule.

    ``output`` is the training-mode output (kept for existing callers);
    ``eval`` the inference output; ``exact`` the closed form they are
    compared with.
    """

    scaling: str
    p: float
    n_elements: int
    seed: int
    input: Measured
    output: Measured
    eval: Measured | None = None
    exact: Moments | None = None
    mask: str = "count"

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "scaling": self.scaling,
            "p": self.p,
            "n_elements": self.n_elements,
            "seed": self.seed,
            "mask": self.mask,
            "input": self.input.as_dict(),
            "output": self.output.as_dict(),
        }
        if self.eval is not None:
            d["eval"] = self.eval.as_dict()
        if self.exact is not None:
            d["input_law"] = self.exact.input
            d["notes"] = list(self.exact.notes)
        return d


def _stream_sums(
    dist: InputDistribution,
    c_x: float,
    unit: _UnitMoments,
    p: float,
    mask: str,
    n: int,
    chunk: int,
    seed: int,
    exact: Moments,
) -> tuple[Tensor, Tensor, Tensor, int]:
    """One stream of chunks: power sums of ``d = x - c_x`` over kept and
    dropped units (and of the centred output for Gaussian dropout)."""
    q = 1.0 - p
    gen = torch.Generator().manual_seed(seed)
    size = max(min(chunk, n), 1)
    buf, scratch = torch.empty(size), torch.empty(size)
    kept_sums = torch.zeros(4, dtype=torch.float64)
    drop_sums = torch.zeros(4, dtype=torch.float64)
    out_sums = torch.zeros(4, dtype=torch.float64)  # Gaussian dropout only
    noise = torch.empty(size) if unit.train_map is None else None
    n_kept = 0
    left = n
    while left > 0:
        k = min(size, left)
        d = _draw_centered(dist, buf[:k], c_x, gen)
        if noise is not None:  # Gaussian: y = x g, g ~ N(1, p/q)
            kept_sums += _power_sums(d, scratch)
            g = noise[:k].normal_(generator=gen).mul_(math.sqrt(p / q)).add_(1.0)
            y = d.add_(c_x).mul_(g).sub_(exact.train_mean)
            out_sums += _power_sums(y, scratch)
            n_kept += k
        elif mask == "count":
            kept = _binomial(k, q, gen)
            kept_sums += _power_sums(d[:kept], scratch)
            drop_sums += _power_sums(d[kept:], scratch)
            n_kept += kept
        else:
            m = torch.rand(k, generator=gen) < q
            kept_sums += _power_sums(d[m], scratch)
            drop_sums += _power_sums(d[~m], scratch)
            n_kept += int(m.sum())
        left -= k
    return kept_sums, drop_sums, out_sums, n_kept


def simulate(
    p: float | None = None,
    *,
    keep_prob: float | None = None,
    n_elements: int,
    scaling: ScalingLike = "inverted",
    mean: float | None = None,
    std: float | None = None,
    input: InputLike | None = None,
    seed: int = 0,
    chunk_elements: int = 1 << 18,
    mask: str = "count",
    threads: int | None = None,
) -> SimulationResult:
    """Measure dropout's output moments on ``n_elements`` drawn inputs.

    Args:
        p: drop probability (or ``keep_prob=``).
        n_elements: how many values to draw (``n * n`` for an n-by-n tensor).
        scaling: any rule :func:`dropscale.moments.moments` accepts.
        mean, std, input: the input law, as in :func:`dropscale.moments.moments`
            (default ``N(0, 1)``).
        seed: seeds the generators that draw inputs and masks (stream ``i``
            of the two uses ``2 seed + i``); in ``[0, 2^63 - 1]``.
        chunk_elements: values drawn and reduced at once; bounds the memory
            (4 bytes each, a few buffers).
        mask: ``"count"`` draws each chunk's kept count, ``"elementwise"`` one
            Bernoulli per element (see the module docstring).
        threads: worker threads for the two streams of draws (default: up to
            :func:`torch.get_num_threads`). The results depend on ``seed``
            only, not on ``threads``.

    Returns:
        the measured input, training output and inference output, each with
        exact values, standard errors and 95 % intervals.
    """
    p = resolve_p(p, keep_prob)
    seed = _check_seed(seed)
    n_elements = _check_n("n_elements", n_elements, 2)
    chunk_elements = _check_n("chunk_elements", chunk_elements, 1)
    if mask not in MASK_MODES:
        raise ValueError(f"mask must be one of {', '.join(MASK_MODES)}, got {mask!r}")
    if threads is not None:
        threads = _check_n("threads", threads, 1)
    exact = moments(p, mean=mean, std=std, scaling=scaling, input=input)
    rule = _resolve_rule(scaling)
    dist = resolve_input(input, mean=mean, std=std)
    c_x = input_mean(dist)
    unit = _unit_moments(rule, p, c_x, dist.var, standardised=False)
    sizes = [n_elements // STREAMS + (i < n_elements % STREAMS) for i in range(STREAMS)]
    jobs = [
        (dist, c_x, unit, p, mask, size, chunk_elements, seed * STREAMS + i, exact)
        for i, size in enumerate(sizes)
    ]
    workers = min(STREAMS, torch.get_num_threads() if threads is None else threads)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(lambda job: _stream_sums(*job), jobs))
    else:
        parts = [_stream_sums(*job) for job in jobs]
    kept_sums = sum((part[0] for part in parts), torch.zeros(4, dtype=torch.float64))
    drop_sums = sum((part[1] for part in parts), torch.zeros(4, dtype=torch.float64))
    out_sums = sum((part[2] for part in parts), torch.zeros(4, dtype=torch.float64))
    n_kept = sum(part[3] for part in parts)
    ks, ds = kept_sums.tolist(), drop_sums.tolist()
    total = [a + b for a, b in zip(ks, ds, strict=True)]
    if unit.train_map is None:
        train = out_sums.tolist()
    else:
        s, t, v = unit.train_map
        kept_part = _shifted(ks, n_kept, s, s * c_x + t - exact.train_mean)
        delta = v - exact.train_mean
        n_drop = n_elements - n_kept
        train = [a + n_drop * delta**j for j, a in enumerate(kept_part, 1)]
    e = unit.eval_scale
    return SimulationResult(
        scaling=exact.scaling,
        p=p,
        n_elements=n_elements,
        seed=seed,
        input=_measured(total, n_elements, c_x, exact.input_mean, exact.input_std),
        output=_measured(
            train, n_elements, exact.train_mean, exact.train_mean, exact.train_std
        ),
        eval=_measured(
            [e**j * a for j, a in enumerate(total, 1)],
            n_elements,
            e * c_x,
            exact.eval_mean,
            exact.eval_std,
        ),
        exact=exact,
        mask=mask,
    )


# ------------------------------------------------------------- linear layer


def _train_output(
    x: Tensor,
    q: float,
    p: float,
    plan: tuple[Tensor, Tensor, Tensor] | None,
    gen: torch.Generator,
) -> Tensor:
    """Training output of a rule on ``x`` with an element-wise mask.

    ``plan`` holds the kept scale ``s``, kept shift ``t`` and dropped value
    ``v`` (broadcast over ``x``'s last dim); ``None`` means Gaussian dropout.
    """
    if plan is None:
        g = torch.empty_like(x).normal_(generator=gen)
        return x * g.mul_(math.sqrt(p / q)).add_(1.0)
    s, t, v = plan
    keep = torch.rand(x.shape, generator=gen, dtype=x.dtype) < q
    return torch.where(keep, x * s + t, v.expand_as(x))


class _UnitSums:
    """Per-column power sums of ``v - center`` in float64."""

    def __init__(self, center: Tensor) -> None:
        self.center = center
        self.sums = torch.zeros(4, center.numel(), dtype=torch.float64)
        self.n = 0

    def add(self, v: Tensor) -> None:
        d = v - self.center
        d2 = d * d
        self.sums += torch.stack(
            (d.sum(0), d2.sum(0), (d2 * d).sum(0), (d2 * d2).sum(0))
        )
        self.n += v.shape[0]

    def result(self, exact_mean: Tensor, exact_std: Tensor) -> list[Measured]:
        cols = self.sums.T.tolist()
        return [
            _measured(cols[i], self.n, c, m, s)
            for i, (c, m, s) in enumerate(
                zip(
                    self.center.tolist(),
                    exact_mean.tolist(),
                    exact_std.tolist(),
                    strict=True,
                )
            )
        ]


@dataclass(frozen=True)
class LinearSimulation:
    """Measured train and eval moments of every unit of ``z = W y + bias``."""

    exact: LinearMoments
    n_samples: int
    seed: int
    train: list[Measured]
    eval: list[Measured]

    def as_dict(self) -> dict[str, object]:
        return {
            "scaling": self.exact.scaling,
            "p": self.exact.p,
            "n_samples": self.n_samples,
            "seed": self.seed,
            "train": [m.as_dict() for m in self.train],
            "eval": [m.as_dict() for m in self.eval],
            "notes": list(self.exact.notes),
        }


def simulate_linear(
    weight: Tensor | nn.Linear,
    p: float | None = None,
    *,
    keep_prob: float | None = None,
    n_samples: int,
    bias: Tensor | float | None = None,
    mean: float | Sequence[float] | Tensor | None = None,
    std: float | Sequence[float] | Tensor | None = None,
    input: InputLike | None = None,
    scaling: ScalingLike = "inverted",
    seed: int = 0,
    batch_size: int = 4096,
) -> LinearSimulation:
    """Monte Carlo of :func:`dropscale.moments.linear_moments`.

    ``n_samples`` input vectors are drawn (independent units, normal when
    given per-input ``mean``/``std``, else the law of ``input``), passed
    through the rule with an element-wise mask and the layer, in float64;
    every output unit's mean and std are measured in training and at
    inference.
    """
    p = resolve_p(p, keep_prob)
    seed = _check_seed(seed)
    n_samples = _check_n("n_samples", n_samples, 2)
    batch_size = _check_n("batch_size", batch_size, 1)
    exact = linear_moments(
        weight, p, bias=bias, mean=mean, std=std, input=input, scaling=scaling
    )
    rule = _resolve_rule(scaling)
    w, bvec = _weight_and_bias(weight, bias)
    n_in, q = w.shape[1], 1.0 - p
    per_input = input is None and (
        isinstance(mean, Tensor | Sequence) or isinstance(std, Tensor | Sequence)
    )
    if per_input:
        mus = torch.as_tensor(0.0 if mean is None else mean, dtype=torch.float64)
        sds = torch.as_tensor(1.0 if std is None else std, dtype=torch.float64)
        mus, sds = mus.reshape(-1).expand(n_in), sds.reshape(-1).expand(n_in)
        dist = None
    else:
        dist = resolve_input(input, mean=mean, std=std)  # type: ignore[arg-type]
        mus = torch.full((n_in,), input_mean(dist), dtype=torch.float64)
        sds = torch.full((n_in,), math.sqrt(dist.var), dtype=torch.float64)
    units = [
        _unit_moments(rule, p, mu, sd * sd, standardised=False)
        for mu, sd in zip(mus.tolist(), sds.tolist(), strict=True)
    ]
    plan = None
    if units[0].train_map is not None:
        plan = tuple(
            torch.tensor([u.train_map[i] for u in units], dtype=torch.float64)
            for i in range(3)
        )
    e = torch.tensor([u.eval_scale for u in units], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    acc_t, acc_e = _UnitSums(exact.train_mean), _UnitSums(exact.eval_mean)
    left = n_samples
    while left > 0:
        k = min(batch_size, left)
        x = torch.empty(k, n_in, dtype=torch.float64)
        if dist is None:
            x.normal_(generator=gen).mul_(sds).add_(mus)
        else:
            _draw_centered(dist, x, 0.0, gen)
        acc_t.add(_train_output(x, q, p, plan, gen) @ w.T + bvec)
        acc_e.add((x * e) @ w.T + bvec)
        left -= k
    return LinearSimulation(
        exact=exact,
        n_samples=n_samples,
        seed=seed,
        train=acc_t.result(exact.train_mean, exact.train_std),
        eval=acc_e.result(exact.eval_mean, exact.eval_std),
    )


# ---------------------------------------------------------------- BatchNorm


@dataclass(frozen=True)
class BatchNormSimulation:
    """A real ``nn.BatchNorm1d`` trained next to dropout, then evaluated.

    ``running_var`` is the BatchNorm's own buffer after training (a plain
    average of unbiased batch variances, ``momentum=None``);
    ``pre_bn_train`` the measured training activation at the BatchNorm's
    input (its std squared is what ``running_var`` estimates), and
    ``eval_out`` the final inference output, whose standard errors include
    those of the running statistics. ``train_out`` is normalised by each
    batch's own statistics, so its std is 1 up to ``eps`` almost by
    construction and its interval means little.
    """

    exact: BatchNormShift
    n_samples: int
    seed: int
    running_mean: float
    running_var: float
    pre_bn_train: Measured
    train_out: Measured
    eval_out: Measured

    def as_dict(self) -> dict[str, object]:
        return {
            "exact": self.exact.as_dict(),
            "n_samples": self.n_samples,
            "seed": self.seed,
            "running_mean": self.running_mean,
            "running_var": self.running_var,
            "pre_bn_train": self.pre_bn_train.as_dict(),
            "train_out": self.train_out.as_dict(),
            "eval_out": self.eval_out.as_dict(),
        }


def simulate_batchnorm(
    p: float | None = None,
    *,
    keep_prob: float | None = None,
    n_samples: int,
    mean: float | None = None,
    std: float | None = None,
    input: InputLike | None = None,
    scaling: ScalingLike = "inverted",
    order: str = "dropout-bn",
    eps: float = 1e-5,
    seed: int = 0,
    batch_size: int = 4096,
) -> BatchNormSimulation:
    """Monte Carlo of :func:`dropscale.moments.batchnorm_shift` with ``nn.BatchNorm1d``.

    Training: ``n_samples`` values in batches of ``batch_size`` go through
    the rule (element-wise mask) and a BatchNorm in training mode, in the
    given ``order``. Inference: ``n_samples`` fresh values go through the
    rule's inference map and the BatchNorm in eval mode.
    """
    p = resolve_p(p, keep_prob)
    seed = _check_seed(seed)
    n_samples = _check_n("n_samples", n_samples, 2)
    batch_size = _check_n("batch_size", batch_size, 2)
    if not eps > 0.0:
        raise ValueError(
            f"eps: nn.BatchNorm1d needs eps > 0 in training, got {eps!r}; use "
            "1e-5 (its default), or batchnorm_shift(eps=0) for the limit"
        )
    exact = batchnorm_shift(
        p, mean=mean, std=std, input=input, scaling=scaling, order=order, eps=eps
    )
    rule = _resolve_rule(scaling)
    dist = resolve_input(input, mean=mean, std=std)
    mu, var, q = input_mean(dist), dist.var, 1.0 - p
    if order == "dropout-bn":
        unit = _unit_moments(rule, p, mu, var, standardised=False)
        pre_mean, pre_std = exact.running_mean, math.sqrt(exact.running_var)
    else:
        z_var = var / (var + eps)
        unit = _unit_moments(rule, p, 0.0, z_var, standardised=False)
        pre_mean, pre_std = mu, math.sqrt(var)
    plan = None
    if unit.train_map is not None:
        plan = tuple(torch.tensor(v, dtype=torch.float64) for v in unit.train_map)
    bn = nn.BatchNorm1d(1, eps=eps, momentum=None, affine=False, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)

    def draw(k: int) -> Tensor:
        return _draw_centered(dist, torch.empty(k, 1, dtype=torch.float64), 0.0, gen)

    acc_pre = _UnitSums(torch.tensor([pre_mean], dtype=torch.float64))
    acc_t = _UnitSums(torch.tensor([exact.train_out_mean], dtype=torch.float64))
    acc_e = _UnitSums(torch.tensor([exact.eval_out_mean], dtype=torch.float64))
    with torch.no_grad():
        for phase in ("train", "eval"):
            bn.train(phase == "train")
            left = n_samples
            while left > 0:
                k = min(batch_size, left)
                if phase == "train" and k < 2:
                    break  # BatchNorm cannot train on a batch of one
                x = draw(k)
                if phase == "train" and order == "dropout-bn":
                    pre = _train_output(x, q, p, plan, gen)
                    acc_pre.add(pre)
                    acc_t.add(bn(pre))
                elif phase == "train":
                    acc_pre.add(x)
                    acc_t.add(_train_output(bn(x), q, p, plan, gen))
                elif order == "dropout-bn":
                    acc_e.add(bn(x * unit.eval_scale))
                else:
                    acc_e.add(bn(x) * unit.eval_scale)
                left -= k

    def one(acc: _UnitSums, m: float, s: float) -> Measured:
        return acc.result(torch.tensor([m]), torch.tensor([s]))[0]

    pre = one(acc_pre, pre_mean, pre_std)
    out = one(acc_e, exact.eval_out_mean, exact.eval_out_std)
    if order == "dropout-bn":
        # The inference output is normalised by the running statistics, which
        # were themselves measured on the training sample: their error adds
        # (independent samples) to the eval sample's own, by the delta method.
        rel_sd = pre.se_std / pre.std if pre.std else 0.0
        out = Measured(
            mean=out.mean,
            std=out.std,
            se_mean=math.hypot(out.se_mean, pre.se_mean / math.sqrt(pre.std**2 + eps)),
            se_std=math.hypot(out.se_std, out.std * rel_sd),
            exact_mean=out.exact_mean,
            exact_std=out.exact_std,
        )
    return BatchNormSimulation(
        exact=exact,
        n_samples=n_samples,
        seed=seed,
        running_mean=float(bn.running_mean.item()),
        running_var=float(bn.running_var.item()),
        pre_bn_train=pre,
        train_out=one(acc_t, exact.train_out_mean, exact.train_out_std),
        eval_out=out,
    )
