"""Alpha and Gaussian dropout: exact constants and seeded Monte-Carlo moments.

Every Monte-Carlo bound is 5 standard errors (false alarm about 6e-7 per check),
with the standard error worked out from the variance of the statistic.
"""

import math

import pytest
import torch

from dropscale.noise import (
    AlphaDropout,
    GaussianDropout,
    alpha_dropout,
    alpha_factors,
    gaussian_dropout,
)

# SELU saturation value -lambda * alpha, from the SELU paper's constants.
ALPHA_PRIME = -1.0507009873554805 * 1.6732632423543772
N = 10**6


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def hand_factors(p: float) -> tuple[float, float]:
    q = 1.0 - p
    a = 1.0 / math.sqrt(q + ALPHA_PRIME**2 * q * p)
    return a, -a * ALPHA_PRIME * p


def test_alpha_constants_at_half():
    a, b, dropped = alpha_factors(0.5)
    assert round(a, 4) == 0.8864
    assert round(dropped, 4) == -0.7792
    assert (a, b) == pytest.approx(hand_factors(0.5), rel=1e-12)
    assert dropped == pytest.approx(a * ALPHA_PRIME + b, rel=1e-12)
    y = alpha_dropout(torch.ones(1000), 0.5, training=True, generator=gen(0))
    values = sorted(set(y.tolist()))
    assert len(values) == 2
    assert values[0] == pytest.approx(-0.7792, abs=5e-5)
    assert values[1] == pytest.approx(a + b, rel=1e-6)


def alpha_output_fourth_moment(p: float) -> float:
    """E[y^4] of alpha dropout on N(0, 1) input, from the two branches."""
    a, b = hand_factors(p)
    q = 1.0 - p
    kept = 3 * a**4 + 6 * a**2 * b**2 + b**4  # E[(a x + b)^4], x ~ N(0, 1)
    dropped = (a * ALPHA_PRIME + b) ** 4
    return q * kept + p * dropped


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_alpha_dropout_keeps_mean_zero_and_variance_one(p):
    x = torch.randn(N, generator=gen(1), dtype=torch.float64)
    y = AlphaDropout(p)(x, generator=gen(2))
    mean_tol = 5.0 / math.sqrt(N)  # Var[y] = 1
    # Var of y^2 is E[y^4] - 1; the sample variance inherits it to first order.
    var_tol = 5.0 * math.sqrt((alpha_output_fourth_moment(p) - 1.0) / N)
    assert abs(y.mean().item()) <= mean_tol, f"mean {y.mean().item():.5f}"
    assert abs(y.var().item() - 1.0) <= var_tol, f"var {y.var().item():.5f}"


def test_alpha_dropout_matches_torch_distribution():
    p = 0.3
    x = torch.randn(200_000, generator=gen(3))
    ours = AlphaDropout(p)(x, generator=gen(4))
    torch.manual_seed(5)
    theirs = torch.nn.AlphaDropout(p)(x)
    # The dropped value is the one value that repeats in each output.
    value_ours, value_theirs = ours.mode().values, theirs.mode().values
    assert value_ours.item() == pytest.approx(alpha_factors(p)[2], rel=1e-6)
    assert value_ours.item() == pytest.approx(value_theirs.item(), rel=1e-6)
    dropped_ours, dropped_theirs = ours == value_ours, theirs == value_theirs
    both_kept = ~dropped_ours & ~dropped_theirs
    torch.testing.assert_close(ours[both_kept], theirs[both_kept], rtol=1e-5, atol=1e-6)
    # Two binomial fractions of n each: difference has sd sqrt(2 p q / n).
    diff = dropped_ours.float().mean() - dropped_theirs.float().mean()
    assert abs(diff.item()) <= 5 * math.sqrt(2 * p * (1 - p) / x.numel())


def test_alpha_dropout_edges_and_feature_sharing():
    x = torch.randn(4, 3, 5, 5, generator=gen(6))
    layer = AlphaDropout(0.5, shared_dims=(2, 3))
    assert layer.eval()(x) is x
    assert AlphaDropout(0.0)(x) is x
    assert torch.equal(AlphaDropout(1.0)(x), torch.zeros_like(x))
    y = layer.train()(x, generator=gen(7))
    a, b, dropped = alpha_factors(0.5)
    planes = (y == torch.tensor(dropped)).flatten(2).all(dim=2)  # (N, C)
    kept = torch.testing.assert_close
    kept(y[~planes], (x * a + b)[~planes], rtol=1e-6, atol=1e-6)
    assert 0 < int(planes.sum()) < 12
    assert torch.equal(layer(x, generator=gen(8)), layer(x, generator=gen(8)))


def test_gaussian_dropout_on_ones_has_mean_one_std_half():
    p = 0.2  # noise variance p / q = 0.25
    y = GaussianDropout(p)(torch.ones(N, dtype=torch.float64), generator=gen(9))
    std = 0.5
    assert abs(y.mean().item() - 1.0) <= 5 * std / math.sqrt(N)
    # Gaussian sample: sd of the sample std is std / sqrt(2 n).
    assert abs(y.std().item() - std) <= 5 * std / math.sqrt(2 * N)


def test_gaussian_dropout_has_inverted_dropout_moments():
    p, mu, sigma = 0.2, 1.0, 2.0
    x = mu + sigma * torch.randn(N, generator=gen(10), dtype=torch.float64)
    y = gaussian_dropout(x, p, training=True, generator=gen(11))
    # Inverted dropout: Var = (sigma^2 + p mu^2) / q = (4 + 0.2) / 0.8 = 5.25.
    var = 5.25
    assert abs(y.mean().item() - mu) <= 5 * math.sqrt(var / N)
    centred_sq = (y - y.mean()) ** 2
    var_tol = 5 * centred_sq.std().item() / math.sqrt(N)
    assert abs(y.var().item() - var) <= var_tol, f"var {y.var().item():.4f}"


def test_gaussian_dropout_eval_p0_and_sharing():
    x = torch.randn(6, 4, 3, generator=gen(12))
    assert GaussianDropout(0.3).eval()(x) is x
    assert GaussianDropout(0.0)(x) is x
    y = GaussianDropout(0.3, shared_dims=(1,))(x, generator=gen(13))
    ratio = y / x  # (6, 4, 3): one noise value per (n, h), shared along dim 1
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))


@pytest.mark.parametrize("layer_cls", [AlphaDropout, GaussianDropout])
def test_noise_layer_errors_and_repr(layer_cls):
    with pytest.raises(ValueError, match="1.5"):
        layer_cls(1.5)
    with pytest.raises(ValueError, match="-0.5"):
        layer_cls(-0.5)
    with pytest.raises(TypeError, match="dtype"):
        layer_cls(0.5)(torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="dim 3"):
        layer_cls(0.5, shared_dims=(3,))(torch.ones(2, 2))
    text = repr(layer_cls(0.25))
    rule = "alpha" if layer_cls is AlphaDropout else "gaussian"
    assert "p=0.25" in text and f"rule='{rule}'" in text


def test_gaussian_dropout_refuses_p1():
    with pytest.raises(ValueError, match="infinite variance"):
        GaussianDropout(1.0)
    with pytest.raises(ValueError, match="infinite variance"):
        gaussian_dropout(torch.ones(2), 1.0, training=True)
    with pytest.raises(ValueError, match="infinite variance"):
        GaussianDropout(keep_prob=0.0)


def test_alpha_where_q_eff_rounds_to_zero_acts_like_p_one():
    # 1 - p = 1e-11 < 2^-33: the mask keeps nothing, so the output is p = 1's.
    p = 1 - 1e-11
    assert alpha_factors(p) == (0.0, 0.0, 0.0)
    x = torch.tensor([math.inf, 1.0, -3.0, 0.0, 2.0])
    assert torch.equal(alpha_dropout(x, p, training=True), torch.zeros(5))
    assert torch.equal(AlphaDropout(p)(x), torch.zeros(5))
    a, b, dropped = alpha_factors(1 - 2.0**-31)  # q_eff = 2^-31: finite factors
    assert math.isfinite(a) and math.isfinite(b) and math.isfinite(dropped)


def test_gaussian_just_below_one_uses_exact_q_and_refuses_float16_overflow():
    # No mask, so the exact q = 1 - p: std sqrt(p / q) ~ 3.2e5 is finite.
    p = 1 - 1e-11
    y = gaussian_dropout(torch.ones(1000), p, training=True)
    assert bool(torch.isfinite(y).all())
    # the sample std of 1000 draws is within a few % of sqrt(p / q) = 3.2e5
    assert y.std().item() > 1e5
    with pytest.raises(ValueError, match=r"p=0\.99999999999.*float16.*float32"):
        gaussian_dropout(torch.ones(10, dtype=torch.float16), p, training=True)
