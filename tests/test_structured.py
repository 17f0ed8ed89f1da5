"""RNNDropout, EmbeddingDropout and WeightDropout under every scaling rule.

Monte-Carlo checks use 5-sigma bounds on a binomial fraction: the false-alarm
rate is about 6e-7 per check. Expected factors are written out by hand here,
never taken from dropscale.scaling.
"""

import copy
import math
import warnings

import pytest
import torch
from torch import nn

import dropscale
from dropscale.structured import EmbeddingDropout, RNNDropout, WeightDropout

P = 0.5
Q = 1.0 - P

# (scaling argument, a(q), b(q)) written out from the table in DESIGN.md.
RULES = [
    ("inverted", lambda q: 1.0 / q, lambda q: 1.0),
    ("classic", lambda q: 1.0, lambda q: q),
    ("variance", lambda q: 1.0 / math.sqrt(q), lambda q: 1.0),
    ("none", lambda q: 1.0, lambda q: 1.0),
    ((3.0, 0.25), lambda q: 3.0, lambda q: 0.25),
]
RULE_IDS = ["inverted", "classic", "variance", "none", "custom"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def f32(value: float) -> float:
    """``value`` rounded to float32, as a float32 tensor stores it."""
    return torch.tensor(value, dtype=torch.float32).item()


def assert_fraction(hits: int, n: int, prob: float, what: str) -> None:
    """5-sigma binomial check (false alarm about 6e-7)."""
    tol = 5.0 * math.sqrt(prob * (1.0 - prob) / n)
    frac = hits / n
    assert abs(frac - prob) <= tol, f"{what}: {frac:.5f} vs {prob} (tol {tol:.5f})"


# ---------------------------------------------------------------- RNNDropout


@pytest.mark.parametrize(("scaling", "a_of", "b_of"), RULES, ids=RULE_IDS)
@pytest.mark.parametrize("batch_first", [True, False])
def test_rnn_dropout_mask_is_constant_over_time(scaling, a_of, b_of, batch_first):
    layer = RNNDropout(P, scaling=scaling, batch_first=batch_first)
    shape = (4, 5, 8) if batch_first else (5, 4, 8)
    time_dim = 1 if batch_first else 0
    x = torch.ones(shape)
    y = layer(x, generator=gen(1))
    a = a_of(Q)
    assert set(y.unique().tolist()) <= {0.0, f32(a)}
    first_step = y.narrow(time_dim, 0, 1)
    assert torch.equal(y, first_step.expand_as(y)), "mask differs between steps"
    # Both values occur (32 decisions at q = 0.5: all equal has chance 2**-31).
    assert 0 < int((first_step == 0).sum()) < 32
    assert torch.equal(layer.eval()(x), torch.full(shape, b_of(Q)))


def test_rnn_dropout_drop_fraction_is_p():
    p = 0.3
    y = RNNDropout(p, batch_first=False)(torch.ones(3, 2000, 50), generator=gen(2))
    assert torch.equal(y, y[:1].expand_as(y))
    assert_fraction(int((y[0] == 0).sum()), 2000 * 50, p, "dropped fraction")


def test_rnn_dropout_zero_length_sequence_passes_through():
    x = torch.empty(4, 0, 8)
    y = RNNDropout(0.5)(x)
    assert y.shape == (4, 0, 8)
    assert RNNDropout(0.5, batch_first=False)(torch.empty(0, 4, 8)).shape == (0, 4, 8)


def test_rnn_dropout_generator_repeats_masks():
    layer = RNNDropout(0.5)
    x = torch.randn(4, 5, 8)
    assert torch.equal(layer(x, generator=gen(7)), layer(x, generator=gen(7)))
    assert not torch.equal(layer(x, generator=gen(7)), layer(x, generator=gen(8)))


def test_rnn_dropout_errors_and_repr():
    with pytest.raises(ValueError, match="1.5"):
        RNNDropout(1.5)
    with pytest.raises(ValueError, match="-0.1"):
        RNNDropout(-0.1)
    with pytest.raises(ValueError, match="moment"):
        RNNDropout(0.5, scaling="moment")
    # the layers' own MOMENT convention object is refused the same way, at
    # construction rather than at the first forward
    from dropscale.layers import MOMENT

    with pytest.raises(ValueError, match="not available here"):
        RNNDropout(0.5, scaling=MOMENT)
    with pytest.raises(ValueError, match=r"3-D.*\(4, 8\)"):
        RNNDropout(0.5)(torch.ones(4, 8))
    with pytest.raises(TypeError, match="dtype"):
        RNNDropout(0.5)(torch.ones(2, 3, 4, dtype=torch.long))
    text = repr(RNNDropout(0.25, scaling="classic", batch_first=False))
    assert "p=0.25" in text and "'classic'" in text and "batch_first=False" in text


# ---------------------------------------------------------- EmbeddingDropout


def make_embedding(vocab: int = 50, dim: int = 4, **kwargs) -> nn.Embedding:
    torch.manual_seed(0)
    return nn.Embedding(vocab, dim, **kwargs)


@pytest.mark.parametrize(("scaling", "a_of", "b_of"), RULES, ids=RULE_IDS)
def test_embedding_dropout_drops_whole_words(scaling, a_of, b_of):
    emb = make_embedding()
    before = emb.weight.detach().clone()
    layer = EmbeddingDropout(emb, P, scaling=scaling)
    words = torch.randint(0, 50, (6, 30), generator=gen(3))
    out = layer(words, generator=gen(4))
    a = a_of(Q)
    n_dropped = 0
    for word in words.unique().tolist():
        rows = out[words == word]
        if torch.equal(rows, torch.zeros_like(rows)):
            n_dropped += 1
        else:
            expected = (before[word] * a).expand_as(rows)
            torch.testing.assert_close(rows, expected, rtol=1e-6, atol=0)
    assert 0 < n_dropped < len(words.unique())
    evaluated = layer.eval()(words)
    torch.testing.assert_close(evaluated, before[words] * b_of(Q), rtol=1e-6, atol=0)
    assert torch.equal(emb.weight, before), "the wrapped weight was modified"


def test_embedding_dropout_drop_fraction_is_p():
    p = 0.3
    layer = EmbeddingDropout(nn.Embedding(20000, 2), p)
    out = layer(torch.arange(20000), generator=gen(5))
    dropped = int((out == 0).all(dim=1).sum())
    assert_fraction(dropped, 20000, p, "dropped rows")


def test_embedding_dropout_gradient_and_padding_idx():
    emb = make_embedding(padding_idx=0)
    before = emb.weight.detach().clone()
    layer = EmbeddingDropout(emb, 0.5)
    words = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1]])
    out = layer(words, generator=gen(6))
    assert torch.equal(out[words == 0], torch.zeros(2, 4))
    out.sum().backward()
    grad = emb.weight.grad
    assert torch.equal(grad[0], torch.zeros(4)), "padding row got a gradient"
    for word in range(1, 6):
        kept = bool(out[words == word].abs().sum() > 0)
        count = int((words == word).sum())
        expected = torch.full((4,), 2.0 * count if kept else 0.0)
        assert torch.equal(grad[word], expected), f"word {word}"
    assert torch.equal(emb.weight, before)


def test_embedding_dropout_p1_gives_zeros_not_nan():
    emb = make_embedding()
    with torch.no_grad():
        emb.weight[3] = float("inf")
    layer = EmbeddingDropout(emb, 1.0)
    out = layer(torch.arange(50))
    assert torch.equal(out, torch.zeros(50, 4))
    assert torch.isinf(emb.weight[3]).all()


def test_embedding_dropout_eval_does_not_touch_weight_under_classic():
    emb = make_embedding()
    before = emb.weight.detach().clone()
    layer = EmbeddingDropout(emb, 0.4, scaling="classic").eval()
    for _ in range(3):
        layer(torch.arange(50))
    assert torch.equal(emb.weight, before)


def test_embedding_dropout_keeps_sparse_gradients_sparse():
    emb = nn.Embedding(1000, 3, sparse=True)
    words = torch.tensor([[1, 2, 3, 2]])
    EmbeddingDropout(emb, 0.5)(words, generator=gen(16)).sum().backward()
    assert emb.weight.grad.is_sparse
    touched = set(emb.weight.grad.coalesce().indices()[0].tolist())
    assert touched <= {1, 2, 3}


def test_embedding_dropout_errors_and_repr():
    emb = make_embedding()
    with pytest.raises(ValueError, match="2.0"):
        EmbeddingDropout(emb, 2.0)
    with pytest.raises(TypeError, match="nn.Embedding"):
        EmbeddingDropout(nn.Linear(2, 2), 0.1)
    with pytest.raises(NotImplementedError, match="max_norm"):
        EmbeddingDropout(nn.Embedding(5, 2, max_norm=1.0), 0.1)
    with pytest.raises(ValueError, match="moment"):
        EmbeddingDropout(emb, 0.1, scaling="moment")
    with pytest.raises(TypeError, match="integer indices"):
        EmbeddingDropout(emb, 0.1)(torch.ones(3))
    text = repr(EmbeddingDropout(emb, 0.1, scaling="variance"))
    assert "p=0.1" in text and "'variance'" in text


# ------------------------------------------------------------- WeightDropout


def ones_linear() -> nn.Linear:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.zero_()
    return layer


def test_weight_dropout_linear_gradient_and_raw_weight_unchanged():
    wrapper = WeightDropout(ones_linear(), 0.5, names=("weight",))
    raw = wrapper.module.weight
    before = raw.detach().clone()
    x = torch.tensor([1.0, 2.0, 3.0])
    wrapper(x, generator=gen(0)).sum().backward()
    for (i, j), g in zip(
        [(i, j) for i in range(2) for j in range(3)],
        raw.grad.flatten().tolist(),
        strict=True,
    ):
        assert g in (0.0, 2.0 * x[j].item()), f"grad[{i},{j}] = {g}"
    for _ in range(50):
        wrapper(x)
    assert torch.equal(raw, before)
    assert isinstance(wrapper.module.weight, nn.Parameter)
    assert [name for name, _ in wrapper.named_parameters()] == [
        "module.weight",
        "module.bias",
    ]


@pytest.mark.parametrize(("scaling", "a_of", "b_of"), RULES, ids=RULE_IDS)
def test_weight_dropout_values_under_every_rule(scaling, a_of, b_of):
    wrapper = WeightDropout(ones_linear(), P, names="weight", scaling=scaling)
    # Row k of the output is column k of the dropped weight.
    dropped = wrapper(torch.eye(3), generator=gen(9)).T
    assert set(dropped.unique().tolist()) <= {0.0, f32(a_of(Q))}
    assert 0 < int((dropped == 0).sum()) < 6
    torch.testing.assert_close(
        wrapper.eval()(torch.eye(3)).T, torch.full((2, 3), b_of(Q)), rtol=1e-6, atol=0
    )


def test_weight_dropout_fresh_mask_every_call_keeps_fraction_p():
    p = 0.4
    linear = nn.Linear(200, 1, bias=False)
    nn.init.ones_(linear.weight)
    wrapper = WeightDropout(linear, p, names="weight", scaling="none")
    x = torch.ones(200)
    g = gen(10)
    kept = [int(wrapper(x, generator=g).item()) for _ in range(500)]
    assert len(set(kept)) > 10, "the mask is not redrawn at every call"
    assert_fraction(500 * 200 - sum(kept), 500 * 200, p, "dropped weights")


def make_lstm() -> nn.LSTM:
    torch.manual_seed(0)
    return nn.LSTM(4, 6, num_layers=2)


NAMES_2L = ("weight_hh_l0", "weight_hh_l1")


def test_weight_dropout_lstm_matches_manual_dropconnect_and_grads_reach_raw():
    lstm = make_lstm()
    reference = copy.deepcopy(lstm)
    wrapper = WeightDropout(lstm, 0.5, names=NAMES_2L)
    x = torch.randn(7, 3, 4, generator=gen(11))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = wrapper(x, generator=gen(12))
    # The same generator seed draws the same masks, in the order of names.
    g = gen(12)
    masks = {
        n: dropscale.dropout(torch.ones(24, 6), 0.5, training=True, generator=g)
        for n in NAMES_2L
    }
    with torch.no_grad():
        for n in NAMES_2L:
            getattr(reference, n).mul_(masks[n])
    expected, _ = reference(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    expected.sum().backward()
    for n in NAMES_2L:
        raw_grad = getattr(lstm, n).grad
        assert raw_grad is not None and raw_grad.abs().sum() > 0, n
        torch.testing.assert_close(
            raw_grad, getattr(reference, n).grad * masks[n], rtol=1e-5, atol=1e-6
        )
    # The bare module still runs on its raw weights after a wrapped call.
    torch.testing.assert_close(lstm(x)[0], make_lstm()(x)[0], rtol=0, atol=0)


def test_weight_dropout_lstm_eval_equals_unwrapped_under_each_rule():
    x = torch.randn(5, 2, 4, generator=gen(13))
    wrapper = WeightDropout(make_lstm(), 0.5, names=NAMES_2L).eval()
    assert torch.equal(wrapper(x)[0], make_lstm()(x)[0])
    classic = WeightDropout(make_lstm(), 0.5, names=NAMES_2L, scaling="classic")
    scaled = make_lstm()
    with torch.no_grad():
        for n in NAMES_2L:
            getattr(scaled, n).mul_(0.5)
    torch.testing.assert_close(classic.eval()(x)[0], scaled(x)[0], rtol=0, atol=0)


def test_weight_dropout_state_dict_round_trip():
    wrapper = WeightDropout(make_lstm(), 0.3, names=NAMES_2L)
    wrapper(torch.randn(2, 1, 4))  # a training call must not change the state
    state = wrapper.state_dict()
    assert "module.weight_hh_l0" in state and "module.weight_hh_l1" in state
    torch.manual_seed(99)
    fresh = WeightDropout(nn.LSTM(4, 6, num_layers=2), 0.3, names=NAMES_2L)
    fresh.load_state_dict(state)
    x = torch.randn(3, 2, 4, generator=gen(14))
    assert torch.equal(fresh.eval()(x)[0], wrapper.eval()(x)[0])
    assert torch.equal(fresh(x, generator=gen(15))[0], wrapper(x, generator=gen(15))[0])


def test_weight_dropout_gru_trains():
    torch.manual_seed(0)
    gru = nn.GRU(3, 5, batch_first=True)
    wrapper = WeightDropout(gru, 0.5, names=("weight_hh_l0", "weight_ih_l0"))
    out, _ = wrapper(torch.randn(2, 4, 3))
    out.sum().backward()
    for n in ("weight_hh_l0", "weight_ih_l0"):
        grad = getattr(gru, n).grad
        zero = float((grad == 0).float().mean())
        assert 0.2 < zero < 0.8, f"{n}: zero-gradient fraction {zero}"


class _Warner(nn.Module):
    """Emits the cuDNN non-contiguous warning and one unrelated warning."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))

    def forward(self, x):
        warnings.warn(
            "RNN module weights are not part of single contiguous chunk of memory. "
            "This means they need to be compacted at every call.",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn("something else", UserWarning, stacklevel=1)
        return x * self.weight


def test_weight_dropout_filters_only_the_rnn_warning():
    wrapper = WeightDropout(_Warner(), 0.5, names="weight")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapper(torch.ones(2))
    assert [str(w.message) for w in caught] == ["something else"]


def test_weight_dropout_errors_and_repr():
    with pytest.raises(ValueError, match="'weight_hh_l0'.*weight, bias"):
        WeightDropout(nn.Linear(2, 2), 0.5)
    with pytest.raises(ValueError, match="empty"):
        WeightDropout(nn.Linear(2, 2), 0.5, names=())
    with pytest.raises(ValueError, match="duplicates"):
        WeightDropout(nn.Linear(2, 2), 0.5, names=("weight", "weight"))
    with pytest.raises(ValueError, match="1.2"):
        WeightDropout(nn.Linear(2, 2), 1.2, names="weight")
    with pytest.raises(ValueError, match="moment"):
        WeightDropout(nn.Linear(2, 2), 0.5, names="weight", scaling="moment")
    with pytest.raises(TypeError, match="nn.Module"):
        WeightDropout("lstm", 0.5)
    text = repr(WeightDropout(nn.Linear(2, 2), 0.2, names="weight", scaling="none"))
    assert "p=0.2" in text and "'none'" in text and "('weight',)" in text
