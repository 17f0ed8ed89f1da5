"""Monte Carlo of dropout's moments: agreement with the exact values, honest
intervals, the layer and BatchNorm simulations, the command and bad input.

Agreement checks allow 5 standard errors (two-sided false alarm about 5.7e-7
per check); seeds are fixed, so a run either always passes or always fails.
"""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dropscale.cli import main
from dropscale.moments import Constant, Uniform
from dropscale.simulate import (
    _measured,
    _shifted,
    simulate,
    simulate_batchnorm,
    simulate_linear,
)

Z = 5.0
RULES = ["inverted", "classic", "variance", "none", "alpha", "gaussian", "moment"]


def assert_agrees(m, what=""):
    assert m.z_mean < Z, f"{what} mean {m.mean} vs exact {m.exact_mean}, z {m.z_mean}"
    assert m.z_std < Z, f"{what} std {m.std} vs exact {m.exact_std}, z {m.z_std}"


# ------------------------------------------------------------------ helpers


def test_shifted_power_sums_match_brute_force():
    d = torch.tensor([0.5, -1.25, 2.0, 0.0, 3.5], dtype=torch.float64)
    sums = [(d**j).sum().item() for j in range(1, 5)]
    got = _shifted(sums, 5, 1.7, -0.3)
    want = [((1.7 * d - 0.3) ** j).sum().item() for j in range(1, 5)]
    assert got == pytest.approx(want, rel=1e-12)


def test_measured_against_direct_sample_moments():
    v = torch.tensor([1.0, 2.0, 4.0, 7.0, 11.0], dtype=torch.float64)
    c = 3.0
    m = _measured([((v - c) ** j).sum().item() for j in range(1, 5)], 5, c, 0.0, 1.0)
    # by hand: mean 5, population variance (16+9+1+4+36)/5 = 13.2
    assert m.mean == pytest.approx(5.0)
    assert m.std == pytest.approx(math.sqrt(13.2))
    assert m.se_mean == pytest.approx(math.sqrt(13.2 / 5))
    m4 = (256 + 81 + 1 + 16 + 1296) / 5
    assert m.se_std == pytest.approx(
        math.sqrt((m4 - 13.2**2) / 5) / (2 * math.sqrt(13.2))
    )


# ------------------------------------------------------------------ one unit


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
@pytest.mark.parametrize("mask", ["count", "elementwise"])
def test_inverted_on_standard_normal_matches_design(p, mask):
    r = simulate(p, n_elements=400_000, seed=1, mask=mask)
    assert r.output.exact_std == pytest.approx(1 / math.sqrt(1 - p))
    assert_agrees(r.input, "input")
    assert_agrees(r.output, "train")
    assert_agrees(r.eval, "eval")


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("family", ["normal", "relu", "uniform"])
def test_every_rule_and_family_agrees(rule, family):
    r = simulate(0.3, n_elements=200_000, scaling=rule, input=family, mean=0.5, std=1.5)
    assert_agrees(r.input, "input")
    assert_agrees(r.output, f"{rule}/{family} train")
    assert_agrees(r.eval, f"{rule}/{family} eval")


def test_empirical_and_constant_inputs():
    sample = torch.tensor([0.0, 0.0, 1.0, 3.0, 10.0])
    r = simulate(0.4, n_elements=200_000, input=sample, scaling="alpha")
    assert_agrees(r.input)
    assert_agrees(r.output)
    r = simulate(0.4, n_elements=100_000, input=Constant(2.0))
    assert (r.input.mean, r.input.std) == (2.0, 0.0)
    assert_agrees(r.output)  # 2/0.6 or 0: a Bernoulli in disguise


def test_agreement_figure_detects_a_wrong_exact_value():
    # The same draws judged against a std 2 % off must fail the 5-sigma check:
    # the standard error at this n is about 0.11 % of the std (z about 18).
    r = simulate(0.5, n_elements=1_000_000, seed=2)
    se = r.output.se_std
    assert abs(r.output.std * 1.02 - r.output.exact_std) / se > 10


def test_intervals_cover_at_their_nominal_rate():
    # 300 independent runs of inverted p = 0.5 (a non-normal output): the 95 %
    # intervals must cover the exact value 285 +- 5 * sqrt(300 * .05 * .95)
    # = 285 +- 19 times, for the mean and for the std.
    cover_mean = cover_std = 0
    for seed in range(300):
        r = simulate(0.5, n_elements=4000, seed=seed, chunk_elements=1024)
        lo, hi = r.output.mean_interval
        cover_mean += lo <= r.output.exact_mean <= hi
        lo, hi = r.output.std_interval
        cover_std += lo <= r.output.exact_std <= hi
    assert 266 <= cover_mean <= 300
    assert 266 <= cover_std <= 300


def test_count_and_elementwise_masks_draw_the_same_law():
    # The kept fraction under the count mask is Binomial(n, q): with a constant
    # input of 1 and rule none, the train mean is exactly K / n.
    for mask in ("count", "elementwise"):
        r = simulate(
            0.3, n_elements=500_000, input=Constant(1.0), scaling="none", mask=mask
        )
        se = math.sqrt(0.7 * 0.3 / 500_000)
        assert abs(r.output.mean - 0.7) < Z * se
        assert r.output.std == pytest.approx(
            math.sqrt(r.output.mean * (1 - r.output.mean))
        )


def test_same_seed_repeats_and_chunking_bounds_nothing_but_memory():
    a = simulate(0.25, n_elements=50_000, seed=4)
    b = simulate(0.25, n_elements=50_000, seed=4)
    assert a.output == b.output
    c = simulate(0.25, n_elements=20_000, seed=4, chunk_elements=13)
    assert_agrees(c.output)


def test_results_depend_on_the_seed_not_on_threads():
    one = simulate(0.3, n_elements=100_001, seed=9, scaling="alpha", threads=1)
    two = simulate(0.3, n_elements=100_001, seed=9, scaling="alpha", threads=2)
    assert one.output == two.output and one.input == two.input
    other = simulate(0.3, n_elements=100_001, seed=10, scaling="alpha")
    assert other.output.mean != one.output.mean


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    p=st.floats(0.0, 0.95, allow_subnormal=False),
    mean=st.floats(-3.0, 3.0, allow_subnormal=False),
    std=st.floats(0.2, 3.0, allow_subnormal=False),
    rule=st.sampled_from(RULES),
    family=st.sampled_from(["normal", "relu", "uniform"]),
    seed=st.integers(0, 2**31),
)
def test_property_exact_values_lie_within_five_standard_errors(
    p, mean, std, rule, family, seed
):
    if family == "relu":
        mean = max(mean, -std)  # keep at least 16 % of the values positive
    r = simulate(
        p, n_elements=20_000, scaling=rule, input=family, mean=mean, std=std, seed=seed
    )
    assert_agrees(r.output, f"{rule} {family} p={p} mean={mean} std={std}")
    assert_agrees(r.eval)


# ------------------------------------------------------------------- layer


@pytest.mark.parametrize("rule", ["inverted", "none", "gaussian", "alpha"])
def test_linear_worked_example(rule):
    r = simulate_linear(
        torch.ones(1, 100), 0.3, n_samples=40_000, input=Constant(1.0), scaling=rule
    )
    assert_agrees(r.train[0], rule)
    assert r.eval[0].mean == pytest.approx(100.0)
    assert r.eval[0].std == pytest.approx(0.0, abs=1e-9)


def test_linear_general_weights_per_input_laws():
    torch.manual_seed(5)
    layer = torch.nn.Linear(12, 4)
    mus = torch.linspace(-1, 2, 12)
    sds = torch.linspace(0.2, 1.5, 12)
    for rule in ("moment", "variance"):
        r = simulate_linear(
            layer, 0.4, n_samples=30_000, mean=mus, std=sds, scaling=rule
        )
        for m in r.train + r.eval:
            assert_agrees(m, rule)
    r = simulate_linear(torch.randn(3, 6), 0.2, n_samples=20_000, input=Uniform(0, 2))
    for m in r.train + r.eval:
        assert_agrees(m)


# --------------------------------------------------------------- BatchNorm


@pytest.mark.parametrize("order", ["dropout-bn", "bn-dropout"])
@pytest.mark.parametrize("rule", ["inverted", "alpha", "moment"])
def test_batchnorm_against_torch_batchnorm(order, rule):
    r = simulate_batchnorm(
        0.5, n_samples=100_000, mean=0.5, std=1.0, scaling=rule, order=order, seed=3
    )
    assert_agrees(r.pre_bn_train, "pre-BN")
    assert_agrees(r.eval_out, "eval out")
    # running_var estimates the pre-BN variance: se(var) = 2 std se(std)
    se_var = 2 * r.pre_bn_train.std * r.pre_bn_train.se_std
    assert abs(r.running_var - r.exact.running_var) < Z * se_var


def test_batchnorm_design_example():
    r = simulate_batchnorm(0.5, n_samples=200_000, seed=6)
    assert r.exact.running_var == pytest.approx(2.0)
    assert r.exact.eval_out_std == pytest.approx(0.7071, abs=1e-4)
    assert_agrees(r.eval_out)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (
            lambda: simulate(0.5, n_elements=0),
            ValueError,
            "n_elements must be at least 2, got 0",
        ),
        (
            lambda: simulate(0.5, n_elements=2.5),
            TypeError,
            "n_elements must be an integer",
        ),
        (lambda: simulate(0.5, n_elements=True), TypeError, "n_elements"),
        (lambda: simulate(1.5, n_elements=10), ValueError, "p must be in"),
        (
            lambda: simulate(0.5, n_elements=10, std=-1.0),
            ValueError,
            "std must be >= 0",
        ),
        (
            lambda: simulate(0.5, n_elements=10, mean=math.inf),
            ValueError,
            "mean must be finite",
        ),
        (lambda: simulate(0.5, n_elements=10, mask="rows"), ValueError, "mask must be"),
        (
            lambda: simulate(0.5, n_elements=10, chunk_elements=0),
            ValueError,
            "chunk_elements",
        ),
        (lambda: simulate(1.0, n_elements=10, scaling="gaussian"), ValueError, "p < 1"),
        (
            lambda: simulate(0.5, n_elements=10, input=torch.tensor([])),
            ValueError,
            "empty",
        ),
        (
            lambda: simulate_linear(
                torch.ones(2, 3), 0.5, n_samples=10, mean=[1.0, 2.0]
            ),
            ValueError,
            "mean has 2 values",
        ),
        (
            lambda: simulate_linear(torch.ones(2, 3), 0.5, n_samples=-1),
            ValueError,
            "n_samples",
        ),
        (lambda: simulate_batchnorm(0.5, n_samples=10, eps=0.0), ValueError, "eps"),
    ],
)
def test_bad_input_raises_naming_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------ command


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_linear_example(capsys):
    code, out, err = run(capsys, "moments", "--example", "linear")
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[3:]}
    assert rows["inverted"][1:] == ["0.3", "100.0000", "6.5465", "100.0000", "0.0000"]
    assert rows["none"][1:] == ["0.3", "70.0000", "4.5826", "100.0000", "0.0000"]


def test_cli_batchnorm_shift(capsys):
    code, out, _ = run(
        capsys,
        "moments",
        "--batchnorm",
        "--p",
        "0.5",
        "--scaling",
        "inverted",
        "--format",
        "json",
    )
    assert code == 0
    first = json.loads(out)[0]
    assert first["order"] == "dropout-bn"
    assert first["running_var"] == pytest.approx(2.0, abs=1e-4)
    assert first["eval_out_std"] == pytest.approx(0.7071, abs=1e-4)


def test_cli_every_rule_and_alpha_constants(capsys):
    code, out, _ = run(capsys, "moments", "--p", "0.5", "--scaling", "all")
    assert code == 0
    for rule in RULES:
        assert f"\n{rule} " in out
    assert "a = 0.8864" in out and "dropped_value = -0.7792" in out


def test_cli_simulate_json_rules_inputs_and_linear(capsys):
    code, out, _ = run(
        capsys,
        "simulate",
        "--n",
        "300",
        "--p",
        "0.25",
        "--scaling",
        "alpha",
        "moment",
        "--input",
        "relu",
        "--format",
        "json",
    )
    assert code == 0
    res = json.loads(out)["results"]
    assert [r["scaling"] for r in res] == ["alpha", "moment"]
    for r in res:
        for key in ("input", "output", "eval"):
            assert r[key]["z_mean"] < Z and r[key]["z_std"] < Z
    code, out, _ = run(
        capsys, "simulate", "--linear", "--n", "5000", "--format", "json"
    )
    assert code == 0
    r = json.loads(out)["results"][0]
    assert r["train"][0]["exact_std"] == pytest.approx(math.sqrt(30 / 0.7))
    code, out, _ = run(capsys, "simulate", "--batchnorm", "dropout-bn", "--n", "5000")
    assert code == 0 and "running var" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["simulate", "--n", "1"], "--n must be at least 2, got 1"),
        (["simulate", "--n", "0"], "0"),
        (["simulate", "--n", "1.5"], "1.5"),
        (["moments", "--std", "-1"], "std must be >= 0, got -1.0"),
        (["moments", "--mean", "nan"], "mean must be finite, got nan"),
        (["simulate", "--n", "10", "--std", "nan"], "std must be finite"),
        (["moments", "--scaling", "dropconnect"], "dropconnect"),
        (["moments", "--input", "constant", "--std", "1"], "std 0"),
        (["simulate", "--n", "10", "--p", "1", "--scaling", "gaussian"], "p < 1"),
    ],
)
def test_cli_bad_input_is_one_line(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err, err


@pytest.mark.parametrize("seed", [-1, 2**63, 99999999999999999999999])
def test_seed_out_of_range_is_a_value_error_naming_it(seed):
    with pytest.raises(ValueError, match=rf"seed must be in \[0, 2\^63 - 1\].*{seed}"):
        simulate(0.5, n_elements=10, seed=seed)
    with pytest.raises(ValueError, match="seed must be in"):
        simulate_linear(torch.ones(1, 2), 0.5, n_samples=10, seed=seed)
    with pytest.raises(ValueError, match="seed must be in"):
        simulate_batchnorm(0.5, n_samples=10, seed=seed)


def test_largest_seed_is_accepted():
    r = simulate(0.5, n_elements=100, seed=2**63 - 1)
    assert r.seed == 2**63 - 1 and math.isfinite(r.output.mean)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["moments", "--mean", "1e308", "--std", "1e308"], "mean=1e+308 is too large"),
        (["moments", "--std", "1e200"], "std=1e+200 is too large"),
        (["simulate", "--n", "30", "--mean", "1e200"], "mean=1e+200 is too large"),
        (
            ["simulate", "--seed", "99999999999999999999999"],
            "argument --seed: must be in [0, 2^63 - 1]",
        ),
        (["simulate", "--seed", "-1"], "argument --seed"),
        (["simulate", "--n", "100000000"], "1e+16 values per run, over --max-values"),
        (["simulate", "--n", "100000000"], "305 days per run (3 runs)"),
        (["simulate", "--n", "200", "--max-values", "1000"], "4e+04 values"),
        (["simulate", "--linear", "--n", "10", "--max-values", "999"], "1e+03 values"),
        (["simulate", "--max-values", "0"], "argument --max-values"),
    ],
)
def test_cli_out_of_range_values_are_one_line(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_cli_max_values_documented_and_raised_limit_runs(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    assert "--max-values" in " ".join(capsys.readouterr().out.split())
    code, out, _ = run(
        capsys, "simulate", "--n", "40", "--p", "0.5", "--max-values", "1600"
    )
    assert code == 0 and "40 x 40" in out


def test_cli_table_columns_never_merge_at_extreme_p_and_scale(capsys):
    code, out, _ = run(
        capsys, "simulate", "--n", "30", "--p", "0.99999999999", "0.5",
        "--mean", "1e50", "--scaling", "inverted", "classic",
    )  # fmt: skip
    assert code == 0
    rows = [
        line for line in out.splitlines() if line.startswith(("inverted", "classic"))
    ]
    assert len(rows) == 12
    for line in rows:
        # label, part, then 8 numbers and intervals, each standing alone
        fields = line.replace(", ", ",").split()
        assert len(fields) == 10, line
        assert fields[0].endswith((",0.99999999999", ",0.5")), line
        assert fields[1] in ("input", "train", "eval"), line
        for f in fields[2:]:
            for number in f.strip("[]").split(","):
                float(number)
