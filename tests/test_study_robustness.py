"""A study folder survives users: a corrupt or hand-edited ledger, an empty
or foreign --out, --force-new, bad values and two runs at once all end in
one line naming the file or key and the fix (exit 2), and nothing is left
half-written in --out."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys

import pytest
import torch

from dropscale.cli import main
from dropscale.report import build_report
from dropscale.study import StudyConfig, run_study
from dropscale.study.ledger import LedgerError, StudyBusyError

CONFIG = dict(
    scalings=("inverted", "none"),
    model_options={"hidden": [8]},
    ps=(0.3,),
    seeds=1,
    epochs=1,
    mc_samples=(1, 2),
    eval_scales=(0.5, 1.0),
    calibration_examples=32,
    group_size=2,
)
TOML = (
    "ps = [0.3]\nseeds = 1\nscalings = ['inverted', 'none']\n"
    "[model]\nhidden = [8]\n[training]\nepochs = 1\n"
    "[inference]\nmc_samples = [1, 2]\neval_scales = [0.5, 1.0]\n"
    "calibration_examples = 32\n"
)
OUTPUTS = ("results.csv", "report.md", "report.html", "study.json", "eval_scale.png")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-trial study (copied by each test that damages it)."""
    folder = tmp_path_factory.mktemp("good") / "study"
    run_study(StudyConfig(**CONFIG), folder)
    return folder


def _copy(finished, tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(finished, folder)
    return folder


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line(code, out, err):
    assert code == 2, err
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("dropscale"), err
    assert "Traceback" not in err
    return err


def _edit(folder, sql, *params):
    db = sqlite3.connect(folder / "ledger.sqlite")
    db.execute(sql, params)
    db.commit()
    db.close()


# ---------------------------------------------------------- 1. bad ledgers


def _truncate(folder):
    path = folder / "ledger.sqlite"
    data = path.read_bytes()
    assert len(data) > 2 * 4096  # more than the first page: the cut hurts
    path.write_bytes(data[:5000])


def _garbage(folder):
    (folder / "ledger.sqlite").write_bytes(b"garbage\n")


def _empty_definition(folder):
    _edit(folder, "UPDATE meta SET value = '{}' WHERE key = 'definition'")


def _definition_not_json(folder):
    _edit(folder, "UPDATE meta SET value = '{\"dataset\": ' WHERE key = 'definition'")


def _dropped_column(folder):
    _edit(folder, "ALTER TABLE trials DROP COLUMN sites")


DAMAGE = {
    "truncated": (_truncate, "not a readable dropscale ledger"),
    "garbage": (_garbage, "file is not a database"),
    "empty definition": (_empty_definition, "missing dataset"),
    "definition not JSON": (_definition_not_json, "study definition is unusable"),
    "dropped column": (_dropped_column, "table trials has columns"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_damaged_ledger_is_one_line_naming_file_and_fix(
    finished, tmp_path, capsys, name
):
    folder = _copy(finished, tmp_path)
    damage, words = DAMAGE[name]
    damage(folder)
    err = _one_line(*_cli(capsys, "report", folder))
    assert "ledger.sqlite" in err and str(folder) in err and words in err, err
    assert "--force-new" in err and "move it aside" in err
    with pytest.raises(LedgerError):
        build_report(folder)
    if name in ("truncated", "garbage"):
        toml = tmp_path / "s.toml"
        toml.write_text(TOML)
        err = _one_line(*_cli(capsys, "study", "--config", toml, "--out", folder))
        assert "ledger.sqlite" in err and words in err and "--force-new" in err
        assert "another --out" in err


def test_broken_trial_metrics_name_the_trial_and_how_to_redo_it(
    finished, tmp_path, capsys
):
    folder = _copy(finished, tmp_path)
    key = "inverted|p=0.3|seed=0"
    _edit(
        folder, "UPDATE trials SET metrics = '{\"accuracy\": 1 2}' WHERE key = ?", key
    )
    err = _one_line(*_cli(capsys, "report", folder))
    assert f"trial {key!r} has unreadable metrics" in err, err
    assert "DELETE FROM trials WHERE key" in err and "--force-new" in err
    # a resumed study names it when it opens the ledger, before any training
    started = []
    with pytest.raises(LedgerError, match="unreadable metrics"):
        run_study(StudyConfig(**CONFIG), folder, on_start=lambda *a: started.append(a))
    assert started == []
    # the fix it gives works: delete the row, run again, the trial is redone
    _edit(folder, "DELETE FROM trials WHERE key = ?", key)
    outcome = run_study(StudyConfig(**CONFIG), folder)
    assert outcome.n_run == 1 and outcome.n_trials == 2


def test_force_new_moves_an_unreadable_ledger_aside_and_starts_over(finished, tmp_path):
    folder = _copy(finished, tmp_path)
    _garbage(folder)
    outcome = run_study(StudyConfig(**CONFIG), folder, force_new=True)
    assert outcome.n_run == 2
    (old,) = folder.glob("previous-*")
    assert (old / "ledger.sqlite").read_bytes() == b"garbage\n"


# ------------------------------------------------------------ 2. --out checks


def test_empty_out_is_refused_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _one_line(*_cli(capsys, "study", "--out", "", "--quiet"))
    assert "--out" in err and "empty folder name" in err
    with pytest.raises(ValueError, match="--out: got an empty folder name"):
        run_study(StudyConfig(**CONFIG), "")
    assert list(tmp_path.iterdir()) == []


def test_foreign_non_empty_out_is_refused_unless_force_new(tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    (home / ".bashrc").write_text("mine")
    toml = tmp_path / "s.toml"
    toml.write_text(TOML)
    err = _one_line(*_cli(capsys, "study", "--config", toml, "--out", home))
    assert "not a dropscale study's" in err and "notes.txt" in err
    assert "--force-new" in err
    assert sorted(p.name for p in home.iterdir()) == [".bashrc", "notes.txt"]
    # a file is not a folder
    err = _one_line(
        *_cli(capsys, "study", "--config", toml, "--out", home / "notes.txt")
    )
    assert "is a file, not a folder" in err
    # --force-new writes the study among the user's files, touching none
    outcome = run_study(StudyConfig(**CONFIG), home, force_new=True)
    assert outcome.n_run == 2 and (home / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------- 3. --force-new


def test_force_new_moves_old_outputs_aside_before_the_first_trial(finished, tmp_path):
    folder = _copy(finished, tmp_path)
    before = {n: (folder / n).read_bytes() for n in OUTPUTS}

    class Killed(Exception):
        pass

    def killed(done, total):  # the new run dies before its first trial ends
        raise Killed

    with pytest.raises(Killed):
        run_study(
            StudyConfig(**{**CONFIG, "epochs": 2}),
            folder,
            force_new=True,
            on_start=killed,
        )
    (old,) = folder.glob("previous-*")
    for name in OUTPUTS:
        assert not (folder / name).exists(), name
        assert (old / name).read_bytes() == before[name], name
    assert not list(folder.glob("*.png"))
    db = sqlite3.connect(old / "ledger.sqlite")
    (n,) = db.execute("SELECT COUNT(*) FROM trials").fetchone()
    (d,) = db.execute("SELECT value FROM meta WHERE key = 'definition'").fetchone()
    db.close()
    assert n == 2 and json.loads(d)["epochs"] == 1


# ---------------------------------------------- 4. validation before writing


def test_bad_device_and_split_fail_before_out_is_created(tmp_path, capsys):
    toml = tmp_path / "s.toml"
    toml.write_text(TOML)
    out = tmp_path / "out"
    err = _one_line(
        *_cli(capsys, "study", "--config", toml, "--out", out, "--device", "tpu")
    )
    assert "run.device (--device): got 'tpu'" in err and "cpu" in err
    assert not out.exists()
    if not torch.cuda.is_available():
        err = _one_line(
            *_cli(capsys, "study", "--config", toml, "--out", out, "--device", "cuda")
        )
        assert "got 'cuda'" in err and "use --device cpu" in err
        assert not out.exists()
    bad = tmp_path / "bad.toml"
    bad.write_text(TOML + "[dataset]\nname = 'digits'\ntest_fraction = 0.999\n")
    err = _one_line(*_cli(capsys, "study", "--config", bad, "--out", out))
    assert "test_fraction = 0.999" in err and "[0.0056, 0.9944]" in err, err
    assert not out.exists()


# --------------------------------------------------------------- 5. the lock

HOLDER = (
    "import sys\n"
    "from dropscale.study.ledger import study_lock\n"
    "with study_lock(sys.argv[1]):\n"
    "    print('held', flush=True)\n"
    "    sys.stdin.read()\n"
)


def test_second_run_and_report_refused_while_a_study_holds_the_folder(
    finished, tmp_path, capsys
):
    folder = _copy(finished, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        busy = f"another dropscale study is running in {str(folder)!r} "
        busy += f"(pid {holder.pid})"
        with pytest.raises(StudyBusyError) as e:
            run_study(StudyConfig(**CONFIG), folder)
        assert busy in str(e.value)
        err = _one_line(*_cli(capsys, "report", folder))
        assert busy in err
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock
        holder.wait()
    assert run_study(StudyConfig(**CONFIG), folder).n_run == 0
    code, out, err = _cli(capsys, "report", folder)
    assert code == 0 and "rebuilt" in out


@pytest.mark.parametrize("device", ["tpu", "cuda:x", ""])
def test_device_names_are_checked_in_the_config(device):
    with pytest.raises(ValueError, match=r"run\.device \(--device\): got"):
        StudyConfig(**{**CONFIG, "device": device})


# ------------------------------------------- 6. verdicts below three seeds


def test_two_seed_verdict_never_claims_the_interval_includes_0():
    from scipy import stats

    from dropscale.study.analysis import Comparison, PVerdict, interval

    diffs = [0.10, 0.11]  # winner minus other, per seed
    half = stats.t.ppf(0.975, 1) * 0.01 / 2**0.5 / 2**0.5  # s = 0.01 / sqrt 2
    assert 0.105 - half > 0  # so 0 lies outside this interval
    v = PVerdict(
        p=0.3,
        metric="accuracy",
        winner="inverted",
        winner_value=interval([0.9, 0.92]),
        comparisons=(Comparison("none", interval(diffs)),),
    )
    text = v.sentence()
    assert not v.clear
    assert "includes 0" not in text, text
    assert "0 lies outside the interval, but 2 seeds are too few" in text, text
    # an interval that does include 0 still says so, with the same caveat
    w = PVerdict(
        p=0.3,
        metric="accuracy",
        winner="inverted",
        winner_value=interval([0.9, 0.92]),
        comparisons=(Comparison("none", interval([0.2, -0.1])),),
    )
    assert "the interval includes 0, but 2 seeds are too few" in w.sentence()


def test_two_seed_batchnorm_sentences_never_claim_the_interval_includes_0():
    from dropscale.study.analysis import interval
    from dropscale.study.bnshift import BEFORE, BNShift, OrderComparison

    out = interval([0.10, 0.11])  # excludes 0 (see the verdict test above)
    acc = interval([0.9, 0.92])
    c = OrderComparison("inverted", 0.3, diff=out, recal_diff=out, net_fix=out)
    arm = BNShift(BEFORE, "inverted", 0.3, (), acc, acc, out, acc, acc, out)
    for text in (c.sentence(), arm.sentence()):
        assert "includes 0" not in text, text
        assert "0 lies outside the interval but 2 seeds are too few" in text, text
