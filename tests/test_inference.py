"""mc_dropout and predict_mc: which modules sample, what is restored, and
repeatable Monte-Carlo predictions.

The one Monte-Carlo bound is 5 standard errors (false alarm about 6e-7).
"""

import math

import pytest
import torch
from torch import nn

import dropscale
from dropscale.inference import dropout_sites, is_dropout_site, mc_dropout, predict_mc


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bn_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        dropscale.Dropout(0.3, scaling="classic"),
        nn.Linear(8, 2),
    )


def test_batchnorm_statistics_unchanged_after_100_mc_passes():
    model = bn_model().train()
    bn = model[1]
    state = {k: v.clone() for k, v in bn.state_dict().items()}
    x = torch.randn(16, 4, generator=gen(1))
    with mc_dropout(model):
        assert not bn.training and model[3].training and model[4].training
        outputs = [model(x) for _ in range(100)]
    for key, value in bn.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not torch.equal(outputs[0], outputs[1]), "dropout did not sample"
    assert all(m.training for m in model.modules()), "train mode not restored"


def all_sites_model() -> nn.ModuleDict:
    torch.manual_seed(0)
    return nn.ModuleDict(
        {
            "d": nn.Dropout(0.1),
            "d1": nn.Dropout1d(0.1),
            "d2": nn.Dropout2d(0.1),
            "d3": nn.Dropout3d(0.1),
            "alpha": nn.AlphaDropout(0.1),
            "falpha": nn.FeatureAlphaDropout(0.1),
            "ds": dropscale.Dropout(0.1),
            "rnn": dropscale.RNNDropout(0.1),
            "emb": dropscale.EmbeddingDropout(nn.Embedding(5, 2), 0.1),
            "wd": dropscale.WeightDropout(nn.Linear(2, 2), 0.1, names="weight"),
            "salpha": dropscale.AlphaDropout(0.1),
            "gauss": dropscale.GaussianDropout(0.1),
            "lstm": nn.LSTM(2, 2, num_layers=2, dropout=0.2),
            "attn": nn.MultiheadAttention(4, 2, dropout=0.1),
            "bn": nn.BatchNorm2d(3),
            "plain_lstm": nn.LSTM(2, 2),
            "ln": nn.LayerNorm(3),
        }
    )


NOT_SITES = {"bn", "plain_lstm", "ln", "emb.embedding", "wd.module"}


def test_every_dropout_family_samples_and_nothing_else():
    model = all_sites_model()
    model.eval()
    model["bn"].train()  # a mixed starting state must come back exactly
    before = {name: m.training for name, m in model.named_modules()}
    with mc_dropout(model) as inside:
        assert inside is model
        for name, module in model.named_modules():
            if name == "" or name.startswith("attn.") or name in NOT_SITES:
                assert not module.training, name
            else:
                assert module.training, name
    assert {name: m.training for name, m in model.named_modules()} == before
    names = {name for name, _ in dropout_sites(model)}
    assert names.isdisjoint(NOT_SITES) and "lstm" in names and "attn" in names
    assert not is_dropout_site(nn.GRU(2, 2, num_layers=2))


def test_modes_restored_after_an_exception():
    model = bn_model().train()
    model[3].eval()
    before = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError, match="boom"), mc_dropout(model):
        raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before


def test_moment_dropout_statistics_frozen_inside():
    layer = dropscale.Dropout(0.5, scaling="moment", num_features=3)
    layer(torch.randn(10, 3, generator=gen(2)))
    before = layer.running_mean.clone()
    with mc_dropout(layer):
        layer(torch.randn(10, 3, generator=gen(3)) + 100)
    assert torch.equal(layer.running_mean, before)
    assert int(layer.num_batches_tracked) == 1 and layer.update_running_stats


def test_predict_mc_is_repeatable_with_a_seed_and_leaves_global_rng():
    model = bn_model().eval()
    x = torch.randn(16, 4, generator=gen(4))
    rng = torch.get_rng_state()
    first = predict_mc(model, x, samples=20, generator=gen(5))
    second = predict_mc(model, x, samples=20, generator=gen(5))
    other = predict_mc(model, x, samples=20, generator=gen(6))
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])
    assert not any(m.training for m in model.modules())


def test_predict_mc_mean_and_std_on_a_known_distribution():
    # Each output is 0 or 2 with probability 1/2: mean 1, std 1. For such
    # samples the (T - 1)-denominator variance is T / (T - 1) * (1 - (mean - 1)^2)
    # exactly, whatever the draws.
    samples, width = 400, 1000
    mean, std = predict_mc(
        dropscale.Dropout(0.5), torch.ones(width), samples=samples, generator=gen(7)
    )
    expected_std = torch.sqrt(samples / (samples - 1) * (1 - (mean - 1) ** 2))
    torch.testing.assert_close(std, expected_std, rtol=1e-5, atol=1e-6)
    # Means are k * 2 / T; their average has sd 1 / sqrt(T * width).
    k = mean * samples / 2
    torch.testing.assert_close(k, k.round(), rtol=0, atol=1e-3)
    assert abs(mean.mean().item() - 1.0) <= 5 / math.sqrt(samples * width)


def test_predict_mc_errors():
    model = nn.Dropout(0.5)
    with pytest.raises(ValueError, match="samples must be an int >= 2"):
        predict_mc(model, torch.ones(3), samples=1)
    with pytest.raises(TypeError, match="one tensor"):
        predict_mc(nn.LSTM(2, 2), torch.ones(3, 1, 2), samples=2)
    with pytest.raises(TypeError, match="nn.Module"), mc_dropout("model"):
        pass
