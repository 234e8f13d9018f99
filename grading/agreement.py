"""Inter-grader agreement: pure statistics on plain Python data, no database.

The input is one mapping per unit (a patient or a patient's eye): grader -> the category the grader
chose, a string. `None` or a missing key means the grader did not rate that unit. Units with no answer
at all are ignored by every coefficient.

Every coefficient returns a `Figure`. A figure never holds NaN or infinity and no function here raises
ZeroDivisionError: when the data cannot give a figure (no units, fewer than 2 graders, a field nobody
answered, every answer the same so chance agreement is 1) the value is None and the note says why.

Where the figures come from:
- Fleiss' kappa and Cohen's kappa: statsmodels (`statsmodels.stats.inter_rater`).
- Krippendorff's alpha (nominal): the `krippendorff` package.
- Percent agreement, Gwet's AC1, sensitivity and specificity, the bootstrap: written here.

References: Fleiss (1971) Psychological Bulletin 76:378; Cohen (1960) Educ Psychol Meas 20:37;
Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability"; Gwet (2008) Br J Math Stat Psychol
61:29, and Gwet, Handbook of Inter-Rater Reliability (4th ed., 2014) for AC1 with missing ratings.
"""

import itertools
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import fmean
from typing import Protocol

import krippendorff
import numpy as np
from statsmodels.stats import inter_rater

Ratings = Sequence[Mapping[str, str | None]]

NO_UNITS = "not enough data: no units"
NOBODY_ANSWERED = "not enough data: nobody answered"
FEWER_THAN_TWO_GRADERS = "not enough data: fewer than 2 graders"
NO_SHARED_UNIT = "not enough data: no unit was rated by 2 or more graders"
NOT_COMPUTABLE = "the figure could not be computed from this data"


def same_answer_note(coefficient: str) -> str:
    """The note of a chance-corrected coefficient when every answer is the same category."""
    return f"every answer is the same: agreement is complete but {coefficient} is undefined"


@dataclass(frozen=True)
class Figure:
    """One agreement figure and what it rests on.

    `value` is None when the data cannot give a figure; `note` then says why. A note may also accompany
    a value (Fleiss' kappa says which units it left out). `interval` is a bootstrap interval when asked for.
    """

    value: float | None
    units: int
    ratings: int
    interval: tuple[float, float] | None = None
    note: str = ""


class Statistic(Protocol):
    """A coefficient of this module: ratings in, a Figure out."""

    def __call__(self, *, ratings: Ratings) -> Figure: ...


# --- Shared helpers -------------------------------------------------------------------------------------


def _answers_per_unit(ratings: Ratings) -> list[Counter[str]]:
    """How many graders chose each category, per unit; missing answers dropped."""
    return [Counter(answer for answer in unit.values() if answer is not None) for unit in ratings]


def _answered(units: list[Counter[str]], *, at_least: int) -> list[Counter[str]]:
    return [unit for unit in units if unit.total() >= at_least]


def _ratings_in(units: list[Counter[str]]) -> int:
    return sum(unit.total() for unit in units)


def _categories(units: list[Counter[str]]) -> list[str]:
    return sorted(set().union(*units))


def _graders(ratings: Ratings) -> list[str]:
    return sorted({grader for unit in ratings for grader, answer in unit.items() if answer is not None})


def _shortage_note(ratings: Ratings) -> str:
    """Why no unit carries two answers, in the order a reader checks it; "" when one does."""
    if not ratings:
        return NO_UNITS
    graders = _graders(ratings)
    if not graders:
        return NOBODY_ANSWERED
    if len(graders) < 2:
        return FEWER_THAN_TWO_GRADERS
    if not _answered(_answers_per_unit(ratings), at_least=2):
        return NO_SHARED_UNIT
    return ""


def _figure(value: float, *, units: int, ratings: int, note: str = "") -> Figure:
    """A figure from a computed value, refusing NaN and infinity."""
    value = float(value)
    if not math.isfinite(value):
        return Figure(value=None, units=units, ratings=ratings, note=NOT_COMPUTABLE)
    return Figure(value=value, units=units, ratings=ratings, note=note)


def _agreeing_pair_share(unit: Counter[str]) -> float:
    """The share of a unit's grader pairs that chose the same category (the unit has 2 answers or more)."""
    answers = unit.total()
    return sum(count * (count - 1) for count in unit.values()) / (answers * (answers - 1))


# --- Percent agreement ----------------------------------------------------------------------------------


def percent_agreement(*, ratings: Ratings) -> Figure:
    """The share of agreeing grader pairs, averaged over units rated by 2 graders or more.

    A unit rated by 3 graders has 3 pairs, so one dissenting grader gives it 1/3. Units with a single
    answer are left out. Every answer the same gives 1.0. Not corrected for chance.
    """
    if shortage := _shortage_note(ratings):
        return Figure(value=None, units=0, ratings=0, note=shortage)
    units = _answered(_answers_per_unit(ratings), at_least=2)
    share = fmean(_agreeing_pair_share(unit) for unit in units)
    return _figure(share, units=len(units), ratings=_ratings_in(units))


# --- Fleiss' kappa --------------------------------------------------------------------------------------


def _usual_grader_count(units: list[Counter[str]]) -> int:
    """The most common number of answers per unit (2 or more); a tie goes to the larger number."""
    frequency = Counter(unit.total() for unit in units)
    return max(frequency, key=lambda answers: (frequency[answers], answers))


def _left_out_note(*, kept: int, rated: int, graders: int) -> str:
    if kept == rated:
        return ""
    return f"rests on the {kept} of {rated} units rated by exactly {graders} graders"


def fleiss_kappa(*, ratings: Ratings) -> Figure:
    """Fleiss' kappa (1971), computed by statsmodels.

    Fleiss' kappa needs the same number of graders on every unit, so it uses only the units rated by
    the most common number of graders (2 or more; a tie goes to the larger number). When that leaves
    units out, `units` counts those kept and the note says so. Which graders rated a unit does not matter.
    When every answer kept is the same category, kappa is undefined: value None with a note.
    """
    if shortage := _shortage_note(ratings):
        return Figure(value=None, units=0, ratings=0, note=shortage)
    rated = _answered(_answers_per_unit(ratings), at_least=2)
    graders = _usual_grader_count(rated)
    units = [unit for unit in rated if unit.total() == graders]
    categories = _categories(units)
    if len(categories) < 2:
        return Figure(
            value=None, units=len(units), ratings=_ratings_in(units), note=same_answer_note("kappa")
        )
    table = np.array([[unit[category] for category in categories] for unit in units])
    return _figure(
        inter_rater.fleiss_kappa(table, method="fleiss"),
        units=len(units),
        ratings=_ratings_in(units),
        note=_left_out_note(kept=len(units), rated=len(rated), graders=graders),
    )


# --- Krippendorff's alpha -------------------------------------------------------------------------------


def krippendorff_alpha(*, ratings: Ratings) -> Figure:
    """Krippendorff's alpha for nominal data, computed by the `krippendorff` package.

    Missing ratings are allowed: units with fewer than 2 answers are not pairable and are left out, and
    `units` / `ratings` count the pairable ones. Every answer the same makes alpha undefined: value None.
    """
    if shortage := _shortage_note(ratings):
        return Figure(value=None, units=0, ratings=0, note=shortage)
    units = _answered(_answers_per_unit(ratings), at_least=2)
    categories = _categories(units)
    if len(categories) < 2:
        return Figure(
            value=None, units=len(units), ratings=_ratings_in(units), note=same_answer_note("alpha")
        )
    value_counts = np.array([[unit[category] for category in categories] for unit in units])
    alpha = krippendorff.alpha(value_counts=value_counts, level_of_measurement="nominal")
    return _figure(alpha, units=len(units), ratings=_ratings_in(units))


# --- Gwet's AC1 -----------------------------------------------------------------------------------------


def _gwet_chance_agreement(units: list[Counter[str]], categories: list[str]) -> float:
    """Gwet's chance agreement: sum of pi_k (1 - pi_k) over q - 1, pi_k averaged over answered units."""
    prevalence = [fmean(unit[category] / unit.total() for unit in units) for category in categories]
    return sum(pi * (1 - pi) for pi in prevalence) / (len(categories) - 1)


def gwet_ac1(*, ratings: Ratings) -> Figure:
    """Gwet's AC1, multi-rater form with missing ratings (Gwet 2008; Handbook, 4th ed.), written here.

    Observed agreement is the mean share of agreeing pairs over units with 2 answers or more (as
    `percent_agreement`). Chance agreement is sum_k pi_k (1 - pi_k) / (q - 1), where pi_k is the share
    of category k among a unit's answers averaged over every unit with at least one answer, and q is the
    number of categories anybody chose. `units` and `ratings` count every answered unit, since the chance
    term reads them all. Every answer the same (q = 1) makes AC1 undefined: value None with a note.
    """
    if shortage := _shortage_note(ratings):
        return Figure(value=None, units=0, ratings=0, note=shortage)
    answered = _answered(_answers_per_unit(ratings), at_least=1)
    categories = _categories(answered)
    if len(categories) < 2:
        return Figure(
            value=None, units=len(answered), ratings=_ratings_in(answered), note=same_answer_note("AC1")
        )
    observed = fmean(_agreeing_pair_share(unit) for unit in _answered(answered, at_least=2))
    chance = _gwet_chance_agreement(answered, categories)  # at most 1/q, so 1 - chance > 0
    return _figure((observed - chance) / (1 - chance), units=len(answered), ratings=_ratings_in(answered))


# --- Cohen's kappa --------------------------------------------------------------------------------------


def _complete_pairs(pairs: Sequence[tuple[str | None, str | None]]) -> list[tuple[str, str]]:
    return [(first, second) for first, second in pairs if first is not None and second is not None]


def _contingency_table(pairs: list[tuple[str, str]], categories: list[str]) -> np.ndarray:
    cells = Counter(pairs)
    return np.array([[cells[(first, second)] for second in categories] for first in categories])


def cohen_kappa(*, pairs: Sequence[tuple[str, str]]) -> Figure:
    """Cohen's kappa (unweighted) for two graders' answers on the same units, computed by statsmodels.

    Each pair is (first grader's answer, second grader's answer) on one unit; a pair with a missing
    answer (None) is left out. When both graders chose one and the same category throughout, kappa is
    undefined: value None with a note.
    """
    complete = _complete_pairs(pairs)
    if not complete:
        return Figure(value=None, units=0, ratings=0, note=NO_SHARED_UNIT)
    categories = sorted({answer for pair in complete for answer in pair})
    if len(categories) < 2:
        return Figure(
            value=None, units=len(complete), ratings=2 * len(complete), note=same_answer_note("kappa")
        )
    table = _contingency_table(complete, categories)
    kappa = inter_rater.cohens_kappa(table, return_results=False)
    return _figure(kappa, units=len(complete), ratings=2 * len(complete))


def _shared_answers(ratings: Ratings, first: str, second: str) -> list[tuple[str | None, str | None]]:
    return [(unit.get(first), unit.get(second)) for unit in ratings]


def cohen_matrix(*, ratings: Ratings) -> dict[tuple[str, str], Figure]:
    """Cohen's kappa for every pair of graders, over the units both rated.

    Keys are (grader, grader) in sorted order, each pair once. Fewer than 2 graders give an empty dict;
    a pair that shares no unit gets value None with a note.
    """
    return {
        (first, second): cohen_kappa(pairs=_shared_answers(ratings, first, second))
        for first, second in itertools.combinations(_graders(ratings), 2)
    }


# --- Sensitivity and specificity ------------------------------------------------------------------------


def _share_matching_reference(
    pairs: list[tuple[str, str]], *, positive: str, reference_positive: bool
) -> Figure:
    """Among pairs whose reference is (or is not) positive, the share where the grader says the same."""
    relevant = [
        answer == positive for answer, reference in pairs if (reference == positive) == reference_positive
    ]
    if not relevant:
        side = "positive" if reference_positive else "negative"
        return Figure(
            value=None, units=0, ratings=0, note=f"not enough data: the reference has no {side} answer"
        )
    matching = sum(says_positive == reference_positive for says_positive in relevant)
    return _figure(matching / len(relevant), units=len(relevant), ratings=2 * len(relevant))


def sensitivity_specificity(*, pairs: Sequence[tuple[str, str]], positive: str) -> tuple[Figure, Figure]:
    """A grader's answers against a reference answer (e.g. the consensus) on a two-level field.

    Each pair is (grader's answer, reference answer) on one unit; pairs with a missing answer are left
    out. `positive` is the category that counts as positive; every other category counts as negative.
    Sensitivity rests on the units the reference calls positive, specificity on those it calls negative;
    either is None with a note when the reference has no such unit.
    """
    complete = _complete_pairs(pairs)
    return (
        _share_matching_reference(complete, positive=positive, reference_positive=True),
        _share_matching_reference(complete, positive=positive, reference_positive=False),
    )


# --- Ungradable -----------------------------------------------------------------------------------------


def ratings_without(*, ratings: Ratings, values: set[str]) -> list[dict[str, str | None]]:
    """The same units with the answers in `values` dropped (as if not rated).

    Pass the ungradable option's value to leave ungradable out of a coefficient; pass the ratings
    unchanged to count it as a category of its own. The caller chooses, and should say which.
    """
    return [{grader: answer for grader, answer in unit.items() if answer not in values} for unit in ratings]


# --- Bootstrap ------------------------------------------------------------------------------------------


def _resampled_values(
    units: list[Mapping[str, str | None]], statistic: Statistic, *, rounds: int, seed: int
) -> list[float]:
    """The statistic on `rounds` resamples of units (with replacement), keeping the values it gives."""
    draw = random.Random(seed)
    values = (statistic(ratings=draw.choices(units, k=len(units))).value for _ in range(rounds))
    return [value for value in values if value is not None]


def bootstrap_interval(
    *, ratings: Ratings, statistic: Statistic, rounds: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """A percentile bootstrap interval for `statistic`, resampling units with replacement.

    The same ratings, statistic, rounds, seed and level always give the same interval. Returns None when
    fewer than 2 units carry an answer, when the statistic has no value on the ratings themselves, or when
    fewer than half the resamples give a value (e.g. most resamples hold a single category). Otherwise
    resamples without a value are dropped: the interval describes the resamples where the figure exists.
    Raises ValueError for rounds < 1 or a level outside (0, 1).
    """
    if rounds < 1 or not 0 < level < 1:
        raise ValueError("rounds must be 1 or more and level between 0 and 1")
    units = [unit for unit in ratings if any(answer is not None for answer in unit.values())]
    if len(units) < 2 or statistic(ratings=units).value is None:
        return None
    values = _resampled_values(units, statistic, rounds=rounds, seed=seed)
    if len(values) < rounds / 2:
        return None
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


# --- Summary --------------------------------------------------------------------------------------------

COEFFICIENTS: dict[str, Statistic] = {
    "percent_agreement": percent_agreement,
    "fleiss_kappa": fleiss_kappa,
    "krippendorff_alpha": krippendorff_alpha,
    "gwet_ac1": gwet_ac1,
}


def agreement_summary(*, ratings: Ratings, rounds: int = 1000, seed: int = 0) -> dict[str, Figure]:
    """Percent agreement, Fleiss' kappa, Krippendorff's alpha and Gwet's AC1, each with its 95% interval.

    Keys are those of `COEFFICIENTS`. An interval is None where `bootstrap_interval` gives none.
    """
    return {
        name: replace(
            statistic(ratings=ratings),
            interval=bootstrap_interval(ratings=ratings, statistic=statistic, rounds=rounds, seed=seed),
        )
        for name, statistic in COEFFICIENTS.items()
    }
