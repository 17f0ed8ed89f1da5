"""The `dropscale` command: `moments` and `simulate` output (table and JSON), exit
codes, and the one-line error for a user mistake. Called in-process through
dropscale.cli.main, plus one run of the real `python -m dropscale` entry point.

Expected numbers are written out from DESIGN.md's formulas here, not taken from
dropscale.moments.
"""

import json
import math
import os
import subprocess
import sys

import pytest

import dropscale
from dropscale.cli import main

PS = [0.1, 0.25, 0.5]
NAMES = ["inverted", "classic", "variance", "none"]


def factors(name, q):
    return {
        "inverted": (1 / q, 1.0),
        "classic": (1.0, q),
        "variance": (q**-0.5, 1.0),
        "none": (1.0, 1.0),
    }[name]


def exact(name, p, mu=0.0, sigma=1.0):
    """Train/eval mean and std of y = a m x (train) and b x (eval)."""
    q = 1 - p
    a, b = factors(name, q)
    return {
        "train_mean": a * q * mu,
        "train_std": a * math.sqrt(q * (sigma**2 + p * mu**2)),
        "eval_mean": b * mu,
        "eval_std": b * sigma,
        "mean_ratio": b / (a * q),
    }


# DESIGN.md's checks, typed in: inverted std on N(0, 1) and eval/train mean ratios.
INVERTED_STD = {0.1: 1.0541, 0.25: 1.1547, 0.5: 1.4142}
MEAN_RATIO = {
    "inverted": lambda q: 1.0,
    "classic": lambda q: 1.0,
    "variance": lambda q: 1 / math.sqrt(q),
    "none": lambda q: 1 / q,
}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


COLUMNS = ["train mean", "train std", "eval mean", "eval std", "mean e/t", "std e/t"]


def table_rows(out, names=NAMES):
    """Rows of the moments table for the conventions ``names``, keyed by
    (scaling, p), with the values of COLUMNS. Columns are right-aligned under
    their headers, so each value is the last word before its header's end."""
    lines = out.splitlines()
    header = next(ln for ln in lines if ln.startswith("scaling"))
    ends = [header.index(label) + len(label) for label in COLUMNS]
    rows = {}
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[0] in names:
            values = [float(line[:end].split()[-1]) for end in ends]
            rows[fields[0], float(fields[1])] = values
    return rows


def rows_of(data, names=NAMES):
    """The JSON rows of the conventions ``names`` (the command lists more)."""
    return [r for r in data if r["scaling"] in names]


# ---------------------------------------------------------------------- moments


def test_moments_table_values(capsys):
    code, out, err = run(capsys, "moments", "--p", "0.1", "0.25", "0.5")
    assert code == 0
    assert err == ""
    assert "mean 0, std 1" in out
    rows = table_rows(out)
    assert len(rows) == 12
    assert set(rows) == {(n, p) for n in NAMES for p in PS}
    for p, std in INVERTED_STD.items():
        assert rows["inverted", p][1] == std
    for (name, p), values in rows.items():
        q = 1 - p
        train_mean, train_std, eval_mean, eval_std, mean_ratio, std_ratio = values
        e = exact(name, p)
        assert train_mean == 0.0 and eval_mean == 0.0
        assert train_std == pytest.approx(e["train_std"], abs=5e-5)
        assert eval_std == pytest.approx(e["eval_std"], abs=5e-5)
        assert mean_ratio == pytest.approx(MEAN_RATIO[name](q), abs=5e-5)
        assert std_ratio == pytest.approx(e["eval_std"] / e["train_std"], abs=5e-5)


def test_moments_json_values(capsys):
    code, out, err = run(
        capsys, "moments", "--p", "0.1", "0.25", "0.5", "--format", "json"
    )
    assert code == 0
    assert err == ""
    data = json.loads(out)
    assert isinstance(data, list)
    data = rows_of(data)
    assert len(data) == 12
    seen = set()
    for row in data:
        name, p = row["scaling"], row["p"]
        seen.add((name, p))
        q = 1 - p
        a, b = factors(name, q)
        e = exact(name, p)
        assert row["q"] == pytest.approx(q, rel=1e-15)
        assert row["a"] == pytest.approx(a, rel=1e-15)
        assert row["b"] == pytest.approx(b, rel=1e-15)
        assert row["input_mean"] == 0.0 and row["input_std"] == 1.0
        for key in ("train_mean", "train_std", "eval_mean", "eval_std"):
            assert row[key] == pytest.approx(e[key], rel=1e-12, abs=1e-15), key
        assert row["mean_ratio"] == pytest.approx(MEAN_RATIO[name](q), rel=1e-12)
        assert row["std_ratio"] == pytest.approx(
            e["eval_std"] / e["train_std"], rel=1e-12
        )
    assert seen == {(n, p) for n in NAMES for p in PS}
    by_key = {(r["scaling"], r["p"]): r for r in data}
    for p, std in INVERTED_STD.items():
        assert round(by_key["inverted", p]["train_std"], 4) == std


def test_moments_mean_and_std_options(capsys):
    code, out, _ = run(
        capsys,
        "moments",
        "--p",
        "0.3",
        "--mean",
        "2",
        "--std",
        "0.5",
        "--format",
        "json",
    )
    assert code == 0
    data = rows_of(json.loads(out))
    assert [r["scaling"] for r in data] == NAMES
    for row in data:
        e = exact(row["scaling"], 0.3, mu=2.0, sigma=0.5)
        assert row["input_mean"] == 2.0 and row["input_std"] == 0.5
        for key in ("train_mean", "train_std", "eval_mean", "eval_std", "mean_ratio"):
            assert row[key] == pytest.approx(e[key], rel=1e-12), key
        # With mu != 0 the mean ratio is eval_mean / train_mean itself.
        assert row["mean_ratio"] == pytest.approx(
            row["eval_mean"] / row["train_mean"], rel=1e-12
        )
    code, out, _ = run(capsys, "moments", "--p", "0.3", "--mean", "2", "--std", "0.5")
    assert code == 0
    assert "mean 2, std 0.5" in out
    rows = table_rows(out)
    # Inverted: train mean 2, train std sqrt(0.25 + 0.3 * 4) / sqrt(0.7).
    assert rows["inverted", 0.3][0] == 2.0
    assert rows["inverted", 0.3][1] == round(math.sqrt(1.45 / 0.7), 4)


def test_moments_defaults_cover_the_three_ps_and_four_conventions(capsys):
    code, out, _ = run(capsys, "moments", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert {r["p"] for r in data} == set(PS)
    keys = {(r["scaling"], r["p"]) for r in rows_of(data)}
    assert keys == {(n, p) for n in NAMES for p in PS}


def test_moments_scaling_choice_and_custom(capsys):
    code, out, _ = run(
        capsys,
        "moments",
        "--p",
        "0.5",
        "--scaling",
        "Classic",
        "custom:2,0.25",
        "--format",
        "json",
    )
    assert code == 0
    data = json.loads(out)
    assert [r["scaling"] for r in data] == ["classic", "custom:2,0.25"]
    custom = data[1]
    assert (custom["a"], custom["b"]) == (2.0, 0.25)
    # a = 2, q = 0.5: train std 2 sqrt(0.5) on N(0, 1); eval std 0.25.
    assert custom["train_std"] == pytest.approx(math.sqrt(2), rel=1e-12)
    assert custom["eval_std"] == 0.25
    assert custom["mean_ratio"] == pytest.approx(0.25, rel=1e-12)


def test_moments_keep_all_p_edge_values(capsys):
    code, out, _ = run(capsys, "moments", "--p", "0", "--format", "json")
    assert code == 0
    for row in rows_of(json.loads(out)):
        assert row["train_std"] == 1.0 and row["eval_std"] == 1.0


def _strict(text):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_moments_at_p_one_leaves_out_only_the_rule_undefined_there(capsys):
    code, out, err = run(capsys, "moments", "--p", "1", "--format", "json")
    assert code == 0
    rows = _strict(out)
    names = {r["scaling"] for r in rows}
    assert "gaussian" not in names and {"inverted", "classic", "none"} <= names
    assert "gaussian left out at p = 1" in err
    by_name = {r["scaling"]: r for r in rows}
    # inverted: train output is exactly 0, eval keeps x: the ratio is infinite
    assert by_name["inverted"]["mean_ratio"] == "inf"
    # classic: both means are 0 at p = 1 (b = q = 0), so they agree
    assert by_name["classic"]["mean_ratio"] == 1.0


def test_moments_naming_a_rule_undefined_at_p_is_an_error(capsys):
    code, out, err = run(capsys, "moments", "--p", "1", "--scaling", "gaussian")
    assert code == 2 and out == ""
    assert err.strip().endswith("infinite variance at q = 0")


# --------------------------------------------------------------------- simulate


def test_simulate_json_structure_and_agreement(capsys):
    code, out, err = run(
        capsys, "simulate", "--n", "200", "--p", "0.5", "--format", "json"
    )
    assert code == 0
    assert err == ""
    data = json.loads(out)
    assert set(data) == {"seconds", "results"}
    assert data["seconds"] >= 0
    assert len(data["results"]) == 1
    result = data["results"][0]
    assert result["scaling"] == "inverted"
    assert result["p"] == 0.5
    assert result["n_elements"] == 200 * 200
    assert result["seed"] == 0
    keys = {"mean", "std", "se_mean", "se_std", "exact_mean", "exact_std"}
    keys |= {"mean_ci", "std_ci", "z_mean", "z_std"}
    n = 200 * 200
    for part, (mean, std) in (("input", (0.0, 1.0)), ("output", (0.0, math.sqrt(2)))):
        m = result[part]
        assert set(m) == keys
        assert m["exact_mean"] == 0.0
        assert m["exact_std"] == pytest.approx(std, rel=1e-12)
        # Standard errors of the order sigma / sqrt(n).
        assert m["se_mean"] == pytest.approx(std / math.sqrt(n), rel=0.05)
        lo, hi = m["mean_ci"]
        assert lo < m["mean"] < hi
        assert hi - lo == pytest.approx(2 * 1.96 * m["se_mean"], rel=1e-3)
        # Agreement with the exact values within 5 standard errors (false alarm
        # about 5.7e-7 per check; the default seed makes it repeatable).
        assert abs(m["mean"] - mean) <= 5 * m["se_mean"]
        assert abs(m["std"] - std) <= 5 * m["se_std"]
        assert m["z_mean"] == pytest.approx(abs(m["mean"] - mean) / m["se_mean"])
        assert m["z_std"] == pytest.approx(abs(m["std"] - std) / m["se_std"])


def test_simulate_is_repeatable_with_the_default_seed_and_changes_with_another(capsys):
    argv = ["simulate", "--n", "100", "--p", "0.25", "--format", "json"]
    first = json.loads(run(capsys, *argv)[1])["results"]
    second = json.loads(run(capsys, *argv)[1])["results"]
    other = json.loads(run(capsys, *argv, "--seed", "1")[1])["results"]
    assert first == second
    assert other[0]["output"]["mean"] != first[0]["output"]["mean"]


def test_simulate_table(capsys):
    code, out, err = run(capsys, "simulate", "--n", "100", "--p", "0.1", "0.5")
    assert code == 0
    assert err == ""
    assert "100 x 100" in out
    for p, train_std in ((0.1, "1.05409"), (0.5, "1.41421")):
        lines = [ln for ln in out.splitlines() if ln.startswith(f"inverted, {p}")]
        labels = [ln.split()[2] for ln in lines]
        assert "input" in labels and "train" in labels
        # The train row shows the exact std 1 / sqrt(q).
        assert train_std in lines[labels.index("train")]


# ------------------------------------------------------------------ user errors


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["moments", "--scaling", "dropconnect"], "dropconnect"),
        (["simulate", "--n", "10", "--scaling", "sqrt"], "sqrt"),
        (["moments", "--scaling", "custom:2"], "custom:A,B"),
        (["moments", "--scaling", "custom:-1,1"], "-1"),
        (["moments", "--p", "1.5"], "1.5"),
        (["moments", "--p", "-0.1"], "-0.1"),
        (["moments", "--p", "nan"], "nan"),
        (["simulate", "--p", "2"], "2"),
        (["moments", "--bogus"], "--bogus"),
        (["simulate", "--n", "10", "--p", "0.5", "--fast"], "--fast"),
        (["moments", "--p", "abc"], "abc"),
        (["moments", "--p"], "--p"),
        (["moments", "--mean", "abc"], "abc"),
        (["simulate", "--n", "ten"], "ten"),
        (["simulate", "--n", "0"], "0"),
        (["simulate", "--n", "10", "--seed", "1.5"], "1.5"),
        (["moments", "--format", "xml"], "xml"),
        (["moments", "--mean", "nan"], "nan"),
        (["moments", "--std", "-1"], "-1"),
        (["frobnicate"], "frobnicate"),
        ([], "COMMAND"),
    ],
)
def test_user_mistake_gives_one_line_and_exit_code_2(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dropscale")
    assert "error" in lines[0]
    assert needle in lines[0]


def test_debug_flag_shows_the_original_exception():
    with pytest.raises(ValueError, match="'dropconnect'"):
        main(["--debug", "moments", "--scaling", "dropconnect"])


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == dropscale.__version__


def test_closed_stdout_ends_quietly(monkeypatch, capsys):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = main(["moments", "--format", "json"])
    monkeypatch.undo()
    assert code == 141
    assert capsys.readouterr().err == ""


# --------------------------------------------------------- the real entry point


def test_python_m_dropscale_moments_json():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "dropscale", "moments", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    data = json.loads(proc.stdout)
    by_key = {(r["scaling"], r["p"]): r for r in rows_of(data)}
    assert set(by_key) == {(n, p) for n in NAMES for p in PS}
    for p, std in INVERTED_STD.items():
        assert round(by_key["inverted", p]["train_std"], 4) == std


def test_moments_table_columns_never_merge_at_extreme_p(capsys):
    # Once "1.0000639602.4510": variance's mean e/t next to a huge train std.
    code, out, _ = run(
        capsys, "moments", "--p", "0.99999999999", "--mean", "1e6", "--std", "1"
    )
    assert code == 0
    rows = [line for line in out.splitlines() if " 0.99999999999 " in line]
    assert len(rows) == 7, out  # every rule, p told apart from 1
    for line in rows:
        fields = line.split()
        assert len(fields) == 11, line  # scaling, p, 9 numbers
        assert fields[1] == "0.99999999999"
        for f in fields[2:]:
            float(f)
    assert "at p = 0.99999999999:" in out
    for argv in (["--example", "linear"], ["--batchnorm"]):
        code, out, _ = run(capsys, "moments", "--p", "0.99999999999", *argv)
        assert code == 0 and " 0.99999999999 " in out
        for line in out.splitlines():
            if " 0.99999999999 " in line:
                for f in line.split()[-5:]:
                    float(f)
