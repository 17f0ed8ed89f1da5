"""Scaling conventions: factors a(q), b(q) as exact functions of q, names, custom
pairs and the errors for bad input."""

import math
import pickle

import pytest

from dropscale.scaling import SCALINGS, Scaling, custom, get_scaling, scaling_names

QS = [1.0, 0.9, 0.75, 0.5, 0.3, 1e-6]

# The table of DESIGN.md, written out independently of the code under test.
EXPECTED = {
    "inverted": (lambda q: 1 / q, lambda q: 1.0),
    "classic": (lambda q: 1.0, lambda q: q),
    "variance": (lambda q: q**-0.5, lambda q: 1.0),
    "none": (lambda q: 1.0, lambda q: 1.0),
}


def test_the_four_named_conventions_exist_in_table_order():
    assert list(SCALINGS) == ["inverted", "classic", "variance", "none"]
    assert scaling_names() == ["inverted", "classic", "variance", "none", "custom:A,B"]


@pytest.mark.parametrize("name", list(EXPECTED))
@pytest.mark.parametrize("q", QS)
def test_factors_are_exact_functions_of_q(name, q):
    a, b = get_scaling(name).factors(q)
    want_a, want_b = EXPECTED[name]
    assert a == pytest.approx(want_a(q), rel=1e-15)
    assert b == pytest.approx(want_b(q), rel=1e-15)


@pytest.mark.parametrize(
    ("name", "q", "a", "b"),
    [
        ("inverted", 0.5, 2.0, 1.0),
        ("inverted", 0.75, 4 / 3, 1.0),
        ("classic", 0.75, 1.0, 0.75),
        ("variance", 0.25, 2.0, 1.0),
        ("variance", 0.5, math.sqrt(2), 1.0),
        ("none", 0.5, 1.0, 1.0),
    ],
)
def test_factors_at_hand_checked_points(name, q, a, b):
    assert get_scaling(name).factors(q) == pytest.approx((a, b), rel=1e-15)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_q_zero_gives_a_train_factor_of_zero_not_a_division_by_zero(name):
    a, b = get_scaling(name).factors(0.0)
    assert a == 0.0
    assert b == EXPECTED[name][1](0.0)


@pytest.mark.parametrize(
    ("name", "ratio"),
    [
        ("inverted", lambda q: 1.0),
        ("classic", lambda q: 1.0),
        ("variance", lambda q: q**-0.5),
        ("none", lambda q: 1 / q),
    ],
)
@pytest.mark.parametrize("q", [0.9, 0.75, 0.5, 0.1])
def test_eval_over_train_mean_ratio(name, ratio, q):
    assert get_scaling(name).mean_ratio(q) == pytest.approx(ratio(q), rel=1e-14)


def test_mean_ratio_at_q_zero_is_infinite():
    assert get_scaling("inverted").mean_ratio(0.0) == math.inf


def test_mean_ratio_at_q_zero_is_one_when_both_means_vanish():
    # classic at q = 0: train mean a q mu = 0 and eval mean b mu = q mu = 0
    assert get_scaling("classic").mean_ratio(0.0) == 1.0


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_convention_states_its_formula_and_description(name):
    s = get_scaling(name)
    assert s.name == name
    assert str(s) == name
    assert "train:" in s.formula and "eval:" in s.formula
    assert len(s.description) > 20
    assert "\n" not in s.description


def test_formulas_name_the_factors():
    assert "/ q" in get_scaling("inverted").formula
    assert "q * x" in get_scaling("classic").formula
    assert "sqrt(q)" in get_scaling("variance").formula


@pytest.mark.parametrize("text", ["Inverted", "  classic ", "VARIANCE", "none"])
def test_names_ignore_case_and_surrounding_space(text):
    assert get_scaling(text).name == text.strip().lower()


def test_a_scaling_object_passes_through_unchanged():
    s = get_scaling("classic")
    assert get_scaling(s) is s


@pytest.mark.parametrize("q", [0.9, 0.5, 0.01])
def test_custom_pair_has_constant_factors(q):
    for spec in [(2.0, 0.5), (2, 0.5), custom(2, 0.5), "custom:2,0.5"]:
        s = get_scaling(spec)
        assert s.factors(q) == (2.0, 0.5)
        assert s.params == (2.0, 0.5)


def test_custom_name_reads_back_as_the_same_convention():
    for a, b in [(2.0, 0.5), (1 / 3, 1.0), (0.0, 1e-300), (123456.789, 7.0)]:
        s = custom(a, b)
        assert s.name.startswith("custom:")
        back = get_scaling(s.name)
        assert back == s
        assert back.factors(0.5) == (a, b)
    assert custom(2, 0.5).name == "custom:2,0.5"


def test_custom_string_tolerates_spaces_and_exponents():
    assert get_scaling("custom: 1e1 , 2.5e-1").factors(0.3) == (10.0, 0.25)


def test_custom_formula_shows_the_numbers():
    s = custom(2, 0.5)
    assert "2 * m * x" in s.formula
    assert "0.5 * x" in s.formula


@pytest.mark.parametrize("spec", ["inverted", (2.0, 0.5)])
def test_conventions_survive_pickling(spec):
    s = get_scaling(spec)
    back = pickle.loads(pickle.dumps(s))
    assert back == s
    assert back.factors(0.4) == s.factors(0.4)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'dropconnect'") as info:
        get_scaling("dropconnect")
    for name in ["inverted", "classic", "variance", "none", "custom:A,B"]:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "text", ["custom:", "custom:2", "custom:2,0.5,1", "custom:a,b", "custom:2;0.5"]
)
def test_unreadable_custom_string_shows_the_right_spelling(text):
    with pytest.raises(ValueError, match="custom:A,B") as info:
        get_scaling(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("a", "b", "bad"),
    [
        (-1.0, 1.0, "a"),
        (1.0, -0.5, "b"),
        (math.nan, 1.0, "a"),
        (1.0, math.inf, "b"),
        (-math.inf, 1.0, "a"),
    ],
)
def test_bad_custom_values_raise_naming_the_factor(a, b, bad):
    for spec in [(a, b), f"custom:{a},{b}"]:
        with pytest.raises(ValueError, match=f"{bad} must be finite and >= 0"):
            get_scaling(spec)


@pytest.mark.parametrize("value", ["2", None, True, [2.0]])
def test_custom_factor_that_is_not_a_number_is_a_type_error(value):
    with pytest.raises(TypeError, match="must be a number"):
        custom(value, 1.0)
    with pytest.raises(TypeError, match="must be a number"):
        custom(1.0, value)


def test_pair_of_wrong_length_is_rejected():
    with pytest.raises(ValueError, match="got 3 values"):
        get_scaling((1.0, 2.0, 3.0))


@pytest.mark.parametrize("value", [None, 1.0, [2.0, 0.5], {"a": 1}])
def test_other_types_are_rejected(value):
    with pytest.raises(TypeError, match="scaling must be a name"):
        get_scaling(value)


def test_scaling_is_immutable():
    s = get_scaling("inverted")
    assert isinstance(s, Scaling)
    with pytest.raises(AttributeError):
        s.name = "classic"
