"""functional.dropout and functional.dropout_mask: edge cases in every convention,
argument checks, reproducibility, shared masks, and seeded Monte-Carlo checks of
the kept fraction, output mean and output variance against exact values.

Monte-Carlo tolerances are 5 standard errors of the statistic, derived from its
exact variance at the sample size used: a false alarm about 5.7e-7 per check
under the normal approximation (n >= 2^18 draws, where it holds well); about
110 such checks, so about 6e-5 for the whole file. Seeds are fixed, so a run is
repeatable.
"""

import math

import pytest
import torch

from dropscale import functional as F

CONVENTIONS = ["inverted", "classic", "variance", "none", (2.0, 0.5)]
NAMED = ["inverted", "classic", "variance", "none"]
Z = 5.0

# Training factor a(q) and eval factor b(q) from DESIGN.md, written out here so the
# expected values do not come from the code under test.
A = {
    "inverted": lambda q: 1 / q,
    "classic": lambda q: 1.0,
    "variance": lambda q: q**-0.5,
    "none": lambda q: 1.0,
}
B = {
    "inverted": lambda q: 1.0,
    "classic": lambda q: q,
    "variance": lambda q: 1.0,
    "none": lambda q: 1.0,
}


def factors(scaling, q):
    if isinstance(scaling, tuple):
        return scaling
    return A[scaling](q), B[scaling](q)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def ids(scaling):
    return scaling if isinstance(scaling, str) else f"custom{scaling}"


every_convention = pytest.mark.parametrize("scaling", CONVENTIONS, ids=ids)


# ------------------------------------------------------------------ p = 0, p = 1


@every_convention
@pytest.mark.parametrize("training", [True, False])
def test_p_zero_returns_x_itself(scaling, training):
    x = torch.randn(4, 5)
    assert F.dropout(x, 0.0, scaling=scaling, training=training) is x
    assert F.dropout(x, keep_prob=1.0, scaling=scaling, training=training) is x


@every_convention
def test_p_one_gives_exact_zeros_and_zero_gradient_even_for_inf(scaling):
    x = torch.tensor([math.inf, -math.inf, 1.0, -2.5, 0.0, 1e38], requires_grad=True)
    y = F.dropout(x, 1.0, scaling=scaling, training=True)
    assert torch.equal(y, torch.zeros(6))
    assert not y.isnan().any()
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros(6))
    y2 = F.dropout(x, keep_prob=0.0, scaling=scaling, training=True)
    assert torch.equal(y2, torch.zeros(6))


@every_convention
def test_p_one_mask_is_all_zeros(scaling):
    m = F.dropout_mask(torch.ones(1), (3, 4), 1.0, scaling=scaling)
    assert torch.equal(m, torch.zeros(3, 4))


def test_classic_at_p_one_in_eval_gives_zeros_not_nan_for_inf():
    x = torch.tensor([math.inf, -math.inf, 3.0], requires_grad=True)
    y = F.dropout(x, 1.0, scaling="classic", training=False)
    assert torch.equal(y, torch.zeros(3))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros(3))


@pytest.mark.parametrize("scaling", ["inverted", "variance", "none"])
def test_eval_at_p_one_applies_b_of_zero_which_is_one(scaling):
    x = torch.tensor([math.inf, 3.0])
    assert torch.equal(F.dropout(x, 1.0, scaling=scaling, training=False), x)


# ------------------------------------------------------------ p and keep_prob


@pytest.mark.parametrize("bad", [-0.1, 1.5, -1e-9, 1 + 1e-9, math.nan, math.inf])
@pytest.mark.parametrize("scaling", NAMED)
def test_p_out_of_range_is_a_value_error_naming_the_value(bad, scaling):
    x = torch.ones(3)
    for training in (True, False):
        with pytest.raises(ValueError, match=rf"p must be in \[0, 1\], got {bad!r}"):
            F.dropout(x, bad, scaling=scaling, training=training)
    with pytest.raises(ValueError, match=rf"got {bad!r}"):
        F.dropout_mask(x, (3,), bad, scaling=scaling)
    with pytest.raises(
        ValueError, match=rf"keep_prob must be in \[0, 1\], got {bad!r}"
    ):
        F.dropout(x, keep_prob=bad, scaling=scaling, training=True)


def test_p_error_explains_which_probability_p_is():
    with pytest.raises(ValueError, match="keep_prob="):
        F.dropout(torch.ones(2), 1.5, training=True)


@pytest.mark.parametrize("bad", ["0.5", True, None, [0.5], torch.tensor([0.1, 0.2])])
def test_p_that_is_not_a_number_is_a_type_error(bad):
    kwargs = {} if bad is None else {"keep_prob": 0.5}
    with pytest.raises(TypeError):
        F.dropout(torch.ones(2), bad, training=True, **kwargs)


def test_p_as_one_element_tensor_is_accepted():
    x = torch.randn(100)
    y1 = F.dropout(x, torch.tensor(0.3), training=True, generator=gen(1))
    y2 = F.dropout(x, 0.3, training=True, generator=gen(1))
    assert torch.equal(y1, y2)


@every_convention
def test_keep_prob_is_the_alternative_spelling(scaling):
    x = torch.randn(1000)
    y_p = F.dropout(x, 0.25, scaling=scaling, training=True, generator=gen(3))
    y_q = F.dropout(x, keep_prob=0.75, scaling=scaling, training=True, generator=gen(3))
    assert torch.equal(y_p, y_q)
    m_p = F.dropout_mask(x, (50,), 0.25, scaling=scaling, generator=gen(4))
    m_q = F.dropout_mask(x, (50,), keep_prob=0.75, scaling=scaling, generator=gen(4))
    assert torch.equal(m_p, m_q)
    e_p = F.dropout(x, 0.25, scaling=scaling, training=False)
    e_q = F.dropout(x, keep_prob=0.75, scaling=scaling, training=False)
    assert torch.equal(e_p, e_q)


def test_both_p_and_keep_prob_is_a_type_error():
    with pytest.raises(TypeError, match="not both"):
        F.dropout(torch.ones(2), 0.5, keep_prob=0.5, training=True)
    with pytest.raises(TypeError, match="not both"):
        F.dropout_mask(torch.ones(2), (2,), 0.5, keep_prob=0.5)


def test_neither_p_nor_keep_prob_is_a_type_error():
    with pytest.raises(TypeError, match="not neither"):
        F.dropout(torch.ones(2), training=True)
    with pytest.raises(TypeError, match="not neither"):
        F.dropout_mask(torch.ones(2), (2,))


def test_training_is_required():
    with pytest.raises(TypeError, match="training"):
        F.dropout(torch.ones(2), 0.5)


@pytest.mark.parametrize("bad", [1, 0, "yes", None])
def test_training_must_be_a_bool(bad):
    with pytest.raises(TypeError, match="training must be True or False"):
        F.dropout(torch.ones(2), 0.5, training=bad)


def test_unknown_scaling_is_a_value_error():
    with pytest.raises(ValueError, match="valid names"):
        F.dropout(torch.ones(2), 0.5, scaling="sqrt", training=True)
    with pytest.raises(ValueError, match="valid names"):
        F.dropout_mask(torch.ones(2), (2,), 0.5, scaling="sqrt")


# ------------------------------------------------------------------ dtypes, shapes


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
@every_convention
def test_integer_and_bool_tensors(dtype, scaling):
    x = torch.ones(4, dtype=dtype)
    with pytest.raises(TypeError, match=str(dtype)):
        F.dropout(x, 0.5, scaling=scaling, training=True)
    with pytest.raises(TypeError, match=str(dtype)):
        F.dropout_mask(x, (4,), 0.5, scaling=scaling)
    # Dropout does not act: the tensor comes back unchanged.
    assert F.dropout(x, 0.0, scaling=scaling, training=True) is x
    for p in (0.0, 0.5, 1.0):
        assert F.dropout(x, p, scaling=scaling, training=False) is x


@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0, 4)])
@every_convention
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_empty_tensor_comes_back_empty_with_its_shape(shape, scaling, training, p):
    x = torch.empty(shape)
    y = F.dropout(x, p, scaling=scaling, training=training)
    assert y.shape == shape
    assert y.dtype == x.dtype
    m = F.dropout_mask(x, shape, p, scaling=scaling)
    assert m.shape == shape


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@every_convention
def test_output_and_mask_keep_the_floating_dtype(dtype, scaling):
    x = torch.ones(64, dtype=dtype)
    assert F.dropout(x, 0.3, scaling=scaling, training=True).dtype == dtype
    assert F.dropout(x, 0.3, scaling=scaling, training=False).dtype == dtype
    assert F.dropout_mask(x, (8, 8), 0.3, scaling=scaling).dtype == dtype


def test_mask_and_output_follow_xs_device():
    x = torch.empty(4, 6, device="meta")
    assert F.dropout_mask(x, (4, 1), 0.5).device.type == "meta"
    assert F.dropout(x, 0.5, training=True).device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mask_and_output_on_cuda():
    x = torch.randn(8, 8, device="cuda")
    assert F.dropout_mask(x, (8, 1), 0.5).device == x.device
    assert F.dropout(x, 0.5, training=True).device == x.device


def test_non_contiguous_input_keeps_its_shape():
    x = torch.randn(6, 4).t()
    y = F.dropout(x, 0.5, training=True, generator=gen(0))
    assert y.shape == (4, 6)
    kept = y != 0
    assert torch.equal(y[kept], 2 * x[kept])


# ------------------------------------------------------------- values, gradient


@every_convention
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_training_values_are_zero_or_a_times_x(scaling, p):
    q = F.effective_keep_prob(1 - p)
    a, _ = factors(scaling, q)
    x = torch.rand(2000, dtype=torch.float64) + 0.5  # no zeros in x
    y = F.dropout(x, p, scaling=scaling, training=True, generator=gen(5))
    kept = y != 0
    assert 0 < kept.sum() < 2000
    torch.testing.assert_close(y[kept], a * x[kept], rtol=1e-12, atol=0)


@every_convention
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_gradient_is_the_mask_times_a(scaling, p):
    q = F.effective_keep_prob(1 - p)
    a, _ = factors(scaling, q)
    x = torch.ones(500, dtype=torch.float64, requires_grad=True)
    y = F.dropout(x, p, scaling=scaling, training=True, generator=gen(6))
    y.sum().backward()
    # With x = 1 the output is a * m itself.
    assert torch.equal(x.grad, y.detach())
    assert torch.unique(x.grad).tolist() == pytest.approx([0.0, a], rel=1e-12)


@every_convention
@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9])
def test_eval_applies_b(scaling, p):
    # b is taken at the keep probability the sampler really uses, so the eval
    # mean b mu equals the training mean a q mu of the masks really drawn.
    _, b = factors(scaling, F.effective_keep_prob(1 - p))
    x = torch.randn(100, dtype=torch.float64)
    y = F.dropout(x, p, scaling=scaling, training=False)
    torch.testing.assert_close(y, b * x, rtol=1e-15, atol=0)


def test_eval_is_deterministic_and_draws_no_random_numbers():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    x = torch.randn(10)
    torch.set_rng_state(state)
    F.dropout(x, 0.5, scaling="classic", training=False)
    assert torch.equal(torch.get_rng_state(), state)


def test_training_inf_input_gives_inf_or_zero_and_no_nan():
    x = torch.full((1000,), math.inf)
    for scaling in CONVENTIONS:
        y = F.dropout(x, 0.5, scaling=scaling, training=True, generator=gen(2))
        assert not y.isnan().any()
        assert set(y.unique().tolist()) == {0.0, math.inf}


# ----------------------------------------------------------- reproducibility


@every_convention
def test_generator_makes_masks_reproducible(scaling):
    x = torch.randn(4096)
    y1 = F.dropout(x, 0.5, scaling=scaling, training=True, generator=gen(7))
    y2 = F.dropout(x, 0.5, scaling=scaling, training=True, generator=gen(7))
    y3 = F.dropout(x, 0.5, scaling=scaling, training=True, generator=gen(8))
    assert torch.equal(y1, y2)
    # Two independent masks of 4096 fair coins agree everywhere with prob 2^-4096.
    assert not torch.equal(y1 != 0, y3 != 0)
    m1 = F.dropout_mask(x, (64, 64), 0.5, scaling=scaling, generator=gen(9))
    m2 = F.dropout_mask(x, (64, 64), 0.5, scaling=scaling, generator=gen(9))
    m3 = F.dropout_mask(x, (64, 64), 0.5, scaling=scaling, generator=gen(10))
    assert torch.equal(m1, m2)
    assert not torch.equal(m1, m3)


def test_generator_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    F.dropout(torch.randn(100), 0.5, training=True, generator=gen(0))
    # torch.randn above used the global state; restore and compare after dropout.
    torch.set_rng_state(state)
    F.dropout(torch.ones(100), 0.5, training=True, generator=gen(0))
    F.dropout_mask(torch.ones(1), (100,), 0.5, generator=gen(0))
    assert torch.equal(torch.get_rng_state(), state)


def test_without_generator_the_global_seed_makes_masks_reproducible():
    x = torch.randn(1000)
    torch.manual_seed(11)
    y1 = F.dropout(x, 0.5, training=True)
    torch.manual_seed(11)
    y2 = F.dropout(x, 0.5, training=True)
    assert torch.equal(y1, y2)


# ------------------------------------------------------------------ dropout_mask


@every_convention
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_mask_values_are_zero_or_a(scaling, p):
    q = F.effective_keep_prob(1 - p)
    a, _ = factors(scaling, q)
    x = torch.zeros(1, dtype=torch.float64)
    m = F.dropout_mask(x, (100, 20), p, scaling=scaling, generator=gen(12))
    assert m.shape == (100, 20)
    assert m.unique().tolist() == pytest.approx([0.0, a], rel=1e-12)


@every_convention
def test_mask_at_p_zero_is_the_identity_like_dropout(scaling):
    # p = 0 disables dropout in every convention, a custom pair included, so
    # the mask must agree with dropout(x, 0) == x rather than carry a(q).
    x = torch.randn(3, 2)
    m = F.dropout_mask(x, [3, 2], 0.0, scaling=scaling)
    assert torch.equal(m, torch.ones(3, 2))
    assert torch.equal(x * m, F.dropout(x, 0.0, scaling=scaling, training=True))


def test_mask_accepts_torch_size():
    x = torch.randn(2, 3, 4)
    m = F.dropout_mask(x, torch.Size([2, 1, 4]), 0.5, generator=gen(0))
    assert m.shape == (2, 1, 4)


@every_convention
def test_mask_broadcast_shares_one_mask_over_dim_1(scaling):
    batch, time, hidden = 8, 30, 16
    x = torch.rand(batch, time, hidden, dtype=torch.float64) + 0.5
    m = F.dropout_mask(x, (batch, 1, hidden), 0.4, scaling=scaling, generator=gen(13))
    y = x * m
    ratio = y / x  # the mask itself (to rounding), repeated along dim 1
    torch.testing.assert_close(ratio, ratio[:, :1, :].expand_as(ratio))
    assert torch.equal(y == 0, (y[:, :1, :] == 0).expand_as(y))
    kept = (m != 0).sum().item()
    assert 0 < kept < batch * hidden


# -------------------------------------------------------------------- shared_dims


@pytest.mark.parametrize("dims", [(1,), (-2,), (0, 2), (-3, -1)])
def test_shared_dims_share_one_decision(dims):
    x = torch.rand(6, 7, 8, dtype=torch.float64) + 0.5
    y = F.dropout(x, 0.5, training=True, generator=gen(14), shared_dims=dims)
    mask = y / x
    for d in dims:
        first = mask.narrow(d, 0, 1)
        torch.testing.assert_close(mask, first.expand_as(mask))
    assert torch.equal((mask != 0).to(x.dtype) * 2, mask)


def test_shared_dims_negative_and_positive_agree():
    x = torch.randn(4, 5, 6)
    y_pos = F.dropout(x, 0.3, training=True, generator=gen(15), shared_dims=(1,))
    y_neg = F.dropout(x, 0.3, training=True, generator=gen(15), shared_dims=(-2,))
    assert torch.equal(y_pos, y_neg)


@pytest.mark.parametrize("dim", [3, 10, -4])
def test_shared_dim_out_of_range_is_a_value_error(dim):
    with pytest.raises(ValueError, match=rf"dim {dim} is out of range.*3 dims"):
        F.dropout(torch.ones(2, 3, 4), 0.5, training=True, shared_dims=(dim,))


@pytest.mark.parametrize("dim", [1.0, "1", True])
def test_shared_dim_that_is_not_an_int_is_a_type_error(dim):
    with pytest.raises(TypeError, match="shared_dims"):
        F.dropout(torch.ones(2, 3), 0.5, training=True, shared_dims=(dim,))


# ----------------------------------------------------------------- Monte Carlo


def exact_moments(a, q, mu, sigma):
    """Mean, variance and fourth central moment of y = a m x with m ~ Bernoulli(q)
    and x ~ N(mu, sigma^2), from the raw moments E[y^k] = a^k q E[x^k]."""
    ex = [
        1.0,
        mu,
        mu**2 + sigma**2,
        mu**3 + 3 * mu * sigma**2,
        mu**4 + 6 * mu**2 * sigma**2 + 3 * sigma**4,
    ]
    ey = [a**k * (q if k else 1.0) * ex[k] for k in range(5)]
    m = ey[1]
    var = ey[2] - m**2
    m4 = ey[4] - 4 * m * ey[3] + 6 * m**2 * ey[2] - 3 * m**4
    return m, var, m4


def test_exact_moments_helper_matches_design_formulas():
    # Var[y] = a^2 q (sigma^2 + (1 - q) mu^2) from DESIGN.md.
    m, var, _ = exact_moments(2.0, 0.5, 1.5, 0.7)
    assert m == pytest.approx(2.0 * 0.5 * 1.5)
    assert var == pytest.approx(4.0 * 0.5 * (0.49 + 0.5 * 2.25))


N_MC = 1 << 18


@every_convention
@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
@pytest.mark.parametrize(("mu", "sigma"), [(0.0, 1.0), (1.5, 0.5)])
def test_monte_carlo_kept_fraction_mean_and_variance(scaling, p, mu, sigma):
    seed = int(p * 1000) + 7 * int(mu * 10)
    x = torch.randn(N_MC, generator=gen(seed), dtype=torch.float64) * sigma + mu
    y = F.dropout(x, p, scaling=scaling, training=True, generator=gen(seed + 1))
    q = F.effective_keep_prob(1 - p)
    a, _ = factors(scaling, q)
    n = N_MC

    kept = (y != 0).double().mean().item()
    assert abs(kept - q) <= Z * math.sqrt(q * (1 - q) / n)

    mean, var, m4 = exact_moments(a, q, mu, sigma)
    assert abs(y.mean().item() - mean) <= Z * math.sqrt(var / n)
    # Var(sample variance) = (m4 - var^2) / n to leading order.
    assert abs(y.var().item() - var) <= Z * math.sqrt((m4 - var**2) / n)


@every_convention
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_monte_carlo_mask_fraction_and_mean(scaling, p):
    q = F.effective_keep_prob(1 - p)
    a, _ = factors(scaling, q)
    m = F.dropout_mask(torch.ones(1), (512, 512), p, scaling=scaling, generator=gen(99))
    n = m.numel()
    kept = (m != 0).double().mean().item()
    assert abs(kept - q) <= Z * math.sqrt(q * (1 - q) / n)
    # Each entry is a * Bernoulli(q): mean a q, variance a^2 q (1 - q).
    assert abs(m.double().mean().item() - a * q) <= Z * a * math.sqrt(q * (1 - q) / n)


def test_monte_carlo_shared_dims_fraction_counts_decisions_not_elements():
    # 4096 decisions (dims 0 and 2), each repeated 64 times along dim 1.
    x = torch.ones(64, 64, 64)
    y = F.dropout(x, 0.3, training=True, generator=gen(21), shared_dims=(1,))
    decisions = y[:, 0, :]
    q = F.effective_keep_prob(0.7)
    n = decisions.numel()
    kept = (decisions != 0).double().mean().item()
    assert abs(kept - q) <= Z * math.sqrt(q * (1 - q) / n)


# ------------------------------------------- p whose q_eff is 0, a = 0, dtypes

# 1 - p = 1e-11 is below 2^-33: the sampler's threshold round(q 2^32) is 0.
P_ALL = 1 - 1e-11


def test_drops_all_is_p_one_or_q_eff_zero():
    assert F.effective_keep_prob(1 - P_ALL) == 0.0
    assert F.drops_all(1.0) and F.drops_all(P_ALL)
    assert not F.drops_all(1 - 2.0**-31)  # q_eff = 2^-31 > 0
    assert not F.drops_all(0.5)


@every_convention
def test_q_eff_zero_acts_like_p_one(scaling):
    x = torch.tensor([math.inf, -math.inf, 1.0, -2.5, 0.0], requires_grad=True)
    y = F.dropout(x, P_ALL, scaling=scaling, training=True)
    assert torch.equal(y, torch.zeros(5))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros(5))
    m = F.dropout_mask(torch.ones(1), (3, 4), P_ALL, scaling=scaling)
    assert torch.equal(m, torch.zeros(3, 4))
    # eval: b at q_eff = 0, the same as at p = 1 (0 for classic, else b(0))
    ev, ev1 = (F.dropout(x, pp, scaling=scaling, training=False) for pp in (P_ALL, 1))
    assert torch.equal(ev, ev1)


def test_custom_a_zero_gives_exact_zeros_even_for_inf():
    x = torch.tensor([math.inf, -math.inf, 2.0] * 100, requires_grad=True)
    for p in (0.3, 0.9):
        y = F.dropout(x, p, scaling=(0.0, 1.0), training=True, generator=gen(1))
        assert torch.equal(y, torch.zeros(300)), "0 * inf must not give NaN"
        y.sum().backward()
        assert torch.equal(x.grad, torch.zeros(300))
        m = F.dropout_mask(x, (300,), p, scaling=(0.0, 1.0))
        assert torch.equal(m, torch.zeros(300))


@pytest.mark.parametrize(
    ("size", "error", "needle"),
    [
        ((-1,), ValueError, "got -1"),
        ((2, -3), ValueError, "got -3"),
        ((2.7,), TypeError, "got 2.7"),
        (("3",), TypeError, "got '3'"),
        ((True,), TypeError, "got True"),
        (3, TypeError, "got 3"),
    ],
)
def test_mask_size_must_be_non_negative_integers(size, error, needle):
    with pytest.raises(error, match=needle):
        F.dropout_mask(torch.ones(1), size, 0.5)


def test_mask_size_accepts_zero_and_integer_tensors():
    assert F.dropout_mask(torch.ones(1), (0, 2), 0.5).shape == (0, 2)
    assert F.dropout_mask(torch.ones(1), (torch.tensor(2),), 0.5).shape == (2,)


def test_float16_factor_that_overflows_is_an_error_naming_p_and_dtype():
    # q_eff ~ 1e-5, so a = 1 / q_eff ~ 1e5 > 65504, float16's largest value.
    x = torch.ones(1000, dtype=torch.float16)
    with pytest.raises(ValueError, match=r"p=0\.99999.*float16.*float32"):
        F.dropout(x, 0.99999, training=True)
    with pytest.raises(ValueError, match=r"p=0\.99999.*float16.*float32"):
        F.dropout_mask(x, (10,), 0.99999)
    with pytest.raises(ValueError, match="inference factor"):
        F.dropout(x, 0.5, scaling=(1.0, 1e6), training=False)
    # a = 1 / q_eff ~ 1e4 fits: no error, finite values a or 0
    y = F.dropout(x, 0.9999, training=True, generator=gen(2))
    assert bool(torch.isfinite(y).all())
    assert F.dropout(x.float(), 0.99999, training=True).dtype == torch.float32


def test_structured_forms_follow_the_q_eff_zero_rule():
    from dropscale.structured import EmbeddingDropout, RNNDropout, WeightDropout

    x = torch.tensor([math.inf, 1.0]).repeat(2, 3, 1)
    assert torch.equal(RNNDropout(P_ALL)(x), torch.zeros(2, 3, 2))
    emb = torch.nn.Embedding(4, 3)
    out = EmbeddingDropout(emb, P_ALL)(torch.tensor([0, 3]))
    assert torch.equal(out, torch.zeros(2, 3))
    lin = torch.nn.Linear(3, 2)
    out = WeightDropout(lin, P_ALL, names="weight")(torch.ones(1, 3))
    assert torch.equal(out, lin.bias.detach().view(1, 2))
