"""The study commands' text: help with defaults, the presets listing, the
per-group progress line, and one-seed output without infinities."""

from __future__ import annotations

import re

import pytest

from dropscale.cli import _group_label, build_parser, main
from dropscale.study import load_preset, preset_names
from dropscale.study.config import Trial


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_study_help_gives_every_option_help_and_the_quick_defaults(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command" or a.choices)
    study = sub.choices["study"]
    for action in study._actions:
        if action.dest == "help":
            continue
        assert action.help, action.option_strings
        assert "default" in action.help or action.dest == "data_dir", action.dest
    with pytest.raises(SystemExit) as e:
        main(["study", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    helps = {a.option_strings[0]: a.help for a in study._actions if a.option_strings}
    q = load_preset("quick")
    for option, value in (
        ("--p", " ".join(f"{p:g}" for p in q.ps)),
        ("--scaling", " ".join(q.scalings)),
        ("--seeds", str(q.seeds)),
        ("--epochs", str(q.epochs)),
        ("--threads", str(q.threads)),
        ("--group-size", str(q.group_size)),
        ("--executor", q.executor),
    ):
        assert helps[option].endswith(f"(default: the study's; quick: {value})")
        assert " ".join(helps[option].split()) in text, option


def test_presets_columns_align_and_do_not_repeat_the_name(capsys):
    code, out, _ = _run(capsys, "presets")
    assert code == 0
    lines = out.strip().splitlines()
    names = preset_names()
    assert [ln.split()[0] for ln in lines] == names
    assert max(len(n) for n in names) > 15  # the case that used to misalign
    # the trial count ends in the same column on every line
    ends = {re.search(r"\d+ trials? ", ln).end() for ln in lines}
    assert len(ends) == 1
    for name, ln in zip(names, lines, strict=True):
        assert f"{name}:" not in ln, ln
        assert ln.rstrip().endswith(
            load_preset(name).description.removeprefix(f"{name}:").strip()
        )


def test_group_label_describes_the_whole_group():
    rules = ("inverted", "classic", "variance", "none")
    trials = [Trial(s, p, 0) for p in (0.1, 0.25, 0.5) for s in rules]
    assert _group_label(trials) == (
        "group of 12 trials finished (4 rules: inverted, classic, variance, "
        "none; p = 0.1, 0.25, 0.5; seed 0)"
    )
    one = _group_label([Trial("none", 0.5, 3)])
    assert one == "group of 1 trial finished (1 rule: none; p = 0.5; seed 3)"
    spread = _group_label([Trial("inverted", 0.5, s) for s in (0, 1, 2, 5)])
    assert spread.endswith("(1 rule: inverted; p = 0.5; seeds 0, 1, 2, 5)")
    assert _group_label([Trial("inverted", 0.5, s) for s in (1, 2, 3)]).endswith(
        "seeds 1-3)"
    )


def test_one_seed_study_prints_one_line_per_group_and_no_infinity(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text(
        "ps = [0.3]\nseeds = 1\nscalings = ['inverted', 'classic']\n"
        "[model]\nhidden = [8]\n[training]\nepochs = 1\n"
        "[inference]\nmc_samples = [1, 2]\ncalibration_examples = 32\n"
        "[run]\ngroup_size = 1\n"
    )
    code, out, err = _run(capsys, "study", "--config", str(f), "--out", str(tmp_path))
    assert code == 0, err
    lines = err.strip().splitlines()  # capsys's stderr is not a terminal
    assert len(lines) == 2
    assert lines[0].startswith("[1/2] group of 1 trial finished (1 rule: ")
    assert lines[1].startswith("[2/2] group of 1 trial finished (1 rule: ")
    assert "; p = 0.3; seed 0)" in lines[0]
    assert not re.search(r"\binf\b", out)
    assert "(1 seed, no interval)" in out
    assert "study finished: 2 trials" in out
    md = (tmp_path / "report.md").read_text()
    assert not re.search(r"\binf\b", md)
