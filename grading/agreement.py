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

How the bootstrap is computed: percent agreement, Fleiss' kappa, Krippendorff's alpha and Gwet's AC1
read only each unit's answer counts (how many graders chose each category), so units with the same counts
are interchangeable. Drawing n units with replacement then comes down to how many units with each distinct
row of counts a resample holds: a multinomial over those rows, drawn for every round at once with numpy's
`default_rng(seed)`. Each coefficient's sums over units become matrix products of those draws with
per-row terms, so a thousand rounds on ten thousand units take milliseconds. The formulas on counts are
checked against statsmodels and krippendorff in the tests.

References: Fleiss (1971) Psychological Bulletin 76:378; Cohen (1960) Educ Psychol Meas 20:37;
Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability"; Gwet (2008) Br J Math Stat Psychol
61:29, and Gwet, Handbook of Inter-Rater Reliability (4th ed., 2014) for AC1 with missing ratings.
"""

import itertools
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
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


# --- Answer counts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _AnswerCounts:
    """The ratings as the four coefficients read them: how many graders chose each category, per unit.

    Rows of `counts` are the units with at least one answer, in the order given; columns are the
    categories anybody chose, sorted. `shortage` says why no unit carries two answers, or is "" when one does.
    """

    counts: np.ndarray
    shortage: str

    @property
    def answers(self) -> np.ndarray:
        """How many answers each unit has."""
        return self.counts.sum(axis=1)

    def units_answered(self, *, at_least: int) -> np.ndarray:
        """The rows of the units with `at_least` answers."""
        return self.counts[self.answers >= at_least]


def _answer_counts(ratings: Ratings) -> _AnswerCounts:
    answers = [[answer for answer in unit.values() if answer is not None] for unit in ratings]
    answered = [unit for unit in answers if unit]
    categories = sorted({answer for unit in answered for answer in unit})
    column = {category: index for index, category in enumerate(categories)}
    cells = np.array(
        [row * len(categories) + column[answer] for row, unit in enumerate(answered) for answer in unit],
        dtype=np.intp,
    )
    shape = (len(answered), len(categories))
    counts = np.bincount(cells, minlength=shape[0] * shape[1]).reshape(shape)
    return _AnswerCounts(counts=counts, shortage=_shortage_note(ratings, counts.sum(axis=1)))


def _graders(ratings: Ratings) -> list[str]:
    return sorted({grader for unit in ratings for grader, answer in unit.items() if answer is not None})


def _shortage_note(ratings: Ratings, answers_per_unit: np.ndarray) -> str:
    """Why no unit carries two answers, in the order a reader checks it; "" when one does."""
    if (answers_per_unit >= 2).any():
        return ""  # a unit's two answers come from two graders
    if not ratings:
        return NO_UNITS
    graders = _graders(ratings)
    if not graders:
        return NOBODY_ANSWERED
    if len(graders) < 2:
        return FEWER_THAN_TWO_GRADERS
    return NO_SHARED_UNIT


def _no_data(note: str) -> Figure:
    return Figure(value=None, units=0, ratings=0, note=note)


def _same_answer(units: np.ndarray, coefficient: str) -> Figure:
    return Figure(value=None, units=len(units), ratings=int(units.sum()), note=same_answer_note(coefficient))


def _figure(value: float, *, units: int, ratings: int, note: str = "") -> Figure:
    """A figure from a computed value, refusing NaN and infinity."""
    value = float(value)
    if not math.isfinite(value):
        return Figure(value=None, units=units, ratings=ratings, note=NOT_COMPUTABLE)
    return Figure(value=value, units=units, ratings=ratings, note=note)


def _chosen_categories(units: np.ndarray) -> np.ndarray:
    """The columns of the categories chosen at least once in these units, in C order.

    C order as the libraries were always given: their sums depend on the memory layout in the last bit.
    """
    return np.ascontiguousarray(units[:, units.sum(axis=0) > 0])


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN (no value) where the denominator is not positive; never a warning."""
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _agreeing_pair_shares(units: np.ndarray) -> np.ndarray:
    """Per unit, the share of its grader pairs that chose the same category; 0 for a unit with no pair."""
    answers = units.sum(axis=1)
    pairs = answers * (answers - 1)
    agreeing = (units * (units - 1)).sum(axis=1)
    return np.divide(agreeing, pairs, out=np.zeros(len(units)), where=pairs > 0)


def _chance_corrected(observed: np.ndarray, chance: np.ndarray, *, categories: np.ndarray) -> np.ndarray:
    """(observed - chance) / (1 - chance) per resample; no value where fewer than 2 categories were chosen."""
    return _ratio(observed - chance, np.where(categories >= 2, 1 - chance, 0.0))


# --- Percent agreement ----------------------------------------------------------------------------------


def percent_agreement(*, ratings: Ratings) -> Figure:
    """The share of agreeing grader pairs, averaged over units rated by 2 graders or more.

    A unit rated by 3 graders has 3 pairs, so one dissenting grader gives it 1/3. Units with a single
    answer are left out. Every answer the same gives 1.0. Not corrected for chance.
    """
    return _percent_agreement(_answer_counts(ratings))


def _percent_agreement(answers: _AnswerCounts) -> Figure:
    if answers.shortage:
        return _no_data(answers.shortage)
    units = answers.units_answered(at_least=2)
    return _figure(fmean(_agreeing_pair_shares(units)), units=len(units), ratings=int(units.sum()))


def _resampled_percent_agreement(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Percent agreement on each resample: rows of `weights` say how many units with each row of `counts`."""
    return _ratio(weights @ _agreeing_pair_shares(counts), weights @ (counts.sum(axis=1) >= 2))


# --- Fleiss' kappa --------------------------------------------------------------------------------------


def _usual_grader_count(answers_per_unit: np.ndarray) -> int:
    """The most common number of answers per unit (2 or more); a tie goes to the larger number."""
    numbers, frequency = np.unique(answers_per_unit, return_counts=True)
    return int(numbers[::-1][np.argmax(frequency[::-1])])  # argmax takes the first maximum


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
    return _fleiss_kappa(_answer_counts(ratings))


def _fleiss_kappa(answers: _AnswerCounts) -> Figure:
    if answers.shortage:
        return _no_data(answers.shortage)
    rated = answers.units_answered(at_least=2)
    graders = _usual_grader_count(rated.sum(axis=1))
    units = _chosen_categories(rated[rated.sum(axis=1) == graders])
    if units.shape[1] < 2:
        return _same_answer(units, "kappa")
    return _figure(
        inter_rater.fleiss_kappa(units, method="fleiss"),
        units=len(units),
        ratings=int(units.sum()),
        note=_left_out_note(kept=len(units), rated=len(rated), graders=graders),
    )


def _resampled_usual_units(answers_per_row: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per resample, the weights of the rows rated by its most common number of graders, and that number.

    As `_usual_grader_count`: 2 graders or more, a tie goes to the larger number.
    """
    numbers = np.unique(answers_per_row[answers_per_row >= 2])
    rated_by = answers_per_row == numbers[:, np.newaxis]  # numbers x rows
    frequency = weights @ rated_by.T  # resamples x numbers
    usual = len(numbers) - 1 - np.argmax(frequency[:, ::-1], axis=1)  # argmax takes the first maximum
    return weights * rated_by[usual], numbers[usual]


def _resampled_fleiss_kappa(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fleiss' kappa on each resample, by the formula statsmodels uses, on the units `_fleiss_kappa` keeps."""
    answers = counts.sum(axis=1)
    if not (answers >= 2).any():
        return np.full(len(weights), np.nan)
    kept, graders = _resampled_usual_units(answers, weights)
    units = kept.sum(axis=1)
    observed = _ratio(kept @ _agreeing_pair_shares(counts), units)
    chosen = kept @ counts  # resamples x categories: answers kept in each category
    prevalence = _ratio(chosen, (units * graders)[:, np.newaxis])
    chance = (prevalence**2).sum(axis=1)
    return _chance_corrected(observed, chance, categories=(chosen > 0).sum(axis=1))


# --- Krippendorff's alpha -------------------------------------------------------------------------------


def krippendorff_alpha(*, ratings: Ratings) -> Figure:
    """Krippendorff's alpha for nominal data, computed by the `krippendorff` package.

    Missing ratings are allowed: units with fewer than 2 answers are not pairable and are left out, and
    `units` / `ratings` count the pairable ones. Every answer the same makes alpha undefined: value None.
    """
    return _krippendorff_alpha(_answer_counts(ratings))


def _krippendorff_alpha(answers: _AnswerCounts) -> Figure:
    if answers.shortage:
        return _no_data(answers.shortage)
    units = _chosen_categories(answers.units_answered(at_least=2))
    if units.shape[1] < 2:
        return _same_answer(units, "alpha")
    alpha = krippendorff.alpha(value_counts=units, level_of_measurement="nominal")
    return _figure(alpha, units=len(units), ratings=int(units.sum()))


def _resampled_krippendorff_alpha(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Krippendorff's nominal alpha on each resample, from the coincidences of its pairable units.

    With m_u answers on unit u and n_uc of them in category c, the coincidences are o_ck = sum_u n_uc n_uk
    / (m_u - 1) for c != k, n_c = sum_u n_uc and n = sum_c n_c over pairable units (m_u >= 2), and
    alpha = 1 - D_o / D_e = 1 - (n - 1) sum_{c != k} o_ck / sum_{c != k} n_c n_k.
    """
    answers = counts.sum(axis=1)
    pairable = answers >= 2
    disagreeing_pairs = answers**2 - (counts**2).sum(axis=1)  # sum_{c != k} n_uc n_uk
    disagreeing_coincidences = np.divide(
        disagreeing_pairs, answers - 1, out=np.zeros(len(counts)), where=pairable
    )
    values = weights @ (counts * pairable[:, np.newaxis])  # resamples x categories: n_c
    total = values.sum(axis=1)
    expected = total**2 - (values**2).sum(axis=1)  # sum_{c != k} n_c n_k: 0 with fewer than 2 categories
    return 1 - _ratio((total - 1) * (weights @ disagreeing_coincidences), expected)


# --- Gwet's AC1 -----------------------------------------------------------------------------------------


def _gwet_chance_agreement(units: np.ndarray) -> float:
    """Gwet's chance agreement: sum of pi_k (1 - pi_k) over q - 1, pi_k averaged over answered units."""
    prevalence = [fmean(shares) for shares in (units / units.sum(axis=1, keepdims=True)).T]
    return sum(pi * (1 - pi) for pi in prevalence) / (len(prevalence) - 1)


def gwet_ac1(*, ratings: Ratings) -> Figure:
    """Gwet's AC1, multi-rater form with missing ratings (Gwet 2008; Handbook, 4th ed.), written here.

    Observed agreement is the mean share of agreeing pairs over units with 2 answers or more (as
    `percent_agreement`). Chance agreement is sum_k pi_k (1 - pi_k) / (q - 1), where pi_k is the share
    of category k among a unit's answers averaged over every unit with at least one answer, and q is the
    number of categories anybody chose. `units` and `ratings` count every answered unit, since the chance
    term reads them all. Every answer the same (q = 1) makes AC1 undefined: value None with a note.
    """
    return _gwet_ac1(_answer_counts(ratings))


def _gwet_ac1(answers: _AnswerCounts) -> Figure:
    if answers.shortage:
        return _no_data(answers.shortage)
    units = answers.counts  # every answered unit, every category somebody chose
    if units.shape[1] < 2:
        return _same_answer(units, "AC1")
    observed = fmean(_agreeing_pair_shares(answers.units_answered(at_least=2)))
    chance = _gwet_chance_agreement(units)  # at most 1/q, so 1 - chance > 0
    return _figure((observed - chance) / (1 - chance), units=len(units), ratings=int(units.sum()))


def _resampled_gwet_ac1(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Gwet's AC1 on each resample; q counts the categories chosen in that resample."""
    observed = _resampled_percent_agreement(counts, weights)
    shares = counts / counts.sum(axis=1, keepdims=True)  # every row has an answer
    prevalence = (weights @ shares) / weights.sum(axis=1, keepdims=True)
    categories = ((weights @ counts) > 0).sum(axis=1)
    chance = _ratio((prevalence * (1 - prevalence)).sum(axis=1), categories - 1)
    return _chance_corrected(observed, chance, categories=categories)


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


@dataclass(frozen=True)
class _Counted:
    """A coefficient of this module read from answer counts: its figure, and its value on many resamples.

    `resampled(counts, weights)` takes distinct rows of answer counts and a resamples x rows matrix of how
    many units with each row every resample holds; it gives one value per resample, NaN where none.
    """

    figure: Callable[[_AnswerCounts], Figure]
    resampled: Callable[[np.ndarray, np.ndarray], np.ndarray]


_COUNTED: dict[Statistic, _Counted] = {
    percent_agreement: _Counted(_percent_agreement, _resampled_percent_agreement),
    fleiss_kappa: _Counted(_fleiss_kappa, _resampled_fleiss_kappa),
    krippendorff_alpha: _Counted(_krippendorff_alpha, _resampled_krippendorff_alpha),
    gwet_ac1: _Counted(_gwet_ac1, _resampled_gwet_ac1),
}


@dataclass(frozen=True)
class _Resamples:
    """Bootstrap resamples of the answered units, each as how many units with each distinct row it holds."""

    counts: np.ndarray  # distinct rows of answer counts
    weights: np.ndarray  # resamples x distinct rows


def _resample_weights(group_sizes: np.ndarray, *, rounds: int, seed: int) -> np.ndarray:
    """For each of `rounds` resamples of all units drawn with replacement, how many it draws from each group.

    Counting n draws with replacement by group is a multinomial over the groups, with each group's share
    of the units as its probability.
    """
    units = int(group_sizes.sum())
    draws = np.random.default_rng(seed).multinomial(units, group_sizes / units, size=rounds)
    return draws.astype(float)


def _resamples(answers: _AnswerCounts, *, rounds: int, seed: int) -> _Resamples | None:
    """The resamples of the answered units; None when fewer than 2 units carry an answer."""
    if len(answers.counts) < 2:
        return None
    counts, units = np.unique(answers.counts, axis=0, return_counts=True)
    return _Resamples(counts=counts, weights=_resample_weights(units, rounds=rounds, seed=seed))


def _check_bootstrap(*, rounds: int, level: float) -> None:
    if rounds < 1 or not 0 < level < 1:
        raise ValueError("rounds must be 1 or more and level between 0 and 1")


def _percentile_interval(values: np.ndarray, *, level: float) -> tuple[float, float] | None:
    """The percentile interval of the resamples that gave a value; None when fewer than half did."""
    kept = values[~np.isnan(values)]
    if len(kept) < len(values) / 2:
        return None
    low, high = np.quantile(kept, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _counted_interval(
    counted: _Counted, figure: Figure, resamples: _Resamples | None, *, level: float
) -> tuple[float, float] | None:
    if resamples is None or figure.value is None:
        return None
    return _percentile_interval(counted.resampled(resamples.counts, resamples.weights), level=level)


def _looped_interval(
    ratings: Ratings, statistic: Statistic, *, rounds: int, seed: int, level: float
) -> tuple[float, float] | None:
    """The interval of a statistic that is not one of this module's: called once per resample of units."""
    units = [unit for unit in ratings if any(answer is not None for answer in unit.values())]
    if len(units) < 2 or statistic(ratings=units).value is None:
        return None
    draw = np.random.default_rng(seed)
    values = [
        statistic(ratings=[units[index] for index in draw.integers(len(units), size=len(units))]).value
        for _ in range(rounds)
    ]
    return _percentile_interval(
        np.array([np.nan if value is None else value for value in values]), level=level
    )


def bootstrap_interval(
    *, ratings: Ratings, statistic: Statistic, rounds: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """A percentile bootstrap interval for `statistic`, resampling units with replacement.

    The same ratings, statistic, rounds, seed and level always give the same interval. Returns None when
    fewer than 2 units carry an answer, when the statistic has no value on the ratings themselves, or when
    fewer than half the resamples give a value (e.g. most resamples hold a single category). Otherwise
    resamples without a value are dropped: the interval describes the resamples where the figure exists.
    Raises ValueError for rounds < 1 or a level outside (0, 1).

    For the coefficients of `COEFFICIENTS` every round is drawn at once as a multinomial over the distinct
    rows of answer counts and evaluated with matrix products (see the module docstring); any other
    statistic is called on each resample of units, drawn by index with numpy's `default_rng(seed)`.
    """
    _check_bootstrap(rounds=rounds, level=level)
    counted = _COUNTED.get(statistic)
    if counted is None:
        return _looped_interval(ratings, statistic, rounds=rounds, seed=seed, level=level)
    answers = _answer_counts(ratings)
    resamples = _resamples(answers, rounds=rounds, seed=seed)
    return _counted_interval(counted, counted.figure(answers), resamples, level=level)


# --- Summary --------------------------------------------------------------------------------------------

COEFFICIENTS: dict[str, Statistic] = {
    "percent_agreement": percent_agreement,
    "fleiss_kappa": fleiss_kappa,
    "krippendorff_alpha": krippendorff_alpha,
    "gwet_ac1": gwet_ac1,
}


def agreement_summary(*, ratings: Ratings, rounds: int = 1000, seed: int = 0) -> dict[str, Figure]:
    """Percent agreement, Fleiss' kappa, Krippendorff's alpha and Gwet's AC1, each with its 95% interval.

    Keys are those of `COEFFICIENTS`. An interval is None where `bootstrap_interval` gives none; each is the
    one `bootstrap_interval` gives with the same rounds and seed. The ratings are counted once and the four
    coefficients share the same resamples.
    """
    _check_bootstrap(rounds=rounds, level=0.95)
    answers = _answer_counts(ratings)
    resamples = _resamples(answers, rounds=rounds, seed=seed)
    summary = {}
    for name, statistic in COEFFICIENTS.items():
        counted = _COUNTED[statistic]
        figure = counted.figure(answers)
        summary[name] = replace(figure, interval=_counted_interval(counted, figure, resamples, level=0.95))
    return summary
