"""The hash mask sampler behind every dropscale dropout (dropscale._sampler).

Statistical checks use fixed seeds and 5-sigma bounds: under the exact
distribution each check fails with probability about 6e-7 (two-sided normal
tail at 5 sigma), so a failure means a real bias, not bad luck.
"""

from __future__ import annotations

import math

import pytest
import torch

import dropscale
from dropscale import _sampler
from dropscale import functional as F

Z = 5.0  # false-alarm rate about 6e-7 per check
N = 1 << 20
M64 = (1 << 64) - 1


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_keep(i: int, seed: int, t: int) -> bool:
    """The mask's definition with Python integers, written from the module
    docstring independently of both implementations."""
    block, r = divmod(i, 2048)
    lane, offset = divmod(r, 1024)
    z = (seed + (1024 * block + offset) * 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    z ^= z >> 31
    return (z >> (32 * lane)) & 0xFFFFFFFF < t


# --- the definition, on every backend -------------------------------------


@pytest.mark.parametrize("q", [0.3, 0.5, 0.9])
def test_kernel_and_tensor_hash_match_the_definition(q):
    n = 3 * 2048 + 1029  # crosses block and lane boundaries, ragged tail
    g = gen(11)
    state = g.get_state()
    keep = F.keep_mask((n,), q, generator=g)
    g.set_state(state)
    seed = _sampler.draw_seed(g)
    t = _sampler.keep_threshold(q)
    by_tensor_ops = _sampler._keep_torch(n, seed, t, torch.device("cpu"))
    assert torch.equal(keep, by_tensor_ops)
    for i in [0, 1, 1023, 1024, 2047, 2048, 4095, 5000, n - 1]:
        assert bool(keep[i]) == reference_keep(i, seed, t), i


def test_mask_is_independent_of_the_thread_split(monkeypatch):
    n = 5 * 2048 + 17
    fixed = F.keep_mask((n,), 0.4, generator=gen(3))
    monkeypatch.setattr(_sampler, "_PARALLEL_MIN", 1)
    old = torch.get_num_threads()
    try:
        for threads in (2, 3):
            torch.set_num_threads(threads)
            split = F.keep_mask((n,), 0.4, generator=gen(3))
            assert torch.equal(split, fixed), threads
            x = torch.randn(n, dtype=torch.float64)
            ys = [
                F.dropout(x, 0.6, training=True, generator=gen(4)),
                _sampler.masked_scale(x, fixed, 2.5),
            ]
            torch.set_num_threads(1)
            assert torch.equal(
                ys[0], F.dropout(x, 0.6, training=True, generator=gen(4))
            )
            assert torch.equal(ys[1], _sampler.masked_scale(x, fixed, 2.5))
    finally:
        torch.set_num_threads(old)


def test_without_numba_the_masks_and_outputs_are_the_same(monkeypatch):
    x = torch.randn(7, 300, dtype=torch.float32)
    kwargs = dict(training=True, scaling="variance")
    with_kernels = F.dropout(x, 0.3, generator=gen(5), **kwargs)
    mask = F.keep_mask((9, 33), 0.7, generator=gen(6))
    monkeypatch.setattr(_sampler, "_get_kernels", lambda: None)
    assert torch.equal(F.dropout(x, 0.3, generator=gen(5), **kwargs), with_kernels)
    assert torch.equal(F.keep_mask((9, 33), 0.7, generator=gen(6)), mask)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_mask_equals_the_cpu_mask():
    cpu = F.keep_mask((4, 5000), 0.3, generator=gen(8))
    gpu = F.keep_mask((4, 5000), 0.3, device="cuda", generator=gen(8))
    assert torch.equal(gpu.cpu(), cpu)


# --- effective keep probability --------------------------------------------


@pytest.mark.parametrize("q", [0.0, 1e-12, 0.1, 1 / 3, 0.5, 0.75, 0.9, 1 - 1e-12, 1.0])
def test_q_eff_is_a_multiple_of_2_to_the_minus_32_within_half_a_step(q):
    q_eff = F.effective_keep_prob(q)
    steps = q_eff * 2**32
    assert steps == int(steps)
    assert abs(q_eff - q) <= 2**-33
    assert 0.0 <= q_eff <= 1.0


def test_dyadic_q_is_exact_and_factors_use_q_eff():
    assert F.effective_keep_prob(0.5) == 0.5
    assert F.effective_keep_prob(0.75) == 0.75
    q_eff = F.effective_keep_prob(0.9)
    assert q_eff == 3865470566 / 2**32  # round(0.9 * 2^32) = 3865470566
    x = torch.ones(4, dtype=torch.float64)
    classic_eval = F.dropout(x, 0.1, scaling="classic", training=False)
    assert torch.equal(classic_eval, torch.full((4,), q_eff, dtype=torch.float64))
    y = F.dropout(torch.ones(N // 16, dtype=torch.float64), 0.1, training=True)
    assert y.max().item() == 1.0 / q_eff


# --- distribution of the masks ----------------------------------------------


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_kept_fraction(q):
    keep = F.keep_mask((N,), q, generator=gen(int(q * 10)))
    q_eff = F.effective_keep_prob(q)
    sd = math.sqrt(q_eff * (1 - q_eff) / N)
    frac = keep.double().mean().item()
    assert abs(frac - q_eff) <= Z * sd, (frac, q_eff, sd)


def _lag_corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    a, b = a - a.mean(), b - b.mean()
    return (a * b).mean().item() / math.sqrt((a * a).mean().item() * (b * b).mean())


@pytest.mark.parametrize("lag", [1, 2, 1024, 2048])
def test_no_correlation_between_neighbours(lag):
    # lag 1024 pairs the two 32-bit lanes of one hash word; 2048 the same offset
    # in consecutive blocks. Under independence the sample correlation of n
    # pairs has standard deviation 1/sqrt(n).
    keep = F.keep_mask((N,), 0.5, generator=gen(21))
    r = _lag_corr(keep[:-lag], keep[lag:])
    assert abs(r) <= Z / math.sqrt(N - lag), r


def test_runs_of_keeps_and_drops():
    # Wald-Wolfowitz runs test: given n1 ones and n0 zeros the number of runs
    # has mean 1 + 2 n1 n0 / n and variance (mu - 1)(mu - 2) / (n - 1).
    keep = F.keep_mask((N,), 0.3, generator=gen(22))
    n1 = int(keep.sum())
    n0 = N - n1
    runs = 1 + int((keep[1:] != keep[:-1]).sum())
    mu = 1 + 2 * n1 * n0 / N
    sd = math.sqrt((mu - 1) * (mu - 2) / (N - 1))
    assert abs(runs - mu) <= Z * sd, (runs, mu, sd)


def test_different_seeds_and_successive_calls_give_independent_masks():
    q = 0.5
    a = F.keep_mask((N,), q, generator=gen(1))
    b = F.keep_mask((N,), q, generator=gen(2))
    g = gen(1)
    F.keep_mask((N,), q, generator=g)
    c = F.keep_mask((N,), q, generator=g)  # the next call on one generator
    for other in (b, c):
        agree = (a == other).double().mean().item()
        expected = q * q + (1 - q) * (1 - q)
        assert abs(agree - expected) <= Z * math.sqrt(expected * (1 - expected) / N)


def test_same_generator_state_same_mask_and_one_draw_per_call():
    g = gen(9)
    state = g.get_state()
    first = F.keep_mask((3, 1000), 0.4, generator=g)
    after_mask = g.get_state()
    g.set_state(state)
    assert torch.equal(F.keep_mask((3, 1000), 0.4, generator=g), first)
    g.set_state(state)
    _sampler.draw_seed(g)
    assert torch.equal(g.get_state(), after_mask)
    torch.manual_seed(4)
    default_a = F.keep_mask((1000,), 0.4)
    torch.manual_seed(4)
    assert torch.equal(F.keep_mask((1000,), 0.4), default_a)


def test_empty_and_degenerate_shapes():
    assert F.keep_mask((0, 5), 0.5).shape == (0, 5)
    assert F.keep_mask((), 0.5).dtype == torch.bool
    assert F.keep_mask((10,), 0.0).sum() == 0
    assert F.keep_mask((10,), 1.0).all()


# --- dropout outputs -------------------------------------------------------


@pytest.mark.parametrize("scaling", ["inverted", "classic", "variance"])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_output_mean_and_variance_match_the_exact_moments(scaling, p):
    mu, sigma = 1.0, 2.0
    x = torch.randn(N, dtype=torch.float64, generator=gen(30)) * sigma + mu
    y = F.dropout(x, p, scaling=scaling, training=True, generator=gen(31))
    q = F.effective_keep_prob(1 - p)
    a, _ = dropscale.get_scaling(scaling).factors(q)
    # Raw moments of x ~ N(mu, sigma^2); E[y^k] = a^k q E[x^k].
    ex = [1.0, mu, mu**2 + sigma**2, mu**3 + 3 * mu * sigma**2]
    ex.append(mu**4 + 6 * mu**2 * sigma**2 + 3 * sigma**4)
    ey = [1.0] + [a**k * q * ex[k] for k in range(1, 5)]
    mean = ey[1]
    var = ey[2] - mean**2
    assert var == pytest.approx(a**2 * q * (sigma**2 + (1 - q) * mu**2))
    central4 = ey[4] - 4 * ey[3] * mean + 6 * ey[2] * mean**2 - 3 * mean**4
    assert abs(y.mean().item() - mean) <= Z * math.sqrt(var / N)
    assert abs(y.var().item() - var) <= Z * math.sqrt((central4 - var**2) / N)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kept_values_are_x_times_a_and_dropped_are_exact_zeros(dtype):
    x = torch.randn(50_000, dtype=dtype, generator=gen(40))
    x[::97] = math.inf
    x[1::89] = math.nan
    p = 0.3
    y = F.dropout(x, p, training=True, generator=gen(41))
    keep = F.keep_mask(x.shape, 1 - p, generator=gen(41))
    a = 1 / F.effective_keep_prob(1 - p)
    assert torch.equal(y[~keep], torch.zeros_like(y[~keep]))
    torch.testing.assert_close(y[keep], x[keep] * a, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    x = torch.randn(N // 4, generator=gen(50)).to(dtype)
    assert F.dropout(x, 0.0, training=True) is x
    p = 0.3
    y = F.dropout(x, p, training=True, generator=gen(51))
    assert y.dtype == dtype
    keep = F.keep_mask(x.shape, 1 - p, generator=gen(51))
    n = x.numel()
    zero_frac = (~keep).double().mean().item()
    p_eff = 1 - F.effective_keep_prob(1 - p)
    assert abs(zero_frac - p_eff) <= Z * math.sqrt(p_eff * (1 - p_eff) / n)
    assert torch.equal(y[~keep], torch.zeros_like(y[~keep]))
    a = 1 / F.effective_keep_prob(1 - p)
    # x * a rounded once to the dtype: within half a unit in the last place of
    # the exact product, and equal to PyTorch's own scalar product.
    exact = x[keep].double() * a
    ulp = torch.finfo(dtype).eps * exact.abs().clamp_min(torch.finfo(dtype).tiny)
    assert ((y[keep].double() - exact).abs() <= ulp / 2 * 1.0001).all()
    assert torch.equal(y[keep], x[keep] * a)


def test_shared_dims_broadcast_one_decision():
    x = torch.randn(6, 4, 50, dtype=torch.float64)
    y = F.dropout(x, 0.5, training=True, generator=gen(60), shared_dims=(2,))
    keep = F.keep_mask((6, 4, 1), 0.5, generator=gen(60))
    assert torch.equal(y, torch.where(keep, x * 2.0, torch.zeros(())))


# --- backward --------------------------------------------------------------


def _saved_bytes(fn, x):
    sizes = []

    def pack(t):
        sizes.append(t.numel() * t.element_size() if t is not x else 0)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x)
    return out, sum(sizes)


@pytest.mark.parametrize(
    ("dtype", "shared", "per_element"),
    [(torch.float32, (), 0), (torch.float16, (), 1), (torch.float64, (1,), 1)],
)
def test_backward_saves_at_most_one_byte_per_element(dtype, shared, per_element):
    # The fused CPU path (float32/float64, unshared mask) keeps only the seed
    # and redraws the mask; the other paths keep the boolean mask.
    x = torch.randn(64, 300, dtype=dtype, requires_grad=True)
    y, saved = _saved_bytes(
        lambda t: F.dropout(
            t, 0.4, training=True, generator=gen(70), shared_dims=shared
        ),
        x,
    )
    assert saved == per_element * math.prod(F.mask_shape(x.shape, shared))
    g = torch.randn_like(y)
    y.backward(g)
    keep = F.keep_mask(F.mask_shape(x.shape, shared), 0.6, generator=gen(70))
    a = 1 / F.effective_keep_prob(0.6)
    assert torch.equal(x.grad, torch.where(keep, g * a, torch.zeros((), dtype=dtype)))


def test_gradcheck_and_second_derivative():
    x = torch.randn(3, 40, dtype=torch.float64, requires_grad=True)

    def fn(t):
        return F.dropout(t, 0.3, scaling="variance", training=True, generator=gen(80))

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_p_one_gives_exact_zeros_and_zero_grads_for_inf():
    x = torch.tensor([1.0, math.inf, -math.inf, 2.0], requires_grad=True)
    y = F.dropout(x, 1.0, training=True)
    y.sum().backward()
    assert torch.equal(y, torch.zeros(4))
    assert torch.equal(x.grad, torch.zeros(4))


def test_backward_of_a_broadcast_gradient_redraws_the_same_mask():
    # y.sum().backward() hands backward an expanded (stride-0) gradient.
    x = torch.randn(5000, requires_grad=True)
    F.dropout(x, 0.25, training=True, generator=gen(90)).sum().backward()
    keep = F.keep_mask(x.shape, 0.75, generator=gen(90))
    a = 1 / F.effective_keep_prob(0.75)
    assert torch.equal(x.grad, torch.where(keep, torch.full((), a), torch.zeros(())))
