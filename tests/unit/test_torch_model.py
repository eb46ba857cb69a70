"""The torch tabular model: learns, is deterministic on the CPU, saves without pickle, handles odd inputs."""

from __future__ import annotations

import io
import json
import pickletools
import zipfile
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mlloop.promotion import pr_auc
from mlloop.training.fit import permutation_importance
from mlloop.training.model_io import model_size_mb, serving_frame
from mlloop.training.torch_model import (
    PREPROCESSING_FILE,
    STATE_DICT_FILE,
    TabularModel,
    TabularParams,
    fit_tabular,
    load_files,
)
from mlloop.usecase import load_use_case

USE_CASE = load_use_case("card_fraud")
DAYS = [date(2026, 11, 10) + timedelta(days=i) for i in range(4)]
ROWS = 6_000
PARAMS = TabularParams(max_epochs=12, patience=4, batch_size=1024, seed=7)

Part = tuple[pd.DataFrame, np.ndarray]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One CPU thread: these small batches gain nothing from two, and a busy second core (CI has two)
    makes torch's threads wait on each other, ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def parts(generated_parts: dict[str, Part]) -> dict[str, Part]:
    """Four generated days as model matrices split by time: train, validation, holdout (conftest)."""
    return generated_parts


@pytest.fixture(scope="module")
def model(parts: dict[str, Part]) -> TabularModel:
    return fit_tabular(*parts["train"], *parts["validation"], PARAMS)


def test_learns_the_fraud_pattern(model: TabularModel, parts: dict[str, Part]) -> None:
    x_holdout, y_holdout = parts["holdout"]
    proba = model.predict_proba(x_holdout)
    assert proba.shape == (len(x_holdout), 2)
    assert np.allclose(proba.sum(axis=1), 1.0) and ((proba >= 0) & (proba <= 1)).all()
    base_rate = y_holdout.mean()
    assert pr_auc(y_holdout, proba[:, 1]) > 3 * base_rate
    # The pos_weight offset is undone: mean predicted fraud rate is near the base rate, not ~50%.
    assert proba[:, 1].mean() < 5 * base_rate
    assert 1 <= model.training["best_epoch"] <= PARAMS.max_epochs


def test_same_seed_gives_identical_scores_on_cpu(parts: dict[str, Part]) -> None:
    quick = replace(PARAMS, max_epochs=2)
    x_holdout, _ = parts["holdout"]
    first = fit_tabular(*parts["train"], *parts["validation"], quick).predict_proba(x_holdout)
    again = fit_tabular(*parts["train"], *parts["validation"], quick).predict_proba(x_holdout)
    other = fit_tabular(*parts["train"], *parts["validation"], replace(quick, seed=8)).predict_proba(
        x_holdout
    )
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_save_and_load_give_identical_scores_without_pickle(
    model: TabularModel, parts: dict[str, Part], tmp_path: Path
) -> None:
    files = model.save(tmp_path)
    assert files == {"state_dict": tmp_path / STATE_DICT_FILE, "preprocessing": tmp_path / PREPROCESSING_FILE}
    loaded = load_files(files)
    x_holdout, _ = parts["holdout"]
    np.testing.assert_array_equal(loaded.predict_proba(x_holdout), model.predict_proba(x_holdout))
    assert model_size_mb(loaded) == pytest.approx(files["state_dict"].stat().st_size / 1e6)

    # Only tensors and plain containers: the weights-only unpickler accepts them, and the pickle
    # stream inside the torch zip references no class beyond torch's own tensor rebuilding.
    weights = torch.load(files["state_dict"], weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())
    with zipfile.ZipFile(files["state_dict"]) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(io.BytesIO(data))]
    globals_used = {arg for name, arg in ops if name == "GLOBAL"}
    assert "STACK_GLOBAL" not in {name for name, _ in ops}
    assert "torch._utils _rebuild_tensor_v2" in globals_used
    tensor_parts = {"torch._utils _rebuild_tensor_v2", "torch FloatStorage", "torch LongStorage"}
    assert globals_used <= tensor_parts | {"collections OrderedDict"}
    described = json.loads(files["preprocessing"].read_text())
    assert described["preprocessing"]["categorical"]["channel"][:2] == ["card_present", "online"]


def test_unknown_categories_and_missing_values_are_scored(
    model: TabularModel, parts: dict[str, Part]
) -> None:
    x_holdout, _ = parts["holdout"]
    rows = serving_frame(x_holdout.head(50))  # categoricals as plain strings, as a client sends them
    np.testing.assert_allclose(model.predict_proba(rows), model.predict_proba(x_holdout.head(50)), atol=1e-12)
    odd = rows.copy()
    odd.loc[odd.index[:10], "merchant_category"] = "space_tourism"  # outside the vocabulary
    odd.loc[odd.index[10:20], "channel"] = None
    odd.loc[odd.index[20:30], "amount"] = np.nan
    odd["customer_amount_vs_mean_7d"] = np.nan
    odd.loc[odd.index[30:35], "distance_from_home_km"] = np.inf
    scores = model.predict_proba(odd)[:, 1]
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    unknown = odd.copy()
    unknown.loc[unknown.index[:10], "merchant_category"] = "__unknown__"  # the vocabulary's unknown slot
    np.testing.assert_array_equal(model.predict_proba(unknown)[:10], model.predict_proba(odd)[:10])
    with pytest.raises(ValueError, match=r"\['channel'\] that the input lacks.*model_matrix"):
        model.predict_proba(odd.drop(columns="channel"))


def test_permutation_importance_is_seeded_and_ranks_signal(
    model: TabularModel, parts: dict[str, Part]
) -> None:
    x_val, y_val = parts["validation"]
    importance = permutation_importance(model, x_val, y_val, max_rows=2_000, seed=1)
    assert set(importance) == set(x_val.columns)
    assert importance == permutation_importance(model, x_val, y_val, max_rows=2_000, seed=1)
    assert max(importance.values()) > 0.01


def test_one_class_training_data_is_refused(parts: dict[str, Part]) -> None:
    x_train, y_train = parts["train"]
    with pytest.raises(ValueError, match=r"training rows hold 0 positives.*wait for more labels"):
        fit_tabular(x_train, np.zeros_like(y_train), *parts["validation"], PARAMS)
