"""dropscale.Dropout: construction checks, repr, train/eval behaviour, no state,
and drop-in compatibility with torch.nn.Dropout.

Monte-Carlo tolerances are 5 standard errors derived from the exact variance at
the sample size used: a false alarm about 5.7e-7 per check (normal
approximation, n = 2^18), about 20 checks in this file.
"""

import copy
import math
import pickle

import pytest
import torch
from torch import nn

import dropscale
from dropscale import functional as F
from dropscale.layers import Dropout

Z = 5.0
N_MC = 1 << 18

# a(q), b(q) from DESIGN.md, written out independently of the code under test.
FACTORS = {
    "inverted": lambda q: (1 / q, 1.0),
    "classic": lambda q: (1.0, q),
    "variance": lambda q: (q**-0.5, 1.0),
    "none": lambda q: (1.0, 1.0),
}


def test_is_exported_at_the_top_level():
    assert dropscale.Dropout is Dropout
    assert issubclass(Dropout, nn.Module)


def test_defaults_are_p_one_half_and_inverted():
    layer = Dropout()
    assert layer.p == 0.5
    assert layer.scaling.name == "inverted"


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({}, "Dropout(p=0.5, scaling='inverted')"),
        ({"p": 0.1, "scaling": "classic"}, "Dropout(p=0.1, scaling='classic')"),
        ({"p": 0.25, "scaling": "VARIANCE"}, "Dropout(p=0.25, scaling='variance')"),
        ({"keep_prob": 0.75, "scaling": "none"}, "Dropout(p=0.25, scaling='none')"),
        ({"p": 0.3, "scaling": (2, 0.5)}, "Dropout(p=0.3, scaling='custom:2,0.5')"),
    ],
)
def test_repr_shows_p_and_scaling(kwargs, text):
    assert repr(Dropout(**kwargs)) == text


def test_repr_inside_a_model():
    model = nn.Sequential(nn.Linear(2, 2), Dropout(0.2, scaling="classic"))
    assert "(1): Dropout(p=0.2, scaling='classic')" in repr(model)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, math.inf])
def test_bad_p_is_rejected_at_construction(bad):
    with pytest.raises(ValueError, match=rf"p must be in \[0, 1\], got {bad!r}"):
        Dropout(bad)
    with pytest.raises(
        ValueError, match=rf"keep_prob must be in \[0, 1\], got {bad!r}"
    ):
        Dropout(keep_prob=bad)


@pytest.mark.parametrize("bad", ["0.5", True, [0.5]])
def test_p_that_is_not_a_number_is_rejected_at_construction(bad):
    with pytest.raises(TypeError, match="p must be a number"):
        Dropout(bad)


def test_p_and_keep_prob_together_are_rejected():
    with pytest.raises(TypeError, match="not both"):
        Dropout(0.5, keep_prob=0.5)


def test_keep_prob_gives_p():
    assert Dropout(keep_prob=0.8).p == pytest.approx(0.2, abs=1e-15)


@pytest.mark.parametrize(
    ("scaling", "error", "text"),
    [
        ("sqrt", ValueError, "valid names: inverted, classic"),
        ("custom:2", ValueError, "custom:A,B"),
        ((-1.0, 1.0), ValueError, "a must be finite and >= 0"),
        (None, TypeError, "scaling must be a name"),
    ],
)
def test_bad_scaling_is_rejected_at_construction(scaling, error, text):
    with pytest.raises(error, match=text):
        Dropout(0.5, scaling=scaling)


def test_scaling_is_keyword_only():
    with pytest.raises(TypeError):
        Dropout(0.5, None, "classic")


@pytest.mark.parametrize("scaling", [*FACTORS, (2.0, 0.5)])
def test_no_parameters_no_buffers_empty_state_dict(scaling):
    layer = Dropout(0.3, scaling=scaling)
    assert list(layer.parameters()) == []
    assert list(layer.buffers()) == []
    assert layer.state_dict() == {}


@pytest.mark.parametrize("name", list(FACTORS))
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_factors_property(name, p):
    q = F.effective_keep_prob(1 - p)
    assert abs(q - (1 - p)) <= 2**-17
    assert Dropout(p, scaling=name).factors == pytest.approx(
        FACTORS[name](q), rel=1e-15
    )


# ----------------------------------------------------------------- train / eval


@pytest.mark.parametrize("name", list(FACTORS))
@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_eval_applies_b(name, p):
    _, b = FACTORS[name](F.effective_keep_prob(1 - p))
    layer = Dropout(p, scaling=name).eval()
    x = torch.randn(3, 50, dtype=torch.float64)
    torch.testing.assert_close(layer(x), b * x, rtol=1e-15, atol=0)


def test_eval_with_custom_pair_applies_b():
    x = torch.randn(10, dtype=torch.float64)
    layer = Dropout(0.4, scaling=(3.0, 0.25)).eval()
    torch.testing.assert_close(layer(x), 0.25 * x, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(FACTORS))
def test_training_values_are_zero_or_a_times_x(name):
    q = F.effective_keep_prob(0.6)
    a, _ = FACTORS[name](q)
    layer = Dropout(0.4, scaling=name)
    assert layer.training
    x = torch.rand(4000, dtype=torch.float64) + 0.5
    y = layer(x)
    kept = y != 0
    assert 0 < kept.sum() < 4000
    torch.testing.assert_close(y[kept], a * x[kept], rtol=1e-12, atol=0)


def test_train_and_eval_switch_back_and_forth():
    layer = Dropout(0.5, scaling="classic")
    x = torch.ones(2000)
    assert (layer(x) == 0).any()
    layer.eval()
    assert torch.equal(layer(x), torch.full((2000,), 0.5))
    layer.train()
    assert (layer(x) == 0).any()
    layer.train(False)
    assert torch.equal(layer(x), torch.full((2000,), 0.5))


def test_model_eval_reaches_nested_layers():
    model = nn.Sequential(nn.Identity(), nn.Sequential(Dropout(0.5, scaling="classic")))
    model.eval()
    assert torch.equal(model(torch.ones(5)), torch.full((5,), 0.5))


@pytest.mark.parametrize("name", list(FACTORS))
def test_p_one_in_training_gives_zeros_and_zero_gradient(name):
    x = torch.tensor([math.inf, -1.0, 2.0], requires_grad=True)
    y = Dropout(1.0, scaling=name)(x)
    assert torch.equal(y, torch.zeros(3))
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros(3))


@pytest.mark.parametrize("name", list(FACTORS))
def test_p_zero_returns_the_input(name):
    x = torch.randn(7)
    assert Dropout(0.0, scaling=name)(x) is x
    assert Dropout(0.0, scaling=name).eval()(x) is x


def test_integer_input_in_training_is_a_type_error():
    with pytest.raises(TypeError, match="torch.int64"):
        Dropout(0.5)(torch.ones(3, dtype=torch.int64))
    x = torch.ones(3, dtype=torch.int64)
    assert Dropout(0.5, scaling="classic").eval()(x) is x


def test_global_seed_makes_the_layer_reproducible():
    layer = Dropout(0.5)
    x = torch.randn(500)
    torch.manual_seed(5)
    y1 = layer(x)
    torch.manual_seed(5)
    y2 = layer(x)
    assert torch.equal(y1, y2)


@pytest.mark.parametrize("name", list(FACTORS))
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_monte_carlo_train_mean_and_exact_eval_mean(name, p):
    # Input N(mu, sigma^2) with mu != 0, so the mean ratio b / (a q) is visible.
    mu, sigma = 2.0, 1.0
    q = F.effective_keep_prob(1 - p)
    a, b = FACTORS[name](q)
    torch.manual_seed(int(p * 100))
    x = torch.randn(N_MC, dtype=torch.float64) * sigma + mu
    layer = Dropout(p, scaling=name)
    train_mean = layer(x).mean().item()
    exact_mean = a * q * mu
    exact_var = a**2 * q * (sigma**2 + (1 - q) * mu**2)
    assert abs(train_mean - exact_mean) <= Z * math.sqrt(exact_var / N_MC)
    eval_mean = layer.eval()(x).mean().item()
    assert eval_mean == pytest.approx(b * x.mean().item(), rel=1e-12)


# ------------------------------------------------------------ nn.Dropout swap


def make_model(dropout_layer):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16),
        nn.ReLU(),
        dropout_layer,
        nn.Linear(16, 16),
        nn.Tanh(),
        nn.Dropout(0.1) if isinstance(dropout_layer, nn.Dropout) else Dropout(0.1),
        nn.Linear(16, 3),
    )


def test_state_dicts_load_both_ways_and_eval_outputs_agree():
    ours = make_model(Dropout(0.3))
    theirs = make_model(nn.Dropout(0.3))
    # Different initial weights, so loading is what makes them agree.
    with torch.no_grad():
        for param in ours.parameters():
            param.add_(1.0)
    x = torch.randn(20, 6)
    assert set(ours.state_dict()) == set(theirs.state_dict())

    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    theirs.eval()
    assert torch.equal(ours(x), theirs(x))

    with torch.no_grad():
        for param in ours.parameters():
            param.mul_(0.5)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert torch.equal(ours(x), theirs(x))


def test_swapping_modules_in_a_trained_model_keeps_eval_output():
    model = make_model(nn.Dropout(0.3)).eval()
    x = torch.randn(10, 6)
    before = model(x)
    for i, module in enumerate(model):
        if isinstance(module, nn.Dropout):
            model[i] = Dropout(module.p)
    model.eval()
    assert torch.equal(model(x), before)


def test_inverted_matches_nn_dropout_in_distribution():
    p = 0.3
    q = F.effective_keep_prob(1 - p)
    x = torch.rand(N_MC, dtype=torch.float64) + 0.5
    torch.manual_seed(1)
    ours = Dropout(p)(x)
    theirs = nn.Dropout(p)(x)
    # Values {0, x / q}: ours at the sampler's q (within 2^-17 of 1 - p), theirs
    # at 1 - p exactly.
    for y, keep in ((ours, q), (theirs, 1 - p)):
        kept = y != 0
        torch.testing.assert_close(y[kept], x[kept] / keep, rtol=1e-6, atol=0)
    # The kept fractions each match their q, and each other.
    f_ours = (ours != 0).double().mean().item()
    f_theirs = (theirs != 0).double().mean().item()
    sd = math.sqrt(q * (1 - q) / N_MC)
    assert abs(f_ours - q) <= Z * sd
    assert abs(f_theirs - (1 - p)) <= Z * sd
    assert abs(f_ours - f_theirs) <= Z * math.sqrt(2) * sd
    # Their means agree to within the noise of both: given x, each output mean
    # has variance mean(x^2) (1 - q) / (q n).
    diff = ours.mean().item() - theirs.mean().item()
    var_mean = (x**2).mean().item() * (1 - q) / (q * N_MC)
    assert abs(diff) <= Z * math.sqrt(2 * var_mean)


@pytest.mark.parametrize("scaling", ["variance", (2.0, 0.5)])
def test_layer_survives_pickle_and_deepcopy(scaling):
    layer = Dropout(0.2, scaling=scaling).eval()
    x = torch.randn(5)
    for copied in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert repr(copied) == repr(layer)
        assert torch.equal(copied(x), layer(x))


def test_whole_model_save_and_load(tmp_path):
    model = make_model(Dropout(0.3, scaling=(2.0, 0.5))).eval()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    back = torch.load(path, weights_only=False).eval()
    x = torch.randn(4, 6)
    assert torch.equal(back(x), model(x))
