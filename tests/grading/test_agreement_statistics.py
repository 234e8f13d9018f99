"""Agreement statistics: every figure checked against a published worked example or hand arithmetic."""

import math
import random

import numpy as np
import pytest

from grading import agreement
from grading.agreement import (
    FEWER_THAN_TWO_GRADERS,
    NO_SHARED_UNIT,
    NO_UNITS,
    NOBODY_ANSWERED,
    Figure,
    agreement_summary,
    bootstrap_interval,
    cohen_kappa,
    cohen_matrix,
    fleiss_kappa,
    gwet_ac1,
    krippendorff_alpha,
    percent_agreement,
    ratings_without,
    same_answer_note,
    sensitivity_specificity,
)

# Fleiss (1971), table 1: 30 patients, 6 psychiatrists, 5 diagnoses (depression, personality disorder,
# schizophrenia, neurosis, other); counts per patient. R's irr ships it as `diagnoses`; kappam.fleiss gives
# 0.4302445. Transcribed from the raw ratings in statsmodels' own test of fleiss_kappa against irr.
FLEISS_1971 = [
    [0, 0, 0, 6, 0],
    [0, 3, 0, 0, 3],
    [0, 1, 4, 0, 1],
    [0, 0, 0, 0, 6],
    [0, 3, 0, 3, 0],
    [2, 0, 4, 0, 0],
    [0, 0, 4, 0, 2],
    [2, 0, 3, 1, 0],
    [2, 0, 0, 4, 0],
    [0, 0, 0, 0, 6],
    [1, 0, 0, 5, 0],
    [1, 1, 0, 4, 0],
    [0, 3, 3, 0, 0],
    [1, 0, 0, 5, 0],
    [0, 2, 0, 3, 1],
    [0, 0, 5, 0, 1],
    [3, 0, 0, 1, 2],
    [5, 1, 0, 0, 0],
    [0, 2, 0, 4, 0],
    [1, 0, 2, 0, 3],
    [0, 0, 0, 0, 6],
    [0, 1, 0, 5, 0],
    [0, 2, 0, 1, 3],
    [2, 0, 0, 4, 0],
    [1, 0, 0, 4, 1],
    [0, 5, 0, 1, 0],
    [4, 0, 0, 0, 2],
    [0, 2, 0, 4, 0],
    [1, 0, 5, 0, 0],
    [0, 0, 0, 0, 6],
]

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories.
WIKIPEDIA_FLEISS = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers, 12 units, nominal,
# '*' = missing. Published alpha 0.743.
KRIPPENDORFF_2011 = {
    "A": "1 2 3 3 2 1 4 1 2 * * *",
    "B": "1 2 3 3 2 2 4 1 2 5 * 3",
    "C": "* 3 3 3 2 3 4 2 2 5 1 *",
    "D": "1 2 3 3 2 4 4 1 2 5 1 *",
}

# Cohen's 2x2 table: both yes 20, A yes B no 5, A no B yes 10, both no 15.
# po = 35/50 = 0.70; pe = 0.5 * 0.6 + 0.5 * 0.4 = 0.50; kappa = 0.20 / 0.50 = 0.400.
COHEN_2X2 = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15

# A rare sign: 100 eyes, 2 graders, 95 both absent, 1 disagreement each way, 3 both present.
RARE_SIGN = (
    [("absent", "absent")] * 95
    + [("absent", "present")]
    + [("present", "absent")]
    + [("present", "present")] * 3
)


def ratings_from_counts(rows: list[list[int]]) -> list[dict[str, str | None]]:
    """One unit per row of a units x categories count table; categories "1".."5", grader names arbitrary."""
    units = []
    for row in rows:
        answers = [str(category) for category, count in enumerate(row, start=1) for _ in range(count)]
        units.append({f"grader {number}": answer for number, answer in enumerate(answers, start=1)})
    return units


def ratings_from_columns(columns: dict[str, str]) -> list[dict[str, str | None]]:
    """Units from one space-separated answer line per grader; '*' is not rated."""
    answers = {grader: line.split() for grader, line in columns.items()}
    unit_count = len(next(iter(answers.values())))
    return [
        {grader: None if line[unit] == "*" else line[unit] for grader, line in answers.items()}
        for unit in range(unit_count)
    ]


def ratings_from_pairs(pairs: list[tuple[str, str]]) -> list[dict[str, str | None]]:
    return [{"A": first, "B": second} for first, second in pairs]


def no_figure(figure: Figure, note: str) -> bool:
    return figure.value is None and figure.note == note


# --- Published worked examples ---------------------------------------------------------------------------


def test_fleiss_kappa_on_fleiss_1971_diagnoses_is_0_430():
    figure = fleiss_kappa(ratings=ratings_from_counts(FLEISS_1971))

    assert round(figure.value, 3) == 0.430
    assert (figure.units, figure.ratings, figure.note) == (30, 180, "")


def test_fleiss_kappa_on_wikipedia_example_is_0_210():
    figure = fleiss_kappa(ratings=ratings_from_counts(WIKIPEDIA_FLEISS))

    assert round(figure.value, 3) == 0.210
    assert (figure.units, figure.ratings) == (10, 140)


def test_cohen_kappa_on_a_2x2_table_is_0_400():
    figure = cohen_kappa(pairs=COHEN_2X2)

    assert round(figure.value, 3) == 0.400
    assert (figure.units, figure.ratings) == (50, 100)


def test_krippendorff_alpha_on_krippendorff_2011_with_missing_ratings_is_0_743():
    figure = krippendorff_alpha(ratings=ratings_from_columns(KRIPPENDORFF_2011))

    assert round(figure.value, 3) == 0.743
    # Unit 12 has a single answer: not pairable. The other 11 units hold 40 answers.
    assert (figure.units, figure.ratings) == (11, 40)


def test_krippendorff_alpha_on_krippendorff_2011_binary_two_observers_is_0_095():
    # Same paper, binary data, two observers, no missing data. By hand: 20 values, 14 zeros and 6 ones,
    # 4 disagreeing units so o(0,1) = 4; alpha = 1 - (n - 1) o(0,1) / (n0 n1) = 1 - 19 * 4 / 84 = 0.095.
    figure = krippendorff_alpha(
        ratings=ratings_from_columns({"A": "0 1 0 0 0 0 0 0 1 0", "B": "1 1 1 0 0 1 0 0 0 0"})
    )

    assert round(figure.value, 3) == 0.095


# --- Hand-computed examples ------------------------------------------------------------------------------

HAND_EXAMPLE = [
    {"A": "yes", "B": "yes", "C": "yes"},
    {"A": "yes", "B": "no", "C": "yes"},
    {"A": "no", "B": "no", "C": None},
    {"A": "no"},
]


def test_percent_agreement_by_hand():
    # Unit 1: 3 of 3 pairs agree; unit 2: 1 of 3 (A-C); unit 3: 1 of 1; unit 4: one answer, left out.
    # (1 + 1/3 + 1) / 3 = 7/9 = 0.778.
    figure = percent_agreement(ratings=HAND_EXAMPLE)

    assert round(figure.value, 3) == 0.778
    assert (figure.units, figure.ratings) == (3, 8)


def test_gwet_ac1_by_hand_with_missing_ratings():
    # Observed: the pair shares above, (1 + 1/3 + 1) / 3 = 7/9.
    # pi(yes) over the 4 answered units = (3/3 + 2/3 + 0/2 + 0/1) / 4 = 5/12; pi(no) = 7/12.
    # Chance: (5/12 * 7/12 + 7/12 * 5/12) / (q - 1 = 1) = 70/144 = 35/72.
    # AC1 = (7/9 - 35/72) / (1 - 35/72) = (21/72) / (37/72) = 21/37 = 0.568.
    figure = gwet_ac1(ratings=HAND_EXAMPLE)

    assert round(figure.value, 3) == 0.568
    assert (figure.units, figure.ratings) == (4, 9)


def test_gwet_ac1_with_missing_ratings_matches_an_independent_implementation():
    # Not a published figure: Gwet's irrCAC (Python port 0.4.4, categories given) gives 0.77544 here.
    figure = gwet_ac1(ratings=ratings_from_columns(KRIPPENDORFF_2011))

    assert round(figure.value, 3) == 0.775
    assert (figure.units, figure.ratings) == (12, 41)


def test_a_rare_sign_keeps_ac1_high_where_kappa_drops():
    # po = 0.98. Kappa: each grader says present on 4 eyes, pe = 0.04^2 + 0.96^2 = 0.9232,
    # kappa = 0.0568 / 0.0768 = 0.740. AC1: pi(present) = (3 + 2 * 1/2) / 100 = 0.04,
    # pe = 2 * 0.04 * 0.96 = 0.0768, AC1 = 0.9032 / 0.9232 = 0.978.
    ratings = ratings_from_pairs(RARE_SIGN)

    kappa = cohen_kappa(pairs=RARE_SIGN).value
    ac1 = gwet_ac1(ratings=ratings).value

    assert round(percent_agreement(ratings=ratings).value, 3) == 0.980
    assert round(kappa, 3) == 0.740
    assert round(ac1, 3) == 0.978
    assert kappa < 0.75 < 0.9 < ac1
    assert round(fleiss_kappa(ratings=ratings).value, 3) == 0.740  # two graders, same marginals


def test_fleiss_kappa_uses_the_units_rated_by_the_usual_number_of_graders():
    ratings = [
        {"A": "yes", "B": "yes", "C": "no"},
        {"A": "no", "B": "no", "C": "no"},
        {"A": "yes", "B": "yes", "C": "yes"},
        {"A": "yes", "B": "no"},
    ]

    figure = fleiss_kappa(ratings=ratings)

    assert (figure.units, figure.ratings) == (3, 9)
    assert figure.note == "rests on the 3 of 4 units rated by exactly 3 graders"
    # The 3 units alone: P = (1/3 + 1 + 1) / 3 = 7/9; p(yes) = 5/9, pe = 41/81; kappa = 22/40 = 0.550.
    assert round(figure.value, 3) == 0.550


def test_cohen_matrix_pairs_graders_over_the_units_both_rated():
    ratings = [{**unit, "C": unit["A"]} for unit in ratings_from_pairs(COHEN_2X2)[:10]]
    ratings += ratings_from_pairs(COHEN_2X2)[10:]

    matrix = cohen_matrix(ratings=ratings)

    assert sorted(matrix) == [("A", "B"), ("A", "C"), ("B", "C")]
    assert round(matrix[("A", "B")].value, 3) == 0.400
    assert matrix[("A", "C")].units == 10
    assert no_figure(matrix[("A", "C")], same_answer_note("kappa"))  # C only saw A's first 10: all yes


def test_sensitivity_and_specificity_against_a_reference():
    # Pairs are (grader, reference). Reference positive: 20 + 10, grader agrees on 20 -> 0.667.
    # Reference negative: 5 + 15, grader agrees on 15 -> 0.750.
    sensitivity, specificity = sensitivity_specificity(pairs=COHEN_2X2, positive="yes")

    assert round(sensitivity.value, 3) == 0.667
    assert sensitivity.units == 30
    assert round(specificity.value, 3) == 0.750
    assert specificity.units == 20


def test_sensitivity_without_reference_positives_has_no_value():
    sensitivity, specificity = sensitivity_specificity(pairs=[("yes", "no"), ("no", "no")], positive="yes")

    assert no_figure(sensitivity, "not enough data: the reference has no positive answer")
    assert specificity.value == 0.5


# --- Edge cases: value None with a note, no exception, no NaN ---------------------------------------------

ALL_COEFFICIENTS = [percent_agreement, fleiss_kappa, krippendorff_alpha, gwet_ac1]


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("statistic", ALL_COEFFICIENTS)
@pytest.mark.parametrize(
    ("ratings", "note"),
    [
        ([], NO_UNITS),
        ([{"A": None, "B": None}, {"A": None}], NOBODY_ANSWERED),
        ([{"A": "yes"}, {"A": "no"}, {"A": "yes", "B": None}], FEWER_THAN_TWO_GRADERS),
        ([{"A": "yes"}, {"B": "no"}], NO_SHARED_UNIT),
    ],
    ids=["no units", "a field nobody answered", "one grader", "no shared unit"],
)
def test_too_little_data_gives_no_value_and_says_why(statistic, ratings, note):
    assert no_figure(statistic(ratings=ratings), note)


@pytest.mark.filterwarnings("error")
def test_every_answer_identical_is_complete_agreement_with_undefined_coefficients():
    ratings = [{"A": "absent", "B": "absent", "C": "absent"}] * 4 + [{"A": "absent"}]

    assert percent_agreement(ratings=ratings).value == 1.0
    assert no_figure(
        fleiss_kappa(ratings=ratings),
        "every answer is the same: agreement is complete but kappa is undefined",
    )
    assert no_figure(krippendorff_alpha(ratings=ratings), same_answer_note("alpha"))
    assert no_figure(gwet_ac1(ratings=ratings), same_answer_note("AC1"))
    assert no_figure(cohen_kappa(pairs=[("absent", "absent")] * 4), same_answer_note("kappa"))
    assert all(
        no_figure(figure, same_answer_note("kappa")) for figure in cohen_matrix(ratings=ratings).values()
    )


@pytest.mark.filterwarnings("error")
def test_two_graders_who_never_agree_give_finite_figures():
    pairs = [("yes", "no"), ("no", "yes")] * 3

    figures = [
        cohen_kappa(pairs=pairs),
        *(statistic(ratings=ratings_from_pairs(pairs)) for statistic in ALL_COEFFICIENTS),
    ]

    assert all(figure.value is not None and math.isfinite(figure.value) for figure in figures)
    assert percent_agreement(ratings=ratings_from_pairs(pairs)).value == 0.0


@pytest.mark.filterwarnings("error")
def test_edge_cases_of_the_pairwise_figures():
    assert no_figure(cohen_kappa(pairs=[]), NO_SHARED_UNIT)
    assert no_figure(cohen_kappa(pairs=[("yes", None), (None, "no")]), NO_SHARED_UNIT)
    assert cohen_matrix(ratings=[]) == {}
    assert cohen_matrix(ratings=[{"A": "yes"}]) == {}
    assert no_figure(cohen_matrix(ratings=[{"A": "yes"}, {"B": "no"}])[("A", "B")], NO_SHARED_UNIT)
    assert all(figure.value is None for figure in sensitivity_specificity(pairs=[], positive="yes"))


# --- Ungradable: left out or a category of its own ------------------------------------------------------

WITH_UNGRADABLE = [
    {"A": "TF", "B": "TF"},
    {"A": "none", "B": "none"},
    {"A": "TF", "B": "ungradable"},
    {"A": "ungradable", "B": "none"},
    {"A": "none", "B": "none"},
]


def test_ungradable_left_out_or_as_its_own_category_gives_different_figures():
    left_out = ratings_without(ratings=WITH_UNGRADABLE, values={"ungradable"})

    assert left_out[2] == {"A": "TF"}
    # Its own category: 3 of 5 units agree. Left out: units 3 and 4 keep one answer, the other 3 agree.
    assert percent_agreement(ratings=WITH_UNGRADABLE).value == 0.6
    assert (percent_agreement(ratings=left_out).value, percent_agreement(ratings=left_out).units) == (1.0, 3)
    assert fleiss_kappa(ratings=left_out).value == 1.0
    assert fleiss_kappa(ratings=WITH_UNGRADABLE).value < 0.5


# --- Bootstrap ------------------------------------------------------------------------------------------


def test_bootstrap_is_reproducible_and_contains_the_estimate():
    ratings = ratings_from_counts(FLEISS_1971)

    interval = bootstrap_interval(ratings=ratings, statistic=fleiss_kappa, rounds=200, seed=7)

    assert interval == bootstrap_interval(ratings=ratings, statistic=fleiss_kappa, rounds=200, seed=7)
    low, high = interval
    assert low < fleiss_kappa(ratings=ratings).value < high
    assert 0 < high - low < 0.5


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "ratings",
    [
        [],
        [{"A": "yes", "B": "no"}],
        [{"A": "yes"}, {"A": "no"}],
        [{"A": "yes", "B": "yes"}] * 5,
    ],
    ids=["no units", "one unit", "one grader", "every answer identical"],
)
def test_bootstrap_gives_none_for_too_little_data(ratings):
    assert bootstrap_interval(ratings=ratings, statistic=fleiss_kappa, rounds=50) is None


def test_bootstrap_refuses_a_meaningless_level():
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(ratings=HAND_EXAMPLE, statistic=gwet_ac1, level=1.5)


def test_summary_gives_the_four_coefficients_each_with_its_interval():
    ratings = ratings_from_columns(KRIPPENDORFF_2011)

    summary = agreement_summary(ratings=ratings, rounds=100, seed=1)

    assert list(summary) == list(agreement.COEFFICIENTS)
    assert round(summary["krippendorff_alpha"].value, 3) == 0.743
    for name, figure in summary.items():
        assert figure.value == agreement.COEFFICIENTS[name](ratings=ratings).value
        low, high = figure.interval
        assert low <= figure.value <= high


# --- Figures from answer counts: the libraries' values, the plain bootstrap's intervals -------------------


def random_study(seed: int, *, units: int, graders: int) -> list[dict[str, str | None]]:
    """Random answers among 3 categories with about a third missing: units carry 0 to `graders` answers."""
    draw = random.Random(seed)
    return [
        {grader: draw.choice("abc") if draw.random() > 0.35 else None for grader in "ABCDEF"[:graders]}
        for _ in range(units)
    ]


# 13 eyes, 2 graders, one sign seen on 2 eyes: about 1 resample in 9 holds no eye graded "present".
RARE_PRESENT = [{"A": "absent", "B": "absent"}] * 10 + [
    {"A": "present", "B": "absent"},
    {"A": "present", "B": "present"},
    {"A": "absent"},
]


def from_counts_on_the_whole_sample(statistic, ratings) -> float:
    """The vectorized formula of `statistic`, given a single "resample": every unit once."""
    answers = agreement._answer_counts(ratings)
    rows, units = np.unique(answers.counts, axis=0, return_counts=True)
    return agreement._COUNTED[statistic].resampled(rows, units[np.newaxis].astype(float))[0]


def plain_bootstrap_values(statistic, ratings, *, rounds: int, seed: int) -> list[float | None]:
    """The point estimate called on each resample, rebuilt as ratings from the module's own draws.

    A draw says how many units with each row of answer counts a resample holds; the units are picked at
    random among those with that row, so graders differ from the module's representative rows.
    """
    answers = agreement._answer_counts(ratings)
    resamples = agreement._resamples(answers, rounds=rounds, seed=seed)
    answered = [unit for unit in ratings if any(answer is not None for answer in unit.values())]
    with_row = {}
    for row, unit in zip(answers.counts.tolist(), answered, strict=True):
        with_row.setdefault(tuple(row), []).append(unit)
    groups = [with_row[tuple(row)] for row in resamples.counts.tolist()]
    pick = random.Random(seed)
    return [
        statistic(
            ratings=[
                unit
                for group, times in zip(groups, weights, strict=True)
                for unit in pick.choices(group, k=int(times))
            ]
        ).value
        for weights in resamples.weights
    ]


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("statistic", ALL_COEFFICIENTS)
def test_figures_from_answer_counts_equal_the_library_values_with_missing_ratings(statistic, seed):
    # Fleiss' kappa from statsmodels, alpha from krippendorff, percent agreement and AC1 from plain sums.
    ratings = random_study(seed, units=80, graders=3 + seed % 3)

    assert from_counts_on_the_whole_sample(statistic, ratings) == pytest.approx(
        statistic(ratings=ratings).value, abs=1e-9
    )


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("statistic", ALL_COEFFICIENTS)
@pytest.mark.parametrize(
    "ratings",
    [random_study(11, units=30, graders=4), RARE_PRESENT],
    ids=["2 to 4 answers per unit", "a rare sign"],
)
def test_bootstrap_from_counts_gives_the_interval_of_the_plain_loop_over_the_same_resamples(
    statistic, ratings
):
    values = plain_bootstrap_values(statistic, ratings, rounds=300, seed=5)
    kept = [value for value in values if value is not None]

    interval = bootstrap_interval(ratings=ratings, statistic=statistic, rounds=300, seed=5)

    assert interval == pytest.approx(tuple(np.quantile(kept, [0.025, 0.975])), abs=1e-12)
    if ratings is RARE_PRESENT and statistic is not percent_agreement:
        assert 0 < len(values) - len(kept) < 150  # some resamples hold no "present": dropped


def test_summary_intervals_are_those_of_bootstrap_interval_with_the_same_seed():
    ratings = random_study(3, units=50, graders=4)

    summary = agreement_summary(ratings=ratings, rounds=200, seed=9)

    for name, statistic in agreement.COEFFICIENTS.items():
        assert summary[name].interval == bootstrap_interval(
            ratings=ratings, statistic=statistic, rounds=200, seed=9
        )


def test_bootstrap_of_a_statistic_built_on_a_coefficient_calls_it_on_each_resample():
    def kappa_without_ungradable(*, ratings):
        return fleiss_kappa(ratings=ratings_without(ratings=ratings, values={"ungradable"}))

    ratings = ratings_from_counts(FLEISS_1971)

    interval = bootstrap_interval(ratings=ratings, statistic=kappa_without_ungradable, rounds=100, seed=2)

    assert interval == bootstrap_interval(
        ratings=ratings, statistic=kappa_without_ungradable, rounds=100, seed=2
    )
    low, high = interval
    assert low < fleiss_kappa(ratings=ratings).value < high
