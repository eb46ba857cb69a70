"""Binary-classifier metrics on numpy arrays, and a vectorised paired bootstrap to compare two models.

Every ranking metric comes from one sort of the scores: running counts of rows and positives at each
distinct score that holds a positive, highest first (tied scores move together, as in scikit-learn). A
bootstrap resample is a vector of row counts, so all resamples of a model share that one sort and are
scored together as a matrix.

The gate's skill floors compare a model with *no-skill* scores on the same holdout: ROC-AUC 0.5, the
expected average precision of a random ranking (``no_skill_pr_auc``, a little above the base rate when
positives are few), and the recall random rankings reach at a target precision
(``no_skill_recall_at_precision``, drawn by shuffling the holdout's labels).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mlloop.promotion.gate_config import Metric

# What skill_intervals measures, in the order of its result.
SKILL_METRICS = ("roc_auc", "pr_auc_lift")
FloatArray = NDArray[np.float64]
# Resample x row cells scored at once (~8 MB per int32 matrix); bounds the bootstrap's memory.
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class CutCounts:
    """Cumulative counts at each distinct score that holds a positive row (where recall moves), highest first.

    Arrays are (cuts,) for the holdout itself, or (resamples, cuts) for bootstrap resamples.
    """

    true_pos: FloatArray  # positive rows with score >= the cut
    seen: FloatArray  # rows with score >= the cut
    seen_above: FloatArray  # rows with score > the cut
    positives: FloatArray  # all positive rows
    rows: FloatArray  # all rows


@dataclass(frozen=True)
class Ranking:
    """One model's scores sorted once (highest first), and where its positive rows fall in that order."""

    order: NDArray[np.intp]  # row indices, highest score first
    positive_rows: NDArray[np.intp]  # row indices of the positives, in rank order
    cut_end: NDArray[np.intp]  # per positive cut: rank position of its last row
    cut_start: NDArray[np.intp]  # per positive cut: rank position of its first row
    cut_last_positive: NDArray[np.intp]  # per positive cut: index into positive_rows of its last positive
    thresholds: FloatArray  # per positive cut: its score

    def counts(self, weights: ArrayLike | None = None) -> CutCounts:
        """Return the counts at the positive cuts, each row counted ``weights`` times (once by default).

        ``weights`` is one integer count per row, or a (resamples, rows) matrix of bootstrap row counts.
        """
        weights = np.ones(self.order.size, np.int32) if weights is None else np.asarray(weights)
        # Integer running sums are exact, and on narrow integers several times faster than float ones.
        seen = np.cumsum(np.take(weights, self.order, axis=-1), axis=-1, dtype=_count_type(self.order.size))
        true_pos = np.cumsum(np.take(weights, self.positive_rows, axis=-1), axis=-1, dtype=np.int64)
        seen_above = np.where(self.cut_start > 0, seen[..., np.maximum(self.cut_start - 1, 0)], 0)
        positives = true_pos[..., -1] if self.positive_rows.size else np.zeros(seen.shape[:-1])
        return CutCounts(
            true_pos=true_pos[..., self.cut_last_positive].astype(np.float64),
            seen=seen[..., self.cut_end].astype(np.float64),
            seen_above=seen_above.astype(np.float64),
            positives=np.asarray(positives, dtype=np.float64),
            rows=seen[..., -1].astype(np.float64),
        )


@dataclass(frozen=True)
class ModelMetrics:
    """The headline metrics of one model on the holdout, at the operating point of the fixed precision."""

    pr_auc: float
    roc_auc: float
    recall_at_precision: float
    threshold_at_precision: float | None
    log_loss: float | None
    expected_cost: float | None

    def to_dict(self) -> dict[str, float | None]:
        """Return the metrics as a JSON-serialisable dict (NaN as None)."""
        return {key: _finite_or_none(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class BootstrapInterval:
    """A paired bootstrap of (challenger - champion) for one metric: point delta and percentile interval."""

    metric: str
    delta: float
    lower: float
    upper: float
    confidence: float
    resamples: int
    undefined: int  # resamples where the metric was undefined (e.g. no positive drawn); left out
    deltas: FloatArray = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, float | int | str]:
        """Return the interval without the raw deltas, JSON-serialisable."""
        return {key: value for key, value in asdict(self).items() if key != "deltas"}


@dataclass(frozen=True)
class MetricInterval:
    """One model's metric on the holdout with its bootstrap percentile interval."""

    metric: str  # roc_auc, or pr_auc_lift: PR-AUC / no_skill_pr_auc of the same rows
    estimate: float
    lower: float
    upper: float
    confidence: float
    resamples: int
    undefined: int  # resamples where the metric was undefined (e.g. no positive drawn); left out

    def to_dict(self) -> dict[str, float | int | str]:
        """Return the interval as a JSON-serialisable dict."""
        return asdict(self)


def rank(labels: ArrayLike, scores: ArrayLike) -> Ranking:
    """Sort ``scores`` once (highest first) and locate the distinct scores that hold positive ``labels``."""
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be non-empty 1-D arrays of one length")
    order = np.argsort(-s, kind="stable")
    ranked = s[order]
    ends = _run_ends(ranked)  # rank position of the last row of each distinct score
    positive_positions = np.flatnonzero(y[order] == 1)
    cut_of_positive = np.searchsorted(ends, positive_positions)
    last_positive = _run_ends(cut_of_positive)
    cuts = cut_of_positive[last_positive]
    return Ranking(
        order=order,
        positive_rows=order[positive_positions],
        cut_end=ends[cuts],
        cut_start=np.where(cuts > 0, ends[np.maximum(cuts - 1, 0)] + 1, 0),
        cut_last_positive=last_positive,
        thresholds=ranked[ends[cuts]],
    )


def pr_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Return the area under the precision-recall curve as average precision; NaN without positives."""
    return float(_average_precision(rank(labels, scores).counts()))


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Return the area under the ROC curve; NaN unless both classes are present."""
    return float(_roc_area(rank(labels, scores).counts()))


def recall_at_precision(labels: ArrayLike, scores: ArrayLike, precision: float) -> float:
    """Return the highest recall of any score threshold whose precision is at least ``precision`` (else 0)."""
    return _operating_point(labels, scores, precision)[0]


def threshold_at_precision(labels: ArrayLike, scores: ArrayLike, precision: float) -> float | None:
    """Return the threshold (positive when score >= it) of ``recall_at_precision``; None if unreached."""
    return _operating_point(labels, scores, precision)[1]


def log_loss(labels: ArrayLike, scores: ArrayLike) -> float:
    """Return the mean binary cross-entropy of probability ``scores`` (clipped to float64 epsilon).

    Raises:
        ValueError: when a score is outside [0, 1] (the model's scores are not probabilities).
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError(
            f"log loss needs probabilities in [0, 1], scores span [{p.min():.4g}, {p.max():.4g}]: "
            "score with predict_proba (or a calibrated model)"
        )
    eps = np.finfo(np.float64).eps
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def expected_cost(
    labels: ArrayLike,
    scores: ArrayLike,
    *,
    threshold: float,
    cost_false_negative: float,
    cost_false_positive: float,
) -> float:
    """Return the mean cost per row of predicting positive when score >= ``threshold``."""
    y = np.asarray(labels).astype(bool)
    if y.size == 0:
        return float("nan")
    flagged = np.asarray(scores, dtype=np.float64) >= threshold
    false_negatives = np.count_nonzero(y & ~flagged)
    false_positives = np.count_nonzero(~y & flagged)
    return float((cost_false_negative * false_negatives + cost_false_positive * false_positives) / y.size)


def metric_value(metric: Metric, labels: ArrayLike, scores: ArrayLike) -> float:
    """Return ``metric`` ("pr_auc" or "roc_auc") of ``scores``; NaN where it is undefined."""
    return float(_AREAS[metric](rank(labels, scores).counts()))


def model_metrics(
    labels: ArrayLike,
    scores: ArrayLike,
    *,
    fixed_precision: float,
    cost_false_negative: float,
    cost_false_positive: float,
) -> ModelMetrics:
    """Return the headline metrics of one model; log loss is None when its scores are not probabilities."""
    s = np.asarray(scores, dtype=np.float64)
    recall, threshold = _operating_point(labels, s, fixed_precision)
    probabilities = bool(s.size) and s.min() >= 0 and s.max() <= 1
    cost = None
    if threshold is not None:
        cost = expected_cost(
            labels,
            s,
            threshold=threshold,
            cost_false_negative=cost_false_negative,
            cost_false_positive=cost_false_positive,
        )
    return ModelMetrics(
        pr_auc=pr_auc(labels, s),
        roc_auc=roc_auc(labels, s),
        recall_at_precision=recall,
        threshold_at_precision=threshold,
        log_loss=log_loss(labels, s) if probabilities else None,
        expected_cost=cost,
    )


def resample_counts(n_rows: int, resamples: int, seed: int) -> Iterator[NDArray[np.integer]]:
    """Yield bootstrap resamples of ``n_rows`` rows drawn with replacement, as (chunk, n_rows) row counts."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(n_rows, 1))
    index_type = _count_type(chunk * n_rows)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        draws = rng.integers(0, n_rows, size=(size, n_rows), dtype=index_type)
        draws += np.arange(size, dtype=index_type)[:, None] * n_rows  # one flat bincount for the chunk
        counts = np.bincount(draws.ravel(), minlength=size * n_rows).reshape(size, n_rows)
        yield counts.astype(index_type)  # narrower counts halve the traffic of the sorts and sums


def paired_bootstrap(
    labels: ArrayLike,
    challenger_scores: ArrayLike,
    champion_scores: ArrayLike,
    *,
    metric: Metric,
    resamples: int,
    confidence: float,
    seed: int,
) -> BootstrapInterval:
    """Return the percentile interval of (challenger - champion) ``metric`` over paired resamples.

    Both models are scored on the same resampled rows, so the interval reflects their difference, not
    the noise each has on its own. Deterministic for a given ``seed``.

    Raises:
        ValueError: when the metric is undefined in every resample (e.g. the holdout has no positives).
    """
    area = _AREAS[metric]
    rankings = [rank(labels, challenger_scores), rank(labels, champion_scores)]
    deltas = _bootstrap(rankings, lambda counts: area(counts[0]) - area(counts[1]), resamples, seed)
    lower, upper, undefined = _percentile_interval(deltas, confidence, metric)
    return BootstrapInterval(
        metric=metric,
        delta=float(area(rankings[0].counts()) - area(rankings[1].counts())),
        lower=lower,
        upper=upper,
        confidence=confidence,
        resamples=resamples,
        undefined=undefined,
        deltas=deltas,
    )


def skill_intervals(
    labels: ArrayLike, scores: ArrayLike, *, resamples: int, confidence: float, seed: int
) -> dict[str, MetricInterval]:
    """Return one model's ROC-AUC and PR-AUC lift over no-skill, each with its bootstrap interval.

    The lift divides each resample's PR-AUC by what random scores are expected to reach on that
    resample's rows and positives, so a change of base rate between resamples is not mistaken for skill.
    Deterministic for a given ``seed``.

    Raises:
        ValueError: when a metric is undefined in every resample (the holdout lacks a class).
    """
    ranking = rank(labels, scores)
    values = _bootstrap([ranking], lambda counts: _skill(counts[0]), resamples, seed)
    estimates = _skill(ranking.counts())
    intervals = {}
    for index, metric in enumerate(SKILL_METRICS):
        lower, upper, undefined = _percentile_interval(values[index], confidence, metric)
        intervals[metric] = MetricInterval(
            metric=metric,
            estimate=float(estimates[index]),
            lower=lower,
            upper=upper,
            confidence=confidence,
            resamples=resamples,
            undefined=undefined,
        )
    return intervals


def no_skill_pr_auc(rows: ArrayLike, positives: ArrayLike) -> FloatArray:
    """Return the expected PR-AUC (average precision) of random scores on ``rows`` rows with ``positives``.

    Exact for distinct scores: H(n)/n + (R - 1)(n - H(n)) / (n(n - 1)), H the harmonic number. It is
    the base rate R/n plus a small-sample excess that matters when positives are few (30 positives in
    3,000 rows: 0.0125, not 0.0100).
    """
    n = np.asarray(rows, dtype=np.float64)
    r = np.asarray(positives, dtype=np.float64)
    largest = int(n.max(initial=1))
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, largest + 1))])[n.astype(np.int64)]
    return _ratio(harmonic, n) + _ratio((r - 1) * (n - harmonic), n * (n - 1))


def no_skill_recall_at_precision(
    labels: ArrayLike, precision: float, *, draws: int, quantile: float, seed: int
) -> float:
    """Return the ``quantile`` of the recall that random scores reach at ``precision`` on these labels.

    Each draw ranks the holdout's labels in a random order (random scores, no ties) and takes the best
    recall among cuts whose precision reaches ``precision``, as ``recall_at_precision`` does. With a
    target at or below the base rate the whole holdout reaches it, so no-skill recall is 1.
    Deterministic for a given ``seed``.
    """
    y = np.asarray(labels).astype(np.int8)
    rows, positives = y.size, int(y.sum())
    if positives == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    seen = np.arange(1, rows + 1, dtype=np.float64)
    chunk = max(1, _CHUNK_CELLS // rows)
    recalls = []
    for start in range(0, draws, chunk):
        shuffled = rng.permuted(np.tile(y, (min(chunk, draws - start), 1)), axis=1)
        true_pos = np.cumsum(shuffled, axis=1, dtype=_count_type(rows))
        reached = np.where(true_pos / seen >= precision, true_pos, 0)
        recalls.append(reached.max(axis=1) / positives)
    return float(np.quantile(np.concatenate(recalls), quantile, method="higher"))


def _bootstrap(
    rankings: list[Ranking],
    statistic: Callable[[list[CutCounts]], FloatArray],
    resamples: int,
    seed: int,
) -> FloatArray:
    """Return ``statistic`` of the rankings' counts on each bootstrap resample (rows drawn jointly).

    ``statistic`` gets one ``CutCounts`` per ranking for a chunk of resamples and returns
    (..., chunk) values; the chunks are joined along the last axis.
    """
    n_rows = rankings[0].order.size
    return np.concatenate(
        [
            statistic([ranking.counts(counts) for ranking in rankings])
            for counts in resample_counts(n_rows, resamples, seed)
        ],
        axis=-1,
    )


def _percentile_interval(values: FloatArray, confidence: float, metric: str) -> tuple[float, float, int]:
    """Return the two-sided percentile interval of ``values`` and how many were undefined (NaN).

    Raises:
        ValueError: when every value is undefined.
    """
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        raise ValueError(
            f"{metric} is undefined in all {values.size} bootstrap resamples: "
            "the holdout needs both positive and negative labels"
        )
    tail = (1 - confidence) / 2
    lower, upper = np.quantile(defined, [tail, 1 - tail])
    return float(lower), float(upper), int(values.size - defined.size)


def _skill(counts: CutCounts) -> FloatArray:
    """Return (ROC-AUC, PR-AUC lift over no-skill) stacked along a new first axis."""
    lift = _ratio(_average_precision(counts), no_skill_pr_auc(counts.rows, counts.positives))
    return np.stack([_roc_area(counts), lift])


def _average_precision(counts: CutCounts) -> FloatArray:
    """Return the sum over cuts of (recall gained x precision), as scikit-learn's average_precision_score."""
    gained = np.diff(counts.true_pos, axis=-1, prepend=0)
    precision = _ratio(counts.true_pos, counts.seen)
    return _ratio(np.nansum(gained * precision, axis=-1), counts.positives)


def _roc_area(counts: CutCounts) -> FloatArray:
    """Return the ROC area: the chance a positive outranks a negative, ties counting one half."""
    negatives = counts.rows - counts.positives
    gained = np.diff(counts.true_pos, axis=-1, prepend=0)
    negatives_below = negatives[..., None] - (counts.seen - counts.true_pos)
    negatives_tied = (counts.seen - counts.seen_above) - gained
    pairs_won = (gained * (negatives_below + negatives_tied / 2)).sum(axis=-1)
    return _ratio(pairs_won, counts.positives * negatives)


def _operating_point(labels: ArrayLike, scores: ArrayLike, precision: float) -> tuple[float, float | None]:
    """Return (best recall, its threshold) among thresholds reaching ``precision``; (0, None) if none does.

    Recall only grows at cuts holding a positive, and precision only falls between them, so the best
    point is always one of those cuts.
    """
    ranking = rank(labels, scores)
    counts = ranking.counts()
    reached = np.flatnonzero(counts.true_pos / counts.seen >= precision)
    if reached.size == 0:
        return 0.0, None
    best = reached[np.argmax(counts.true_pos[reached])]  # first (highest threshold) of the best recall
    return float(counts.true_pos[best] / counts.positives), float(ranking.thresholds[best])


def _run_ends(values: NDArray) -> NDArray[np.intp]:
    """Return the position of the last element of each run of equal values in ``values``."""
    if values.size == 0:
        return np.zeros(0, dtype=np.intp)
    return np.append(np.flatnonzero(np.diff(values)), values.size - 1)


def _count_type(largest: int) -> type[np.integer]:
    """Return int32 when counts and indices up to ``largest`` fit in it, else int64."""
    return np.int32 if largest < 2**31 else np.int64


def _ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    """Return numerator / denominator, NaN where the denominator is zero."""
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _finite_or_none(value: float | None) -> float | None:
    """Return ``value``, or None when it is None or NaN."""
    return None if value is None or np.isnan(value) else float(value)


_AREAS: dict[str, Callable[[CutCounts], FloatArray]] = {
    "pr_auc": _average_precision,
    "roc_auc": _roc_area,
}
