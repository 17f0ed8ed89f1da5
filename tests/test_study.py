"""The study engine: configuration, batched == single, pairing, inference
variants, outputs and the verdict recomputed from results.csv."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from scipy import stats

from dropscale.study import (
    StudyConfig,
    load_preset,
    load_study_file,
    run_group,
    run_study,
    run_trial,
)
from dropscale.study.rows import read_csv
from dropscale.study.sites import MaskStreams, Site
from dropscale.study.trial import load_data


def tiny(**kw) -> StudyConfig:
    base = dict(
        model_options={"hidden": [16]},
        ps=(0.2, 0.5),
        seeds=2,
        epochs=2,
        mc_samples=(1, 2, 5),
        eval_scales=(0.5, 1.0, 2.0),
        calibration_examples=64,
        group_size=8,
    )
    base.update(kw)
    return StudyConfig(**base)


@pytest.fixture(scope="module")
def data():
    return load_data(tiny())


# ---------------------------------------------------------------- config


def test_default_preset_is_issue_2s_study():
    c = load_preset("quick")
    assert c.dataset == "digits" and c.model == "mlp"
    assert c.scalings == ("inverted", "classic", "variance", "none")
    assert c.ps == (0.1, 0.25, 0.5)
    assert c.seeds >= 5
    assert len(c.trials()) == 4 * 3 * c.seeds
    assert 1.0 in c.eval_scales and c.mc_samples == (1, 2, 5, 10, 20, 50, 100)
    full = load_preset("digits-full")
    assert full.seeds > c.seeds and len(full.ps) > len(c.ps)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("seedz = 3\n", ["seedz", "accepted"]),
        ("[training]\nepochs = -1\n", ["training.epochs", "-1", "positive integer"]),
        ("[training]\nlearning_rate = 0.1\n", ["learning_rate", "lr"]),
        ("[model]\nname = 'mlp'\nhiden = [4]\n", ["hiden", "hidden"]),
        ("[model]\nhidden = [0]\n", ["model.hidden", "positive integers"]),
        ("[dataset]\nname = 'nope'\n", ["nope", "digits"]),
        ("ps = [0.1, 1.5]\n", ["ps", "1.5", "[0, 1)"]),
        ("scalings = ['inverse']\n", ["inverse", "inverted"]),
        ("[inference]\neval_scales = [0.5, 2.0]\n", ["eval_scales", "c = 1"]),
        ("[run]\nexecutor = 'spark'\n", ["run.executor", "spark", "ray"]),
        ("ps = [", ["not a valid TOML"]),
    ],
)
def test_study_file_errors_name_key_value_and_accepted(tmp_path, text, words):
    f = tmp_path / "s.toml"
    f.write_text(text)
    with pytest.raises(ValueError) as e:
        load_study_file(f)
    for w in words:
        assert w in str(e.value)


def test_definition_excludes_run_settings():
    a, b = tiny(), tiny(group_size=3, threads=2, executor="ray")
    assert a.definition() == b.definition()
    assert a.definition_hash() != tiny(epochs=3).definition_hash()


# ---------------------------------------------------------- batched engine


def test_batched_trials_equal_the_same_trials_run_alone(data):
    config = tiny()
    trials = config.trials()
    stacked = run_group(config, trials, data)
    assert all(r.batched == len(trials) for r in stacked)
    for r in stacked:
        (alone,) = run_trial(config, r.trial, data)
        assert alone.batched == 1
        assert r.metrics.keys() == alone.metrics.keys()
        for k, v in r.metrics.items():
            # float32 rounding of bmm against mm after 2 epochs of Adam
            assert v == pytest.approx(alone.metrics[k], abs=2e-5), (r.trial, k)
        for s_b, s_a in zip(r.sites, alone.sites, strict=True):
            for k, v in s_b.items():
                assert v == pytest.approx(s_a[k], rel=1e-4, abs=1e-5), (r.trial, k)


def test_trials_sharing_a_seed_share_masks_and_init(data):
    # inverted trains on m x / q, none on m x: with the same masks the
    # outputs differ by exactly the factor q.
    q = 0.7
    site = Site([1 - q, 1 - q], ["inverted", "none"])
    site.streams = MaskStreams([5, 5], [1 - q, 1 - q], "cpu")
    x = torch.randn(2, 64, 32)
    x[1] = x[0]
    y = site(x)
    torch.testing.assert_close(y[0] * q, y[1])
    # a different seed gives different masks
    other = Site([1 - q, 1 - q], ["none", "none"])
    other.streams = MaskStreams([5, 6], [1 - q, 1 - q], "cpu")
    z = other(x)
    assert not torch.equal(z[0] != 0, z[1] != 0)


def test_eval_mode_site_multiplies_b_by_c():
    site = Site([0.25, 0.25], ["classic", "inverted"])
    site.dropping = False
    site.c.copy_(torch.tensor([2.0, 0.5]))
    x = torch.ones(2, 3, 4)
    y = site(x)
    assert torch.allclose(y[0], torch.full((3, 4), 2.0 * 0.75))
    assert torch.allclose(y[1], torch.full((3, 4), 0.5))


def test_inference_variants_exact_cases(data):
    config = tiny(ps=(0.0, 0.5), scalings=("inverted",), seeds=1)
    res = run_group(config, config.trials(), data)
    for r in res:
        m = r.metrics
        # c = 1 is the convention's own rule
        assert m["scale_1_accuracy"] == m["accuracy"]
        assert m["scale_1_nll"] == m["nll"]
        assert 0 < m["nll"] < 10 and 0 <= m["accuracy"] <= 1
    p0 = next(r for r in res if r.trial.p == 0.0)
    # without dropout every MC pass is the deterministic pass, and the
    # train-mode std equals the eval-mode std, so the std-matching c is 1
    for t in config.mc_samples:
        assert p0.metrics[f"mc_{t}_accuracy"] == pytest.approx(p0.metrics["accuracy"])
        assert p0.metrics[f"mc_{t}_nll"] == pytest.approx(p0.metrics["nll"], rel=1e-5)
    assert p0.sites[0]["std_c"] == pytest.approx(1.0, rel=1e-5)
    assert p0.metrics["scale_std_nll"] == pytest.approx(p0.metrics["nll"], rel=1e-4)
    # p = 0.5 inverted: training std of a site's output exceeds the eval std
    p5 = next(r for r in res if r.trial.p == 0.5)
    assert p5.sites[0]["std_c"] > 1.1
    # site 0's train/eval std ratio, exact for pooled values: inverted at
    # q = 0.5 has train var a^2 q (V + p M^2) = 2 V + M^2 and eval var V.
    # 450 x 16 pooled values give the std to about 1 %; 5 % is 5 sigma.
    s = p5.sites[0]
    v, m = s["eval_in_std"] ** 2, s["eval_in_mean"] ** 2
    exact = math.sqrt(v / (2 * v + m))
    assert s["eval_out_std"] / s["train_out_std"] == pytest.approx(exact, rel=0.05)


# ---------------------------------------------------------------- outputs


def _t_interval(v: np.ndarray) -> tuple[float, float]:
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return v.mean() - half, v.mean() + half


def test_tiny_study_files_and_verdict_follow_from_csv(tmp_path):
    config = tiny(seeds=3, group_size=5)
    out = run_study(config, tmp_path / "run")
    folder = tmp_path / "run"
    for name in (
        "results.csv",
        "report.md",
        "report.html",
        "ledger.sqlite",
        "accuracy_vs_p.png",
        "nll_vs_p.png",
        "eval_scale.png",
        "mc_dropout.png",
    ):
        assert (folder / name).stat().st_size > 0, name
    rows = read_csv(folder / "results.csv")
    assert len(rows) == len(config.trials()) == out.n_trials == 24
    assert {(r["scaling"], float(r["p"]), int(r["seed"])) for r in rows} == {
        (t.scaling, t.p, t.seed) for t in config.trials()
    }
    # classic and none both train on m x (a = 1): at a shared seed they are
    # the same trained model, so everything but their eval factor agrees
    by = {(r["scaling"], r["p"], r["seed"]): r for r in rows}
    for (s, p, seed), r in by.items():
        if s == "classic":
            other = by[("none", p, seed)]
            for k in r:
                if k.startswith(("train_loss", "mc_")) or "_train_" in k:
                    assert r[k] == other[k], k
    md = (folder / "report.md").read_text()
    assert "preliminary" in md  # 3 seeds
    # the winner at every p, recomputed from the CSV alone
    for p in config.ps:
        means = {
            s: np.mean(
                [
                    float(r["accuracy"])
                    for r in rows
                    if r["scaling"] == s and float(r["p"]) == p
                ]
            )
            for s in config.scalings
        }
        best = max(means, key=lambda s: (means[s], -config.scalings.index(s)))

        def per_seed(s, p=p):
            sub = [r for r in rows if r["scaling"] == s and float(r["p"]) == p]
            return sorted((int(r["seed"]), float(r["accuracy"])) for r in sub)

        leaders = [s for s in config.scalings if per_seed(s) == per_seed(best)]
        if len(leaders) == 1:
            assert f"At p = {p:g}, **{best}** has the best mean test accuracy" in md
        else:
            names = " and ".join(f"**{s}**" for s in leaders)
            assert f"At p = {p:g}, {names} are tied for the best" in md
    # the mean-or-spread answer for inverted, recomputed from the CSV alone
    for p in config.ps:
        sub = [r for r in rows if r["scaling"] == "inverted" and float(r["p"]) == p]
        acc = np.array(
            [float(r["scale_std_accuracy"]) - float(r["scale_1_accuracy"]) for r in sub]
        )
        nll = np.array(
            [float(r["scale_std_nll"]) - float(r["scale_1_nll"]) for r in sub]
        )
        if acc.std() > 0:
            lo, hi = _t_interval(acc)
        elif len(acc) >= 6:  # degenerate: a sign test with every seed alike
            lo = hi = acc.mean()
        else:  # degenerate with too few seeds for the sign test
            lo, hi = -math.inf, math.inf
        nlo, nhi = _t_interval(nll)
        if lo > 0:
            want = "spread"
        elif hi < 0:
            want = "mean"
        elif nhi < 0:
            want = "spread"
        elif nlo > 0:
            want = "mean"
        else:
            want = "undecided"
        line = re.search(rf"\| inverted \| {p:g} \|[^\n]*\| (\w+) \|\n", md)
        assert line is not None and line.group(1) == want, (p, line)


def test_resume_runs_only_missing_trials_and_refuses_changed_study(tmp_path):
    import sqlite3

    config = tiny(scalings=("inverted", "none"), group_size=2)
    first = run_study(config, tmp_path)
    assert first.n_run == 8
    again = run_study(config, tmp_path)
    assert again.n_run == 0 and again.n_trials == 8
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    before = dict(db.execute("SELECT key, metrics FROM trials"))
    for key, text in db.execute("SELECT key, config FROM trials"):
        c = json.loads(text)
        assert c["definition_hash"] == config.definition_hash()
        assert (c["scaling"], c["group_size"], c["executor"]) == (
            key.split("|")[0],
            2,
            "local",
        )
    db.execute("DELETE FROM trials WHERE seed = 1 AND p = 0.5")
    db.commit()
    db.close()
    resumed = run_study(config, tmp_path)
    assert resumed.n_run == 2 and resumed.n_trials == 8
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    after = dict(db.execute("SELECT key, metrics FROM trials"))
    db.close()
    assert before.keys() == after.keys()
    # the rerun trials are the same models (same seeds, same group shape)
    for k in before:
        assert before[k] == after[k], k
    with pytest.raises(ValueError, match=r"epochs: 2 -> 3.*--force-new"):
        run_study(tiny(scalings=("inverted", "none"), epochs=3), tmp_path)
    fresh = run_study(
        tiny(scalings=("inverted",), seeds=1, epochs=3), tmp_path, force_new=True
    )
    assert fresh.n_trials == fresh.n_run == 2
    # the old ledger and its outputs were moved together into previous-<time>/
    (old,) = tmp_path.glob("previous-*")
    assert (old / "ledger.sqlite").exists() and (old / "report.md").exists()


# -------------------------------------------------------------------- CLI


def _cli(capsys, *argv):
    from dropscale.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_study_user_errors_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        (["study", "--out", str(blocker / "sub")], "cannot write"),
        (["study", "--preset", "nope"], "unknown preset 'nope'"),
        (["study", "--preset", "quick", "--config", "x.toml"], "not both"),
        (["study", "--config", str(tmp_path / "missing.toml")], "cannot read"),
        (["study", "--scaling", "inverse"], "inverse"),
        (["report", str(tmp_path)], "no study ledger"),
    ]
    for argv, words in cases:
        code, out, err = _cli(capsys, *argv)
        assert code == 2, argv
        assert out == ""
        assert err.count("\n") == 1 and words in err, (argv, err)
        assert err.startswith("dropscale")
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    code, out, err = _cli(
        capsys, "study", "--executor", "ray", "--out", str(tmp_path / "r")
    )
    assert code == 2 and "pip install 'dropscale[ray]'" in err
    assert err.count("\n") == 1


def test_cli_presets_and_report_rebuild(tmp_path, capsys):
    code, out, err = _cli(capsys, "presets")
    assert code == 0 and "quick" in out and "digits-full" in out
    f = tmp_path / "s.toml"
    f.write_text(
        "ps = [0.3]\nseeds = 2\nscalings = ['inverted', 'classic']\n"
        "[model]\nhidden = [8]\n[training]\nepochs = 1\n"
        "[inference]\nmc_samples = [1, 2]\ncalibration_examples = 32\n"
    )
    code, out, err = _cli(
        capsys, "study", "--config", str(f), "--out", str(tmp_path / "o"), "--quiet"
    )
    assert code == 0, err
    assert err == ""
    assert out.strip().splitlines()[-1].startswith("study finished: 4 trials")
    assert str(tmp_path / "o" / "report.md") in out
    md = (tmp_path / "o" / "report.md").read_text()
    csv_text = (tmp_path / "o" / "results.csv").read_text()
    for name in ("report.md", "results.csv", "report.html", "eval_scale.png"):
        (tmp_path / "o" / name).unlink()
    code, out, err = _cli(capsys, "report", str(tmp_path / "o"))
    assert code == 0 and "rebuilt" in out
    assert (tmp_path / "o" / "report.md").read_text() == md
    assert (tmp_path / "o" / "results.csv").read_text() == csv_text
    assert (tmp_path / "o" / "eval_scale.png").exists()
