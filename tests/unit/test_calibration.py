"""Score calibration: calibrated on held-out rows, ranking unchanged, logged maps and older models load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit

from mlloop.promotion.metrics import pr_auc, recall_at_precision, roc_auc
from mlloop.training.calibration import (
    CALIBRATION_KEY,
    IDENTITY,
    CalibratedModel,
    Calibration,
    expected_calibration_error,
    fit_calibration,
    unwrap,
)

ROWS = 20_000


def consistency_quantile(probabilities: np.ndarray, quantile: float, draws: int = 200) -> float:
    """Return the ``quantile`` of the ECE that labels drawn from ``probabilities`` themselves show.

    Perfectly calibrated probabilities still show an ECE by chance (Bröcker & Smith's consistency
    resampling): this is the tolerance at the sample's size, derived rather than chosen.
    """
    rng = np.random.default_rng(1)
    errors = [
        expected_calibration_error(
            (rng.random(probabilities.size) < probabilities).astype(np.int8), probabilities
        )
        for _ in range(draws)
    ]
    return float(np.quantile(errors, quantile))


def true_probabilities(seed: int, rows: int = ROWS) -> np.ndarray:
    """Return rare-event probabilities (about 2% positives) with a realistic spread of logits."""
    return expit(np.random.default_rng(seed).normal(-4.6, 1.6, rows))


def distorted(probabilities: np.ndarray) -> np.ndarray:
    """Return scores as a class-weighted, over-confident model gives them: odds inflated, logits stretched."""
    logits = np.log(probabilities) - np.log1p(-probabilities)
    return expit(1.4 * logits + 2.0)


def draw(probabilities: np.ndarray, seed: int) -> np.ndarray:
    """Return labels drawn from ``probabilities``."""
    return (np.random.default_rng(seed).random(probabilities.size) < probabilities).astype(np.int8)


def test_fitted_map_calibrates_held_out_rows_within_chance() -> None:
    fit_p, held_p = true_probabilities(0), true_probabilities(1)
    calibration = fit_calibration(draw(fit_p, 10), distorted(fit_p))
    labels = draw(held_p, 11)
    calibrated = calibration.apply(distorted(held_p))

    tolerance = consistency_quantile(calibrated, 0.99)
    assert expected_calibration_error(labels, calibrated) <= tolerance
    assert expected_calibration_error(labels, distorted(held_p)) > 5 * tolerance
    # The sum of probabilities is the expected positive count: within three binomial SDs of the realised one.
    assert abs(labels.sum() - calibrated.sum()) <= 3 * np.sqrt((calibrated * (1 - calibrated)).sum())
    assert (
        calibration.fitted
        and calibration.rows == ROWS
        and calibration.slope == pytest.approx(1 / 1.4, rel=0.1)
    )


def test_fitted_covariance_matches_the_spread_of_refits() -> None:
    refits = []
    for seed in range(40):
        p = true_probabilities(100 + seed, rows=5_000)
        refits.append(fit_calibration(draw(p, 200 + seed), distorted(p)))
    slopes, intercepts = np.array([c.slope for c in refits]), np.array([c.intercept for c in refits])
    reported = np.sqrt(np.mean([[c.slope_variance, c.intercept_variance] for c in refits], axis=0))
    # The SD of 40 draws is itself uncertain by about 1/sqrt(2 * 39) (11%): three of those.
    np.testing.assert_allclose([slopes.std(ddof=1), intercepts.std(ddof=1)], reported, rtol=3 / np.sqrt(78))


def test_plausible_maps_follow_the_fit_and_invert_apply() -> None:
    p = true_probabilities(5)
    calibration = fit_calibration(draw(p, 15), distorted(p))
    maps = calibration.plausible_maps(4_000, np.random.default_rng(0))
    np.testing.assert_allclose(maps.mean(axis=0), [calibration.slope, calibration.intercept], atol=0.01)
    assert (maps[:, 0] > 0).all()
    raw = distorted(p[:100])
    np.testing.assert_allclose(calibration.logits(calibration.apply(raw)), np.log(raw / (1 - raw)), atol=1e-6)
    assert (IDENTITY.plausible_maps(3, np.random.default_rng(0)) == [1.0, 0.0]).all()


def test_map_keeps_the_ranking_so_ranking_metrics_do_not_move() -> None:
    p = true_probabilities(2)
    labels, raw = draw(p, 12), distorted(p)
    calibrated = fit_calibration(labels, raw).apply(raw)

    assert np.array_equal(np.argsort(raw, kind="stable"), np.argsort(calibrated, kind="stable"))
    assert roc_auc(labels, calibrated) == pytest.approx(roc_auc(labels, raw), abs=1e-12)
    assert pr_auc(labels, calibrated) == pytest.approx(pr_auc(labels, raw), abs=1e-12)
    assert recall_at_precision(labels, calibrated, 0.2) == recall_at_precision(labels, raw, 0.2)


def test_scores_of_exactly_zero_or_one_stay_finite_and_ordered() -> None:
    calibration = Calibration("platt_logit", slope=0.7, intercept=-1.0, rows=10, positives=2)
    out = calibration.apply(np.array([0.0, 1e-30, 0.5, 1 - 1e-12, 1.0], dtype=np.float32))
    assert np.isfinite(out).all() and np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() <= 1


def test_identity_and_logged_round_trip() -> None:
    scores = np.array([0.01, 0.2, 0.9])
    assert Calibration.from_dict(None) == IDENTITY and not IDENTITY.fitted
    np.testing.assert_array_equal(IDENTITY.apply(scores), scores)
    fitted = Calibration("platt_logit", slope=0.8, intercept=-2.1, rows=100, positives=5)
    assert Calibration.from_dict(fitted.to_dict()) == fitted
    with pytest.raises(ValueError, match="unknown keys \\['temperature'\\]"):
        Calibration.from_dict({"method": "platt_logit", "temperature": 2.0})
    with pytest.raises(ValueError, match="unknown; valid"):
        Calibration.from_dict({"method": "isotonic"})


def test_fit_refuses_what_it_cannot_calibrate() -> None:
    with pytest.raises(ValueError, match="both classes"):
        fit_calibration(np.zeros(50), np.linspace(0, 1, 50))
    p = true_probabilities(3, rows=5_000)
    with pytest.raises(ValueError, match="do not rank positives above negatives"):
        fit_calibration(draw(p, 13), 1 - p)
    with pytest.raises(ValueError, match="positive slope"):
        Calibration("platt_logit", slope=0.0)
    with pytest.raises(ValueError, match="non-negative variances"):
        Calibration("platt_logit", slope_variance=-1.0)


def test_calibrated_model_scores_through_its_map() -> None:
    class Raw:
        def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
            return np.column_stack([1 - matrix, matrix])

    calibration = Calibration("platt_logit", slope=0.5, intercept=-1.0, rows=10, positives=1)
    model = CalibratedModel(Raw(), calibration)
    scores = np.array([0.05, 0.5, 0.95])
    proba = model.predict_proba(scores)
    np.testing.assert_allclose(proba[:, 1], calibration.apply(scores))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert unwrap(model) == (model.model, calibration)
    raw = Raw()
    assert unwrap(raw) == (raw, IDENTITY)


def test_trained_model_is_calibrated_on_the_generated_holdout(generated_parts) -> None:
    from mlloop.training.fit import TrainConfig, TrainingData, fit_model

    data = TrainingData(manifest=None, split=None, parts=generated_parts)  # fit_model reads the parts only
    fitted = fit_model(data, TrainConfig(snapshot="generated", max_rounds=300), "cpu")
    x_holdout, labels = generated_parts["holdout"]
    calibrated = fitted.model.predict_proba(x_holdout)[:, 1]
    raw = fitted.model.model.predict_proba(x_holdout)[:, 1]

    assert fitted.params["calibration_slope"] == fitted.model.calibration.slope
    tolerance = consistency_quantile(calibrated, 0.99)
    assert (
        expected_calibration_error(labels, calibrated) <= tolerance < expected_calibration_error(labels, raw)
    )
    assert abs(labels.sum() - calibrated.sum()) <= 3 * np.sqrt((calibrated * (1 - calibrated)).sum())
    assert roc_auc(labels, calibrated) == pytest.approx(roc_auc(labels, raw), abs=1e-9)


def test_a_model_logged_without_calibration_loads_with_the_identity(tmp_path: Path, generated_parts) -> None:
    import mlflow
    import xgboost as xgb

    from mlloop.training.model_io import load_model

    x_train, y_train = generated_parts["train"]
    booster = xgb.XGBClassifier(n_estimators=20, max_depth=3, enable_categorical=True, n_jobs=1)
    booster.fit(x_train, y_train)
    # As models were logged before calibration; pinned requirements skip MLflow's slow inference of them.
    mlflow.xgboost.save_model(booster, str(tmp_path / "old"), pip_requirements=["xgboost"])
    calibration = Calibration("platt_logit", slope=0.8, intercept=-1.5, rows=100, positives=3)
    mlflow.xgboost.save_model(
        booster,
        str(tmp_path / "new"),
        pip_requirements=["xgboost"],
        metadata={CALIBRATION_KEY: calibration.to_dict()},
    )

    x_holdout = generated_parts["holdout"][0].head(500)
    raw = booster.predict_proba(x_holdout)[:, 1]
    old = load_model(str(tmp_path / "old"))
    assert old.calibration == IDENTITY
    np.testing.assert_allclose(old.predict_proba(x_holdout)[:, 1], raw)
    new = load_model(str(tmp_path / "new"))
    assert new.calibration == calibration
    np.testing.assert_allclose(new.predict_proba(x_holdout)[:, 1], calibration.apply(raw))


def test_a_torch_model_logged_without_calibration_loads_with_the_identity(
    tmp_path: Path, generated_parts
) -> None:
    import mlflow

    from mlloop.training.model_io import MODEL_TYPE_KEY, TORCH_PYFUNC_PATH, load_model, serving_frame
    from mlloop.training.torch_model import TabularParams, fit_tabular

    params = TabularParams(hidden_sizes=(16,), max_epochs=1, patience=1, batch_size=4096, seed=3)
    network = fit_tabular(*generated_parts["train"], *generated_parts["validation"], params)
    files = network.save(tmp_path / "files")
    mlflow.pyfunc.save_model(  # as torch models were logged before calibration: no map in metadata or config
        str(tmp_path / "old"),
        python_model=str(TORCH_PYFUNC_PATH),
        artifacts={name: str(path) for name, path in files.items()},
        metadata={MODEL_TYPE_KEY: "torch"},
        pip_requirements=["torch"],
    )

    x_holdout = generated_parts["holdout"][0].head(300)
    raw = network.predict_proba(x_holdout)[:, 1]
    old = load_model(str(tmp_path / "old"))
    assert old.calibration == IDENTITY
    np.testing.assert_allclose(old.predict_proba(x_holdout)[:, 1], raw)
    pyfunc = mlflow.pyfunc.load_model(str(tmp_path / "old"))
    np.testing.assert_allclose(pyfunc.predict(serving_frame(x_holdout)), raw, rtol=1e-6)


def test_serving_fast_path_scores_through_the_calibration(generated_parts) -> None:
    import xgboost as xgb

    from mlloop.serving.scorer import _probe_features, predictor
    from mlloop.usecase import load_use_case

    spec = load_use_case("card_fraud").features
    x_train, y_train = generated_parts["train"]
    booster = xgb.XGBClassifier(n_estimators=20, max_depth=3, enable_categorical=True, max_cat_to_onehot=1)
    booster.fit(x_train, y_train)
    calibration = Calibration("platt_logit", slope=0.8, intercept=-1.5, rows=100, positives=3)
    raw = predictor(booster, spec, list(x_train.columns))
    calibrated = predictor(CalibratedModel(booster, calibration), spec, list(x_train.columns))

    assert raw.__name__ == calibrated.__name__ == "fast"  # the probe matched the general path: no fallback
    probe = _probe_features(spec)
    np.testing.assert_allclose(calibrated(probe), calibration.apply(raw(probe)), rtol=1e-12)
