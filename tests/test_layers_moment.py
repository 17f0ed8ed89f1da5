"""dropscale.Dropout beyond the basics: shared masks, generators, and the
moment-matched rule (scaling="moment") with its running statistics.

Monte-Carlo bounds are 5 standard errors (false alarm about 6e-7 per check)
unless a test states another level; standard errors come from the variance of
the statistic at the sample size used.
"""

import copy
import io
import math
import pickle

import pytest
import torch
from torch import nn

import dropscale
from dropscale.layers import MOMENT, Dropout


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------- shared masks


def test_half_inverted_on_a_million_ones():
    y = Dropout(0.5)(torch.ones(10**6), generator=gen(0))
    assert set(y.unique().tolist()) == {0.0, 2.0}
    # 99.9 % two-sided interval: z = 3.2905 (false alarm 1e-3, as the issue asks).
    tol = 3.2905 * math.sqrt(0.25 / 10**6)
    zero_frac = (y == 0).float().mean().item()
    assert abs(zero_frac - 0.5) <= tol, f"zero fraction {zero_frac:.5f}"


@pytest.mark.parametrize(
    ("scaling", "a"),
    [("inverted", 4.0), ("classic", 1.0), ("variance", 2.0), ((3.0, 0.5), 3.0)],
)
def test_channel_dropout_shares_one_decision_per_map(scaling, a):
    layer = Dropout(0.75, scaling=scaling, shared_dims=(2, 3))
    y = layer(torch.ones(8, 16, 5, 5), generator=gen(1))
    assert torch.equal(y, y[:, :, :1, :1].expand_as(y)), "a map was split"
    assert set(y.unique().tolist()) == {0.0, a}


def test_negative_shared_dims_match_positive_ones():
    x = torch.randn(4, 6, 7, generator=gen(2))
    pos = Dropout(0.5, shared_dims=(1,))(x, generator=gen(3))
    neg = Dropout(0.5, shared_dims=(-2,))(x, generator=gen(3))
    assert torch.equal(pos, neg)
    assert torch.equal(pos == 0, (pos == 0)[:, :1].expand_as(pos))


def test_shared_dims_errors_and_repr():
    with pytest.raises(ValueError, match="dim 4"):
        Dropout(0.5, shared_dims=(4,))(torch.ones(2, 2, 2, 2))
    with pytest.raises(TypeError, match="integers"):
        Dropout(0.5, shared_dims=(1.0,))
    assert "shared_dims=(2, 3)" in repr(Dropout(0.1, shared_dims=(2, 3)))


def test_generator_repeats_masks():
    x = torch.randn(100)
    layer = Dropout(0.5)
    assert torch.equal(layer(x, generator=gen(4)), layer(x, generator=gen(4)))
    assert not torch.equal(layer(x, generator=gen(4)), layer(x, generator=gen(5)))


@pytest.mark.parametrize("scaling", ["inverted", "classic", "variance", "none"])
def test_default_rules_hold_no_state(scaling):
    layer = Dropout(0.3, scaling=scaling, shared_dims=(1,))
    assert list(layer.buffers()) == [] and list(layer.parameters()) == []
    assert layer.state_dict() == {}
    layer.load_state_dict(nn.Dropout(0.3).state_dict())


# ----------------------------------------------------------------- moment


def moment_layer(p: float = 0.2, features: int = 2, **kwargs) -> Dropout:
    return Dropout(p, scaling="moment", num_features=features, **kwargs)


def test_moment_first_batch_sets_statistics_and_exact_factors():
    layer = moment_layer(0.2)
    # Unit 0: values 1 and 3, mean 2, unbiased variance 2. Unit 1: all zero.
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    y = layer(x, generator=gen(6))
    assert layer.running_mean.tolist() == [2.0, 0.0]
    assert layer.running_var.tolist() == [2.0, 0.0]
    assert int(layer.num_batches_tracked) == 1
    # q = 0.8: A = sqrt(2 / (0.8 * 2 + 0.8 * 0.2 * 4)) = sqrt(2 / 2.24),
    # B = 2 * (1 - 0.8 A); the all-zero unit gets the 0/0 limit along mu = 0,
    # A = 1 / sqrt(q) = 1 / sqrt(0.8), B = 0, as dropscale.moments does.
    a0 = math.sqrt(2 / 2.24)
    b0 = 2 * (1 - 0.8 * a0)
    scale, shift = layer.moment_factors()
    assert scale.tolist() == pytest.approx([a0, 1 / math.sqrt(0.8)], rel=1e-6)
    assert scale[1].item() == pytest.approx(
        dropscale.moments(0.2, mean=0.0, std=0.0, scaling="moment").constants["A"],
        rel=1e-6,
    )
    assert shift.tolist() == pytest.approx([b0, 0.0], abs=1e-6)
    assert round(a0, 6) == 0.944911 and round(b0, 6) == 0.488142
    for row in range(2):
        kept, dropped = a0 * x[row, 0].item() + b0, b0
        assert y[row, 0].item() in (
            pytest.approx(kept, rel=1e-6),
            pytest.approx(dropped, rel=1e-6),
        )
        assert y[row, 1].item() == 0.0


def test_moment_running_statistics_follow_momentum():
    first = torch.tensor([[0.0], [2.0]])  # mean 1, var 2
    second = torch.tensor([[4.0], [8.0]])  # mean 6, var 8
    layer = moment_layer(0.5, features=1, momentum=0.25)
    layer(first)
    layer(second)
    assert layer.running_mean.item() == pytest.approx(0.75 * 1 + 0.25 * 6)
    assert layer.running_var.item() == pytest.approx(0.75 * 2 + 0.25 * 8)
    cumulative = moment_layer(0.5, features=1, momentum=None)
    cumulative(first)
    cumulative(second)
    cumulative(torch.tensor([[10.0], [12.0]]))  # mean 11, var 2
    assert cumulative.running_mean.item() == pytest.approx((1 + 6 + 11) / 3)
    assert cumulative.running_var.item() == pytest.approx((2 + 8 + 2) / 3)


def test_moment_unit_dim_one_for_feature_maps():
    x = torch.randn(6, 3, 4, 4, generator=gen(7)) + torch.tensor([0.0, 5, -2]).view(
        1, 3, 1, 1
    )
    layer = Dropout(0.3, scaling="moment", num_features=3, unit_dim=1)
    layer(x, generator=gen(8))
    torch.testing.assert_close(layer.running_mean, x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(layer.running_var, x.var(dim=(0, 2, 3)))


N = 400_000
MU = torch.tensor([3.0, 1.0, 5.0, 0.0], dtype=torch.float64)
VAR = torch.tensor([4.0, 1.0, 0.0, 0.0], dtype=torch.float64)


def mixed_units(seed: int) -> torch.Tensor:
    """(N, 4): N(3, 2^2), Exp(1) (mean 1, var 1), constant 5, constant 0."""
    g = gen(seed)
    normal = 3.0 + 2.0 * torch.randn(N, generator=g, dtype=torch.float64)
    expo = torch.empty(N, dtype=torch.float64).exponential_(1.0, generator=g)
    return torch.stack([normal, expo, torch.full_like(normal, 5.0), 0 * normal], 1)


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_moment_rule_keeps_mean_and_variance_of_any_input(p):
    layer = moment_layer(p, features=4).double()
    layer.load_state_dict(
        {"running_mean": MU, "running_var": VAR, "num_batches_tracked": torch.tensor(1)}
    )
    layer.update_running_stats = False
    y = layer(mixed_units(9), generator=gen(10))
    assert torch.equal(y[:, 2], torch.full((N,), 5.0, dtype=torch.float64))
    assert torch.equal(y[:, 3], torch.zeros(N, dtype=torch.float64))
    for unit in (0, 1):
        col = y[:, unit]
        mean_tol = 5 * math.sqrt(VAR[unit].item() / N)
        assert abs(col.mean().item() - MU[unit].item()) <= mean_tol, unit
        # Sample variance: sd is sqrt((m4 - var^2) / n), m4 estimated here.
        m4 = ((col - MU[unit]) ** 4).mean().item()
        var_tol = 5 * math.sqrt((m4 - VAR[unit].item() ** 2) / N)
        assert abs(col.var().item() - VAR[unit].item()) <= var_tol, unit
    assert torch.equal(layer.running_mean, MU), "frozen statistics moved"
    assert layer.eval()(y) is y


def test_moment_gradient_is_a_times_mask():
    layer = moment_layer(0.5)
    x = torch.randn(50, 2, generator=gen(11), requires_grad=True)
    layer(x, generator=gen(12)).sum().backward()
    scale, _ = layer.moment_factors()
    for unit in range(2):
        values = set(x.grad[:, unit].tolist())
        assert values <= {0.0, scale[unit].item()}
        assert len(values) == 2


def test_moment_state_dict_round_trip_and_repr():
    layer = moment_layer(0.4, features=3)
    layer(torch.randn(10, 3, generator=gen(13)))
    state = layer.state_dict()
    assert set(state) == {"running_mean", "running_var", "num_batches_tracked"}
    fresh = moment_layer(0.4, features=3)
    fresh.load_state_dict(state)
    x = torch.randn(5, 3, generator=gen(14))
    fresh.update_running_stats = layer.update_running_stats = False
    assert torch.equal(fresh(x, generator=gen(15)), layer(x, generator=gen(15)))
    text = repr(layer)
    assert "p=0.4" in text and "scaling='moment'" in text
    assert "num_features=3" in text and "unit_dim=-1" in text
    assert layer.scaling is MOMENT


def test_moment_p0_is_identity():
    x = torch.randn(4, 2)
    assert moment_layer(0.0)(x) is x


def test_moment_errors():
    with pytest.raises(TypeError, match="num_features"):
        Dropout(0.5, scaling="moment")
    with pytest.raises(ValueError, match="num_features=4 is only used"):
        Dropout(0.5, num_features=4)
    with pytest.raises(ValueError, match="p < 1"):
        Dropout(1.0, scaling="moment", num_features=2)
    with pytest.raises(ValueError, match="momentum"):
        moment_layer(momentum=0.0)
    with pytest.raises(ValueError, match="3 units"):
        moment_layer(features=2)(torch.ones(4, 3))
    with pytest.raises(ValueError, match="at least 2 values"):
        moment_layer()(torch.ones(1, 2))
    with pytest.raises(TypeError, match="dtype"):
        moment_layer()(torch.ones(4, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="moment_factors"):
        _ = moment_layer().factors
    with pytest.raises(ValueError, match="no running statistics"):
        moment_layer().moment_factors()
    with pytest.raises(ValueError, match="no running statistics"):
        frozen = moment_layer()
        frozen.update_running_stats = False
        frozen(torch.ones(4, 2))
    with pytest.raises(ValueError, match="read .factors"):
        Dropout(0.5).moment_factors()


def _save_load(layer: Dropout) -> Dropout:
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize(
    "clone",
    [copy.deepcopy, lambda m: pickle.loads(pickle.dumps(m)), _save_load],
    ids=["deepcopy", "pickle", "torch.save"],
)
def test_moment_layer_survives_copy_pickle_and_save(clone):
    # The copies hold an equal, not identical, Scaling: the layer must still
    # recognise the moment rule (it once tested identity and raised).
    layer = Dropout(0.3, scaling="moment", num_features=4)
    layer(torch.randn(10, 4, generator=gen(5)) * 2 + 1)
    twin = clone(layer)
    assert twin.scaling is not MOMENT and twin.is_moment
    x = torch.randn(5, 4, generator=gen(6))
    twin.update_running_stats = layer.update_running_stats = False
    assert torch.equal(twin(x, generator=gen(7)), layer(x, generator=gen(7)))
    scale, shift = layer.moment_factors()
    assert torch.equal(twin.moment_factors()[0], scale)
    assert torch.equal(twin.moment_factors()[1], shift)
    layer.eval(), twin.eval()
    assert torch.equal(twin(x), x) and torch.equal(layer(x), x)
    assert "num_features=4" in repr(twin)
    # mc_dropout recognises the copy as a moment layer and freezes its statistics.
    twin.update_running_stats = True
    before = twin.running_mean.clone()
    with dropscale.mc_dropout(twin):
        twin(torch.randn(6, 4, generator=gen(8)))
    assert torch.equal(twin.running_mean, before) and twin.update_running_stats


def test_moment_refuses_p_whose_keep_probability_rounds_to_zero():
    # 1 - p = 1e-11 < 2^-33: q_eff = 0 and the layer treats p like p = 1.
    with pytest.raises(ValueError, match="p < 1, got p=0.99999999999"):
        Dropout(1 - 1e-11, scaling="moment", num_features=3)
    Dropout(1 - 2.0**-31, scaling="moment", num_features=3)  # q_eff = 2^-31
