"""AWD-LSTM: wiring of the five dropout sites, exact eval behaviour against a
plain-PyTorch reference, shared masks across rules, and the LM trainer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dropscale.data.text import Corpus, Vocab
from dropscale.layers import Dropout
from dropscale.models.awd_lstm import (
    AWD_DEFAULT_P,
    AWDLSTM,
    BatchFirstLM,
    with_dropout_sites,
)
from dropscale.models.lm_training import (
    LMTrainConfig,
    _Averager,
    evaluate_perplexity,
    scaled_eval_factors,
    train_language_model,
)
from dropscale.structured import EmbeddingDropout, RNNDropout, WeightDropout

V, E, H = 23, 6, 10


def small(scaling="inverted", drop_mult=1.0, n_layers=2, seed=0) -> AWDLSTM:
    torch.manual_seed(seed)
    return AWDLSTM(
        V, emb_size=E, hidden_size=H, n_layers=n_layers, drop_mult=drop_mult,
        scaling=scaling,
    )  # fmt: skip


def reference_logits(model: AWDLSTM, tokens, factor: dict[str, float]):
    """Eval forward with plain torch modules, each site scaled by its factor."""
    weight = model.encoder.weight.detach()
    x = F.embedding(tokens, weight * factor["embed"]) * factor["input"]
    n = len(model.rnns)
    for i, wrapped in enumerate(model.rnns):
        lstm = wrapped.module
        plain = nn.LSTM(lstm.input_size, lstm.hidden_size)
        plain.load_state_dict(lstm.state_dict())
        with torch.no_grad():
            plain.weight_hh_l0.mul_(factor["weight"])
        x, _ = plain(x)
        if i < n - 1:
            x = x * factor["hidden"]
    x = x * factor["output"]
    return F.linear(x, weight, model.decoder.bias.detach())


def test_shapes_tied_weights_and_sites():
    model = small(scaling="classic", drop_mult=0.5, n_layers=3)
    logits, hidden = model(torch.randint(0, V, (7, 4)))
    assert logits.shape == (7, 4, V)
    assert [h.shape for h, _ in hidden] == [(1, 4, H), (1, 4, H), (1, 4, E)]
    assert model.decoder.weight is model.encoder.weight
    found = {
        EmbeddingDropout: [model.embed_drop.p],
        RNNDropout: [model.input_drop.p, *(d.p for d in model.hidden_drops)]
        + [model.output_drop.p],
        WeightDropout: [r.p for r in model.rnns],
    }
    half = {k: v * 0.5 for k, v in AWD_DEFAULT_P.items()}
    assert found[EmbeddingDropout] == [half["embed"]]
    assert found[RNNDropout] == [half["input"], half["hidden"], half["hidden"]] + [
        half["output"]
    ]
    assert found[WeightDropout] == [half["weight"]] * 3
    kinds = (EmbeddingDropout, RNNDropout, WeightDropout)
    sites = [m for m in model.modules() if isinstance(m, kinds)]
    assert len(sites) == 1 + 4 + 3
    assert {s.scaling.name for s in sites} == {"classic"}
    assert all(r.names == ("weight_hh_l0",) for r in model.rnns)


@pytest.mark.parametrize("scaling", ["inverted", "classic", "variance", "none"])
def test_eval_matches_plain_reference(scaling):
    model = small(scaling=scaling).eval()
    tokens = torch.randint(0, V, (9, 3), generator=torch.Generator().manual_seed(1))
    # Inference factor b of each rule at q = 1 - p: classic q, the others 1.
    factor = {
        site: (1.0 - p if scaling == "classic" else 1.0) for site, p in model.p.items()
    }
    with torch.no_grad():
        got, _ = model(tokens)
    torch.testing.assert_close(got, reference_logits(model, tokens, factor))


def test_eval_scale_sweep_multiplies_every_site_then_restores():
    model = small().eval()
    tokens = torch.randint(0, V, (5, 2), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), scaled_eval_factors(model, 0.8):
        got, _ = model(tokens)
    torch.testing.assert_close(
        got, reference_logits(model, tokens, dict.fromkeys(AWD_DEFAULT_P, 0.8))
    )
    assert model.input_drop.scaling.name == "inverted"
    with torch.no_grad(), scaled_eval_factors(model, lambda m: 1 / math.sqrt(1 - m.p)):
        got, _ = model(tokens)
    spread = {k: 1 / math.sqrt(1 - p) for k, p in model.p.items()}
    torch.testing.assert_close(got, reference_logits(model, tokens, spread))


def test_training_masks_have_the_awd_structure():
    model = small(drop_mult=1.0).train()
    seen = {}

    def keep(name):
        def hook(_m, inputs, output):
            seen[name] = (inputs[0].detach(), output.detach())

        return hook

    model.input_drop.register_forward_hook(keep("input"))
    model.embed_drop.register_forward_hook(keep("embed"))
    tokens = torch.randint(0, V, (30, 8), generator=torch.Generator().manual_seed(3))
    model(tokens, generator=torch.Generator().manual_seed(4))
    x, y = seen["input"]  # (T, B, E): one decision per (sequence, feature)
    dropped = ((y == 0) & (x != 0)).any(dim=0)
    kept = (y != 0).any(dim=0)
    assert not bool((dropped & kept).any()), "input mask must not change over time"
    assert 0 < int(dropped.sum()) < dropped.numel()
    ids, emb = seen["embed"]  # a dropped word is zero at every position
    zero_row = (emb == 0).all(dim=-1)
    for word in ids.unique():
        at = zero_row[ids == word]
        assert bool(at.all()) or not bool(at.any())


def test_same_seed_same_masks_whatever_the_rule():
    tokens = torch.randint(0, V, (12, 4), generator=torch.Generator().manual_seed(5))
    patterns = []
    for scaling in ("inverted", "classic", "none"):
        model = small(scaling=scaling, seed=7).train()
        out = {}
        model.output_drop.register_forward_hook(
            lambda _m, _i, o, out=out: out.setdefault("y", o.detach())
        )
        model(tokens, generator=torch.Generator().manual_seed(8))
        patterns.append(out["y"] == 0)
    assert all(torch.equal(patterns[0], p) for p in patterns[1:])


def test_gradients_reach_raw_weights():
    model = small().train()
    logits, _ = model(torch.randint(0, V, (6, 3)))
    logits.sum().backward()
    assert model.rnns[0].module.weight_hh_l0.grad.abs().sum() > 0
    assert model.encoder.weight.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"p\['input'\] \* drop_mult = 1\.2"):
        AWDLSTM(V, emb_size=E, hidden_size=H, drop_mult=3.0)
    with pytest.raises(ValueError, match="unknown dropout sites"):
        AWDLSTM(V, emb_size=E, hidden_size=H, p={"inputs": 0.1})
    with pytest.raises(ValueError, match="n_layers must be a positive integer"):
        AWDLSTM(V, emb_size=E, hidden_size=H, n_layers=0)
    with pytest.raises(ValueError, match=r"time-major token ids \(T, B\)"):
        small()(torch.zeros(5, dtype=torch.long))


# ------------------------------------------------------------------ trainer


def corpus_of(ids: list[int], vocab_size: int) -> Corpus:
    t = torch.tensor(ids)
    vocab = Vocab(["<unk>"] + [f"w{i}" for i in range(1, vocab_size)])
    return Corpus("toy", vocab, t, t.clone(), t.clone(), "word", "toy")


def test_uniform_model_has_perplexity_equal_to_vocabulary_size():
    model = small()
    with torch.no_grad():
        model.encoder.weight.zero_()  # tied: the decoder's weight is zero too
        model.decoder.bias.zero_()
    ids = torch.randint(0, V, (400,))
    assert evaluate_perplexity(model, ids, batch_size=4, bptt=7) == pytest.approx(V)


def test_windowed_evaluation_carries_the_state():
    model = small().eval()
    ids = torch.randint(0, V, (201,), generator=torch.Generator().manual_seed(6))
    # One pass over each whole column equals the windowed evaluation.
    cols = ids[:200].view(4, 50).t()  # (50, 4), as batchify lays it out
    with torch.no_grad():
        logits, _ = model(cols[:-1])
    nll = F.cross_entropy(logits.flatten(0, 1), cols[1:].flatten())
    got = evaluate_perplexity(model, ids, batch_size=4, bptt=6)
    assert got == pytest.approx(math.exp(float(nll)), rel=1e-5)


def test_averager_is_the_exact_running_mean():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    avg = _Averager([w])
    values = [torch.tensor([3.0, 0.0]), torch.tensor([5.0, 4.0])]
    for v in values:
        with torch.no_grad():
            w.copy_(v)
        avg.update()
    torch.testing.assert_close(avg.avg[0], torch.tensor([3.0, 2.0]))
    with avg.swapped_in():
        torch.testing.assert_close(w.detach(), torch.tensor([3.0, 2.0]))
    torch.testing.assert_close(w.detach(), torch.tensor([5.0, 4.0]))


@pytest.mark.parametrize(
    "optimizer,lr,tie,bound", [("sgd", 30.0, True, 2.0), ("adam", 0.01, False, 5.0)]
)
def test_trainer_learns_a_repeating_sequence(optimizer, lr, tie, bound):
    # A cycle of 7 tokens: a model that ignores context has perplexity 7 (the
    # unigram), one that reads its input approaches 1. (Adam with tied weights
    # sits on the unigram plateau for long on this toy task, so the Adam case
    # unties them.)
    corpus = corpus_of([1, 2, 3, 4, 5, 6, 7] * 120, V)
    torch.manual_seed(0)
    model = AWDLSTM(
        V, emb_size=16, hidden_size=32, n_layers=2, drop_mult=0.2, tie_weights=tie
    )
    config = LMTrainConfig(
        epochs=6, batch_size=4, eval_batch_size=4, bptt=10, optimizer=optimizer,
        lr=lr, eval_every=15, nonmono=1,
    )  # fmt: skip
    result = train_language_model(model, corpus, config)
    assert result.val_ppl < bound and result.test_ppl < bound, result.checks
    assert result.train_tokens > 0 and result.tokens_per_second > 0
    assert len(result.checks) >= 6 and not model.training
    assert result.val_ppl == min(c.val_ppl for c in result.checks)


def test_nt_averaging_starts_when_validation_stops_improving():
    # lr so high that validation gets worse: the trigger must fire.
    corpus = corpus_of(torch.randint(1, V, (600,)).tolist(), V)
    model = small(drop_mult=0.5)
    config = LMTrainConfig(
        epochs=2, batch_size=4, eval_batch_size=4, bptt=10, lr=200.0, clip=5.0,
        eval_every=3, nonmono=1,
    )  # fmt: skip
    result = train_language_model(model, corpus, config)
    assert result.averaged_from_step is not None
    steps = [c.step for c in result.checks]
    j = steps.index(result.averaged_from_step)  # the check that fired it
    ppl = [c.val_ppl for c in result.checks]
    # nonmono = 1: worse than the best check before the previous one.
    assert j >= 2 and ppl[j] > min(ppl[: j - 1])
    assert all(ppl[i] <= min(ppl[: i - 1]) for i in range(2, j))
    assert [c.averaging for c in result.checks] == [False] * (j + 1) + [True] * (
        len(steps) - j - 1
    )


def test_config_errors():
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adam'"):
        LMTrainConfig(optimizer="asgd")
    with pytest.raises(ValueError, match="bptt must be a positive integer"):
        LMTrainConfig(bptt=0)
    with pytest.raises(ValueError, match="lr must be a positive number"):
        LMTrainConfig(lr=math.nan)


@pytest.mark.parametrize("scaling", ["inverted", "classic", "variance", "none"])
def test_dropout_site_version_is_the_same_model(scaling):
    # with_dropout_sites rebuilds the five sites from plain Dropout modules:
    # the same weights, the same inference output under every rule.
    model = small(scaling=scaling).eval()
    tokens = torch.randint(0, V, (9, 3), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        want, _ = model(tokens)
        rebuilt = with_dropout_sites(model).eval()
        got = BatchFirstLM(rebuilt)(tokens.t())
    torch.testing.assert_close(got.transpose(0, 1), want)
    kinds = [m for m in rebuilt.modules() if isinstance(m, Dropout)]
    assert len(kinds) == 6 and {d.scaling.name for d in kinds} == {scaling}


def test_dropout_site_version_keeps_the_mask_structure():
    torch.manual_seed(10)
    model = with_dropout_sites(small()).train()
    seen = {}
    model.input_drop.register_forward_hook(
        lambda _m, i, o: seen.update(x=i[0].detach(), y=o.detach())
    )
    model.embed_drop.drop.register_forward_hook(
        lambda _m, _i, o: seen.update(w=o.detach())
    )
    model(torch.randint(0, V, (20, 6)))
    dropped = ((seen["y"] == 0) & (seen["x"] != 0)).any(dim=0)
    kept = (seen["y"] != 0).any(dim=0)
    assert not bool((dropped & kept).any()) and bool(dropped.any())
    rows = seen["w"]  # (V, E): each row all zero or all kept
    zero = (rows == 0).all(dim=1)
    assert bool(((rows != 0).all(dim=1) | zero).all()) and bool(zero.any())
