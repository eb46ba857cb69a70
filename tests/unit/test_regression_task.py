"""Regression use cases (``task: regression``): the task module, metrics, gate, serving answer, decay rule.

Synthetic targets with a known signal: a model that recovers it must pass, a constant or a random (shuffled)
predictor must be rejected by the gate, and a window whose errors grew must fire the decay rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from mlloop.monitoring.decision import MonitorEvidence, load_monitor_config, performance_rule
from mlloop.monitoring.performance import performance_value, regression_band
from mlloop.promotion import ScoredModel, evaluate_gate, load_gate_config
from mlloop.promotion.regression import error_intervals, paired_squared_error, rmse
from mlloop.tasks import BINARY, REGRESSION, task_spec
from mlloop.usecase import USECASE_DIR, UseCase, UseCaseDeclarationError, load_use_case

ROWS = 3_000
TRAINING_MEAN = 10.0


@pytest.fixture(scope="module")
def holdout() -> tuple[pd.DataFrame, np.ndarray]:
    """Return a holdout (target y = 10 + 3x + noise, a site column) and the signal 10 + 3x."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=ROWS)
    signal = TRAINING_MEAN + 3.0 * x
    frame = pd.DataFrame({"y": signal + rng.normal(size=ROWS), "site": rng.choice(["a", "b", "c"], ROWS)})
    return frame, signal


def _scored(name: str, predictions: np.ndarray) -> ScoredModel:
    return ScoredModel(name, predictions, batch_latency_ms_per_1k_rows=1.0, size_mb=0.1)


def _gate(challenger: np.ndarray, champion: np.ndarray | None, frame: pd.DataFrame, **overrides):
    config = load_gate_config(overrides)
    return evaluate_gate(
        _scored("m/2", challenger),
        None if champion is None else _scored("m/1", champion),
        frame,
        target_column="y",
        config=config,
        task="regression",
        training_mean=TRAINING_MEAN,
    )


def test_task_specs_say_what_differs() -> None:
    assert task_spec("binary") is BINARY and task_spec("regression") is REGRESSION
    assert (BINARY.xgboost_objective, REGRESSION.xgboost_objective) == ("binary:logistic", "reg:squarederror")
    assert (BINARY.torch_loss, REGRESSION.torch_loss) == ("bce", "mse")
    assert REGRESSION.metrics == ("rmse", "mae", "no_skill_rmse") and not REGRESSION.calibrated
    assert REGRESSION.labels([1.5, 2.0]).dtype == np.float64
    assert BINARY.labels([0, 1.0]).dtype == np.int8
    with pytest.raises(ValueError, match=r"0/1 labels.*task: regression"):
        BINARY.labels([0.0, 2.5])
    with pytest.raises(ValueError, match=r"missing or infinite.*label is known"):
        REGRESSION.labels([1.0, np.nan])
    assert (BINARY.counted([0, 1, 1]), REGRESSION.counted([0.5, 1, 1])) == (2, 3)
    assert not REGRESSION.judgeable([4.0, 4.0]) and REGRESSION.judgeable([4.0, 5.0])
    with pytest.raises(ValueError, match=r"unknown task 'ranking'.*binary"):
        task_spec("ranking")


def test_served_rows_carry_a_score_and_decision_or_the_value() -> None:
    assert BINARY.served_row(0.7, 0.5) == {"score": 0.7, "flagged": True}
    assert BINARY.served_row(0.2, 0.5) == {"score": 0.2, "flagged": False}
    assert REGRESSION.served_row(12.5, None) == {"prediction": 12.5}


def test_declaration_task_defaults_to_binary_and_checks_the_monitor_metric(tmp_path) -> None:
    document = yaml.safe_load((USECASE_DIR / "card_fraud.yaml").read_text())
    assert UseCase.model_validate(document).task == "binary"
    assert load_use_case("card_fraud").task == "binary"
    regression = UseCase.model_validate(document | {"task": "regression", "monitor": {}})
    assert load_monitor_config(use_case=regression).performance_metric == "rmse"
    assert load_monitor_config(use_case=load_use_case("card_fraud")).performance_metric == "roc_auc"
    path = tmp_path / "delays.yaml"
    path.write_text(
        yaml.safe_dump(document | {"task": "regression", "monitor": {"performance_metric": "roc_auc"}})
    )
    with pytest.raises(UseCaseDeclarationError, match=r"performance_metric 'roc_auc' does not apply.*rmse"):
        load_use_case(str(path))


def test_error_intervals_cover_the_estimate_and_match_numpy(holdout) -> None:
    frame, signal = holdout
    y = frame["y"].to_numpy()
    intervals = error_intervals(y, signal, resamples=500, confidence=0.95, seed=1)
    assert intervals["rmse"].estimate == pytest.approx(np.sqrt(np.mean((signal - y) ** 2)))
    assert intervals["mae"].estimate == pytest.approx(np.mean(np.abs(signal - y)))
    for interval in intervals.values():
        assert interval.lower < interval.estimate < interval.upper
    assert intervals == error_intervals(y, signal, resamples=500, confidence=0.95, seed=1)


def test_gate_promotes_skill_and_rejects_constant_and_random_predictions(holdout) -> None:
    frame, signal = holdout
    y = frame["y"].to_numpy()
    good = _gate(signal, None, frame)
    assert good.promote, good.summary()
    assert good.metrics["challenger"].no_skill_rmse == pytest.approx(rmse(y, np.full(ROWS, TRAINING_MEAN)))
    assert "operating_point" in {r.name for r in good.rules}  # recorded as not applicable
    assert _gate(y.copy(), None, frame).promote  # perfect
    constant = _gate(np.full(ROWS, TRAINING_MEAN), None, frame)
    assert constant.failed_rules == ["skill_rmse"], constant.summary()
    shuffled = _gate(np.random.default_rng(0).permutation(y), None, frame)
    assert shuffled.failed_rules == ["skill_rmse"], shuffled.summary()
    assert "RMSE" in constant.to_markdown() and "positive)" not in constant.to_markdown()


def test_gate_judges_a_champion_on_paired_squared_error_and_slices(holdout) -> None:
    frame, signal = holdout
    equal = _gate(signal, signal.copy(), frame, slice_columns=[], min_slice_rows=100)
    assert equal.promote, equal.summary()
    noisy = signal + np.random.default_rng(3).normal(0, 1.0, ROWS)
    worse = _gate(noisy, signal, frame)
    assert "non_inferiority" in worse.failed_rules, worse.summary()
    rule = next(r for r in worse.rules if r.name == "non_inferiority")
    assert rule.observed > 0.02 and rule.evidence["metric"] == "relative_mse_change"


def test_slices_compare_rmse_per_value(holdout) -> None:
    from mlloop.promotion.gate import evaluate_regression_gate

    frame, signal = holdout
    broken = signal.copy()
    on_c = (frame["site"] == "c").to_numpy()
    broken[on_c] += 3.0  # the challenger is much worse on one site only
    config = load_gate_config({"slice_columns": ["site"], "min_slice_rows": 100})
    decision = evaluate_regression_gate(
        _scored("m/2", broken), _scored("m/1", signal), frame, target_column="y", config=config
    )
    statuses = {item.value: item.status for item in decision.slices}
    assert statuses == {"a": "ok", "b": "ok", "c": "regressed"}, decision.slices
    assert "slice_no_regression.site" in decision.failed_rules


def test_paired_squared_error_is_zero_for_equal_models(holdout) -> None:
    frame, signal = holdout
    interval = paired_squared_error(frame["y"], signal, signal, resamples=200, confidence=0.95, seed=0)
    assert interval.delta == 0 and interval.lower == 0 and interval.upper == 0


def test_gate_refuses_a_constant_target() -> None:
    frame = pd.DataFrame({"y": np.full(100, 3.0)})
    with pytest.raises(ValueError, match="single target value"):
        _gate(np.full(100, 3.0), None, frame)


def test_decay_fires_on_grown_errors_and_stays_quiet_otherwise(holdout) -> None:
    frame, signal = holdout
    y = frame["y"].to_numpy()
    config = load_monitor_config({"performance_metric": "rmse"})
    rng = np.random.default_rng(11)
    window_x = rng.normal(size=2500)
    window_signal = TRAINING_MEAN + 3.0 * window_x
    window_y = window_signal + rng.normal(size=2500)
    drifted_y = window_signal + rng.normal(size=2500) * 2.0  # the relationship got noisier
    band = regression_band("rmse", y, signal, window_rows=2500, resamples=400, seed=0)
    assert band.counted == "rows" and band.no_skill == pytest.approx(np.std(y))
    assert band.expected == pytest.approx(band.holdout_value, rel=0.05)
    outcomes = {}
    for name, labels in (("quiet", window_y), ("decayed", drifted_y)):
        evidence = MonitorEvidence(
            drift_share=0.0,
            drifted_columns=[],
            top_features=[],
            performance=performance_value("rmse", labels, window_signal),
            performance_band=band,
            labelled_rows=2500,
            labelled_positives=2500,
        )
        outcomes[name] = performance_rule(evidence, config)
    assert not outcomes["quiet"].fired, outcomes["quiet"].detail
    assert outcomes["decayed"].fired, outcomes["decayed"].detail
    assert "RMSE" in outcomes["decayed"].detail and "positives" not in outcomes["decayed"].detail
    assert outcomes["decayed"].figures["drop"] > outcomes["decayed"].figures["margin"] > 0


@pytest.mark.parametrize("model_type", ["xgboost", "torch"])
def test_both_model_types_fit_a_regression_target_uncalibrated(model_type: str) -> None:
    from mlloop.training.calibration import RegressionModel
    from mlloop.training.fit import TrainConfig, TrainingData, fit_model

    rng = np.random.default_rng(2)

    def part(rows: int) -> tuple[pd.DataFrame, np.ndarray]:
        x = rng.normal(size=rows)
        site = rng.choice(["a", "b"], rows)
        matrix = pd.DataFrame({"x": x, "noise": rng.normal(size=rows), "site": pd.Categorical(site)})
        return matrix, TRAINING_MEAN + 3.0 * x + 2.0 * (site == "b") + rng.normal(0, 0.5, rows)

    parts = {"train": part(3000), "validation": part(800), "holdout": part(800)}
    data = TrainingData(manifest=None, split=None, parts=parts, task=REGRESSION)  # type: ignore[arg-type]
    fitted = fit_model(data, TrainConfig(snapshot="unused", model=model_type, seed=3), "cpu")
    assert isinstance(fitted.model, RegressionModel) and not fitted.model.calibration.fitted
    assert fitted.params["calibration"].startswith("skipped")
    x_holdout, y_holdout = parts["holdout"]
    predictions = fitted.model.scores(x_holdout)
    assert rmse(y_holdout, predictions) < 0.5 * rmse(y_holdout, np.full(y_holdout.size, TRAINING_MEAN))
    assert max(fitted.importance, key=fitted.importance.get) == "x"


def test_a_small_regression_window_waits_counting_rows(holdout) -> None:
    frame, signal = holdout
    config = load_monitor_config({"performance_metric": "mae"})
    band = regression_band("mae", frame["y"], signal, window_rows=300, resamples=200, seed=0)
    evidence = MonitorEvidence(
        drift_share=0.0,
        drifted_columns=[],
        top_features=[],
        performance=band.expected,
        performance_band=band,
        labelled_rows=300,
        labelled_positives=300,
    )
    outcome = performance_rule(evidence, config)
    assert not outcome.fired and outcome.figures["state"] == "waiting", outcome
    assert outcome.detail.startswith(f"waiting: 300 labelled rows, needs {config.min_labelled_rows};"), (
        outcome
    )
    assert "positives" not in outcome.detail and "MAE" in outcome.detail


def _regression_parts(generated_parts) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """Return the generated card days with a numeric target: the customer's age read from the features."""
    rng = np.random.default_rng(4)
    return {
        name: (matrix, matrix["customer_age"].to_numpy(dtype=np.float64) + rng.normal(0, 2.0, len(matrix)))
        for name, (matrix, _) in generated_parts.items()
    }


def test_logged_regression_models_load_as_regression_and_serve_the_value(tmp_path, generated_parts) -> None:
    """XGBoost and torch regressors saved as training logs them load as RegressionModel; the service's fast
    path and the torch pyfunc give the same values as the model."""
    import mlflow
    import xgboost as xgb

    from mlloop.serving.scorer import _probe_features, predictor
    from mlloop.training.calibration import RegressionModel
    from mlloop.training.model_io import (
        MODEL_TYPE_KEY,
        TASK_KEY,
        TORCH_PYFUNC_PATH,
        load_model,
        serving_frame,
    )
    from mlloop.training.torch_model import TabularParams, fit_tabular

    parts = _regression_parts(generated_parts)
    (x_train, y_train), (x_val, y_val) = parts["train"], parts["validation"]
    x_holdout = parts["holdout"][0].head(300)
    regressor = xgb.XGBRegressor(n_estimators=30, max_depth=3, enable_categorical=True, max_cat_to_onehot=1)
    regressor.fit(x_train, y_train)
    mlflow.xgboost.save_model(
        regressor, str(tmp_path / "xgb"), model_format="ubj", metadata={TASK_KEY: "regression"}
    )
    loaded = load_model(str(tmp_path / "xgb"))
    assert isinstance(loaded, RegressionModel)
    np.testing.assert_allclose(loaded.scores(x_holdout), regressor.predict(x_holdout), rtol=1e-6)
    spec = load_use_case("card_fraud").features
    fast = predictor(loaded, spec, list(x_train.columns))
    assert fast.__name__ == "fast"  # the probe matched the general path: the value is served uncalibrated
    probe = _probe_features(spec)
    assert fast(probe).max() > 1  # ages in years: a value, not a probability

    params = TabularParams(hidden_sizes=(16,), max_epochs=2, patience=1, batch_size=4096, seed=3)
    network = fit_tabular(x_train, y_train, x_val, y_val, params, task="regression")
    files = network.save(tmp_path / "files")
    mlflow.pyfunc.save_model(
        str(tmp_path / "torch"),
        python_model=str(TORCH_PYFUNC_PATH),
        artifacts={name: str(path) for name, path in files.items()},
        metadata={MODEL_TYPE_KEY: "torch", TASK_KEY: "regression"},
        pip_requirements=["torch"],
    )
    values = network.predict(x_holdout)
    assert abs(values.mean() - y_val.mean()) < 3 * y_val.std()  # in the target's units, not standardised
    torch_loaded = load_model(str(tmp_path / "torch"))
    assert isinstance(torch_loaded, RegressionModel)
    np.testing.assert_allclose(torch_loaded.scores(x_holdout), values)
    pyfunc = mlflow.pyfunc.load_model(str(tmp_path / "torch"))
    np.testing.assert_allclose(pyfunc.predict(serving_frame(x_holdout)), values, rtol=1e-5)
