"""Exact moments of every rule, input family, linear layer and BatchNorm.

Expected values are written out here from DESIGN.md's formulas (or derived by
hand in a comment), never taken from the code under test. Monte-Carlo checks
use an implementation the code does not share (torch's own alpha dropout) or
a direct sample, with a tolerance of 5 standard errors: a false alarm has
probability about 5.7e-7 per check.
"""

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dropscale.moments import (
    SELU_ALPHA,
    SELU_LAMBDA,
    Constant,
    Empirical,
    Normal,
    RectifiedNormal,
    Uniform,
    alpha_constants,
    batchnorm_shift,
    linear_moments,
    make_input,
    matched_factors,
    moments,
)

Z = 5.0  # tolerance in standard errors; two-sided false alarm ~5.7e-7
FACTORS = {  # DESIGN.md's table: (a(q), b(q))
    "inverted": lambda q: (1 / q, 1.0),
    "classic": lambda q: (1.0, q),
    "variance": lambda q: (q**-0.5, 1.0),
    "none": lambda q: (1.0, 1.0),
}
RULES = [*FACTORS, "alpha", "gaussian", "moment"]


# ------------------------------------------------------------ conventions


@pytest.mark.parametrize(("p", "std"), [(0.1, 1.0541), (0.25, 1.1547), (0.5, 1.4142)])
def test_design_checks_for_a_standard_normal_under_inverted(p, std):
    m = moments(p)
    assert m.train_mean == 0.0
    assert m.train_std == pytest.approx(std, abs=5e-5)
    assert m.train_std == pytest.approx(1 / math.sqrt(1 - p), rel=1e-14)
    assert (m.eval_mean, m.eval_std) == (0.0, 1.0)


@pytest.mark.parametrize("name", list(FACTORS))
@pytest.mark.parametrize(("p", "mu", "sigma"), [(0.3, 2.0, 0.5), (0.6, -1.5, 3.0)])
def test_conventions_follow_design_formulas(name, p, mu, sigma):
    q = 1 - p
    a, b = FACTORS[name](q)
    m = moments(p, mean=mu, std=sigma, scaling=name)
    train_var = a * a * q * (sigma**2 + (1 - q) * mu**2)
    assert m.train_mean == pytest.approx(a * q * mu, rel=1e-13)
    assert m.train_std == pytest.approx(math.sqrt(train_var), rel=1e-13)
    assert m.train_second == pytest.approx(train_var + (a * q * mu) ** 2, rel=1e-13)
    assert m.eval_mean == pytest.approx(b * mu, rel=1e-13)
    assert m.eval_std == pytest.approx(b * sigma, rel=1e-13)
    assert m.eval_second == pytest.approx(b * b * (sigma**2 + mu**2), rel=1e-13)
    assert m.mean_ratio == pytest.approx(b / (a * q), rel=1e-13)
    assert m.std_ratio == pytest.approx(b * sigma / math.sqrt(train_var), rel=1e-13)
    assert m.var_ratio == pytest.approx(b * b * sigma**2 / train_var, rel=1e-13)


def test_mean_ratios_of_the_design_table():
    q = 0.64
    assert moments(0.36, scaling="inverted").mean_ratio == pytest.approx(1.0)
    assert moments(0.36, scaling="classic").mean_ratio == pytest.approx(1.0)
    assert moments(0.36, scaling="variance").mean_ratio == pytest.approx(1 / 0.8)
    assert moments(0.36, scaling="none").mean_ratio == pytest.approx(1 / q)


def test_custom_pair_and_keep_prob_spelling():
    m = moments(keep_prob=0.8, mean=1.0, std=2.0, scaling=(2.0, 0.5))
    # a = 2, b = 0.5, q = 0.8: E = 2 * 0.8 * 1, Var = 4 * 0.8 * (4 + 0.2 * 1)
    assert m.p == pytest.approx(0.2)
    assert m.train_mean == pytest.approx(1.6)
    assert m.train_std == pytest.approx(math.sqrt(4 * 0.8 * 4.2))
    assert (m.eval_mean, m.eval_std) == (0.5, 1.0)


# ------------------------------------------------------------- other rules


def test_alpha_constants_match_design_at_half():
    c = alpha_constants(0.5)
    assert c["alpha_prime"] == pytest.approx(-1.7580993408473766, rel=1e-15)
    assert c["a"] == pytest.approx(0.8864, abs=5e-5)
    assert c["dropped_value"] == pytest.approx(-0.7792, abs=5e-5)
    # by hand: a = (q + al'^2 q p)^-1/2 with q = p = 1/2
    al = -SELU_LAMBDA * SELU_ALPHA
    assert c["a"] == pytest.approx((0.5 + al * al * 0.25) ** -0.5, rel=1e-15)
    assert c["b"] == pytest.approx(-c["a"] * al * 0.5, rel=1e-15)


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5, 0.9])
def test_alpha_keeps_a_standardised_input_standardised(p):
    m = moments(p, scaling="alpha")
    assert m.train_mean == pytest.approx(0.0, abs=1e-15)
    assert m.train_std == pytest.approx(1.0, rel=1e-13)
    assert m.notes == ()


def test_alpha_on_a_shifted_input_by_total_variance_and_says_so():
    p, mu, sigma = 0.3, 0.7, 1.4
    q = 1 - p
    al = -SELU_LAMBDA * SELU_ALPHA
    a = (q + al * al * q * p) ** -0.5
    b = -a * al * p
    kept_mean, kept_var = a * mu + b, a * a * sigma**2  # given m = 1
    drop_value = a * al + b  # given m = 0
    mean = q * kept_mean + p * drop_value
    var = q * kept_var + q * (kept_mean - mean) ** 2 + p * (drop_value - mean) ** 2
    m = moments(p, mean=mu, std=sigma, scaling="alpha")
    assert m.train_mean == pytest.approx(mean, rel=1e-13)
    assert m.train_std == pytest.approx(math.sqrt(var), rel=1e-13)
    assert (m.eval_mean, m.eval_std) == (mu, sigma)
    assert any("standardised" in n for n in m.notes)


def test_alpha_moments_agree_with_torch_alpha_dropout():
    # torch's implementation is independent of ours; 2e6 samples.
    gen = torch.Generator().manual_seed(11)
    p, mu, sigma, n = 0.4, 0.5, 1.3, 2_000_000
    x = torch.randn(n, generator=gen, dtype=torch.float64) * sigma + mu
    torch.manual_seed(12)
    y = torch.nn.functional.alpha_dropout(x, p, training=True)
    m = moments(p, mean=mu, std=sigma, scaling="alpha")
    se_mean = m.train_std / math.sqrt(n)
    m4 = ((y - y.mean()) ** 4).mean().item()
    se_std = math.sqrt((m4 - m.train_std**4) / n) / (2 * m.train_std)
    assert abs(y.mean().item() - m.train_mean) < Z * se_mean
    assert abs(y.std().item() - m.train_std) < Z * se_std


def test_gaussian_has_inverted_moments_and_refuses_p_one():
    p, mu, sigma = 0.35, 1.2, 0.8
    m = moments(p, mean=mu, std=sigma, scaling="gaussian")
    # y = x g, g ~ N(1, p/q): E[y] = mu, E[y^2] = E[x^2] (1 + p/q)
    second = (sigma**2 + mu**2) * (1 + p / (1 - p))
    assert m.train_mean == pytest.approx(mu)
    assert m.train_second == pytest.approx(second, rel=1e-13)
    inv = moments(p, mean=mu, std=sigma, scaling="inverted")
    assert m.train_std == pytest.approx(inv.train_std, rel=1e-13)
    assert m.constants["noise_var"] == pytest.approx(p / (1 - p))
    with pytest.raises(ValueError, match="p < 1"):
        moments(1.0, scaling="gaussian")


@pytest.mark.parametrize(("p", "mu", "sigma"), [(0.3, 2.0, 0.5), (0.8, -3.0, 0.1)])
def test_moment_matched_rule_factors_and_moments(p, mu, sigma):
    q = 1 - p
    big_a = math.sqrt(sigma**2 / (q * sigma**2 + q * (1 - q) * mu**2))
    big_b = mu * (1 - big_a * q)
    m = moments(p, mean=mu, std=sigma, scaling="moment")
    assert m.constants["A"] == pytest.approx(big_a, rel=1e-14)
    assert m.constants["B"] == pytest.approx(big_b, rel=1e-14)
    assert m.train_mean == pytest.approx(mu, rel=1e-13)
    assert m.train_std == pytest.approx(sigma, rel=1e-12)
    assert m.std_ratio == pytest.approx(1.0, rel=1e-12)


def test_matched_factors_at_the_edges():
    assert matched_factors(0.5, 0.0, 0.0) == pytest.approx((math.sqrt(2), 0.0))
    assert matched_factors(0.5, 3.0, 0.0) == pytest.approx((0.0, 3.0))
    assert matched_factors(1.0, 3.0, 1.0) == (0.0, 3.0)
    m = moments(1.0, mean=3.0, std=1.0, scaling="moment")
    assert (m.train_mean, m.train_std) == (3.0, 0.0)
    assert any("p = 1" in n for n in m.notes)


# ------------------------------------------------------------ input laws


def test_relu_of_standard_normal_by_hand():
    # E[max(0,z)] = 1/sqrt(2 pi), E[max(0,z)^2] = 1/2
    m = moments(0.0, input="relu")
    assert m.input_mean == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-14)
    assert m.input_std == pytest.approx(math.sqrt(0.5 - 1 / (2 * math.pi)), rel=1e-14)


@pytest.mark.parametrize(("mu", "sigma"), [(1.5, 2.0), (-0.7, 0.4)])
def test_relu_of_shifted_normal_by_quadrature(mu, sigma):
    z = torch.linspace(-12, 12, 400_001, dtype=torch.float64)
    w = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    x = (mu + sigma * z).clamp(min=0)
    first = torch.trapezoid(x * w, z).item()
    second = torch.trapezoid(x * x * w, z).item()
    d = RectifiedNormal(mu, sigma)
    assert d.first == pytest.approx(first, rel=1e-8)
    assert d.var == pytest.approx(second - first**2, rel=1e-8)


def test_uniform_constant_and_empirical_laws():
    m = moments(0.5, input=Uniform(1.0, 4.0))
    assert (m.input_mean, m.input_std) == pytest.approx((2.5, 3 / math.sqrt(12)))
    u = make_input("uniform", mean=2.0, std=0.5)
    assert (u.low, u.high) == pytest.approx((2 - 0.5 * 3**0.5, 2 + 0.5 * 3**0.5))
    m = moments(0.5, input=Constant(3.0))
    assert (m.input_mean, m.input_std, m.train_mean) == (3.0, 0.0, 3.0)
    assert m.train_std == pytest.approx(3.0)  # inverted: 2 * 3 or 0, each w.p. 1/2
    e = moments(0.5, input=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert (e.input_mean, e.input_std) == pytest.approx((2.5, math.sqrt(1.25)))
    assert e.input.startswith("empirical(4")


def test_named_family_with_mean_and_std():
    m = moments(0.2, input="normal", mean=1.0, std=2.0)
    assert (m.input_mean, m.input_std) == (1.0, 2.0)
    assert moments(0.2, input=Normal(1.0, 2.0)).train_std == m.train_std


# ------------------------------------------------------------ linear layer


def test_linear_worked_example_of_design():
    w = torch.ones(1, 100)
    inv = linear_moments(w, 0.3, input=Constant(1.0))
    none = linear_moments(w, 0.3, input=Constant(1.0), scaling="none")
    assert inv.eval_mean.item() == pytest.approx(100.0)
    assert inv.train_mean.item() == pytest.approx(100.0)
    assert inv.train_std.item() == pytest.approx(6.547, abs=5e-4)
    assert inv.train_std.item() == pytest.approx(math.sqrt(100 * 0.3 / 0.7))
    assert none.train_mean.item() == pytest.approx(70.0)
    assert none.train_std.item() == pytest.approx(4.583, abs=5e-4)
    assert none.eval_mean.item() == pytest.approx(100.0)


def test_linear_per_input_moments_and_nn_linear():
    torch.manual_seed(3)
    layer = torch.nn.Linear(5, 3)
    mus = [0.5, -1.0, 2.0, 0.0, 1.5]
    sds = [1.0, 0.5, 2.0, 0.1, 0.0]
    p, q = 0.4, 0.6
    got = linear_moments(layer, p, mean=mus, std=sds, scaling="variance")
    w = layer.weight.detach().double().tolist()
    bias = layer.bias.detach().double().tolist()
    a = q**-0.5
    for j in range(3):
        mean = sum(w[j][i] * a * q * mus[i] for i in range(5)) + bias[j]
        var = sum(
            w[j][i] ** 2 * a * a * q * (sds[i] ** 2 + p * mus[i] ** 2) for i in range(5)
        )
        assert got.train_mean[j].item() == pytest.approx(mean, rel=1e-6)
        assert got.train_std[j].item() == pytest.approx(math.sqrt(var), rel=1e-6)
        ev = sum(w[j][i] * mus[i] for i in range(5)) + bias[j]
        assert got.eval_mean[j].item() == pytest.approx(ev, rel=1e-6)


def test_linear_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"mean has 3 values but the weight has 4"):
        linear_moments(torch.ones(2, 4), 0.5, mean=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="bias has 3 values"):
        linear_moments(torch.ones(2, 4), 0.5, bias=torch.ones(3))
    with pytest.raises(ValueError, match="weight must be"):
        linear_moments(torch.ones(2, 2, 2), 0.5)
    with pytest.raises(TypeError, match="weight must be a tensor"):
        linear_moments([[1.0]], 0.5)


# ---------------------------------------------------------------- BatchNorm


def test_batchnorm_variance_shift_of_design():
    bn = batchnorm_shift(0.5, eps=0.0)
    assert bn.running_var == pytest.approx(2.0)
    assert bn.eval_out_std == pytest.approx(0.7071, abs=5e-5)
    assert bn.train_out_std == pytest.approx(1.0)


@pytest.mark.parametrize(("p", "mu", "sigma"), [(0.3, 1.0, 2.0), (0.5, -2.0, 0.5)])
def test_batchnorm_shift_formula_under_inverted(p, mu, sigma):
    q = 1 - p
    bn = batchnorm_shift(p, mean=mu, std=sigma, eps=0.0)
    assert bn.variance_shift == pytest.approx(q * sigma**2 / (sigma**2 + p * mu**2))
    assert bn.running_mean == pytest.approx(mu)
    train_var = (sigma**2 + p * mu**2) / q
    assert bn.eval_out_std == pytest.approx(sigma / math.sqrt(train_var))


def test_batchnorm_before_dropout_sees_no_shift():
    bn = batchnorm_shift(0.5, mean=3.0, std=2.0, order="bn-dropout", eps=0.0)
    assert (bn.running_mean, bn.running_var) == (3.0, 4.0)
    assert bn.train_out_std == pytest.approx(math.sqrt(2.0))  # 1/sqrt(q) on N(0,1)
    assert (bn.eval_out_mean, bn.eval_out_std) == (0.0, 1.0)
    with pytest.raises(ValueError, match="order"):
        batchnorm_shift(0.5, order="after")
    with pytest.raises(ValueError, match="eps"):
        batchnorm_shift(0.5, input=Constant(1.0), eps=0.0, order="bn-dropout")


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"std": -1.0}, ValueError, "std must be >= 0, got -1.0"),
        ({"std": math.nan}, ValueError, "std must be finite, got nan"),
        ({"mean": math.nan}, ValueError, "mean must be finite, got nan"),
        ({"mean": math.inf}, ValueError, "mean must be finite, got inf"),
        ({"p": 1.5}, ValueError, "p must be in"),
        ({"p": -0.1}, ValueError, "p must be in"),
        ({"scaling": "dropconnect"}, ValueError, "unknown rule 'dropconnect'"),
        ({"input": torch.tensor([])}, ValueError, "empty"),
        ({"input": torch.tensor([1.0, math.nan])}, ValueError, "NaN"),
        ({"input": "cauchy"}, ValueError, "unknown family 'cauchy'"),
        ({"input": "constant", "std": 1.0}, ValueError, "std 0"),
        ({"input": Normal(), "mean": 1.0}, TypeError, "not both"),
    ],
)
def test_bad_input_names_argument_and_value(kwargs, exc, match):
    kwargs = {"p": 0.5, **kwargs}
    with pytest.raises(exc, match=match):
        moments(**kwargs)


def test_bad_distribution_parameters():
    with pytest.raises(ValueError, match="high must be >= low"):
        Uniform(2.0, 1.0)
    with pytest.raises(TypeError, match="std must be a number"):
        Normal(0.0, "1")
    with pytest.raises(ValueError, match="empty"):
        Empirical(torch.empty(0))


# ------------------------------------------------------- property-based tests

# conftest flushes denormals, so hypothesis must not draw subnormal floats.
probs = st.floats(0.0, 0.99, allow_subnormal=False)
means = st.floats(-5.0, 5.0, allow_subnormal=False)
stds = st.floats(0.0, 5.0, allow_subnormal=False)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(p=probs, mu=means, sigma=stds, rule=st.sampled_from(RULES))
def test_property_ratios_and_second_moments_are_consistent(p, mu, sigma, rule):
    m = moments(p, mean=mu, std=sigma, scaling=rule)
    assert m.train_second == pytest.approx(m.train_std**2 + m.train_mean**2)
    assert m.eval_second == pytest.approx(m.eval_std**2 + m.eval_mean**2)
    if m.train_std > 1e-150:
        assert m.std_ratio == pytest.approx(m.eval_std / m.train_std, rel=1e-12)
        assert m.var_ratio == pytest.approx(m.std_ratio**2, rel=1e-12)
    q = 1 - p
    if rule in FACTORS:
        a, b = FACTORS[rule](q)
        assert m.mean_ratio == pytest.approx(b / (a * q), rel=1e-12)
        if abs(mu) > 1e-3:
            assert m.eval_mean / m.train_mean == pytest.approx(m.mean_ratio, rel=1e-9)
    if rule in ("gaussian", "moment"):
        assert m.train_mean == pytest.approx(mu, abs=1e-12)
    if rule == "moment":
        assert m.train_std == pytest.approx(sigma, rel=1e-9, abs=1e-12)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(mu=means, sigma=stds, rule=st.sampled_from(RULES))
def test_property_limits_in_p(mu, sigma, rule):
    at0 = moments(0.0, mean=mu, std=sigma, scaling=rule)
    assert at0.train_mean == pytest.approx(at0.eval_mean, abs=1e-12)
    assert at0.train_std == pytest.approx(at0.eval_std, abs=1e-12)
    near0 = moments(1e-9, mean=mu, std=sigma, scaling=rule)
    assert near0.train_mean == pytest.approx(at0.train_mean, abs=1e-6)
    assert near0.train_std == pytest.approx(at0.train_std, abs=1e-3)
    if rule == "gaussian":
        with pytest.raises(ValueError):
            moments(1.0, mean=mu, std=sigma, scaling=rule)
        return
    at1 = moments(1.0, mean=mu, std=sigma, scaling=rule)
    assert at1.train_std == 0.0
    assert at1.train_mean == (mu if rule == "moment" else 0.0)
    if rule == "inverted" and sigma > 0.1:
        # inverted: Var = (sigma^2 + p mu^2) / q grows without bound as q -> 0
        assert moments(1 - 1e-8, mean=mu, std=sigma).train_std > 1e3


# ------------------------------------------- the library's layers, as checked


def test_rule_aliases_and_the_layers_moment_scaling():
    from dropscale.layers import MOMENT

    want = moments(0.3, mean=1.0, std=2.0, scaling="moment")
    for alias in ("matched", "moment-matched", MOMENT):
        got = moments(0.3, mean=1.0, std=2.0, scaling=alias)
        assert got.constants == want.constants and got.scaling == "moment"


@pytest.mark.parametrize("rule", ["alpha", "gaussian", "moment"])
def test_dropscale_layers_follow_the_exact_moments(rule):
    # Seeded Monte Carlo of the library's own layers (dropscale.noise and
    # dropscale.Dropout), 1e6 values, each within 5 standard errors.
    from dropscale import Dropout, alpha_dropout, gaussian_dropout

    p, mu, sigma, n = 0.3, 0.8, 1.5, 1_000_000
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(n, 1, generator=gen, dtype=torch.float64) * sigma + mu
    if rule == "alpha":
        y = alpha_dropout(x, p, training=True, generator=gen)
    elif rule == "gaussian":
        y = gaussian_dropout(x, p, training=True, generator=gen)
    else:
        layer = Dropout(p, scaling="moment", num_features=1, momentum=None)
        layer(x[: n // 2])  # the running estimates converge on this batch
        layer.update_running_stats = False
        y = layer(x[n // 2 :])
    m = moments(p, mean=mu, std=sigma, scaling=rule)
    k = y.numel()
    m4 = ((y - y.mean()) ** 4).mean().item()
    se_mean = m.train_std / math.sqrt(k)
    se_std = math.sqrt((m4 - m.train_std**4) / k) / (2 * m.train_std)
    if rule == "moment":
        # the layer's estimates of mu and sigma come from an independent
        # sample of the same size, which doubles the variance of the error
        se_mean, se_std = math.sqrt(2) * se_mean, math.sqrt(2) * se_std
    assert abs(y.mean().item() - m.train_mean) < Z * se_mean
    assert abs(y.std().item() - m.train_std) < Z * se_std


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"mean": 1e200}, "mean=1e+200 is too large"),
        ({"mean": -1e200}, "mean=-1e+200 is too large"),
        ({"std": 1e200}, "std=1e+200 is too large"),
        ({"mean": 1e308, "std": 1e308}, "at most 1e+100"),
        ({"input": "uniform", "std": 1e150}, "too large"),
    ],
)
def test_input_scale_beyond_the_bound_is_a_value_error(kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        moments(0.5, **kwargs)


def test_empirical_sample_beyond_the_bound_is_a_value_error():
    sample = torch.tensor([1.0, -1e150, 2.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"1 of 3 values exceed 1e\+100.*-1e\+150"):
        moments(0.5, input=sample)


def test_input_scale_at_the_bound_gives_finite_exact_moments():
    # inverted, p = 0.5: Var = a^2 q (sigma^2 + p mu^2) = 2 (1 + 0.5) 1e200.
    m = moments(0.5, mean=1e100, std=1e100)
    assert m.train_std == pytest.approx(math.sqrt(3.0) * 1e100, rel=1e-12)
    assert m.train_mean == pytest.approx(1e100, rel=1e-12)
    assert math.isfinite(m.train_second) and math.isfinite(m.var_ratio)
    with pytest.raises(ValueError, match="too large"):
        matched_factors(0.5, 1e101, 1.0)
    with pytest.raises(ValueError, match="mean: \\|mean\\| must be at most"):
        linear_moments(torch.ones(1, 3), 0.5, mean=[0.0, 1e200, 0.0])
