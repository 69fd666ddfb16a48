"""Statistics used by the leaderboard, regression gate and interpretability analyses.

Thin, documented wrappers around statsmodels / scipy (no hand-rolled tests), with the degenerate cases
(empty input, constant input, no discordant pairs) handled explicitly instead of returning warnings + NaN
in surprising places.

Conventions: "correct" arrays are 0/1 (or bool) per document, paired by position. Differences are always
``b - a`` (candidate minus baseline).
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import NamedTuple, Sequence

import numpy as np
from scipy import stats as _st
from statsmodels.stats.contingency_tables import mcnemar as _sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

__all__ = [
    "CI",
    "Correlation",
    "MannWhitney",
    "mcnemar_exact",
    "bootstrap_ci",
    "bootstrap_diff_ci",
    "wilson_ci",
    "holm",
    "point_biserial",
    "pearson",
    "roc_auc",
    "mannwhitney",
]

ArrayLike = Sequence[float] | Sequence[bool] | np.ndarray


class CI(NamedTuple):
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float


class Correlation(NamedTuple):
    """A correlation coefficient; ``degenerate`` is True when an input was constant (then r=0, p=1)."""

    r: float
    pvalue: float
    degenerate: bool


class MannWhitney(NamedTuple):
    """Two-sided Mann-Whitney U test of ``a`` vs ``b``; ``auc`` = P(a > b) + 0.5 P(a = b) = U_a / (n_a n_b)."""

    statistic: float
    pvalue: float
    auc: float


def _rng_kwarg(seed: int) -> dict[str, np.random.Generator]:
    """scipy >= 1.15 takes ``rng=``; older versions only ``random_state=``."""
    name = "rng" if "rng" in inspect.signature(_st.bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def _binary(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float).ravel()
    if arr.size and not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must contain only 0/1 (or booleans)")
    return arr.astype(bool)


def mcnemar_exact(a_correct: ArrayLike, b_correct: ArrayLike) -> dict[str, float | int]:
    """Exact (binomial) McNemar test for two paired 0/1 correctness vectors (paired by position).

    Returns ``{"b01": #(a wrong, b right), "b10": #(a right, b wrong), "statistic": min(b01, b10),
    "pvalue": two-sided exact p}``. With no discordant pair the p-value is 1.0.
    """
    a = _binary(a_correct, "a_correct")
    b = _binary(b_correct, "b_correct")
    if a.shape != b.shape:
        raise ValueError(f"paired vectors differ in length: {a.size} vs {b.size}")
    b01 = int(np.sum(~a & b))
    b10 = int(np.sum(a & ~b))
    n11 = int(np.sum(a & b))
    n00 = int(np.sum(~a & ~b))
    if b01 + b10 == 0:
        return {"b01": 0, "b10": 0, "statistic": 0.0, "pvalue": 1.0}
    res = _sm_mcnemar([[n11, b10], [b01, n00]], exact=True)
    return {"b01": b01, "b10": b10, "statistic": float(res.statistic), "pvalue": float(min(1.0, res.pvalue))}


def bootstrap_ci(values: ArrayLike, n_boot: int = 10000, seed: int = 0, alpha: float = 0.05) -> CI:
    """Percentile-bootstrap CI of the mean of ``values`` (e.g. per-doc 0/1 correctness -> accuracy).

    Uses ``scipy.stats.bootstrap(method="percentile")`` with a seeded generator, so results are reproducible.
    Empty input gives NaNs; constant input gives a zero-width interval.
    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        return CI(math.nan, math.nan, math.nan)
    est = float(x.mean())
    if np.all(x == x[0]):
        return CI(est, est, est)
    res = _st.bootstrap(
        (x,),
        np.mean,
        n_resamples=n_boot,
        confidence_level=1 - alpha,
        method="percentile",
        vectorized=True,
        **_rng_kwarg(seed),
    )
    return CI(est, float(res.confidence_interval.low), float(res.confidence_interval.high))


def bootstrap_diff_ci(
    a: ArrayLike, b: ArrayLike, n_boot: int = 10000, seed: int = 0, alpha: float = 0.05
) -> CI:
    """Paired percentile-bootstrap CI of ``mean(b) - mean(a)`` (documents resampled jointly)."""
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired vectors differ in length: {x.size} vs {y.size}")
    if x.size == 0:
        return CI(math.nan, math.nan, math.nan)
    est = float(y.mean() - x.mean())
    d = y - x
    if np.all(d == d[0]):
        return CI(est, est, est)

    def _diff(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(v, axis=axis) - np.mean(u, axis=axis)

    res = _st.bootstrap(
        (x, y),
        _diff,
        paired=True,
        n_resamples=n_boot,
        confidence_level=1 - alpha,
        method="percentile",
        vectorized=True,
        **_rng_kwarg(seed),
    )
    return CI(est, float(res.confidence_interval.low), float(res.confidence_interval.high))


def wilson_ci(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` (statsmodels); ``n == 0`` -> (nan, nan)."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    return (float(max(0.0, low)), float(min(1.0, high)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (statsmodels ``multipletests(method="holm")``).

    NaN entries (tests that could not be run) are passed through and do not count as comparisons.
    """
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return [float(v) for v in out]


def _is_constant(x: np.ndarray) -> bool:
    return x.size == 0 or bool(np.all(x == x[0]))


def point_biserial(x: ArrayLike, y: ArrayLike) -> Correlation:
    """Point-biserial correlation between a binary ``x`` and continuous ``y`` (scipy ``pointbiserialr``).

    When ``x`` (or ``y``) is constant or there are fewer than 3 pairs, the coefficient is undefined; this returns
    ``Correlation(0.0, 1.0, degenerate=True)`` instead of NaN + warning.
    """
    xa = np.asarray(x, dtype=float).ravel()
    ya = np.asarray(y, dtype=float).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.size} vs {ya.size}")
    if xa.size < 3 or _is_constant(xa) or _is_constant(ya):
        return Correlation(0.0, 1.0, True)
    res = _st.pointbiserialr(xa, ya)
    return Correlation(float(res.statistic), float(res.pvalue), False)


def pearson(x: ArrayLike, y: ArrayLike) -> tuple[float, float]:
    """Pearson ``(r, p)`` (scipy ``pearsonr``); ``(nan, nan)`` for constant input or fewer than 3 pairs."""
    xa = np.asarray(x, dtype=float).ravel()
    ya = np.asarray(y, dtype=float).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.size} vs {ya.size}")
    if xa.size < 3 or _is_constant(xa) or _is_constant(ya):
        return (math.nan, math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = _st.pearsonr(xa, ya)
    return (float(res.statistic), float(res.pvalue))


def mannwhitney(a: ArrayLike, b: ArrayLike, alternative: str = "two-sided") -> MannWhitney:
    """Mann-Whitney U test (scipy ``mannwhitneyu``; ``alternative``: two-sided, greater, less) with the AUC
    it implies (U of ``a``).

    Empty groups give NaNs; all-equal values give U = n_a n_b / 2, p = 1, auc = 0.5.
    """
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative={alternative!r}; valid: two-sided, greater, less")
    xa = np.asarray(a, dtype=float).ravel()
    xb = np.asarray(b, dtype=float).ravel()
    if xa.size == 0 or xb.size == 0:
        return MannWhitney(math.nan, math.nan, math.nan)
    if _is_constant(np.concatenate([xa, xb])):
        return MannWhitney(xa.size * xb.size / 2.0, 1.0, 0.5)
    res = _st.mannwhitneyu(xa, xb, alternative=alternative)
    u = float(res.statistic)
    return MannWhitney(u, float(res.pvalue), u / (xa.size * xb.size))


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (1 = positive), via the Mann-Whitney U statistic.

    Ties count one half. Returns NaN when one class is absent.
    """
    s = np.asarray(scores, dtype=float).ravel()
    lab = _binary(labels, "labels")
    if s.shape != lab.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {lab.size}")
    pos, neg = s[lab], s[~lab]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    return mannwhitney(pos, neg).auc
