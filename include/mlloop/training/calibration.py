"""Score calibration: a monotone map from a model's scores to probabilities, fitted on the validation part.

The map is Platt scaling on the logit (Platt 1999; "logistic calibration" in Kull et al. 2017):
``P(positive | s) = sigmoid(slope * logit(s) + intercept)``, fitted by scikit-learn's unpenalised
logistic regression. With a positive slope it keeps the order of the scores, so ranking metrics (ROC-AUC,
PR-AUC) and the gate's comparisons are unchanged; thresholds move with the scores. Class weighting in
training (XGBoost's ``scale_pos_weight``, the torch model's ``pos_weight``) inflates the odds, and early
stopping leaves trees over- or under-confident: the intercept undoes the first, the slope the second.

The fit also keeps the map's own uncertainty: the asymptotic covariance of (slope, intercept), the inverse
of the logistic regression's Fisher information. A map fitted on ~200 validation positives is uncertain
enough to matter downstream (``monitoring.estimate`` draws plausible maps from it). The map travels with
the logged model as a few numbers (``Calibration.to_dict``, in the MLmodel metadata under
``CALIBRATION_KEY``); ``training.model_io.load_model`` wraps the loaded model in a ``CalibratedModel``,
so the scoring service, the monitor and the gate all read calibrated probabilities. A model logged before
calibration existed loads with the identity map.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

CALIBRATION_KEY = "mlloop.calibration"  # MLmodel metadata key (and torch pyfunc model_config key)
METHODS = ("identity", "platt_logit")
ECE_BINS = 10
FloatArray = NDArray[np.float64]
_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True)
class Calibration:
    """A monotone map ``sigmoid(slope * logit(score) + intercept)``; the identity is slope 1, intercept 0."""

    method: str = "identity"
    slope: float = 1.0
    intercept: float = 0.0
    rows: int = 0  # rows the map was fitted on (0 for the identity)
    positives: int = 0
    # Asymptotic covariance of (slope, intercept); zero for the identity (no fit, no known uncertainty).
    slope_variance: float = 0.0
    intercept_variance: float = 0.0
    covariance: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method {self.method!r} is unknown; valid: {METHODS}")
        if not (np.isfinite(self.slope) and self.slope > 0 and np.isfinite(self.intercept)):
            raise ValueError(
                f"calibration slope {self.slope!r} and intercept {self.intercept!r} must be finite with a "
                "positive slope (a non-positive slope would reverse or erase the model's ranking)"
            )
        variances = (self.slope_variance, self.intercept_variance)
        if not (np.isfinite([*variances, self.covariance]).all() and min(variances) >= 0):
            raise ValueError(
                f"calibration variances {variances} and covariance {self.covariance} must be finite with "
                "non-negative variances (as fit_calibration writes them)"
            )

    @property
    def fitted(self) -> bool:
        """Return whether this map was fitted on labelled scores (False for the identity)."""
        return self.method != "identity"

    def apply(self, scores: ArrayLike) -> FloatArray:
        """Return the calibrated probabilities of ``scores`` (probabilities in [0, 1]) as float64."""
        s = np.asarray(scores, dtype=np.float64)
        if not self.fitted:
            return s
        from scipy.special import expit

        return expit(self.slope * _logit(s) + self.intercept)

    def logits(self, probabilities: ArrayLike) -> FloatArray:
        """Return the raw logits behind calibrated ``probabilities`` (``apply`` inverted)."""
        return (_logit(np.asarray(probabilities, dtype=np.float64)) - self.intercept) / self.slope

    def plausible_maps(self, draws: int, rng: np.random.Generator) -> FloatArray:
        """Return ``draws`` (slope, intercept) rows from the fit's asymptotic normal law.

        Every row is the fitted map when it carries no uncertainty (the identity). Slopes are kept
        positive: a map that reversed the ranking is not a plausible calibration of a model with skill.
        """
        mean = np.array([self.slope, self.intercept])
        cov = np.array([[self.slope_variance, self.covariance], [self.covariance, self.intercept_variance]])
        if not cov.any():
            return np.tile(mean, (draws, 1))
        maps = rng.multivariate_normal(mean, cov, size=draws)
        maps[:, 0] = np.maximum(maps[:, 0], _EPS)
        return maps

    def to_dict(self) -> dict[str, Any]:
        """Return the map as JSON-ready types (logged with the model)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, logged: Mapping[str, Any] | None) -> Calibration:
        """Return the map logged by ``to_dict``; the identity when nothing was logged (an older model).

        Raises:
            ValueError: naming the keys it expected when ``logged`` holds others or an unknown method.
        """
        if not logged:
            return cls()
        unknown = set(logged) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"calibration {dict(logged)} has unknown keys {sorted(unknown)}; expected a subset of "
                f"{sorted(cls.__dataclass_fields__)} (written by Calibration.to_dict)"
            )
        return cls(**logged)


IDENTITY = Calibration()


def fit_calibration(labels: ArrayLike, scores: ArrayLike) -> Calibration:
    """Fit Platt scaling on the logit of ``scores`` against ``labels`` (unpenalised logistic regression).

    Raises:
        ValueError: when the labels lack a class, or the fitted slope is not positive (the scores rank
            negatives above positives: the model has no skill on these rows).
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels).astype(np.int8)
    s = np.asarray(scores, dtype=np.float64)
    positives = int(y.sum())
    if y.shape != s.shape or not 0 < positives < y.size:
        raise ValueError(
            f"calibration needs labels and scores of one length with both classes; got {y.size} labels "
            f"({positives} positive) and {s.size} scores. Widen the validation part or wait for labels."
        )
    z = _logit(s)
    regression = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000)  # unpenalised
    regression.fit(z[:, None], y)
    slope, intercept = float(regression.coef_[0, 0]), float(regression.intercept_[0])
    if not slope > 0:
        raise ValueError(
            f"calibration on {y.size} validation rows ({positives} positive) fitted slope {slope:.4g}: the "
            "model's scores do not rank positives above negatives there. Check the labels and features."
        )
    cov = _parameter_covariance(z, slope, intercept)
    return Calibration(
        "platt_logit",
        slope,
        intercept,
        rows=int(y.size),
        positives=positives,
        slope_variance=float(cov[0, 0]),
        intercept_variance=float(cov[1, 1]),
        covariance=float(cov[0, 1]),
    )


def _parameter_covariance(z: FloatArray, slope: float, intercept: float) -> FloatArray:
    """Return the inverse Fisher information of a logistic fit on one feature ``z``: cov(slope, intercept)."""
    from scipy.special import expit

    design = np.column_stack([z, np.ones_like(z)])
    fitted = expit(slope * z + intercept)
    return np.linalg.inv(design.T @ (design * (fitted * (1 - fitted))[:, None]))


@dataclass
class CalibratedModel:
    """A model whose ``predict_proba`` returns ``model``'s scores through its calibration map."""

    model: Any  # predict_proba(matrix) -> (n, 2): an XGBClassifier or a torch TabularModel
    calibration: Calibration = IDENTITY

    def predict_proba(self, matrix: Any) -> FloatArray:
        """Return an (n, 2) array of calibrated [P(negative), P(positive)] per row of ``matrix``."""
        positive = self.calibration.apply(np.asarray(self.model.predict_proba(matrix))[:, 1])
        return np.column_stack([1.0 - positive, positive])

    def scores(self, matrix: Any) -> FloatArray:
        """Return the number served per row: the calibrated P(positive)."""
        return self.predict_proba(matrix)[:, 1]


@dataclass
class RegressionModel:
    """A regression model (``task: regression``): it serves its predicted value, which is never calibrated.

    ``calibration`` is the identity, so code reading a model's map (serving's fast path, sizing) treats
    both task types alike.
    """

    model: Any  # predict(matrix) -> (n,): an XGBRegressor or a torch TabularModel fitted on MSE
    calibration: Calibration = IDENTITY

    def scores(self, matrix: Any) -> FloatArray:
        """Return the predicted value per row of ``matrix``."""
        return np.asarray(self.model.predict(matrix), dtype=np.float64)


def served_model(model: Any, calibration: Calibration, calibrated: bool) -> CalibratedModel | RegressionModel:
    """Return ``model`` wrapped for its task: calibrated probabilities, or the predicted value as is."""
    return CalibratedModel(model, calibration) if calibrated else RegressionModel(model)


def as_served(model: Any) -> CalibratedModel | RegressionModel:
    """Return ``model`` with ``scores``: a wrapped model as it is, a bare classifier with the identity map."""
    return model if isinstance(model, CalibratedModel | RegressionModel) else CalibratedModel(model)


def unwrap(model: Any) -> tuple[Any, Calibration]:
    """Return (the underlying model, its calibration): the identity for a model that was never wrapped."""
    if isinstance(model, CalibratedModel | RegressionModel):
        return model.model, model.calibration
    return model, IDENTITY


def expected_calibration_error(labels: ArrayLike, probabilities: ArrayLike, bins: int = ECE_BINS) -> float:
    """Return the expected calibration error: |observed rate - mean probability| over equal-count bins.

    Rows are sorted by probability and cut into ``bins`` bins of (nearly) equal size; each bin's gap is
    weighted by its share of rows. Equal-count bins keep every bin populated when positives are rare.
    """
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} must be non-empty 1-D of one length")
    order = np.argsort(p, kind="stable")
    gaps = [
        abs(y[rows].mean() - p[rows].mean()) * rows.size for rows in np.array_split(order, min(bins, y.size))
    ]
    return float(sum(gaps) / y.size)


def calibration_metrics(labels: ArrayLike, probabilities: ArrayLike) -> dict[str, float]:
    """Return the Brier score and the expected calibration error of ``probabilities`` on ``labels``."""
    from sklearn.metrics import brier_score_loss

    return {
        "brier": float(brier_score_loss(np.asarray(labels), np.asarray(probabilities, dtype=np.float64))),
        "ece": expected_calibration_error(labels, probabilities),
    }


def _logit(p: FloatArray) -> FloatArray:
    """Return log(p / (1 - p)), with p clipped into (0, 1) by float64 epsilon (scores of exactly 0 or 1)."""
    from scipy.special import logit

    return logit(np.clip(p, _EPS, 1 - _EPS))
