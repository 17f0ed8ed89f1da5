"""The real workloads registered with the study: IDX images with the CNN, text
windows with the AWD-LSTM, and the MLP with BatchNorm and its variance-shift
measurements. Every file is tiny and made by the test."""

from __future__ import annotations

import gzip
import math
import struct

import pytest
import torch

from dropscale.cli import main
from dropscale.data import Dataset
from dropscale.moments import batchnorm_shift
from dropscale.study.config import StudyConfig
from dropscale.study.registry import get_model
from dropscale.study.sites import MaskStreams, replace_dropout
from dropscale.study.trial import run_trial
from dropscale.study.workloads import MLPBatchNorm, bn_measure, windows

FAST = {
    "eval_scales": (0.5, 1.0, 2.0),
    "mc_samples": (1, 2),
    "calibration_examples": 16,
    "epochs": 1,
    "batch_size": 16,
    "seeds": 1,
}


def test_windows_are_next_token_pairs():
    x, y = windows(torch.arange(23), 5)
    assert x.tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14],
                          [15, 16, 17, 18, 19]]  # fmt: skip
    assert torch.equal(y, x + 1)
    x, _ = windows(torch.arange(23), 5, limit=11)
    assert x.shape == (2, 5)
    with pytest.raises(ValueError, match="do not fill one window of 30"):
        windows(torch.arange(23), 30)


def _idx(dims, values) -> bytes:
    head = bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return gzip.compress(head + bytes(values))


def test_cnn_trains_on_idx_files_through_the_study(tmp_path):
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 48), ("t10k", 24)):
        pix = torch.randint(0, 256, (n * 784,), generator=gen).tolist()
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            _idx((n, 28, 28), pix)
        )
        labels = [i % 10 for i in range(n)]
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx((n,), labels))
    config = StudyConfig(
        dataset="fashion-mnist",
        dataset_options={"data_dir": str(tmp_path)},
        model="cnn",
        model_options={"channels": [2, 4], "hidden": 8},
        scalings=("inverted",),
        ps=(0.3,),
        **FAST,
    )
    (result,) = run_trial(config, config.trials()[0])
    assert len(result.sites) == 3  # two channel-dropout sites, one in the head
    assert 0.0 <= result.accuracy <= 1.0 and result.metrics["nll"] > 0
    assert "scale_2_accuracy" in result.metrics and "mc_2_nll" in result.metrics


def test_awd_lstm_trains_on_a_corpus_folder_through_the_study(tmp_path):
    words = [
        "the",
        "cat",
        "sat",
        "on",
        "the",
        "mat",
        "and",
        "the",
        "dog",
        "sat",
        "on",
        "the",
        "log",
    ]
    for split, reps in (("train", 30), ("valid", 5), ("test", 5)):
        (tmp_path / f"{split}.txt").write_text(" ".join(words * reps) + "\n")
    config = StudyConfig(
        dataset="corpus",
        dataset_options={"data_dir": str(tmp_path), "window": 6, "min_freq": 1},
        model="awd-lstm",
        model_options={"emb_size": 8, "hidden_size": 12, "n_layers": 2},
        scalings=("classic",),
        ps=(0.5,),
        **FAST,
    )
    (result,) = run_trial(config, config.trials()[0])
    # embedding, input, two weight-drop, one between layers, output
    assert len(result.sites) == 6
    assert result.metrics["nll"] > 0 and 0.0 <= result.accuracy <= 1.0
    # p = 0.5 is the AWD default multiplier: the weight site drops half.
    model = get_model("awd-lstm").build(
        Dataset("d", torch.zeros(2, 6, dtype=torch.long), torch.zeros(2, 6),
                torch.zeros(2, 6, dtype=torch.long), torch.zeros(2, 6), 9),
        config.model_options, 0.5, "classic",
    )  # fmt: skip
    assert model.lm.p == {
        "embed": 0.1, "input": 0.4, "hidden": 0.25, "output": 0.4, "weight": 0.5,
    }  # fmt: skip


def test_awd_lstm_refuses_image_data():
    data = Dataset("img", torch.zeros(4, 9), torch.zeros(4), torch.zeros(4, 9),
                   torch.zeros(4), 3)  # fmt: skip
    with pytest.raises(ValueError, match="needs token windows"):
        get_model("awd-lstm").build(data, {"emb_size": 4, "hidden_size": 4,
                                           "n_layers": 1}, 0.2, "inverted")  # fmt: skip


@pytest.mark.parametrize("scaling", ["inverted", "none"])
def test_bn_shift_measured_matches_exact_and_recalibration_fixes_it(scaling):
    # One hidden layer: Linear -> ReLU -> dropout -> BatchNorm. BN's running
    # variance is accumulated (momentum None: the exact mean of the batch
    # variances) over 50 training batches of 512 with frozen weights, so it
    # estimates dropout's training variance a^2 q (sigma^2 + p mu^2) per unit.
    # The inference variance of BN's input is b^2 sigma^2; their ratio per
    # unit is the exact shift, whatever the unit's distribution; both sides
    # pool the variances over the units before dividing. Sampling
    # error: per unit about sqrt((kurtosis - 1) / N) < 2 % for N = 25,600
    # training values (kurtosis < 10 here) and < 5 % for the 4,096 inference
    # values; averaged over 32 units that is under 1 %, so 5 % is more than
    # 5 standard errors (a false alarm below 1e-6).
    torch.manual_seed(0)
    n_in, width, p = 6, 32, 0.5
    x = torch.randn(25_600, n_in) + 0.5
    y = (x.sum(1) > 3).long()
    data = Dataset("toy", x, y, x[:2000], y[:2000], 2)
    model = MLPBatchNorm(n_in, [width], 2, p=p, scaling=scaling, order="dropout-bn")
    (site,) = replace_dropout(model, scaling)
    site.streams = MaskStreams([1], [p], torch.device("cpu"))
    norm = model.net[3]
    norm.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 512):
            model(x[i : i + 512])
    # The exact value straight from the moments, on the same pre-dropout units.
    with torch.no_grad():
        pre = model.net[1](model.net[0](x[:4096]))
    units = [
        batchnorm_shift(p, mean=float(m), std=float(s), scaling=scaling, eps=0.0)
        for m, s in zip(pre.mean(0), pre.std(0), strict=True)
        if s > 0
    ]
    v_t = sum(u.running_var for u in units)
    v_e = sum(u.eval_out_std**2 * u.running_var for u in units)
    # Hand formula for the pooled ratio: V_t = a^2 q (s^2 + p m^2), V_e = b^2 s^2.
    a, b = {"inverted": (2.0, 1.0), "none": (1.0, 1.0)}[scaling]
    m, s = pre.mean(0).double(), pre.std(0).double()
    live = s > 0
    by_hand = (b**2 * s[live] ** 2).sum() / (
        a**2 * 0.5 * (s[live] ** 2 + 0.5 * m[live] ** 2)
    ).sum()
    expected = v_e / v_t
    assert expected == pytest.approx(float(by_hand), rel=1e-6)
    out = bn_measure(model, data, scaling)
    assert out["bn1_shift_exact"] == pytest.approx(float(expected), rel=1e-6)
    assert out["bn1_shift_measured"] == pytest.approx(float(expected), rel=0.05)
    # After the fix BN's running variance is the inference variance itself.
    with torch.no_grad():
        model.eval()
        eval_var = model.net[2](pre).var(0)
    ratio = (eval_var / norm.running_var).mean()
    assert float(ratio) == pytest.approx(1.0, rel=0.04)
    assert 0.0 <= out["bn_recal_accuracy"] <= 1.0


def test_study_data_dir_option(tmp_path, capsys):
    code = main(["study", "--preset", "quick", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--data-dir: data set 'digits' reads no files" in err


def test_study_data_dir_reaches_the_data_set(tmp_path):
    from dropscale.cli import _study_config, build_parser

    args = build_parser().parse_args(
        ["study", "--preset", "awd-lstm-quick", "--data-dir", str(tmp_path)]
    )
    config = _study_config(args)
    assert config.dataset == "corpus"
    assert config.dataset_options["data_dir"] == str(tmp_path)
    assert config.dataset_options["max_vocab"] == 3000  # the rest is kept


def _tiny_corpus(folder) -> None:
    text = "the cat sat on the mat and the dog sat on the log"
    for split, reps in (("train", 30), ("valid", 5), ("test", 6)):
        (folder / f"{split}.txt").write_text(" ".join([text] * reps) + "\n")


def test_stream_lm_carries_the_state_across_windows():
    from dropscale.models import AWDLSTM
    from dropscale.study.workloads import StreamLM

    torch.manual_seed(0)
    lm = AWDLSTM(11, emb_size=4, hidden_size=6, n_layers=2).eval()
    tokens = torch.randint(0, 11, (3, 10))
    with torch.no_grad():
        whole, _ = lm(tokens.t())  # one pass over all 10 steps
        windowed = StreamLM(lm, window=3)(tokens)  # windows of 3, 3, 3, 1
        fresh = torch.cat(
            [lm(tokens[:, i : i + 3].t())[0] for i in range(0, 10, 3)]
        ).transpose(0, 1)
    assert torch.allclose(windowed, whole.transpose(0, 1), atol=1e-6)
    assert not torch.allclose(windowed, fresh, atol=1e-3)  # zero state differs


def test_awd_lstm_trials_follow_the_recipe_paired_by_seed(tmp_path):
    from dropscale.data import batchify, bptt_windows
    from dropscale.study.trial import load_data

    _tiny_corpus(tmp_path)
    config = StudyConfig(
        dataset="corpus",
        dataset_options={
            "data_dir": str(tmp_path),
            "window": 6,
            "min_freq": 1,
            "eval_streams": 2,
        },
        model="awd-lstm",
        model_options={"emb_size": 8, "hidden_size": 12, "n_layers": 2},
        scalings=("classic", "none"),
        ps=(0.5,),
        **{**FAST, "epochs": 2, "batch_size": 4, "seeds": 2},
    )
    data = load_data(config)
    results = {
        (t.scaling, t.seed): run_trial(config, t, data)[0] for t in config.trials()
    }
    # Variable BPTT: the windows drawn from the seed's order generator, twice.
    train = batchify(data.corpus.train, 4)
    for trial in config.trials():
        gen = torch.Generator().manual_seed(trial.order_seed)
        lengths = [
            x.shape[0]
            for _ in range(2)
            for x, _ in bptt_windows(train, 6, variable=True, generator=gen)
        ]
        assert len(set(lengths)) > 1
        m = results[(trial.scaling, trial.seed)].metrics
        assert m["lm_steps"] == len(lengths)
        # The engine's test NLL (state carried over 2 streams) is the
        # recipe's test perplexity, computed by separate code.
        assert math.exp(m["nll"]) == pytest.approx(m["test_ppl"], rel=1e-5)
        assert m["val_ppl"] > 1 and m["averaged_from_step"] == -1  # Adam
    # classic and none train identically (a = 1): same init, windows and
    # masks give the same model; a different seed does not.
    a, b = results[("classic", 0)].metrics, results[("none", 0)].metrics
    assert a["train_loss"] == b["train_loss"]
    assert a["train_loss"] != results[("classic", 1)].metrics["train_loss"]


def test_awd_lstm_report_gives_perplexities(tmp_path):
    from dropscale.study import run_study
    from dropscale.study.rows import read_csv

    _tiny_corpus(tmp_path)
    config = StudyConfig(
        dataset="corpus",
        dataset_options={"data_dir": str(tmp_path), "window": 6, "min_freq": 1},
        model="awd-lstm",
        model_options={"emb_size": 8, "hidden_size": 12, "n_layers": 1},
        scalings=("inverted", "classic"),
        ps=(0.3,),
        **FAST,
    )
    out = run_study(config, tmp_path / "out")
    text = out.report_md.read_text()
    assert "## Language model: perplexity" in text
    for r in read_csv(out.results_csv):
        one = "(1 seed, no interval)"
        row = f"| {r['scaling']} | 0.3 | {float(r['val_ppl']):.2f} {one} | "
        assert row + f"{float(r['test_ppl']):.2f} {one} |" in text


def test_awd_lstm_sgd_trials_average_once_validation_stalls(tmp_path):
    # The recipe's knobs reach the trainer: checks every 2 steps, patience 1
    # check, SGD at lr 30 on a tiny corpus -> validation soon gets worse than
    # an earlier check and averaging starts (with the defaults, 200 steps
    # between checks and patience 5, it never starts on this corpus).
    _tiny_corpus(tmp_path)
    config = StudyConfig(
        dataset="corpus",
        dataset_options={
            "data_dir": str(tmp_path),
            "window": 6,
            "min_freq": 1,
            "eval_streams": 2,
        },
        model="awd-lstm",
        model_options={
            "emb_size": 8,
            "hidden_size": 12,
            "n_layers": 1,
            "eval_every": 2,
            "nonmono": 1,
        },
        scalings=("inverted",),
        ps=(0.3,),
        optimizer="sgd",
        lr=30.0,
        **{**FAST, "epochs": 3, "batch_size": 4},
    )
    (result,) = run_trial(config, config.trials()[0])
    start = result.metrics["averaged_from_step"]
    assert 0 < start < result.metrics["lm_steps"]
    assert math.exp(result.metrics["nll"]) == pytest.approx(
        result.metrics["test_ppl"], rel=1e-5
    )
