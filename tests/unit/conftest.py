"""Unit-test fixtures shared by the model tests: generated fraud days as training's time-split parts."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from mlloop.data.generator import generate_day
from mlloop.features import build_use_case_features, feature_columns, model_matrix
from mlloop.training import time_split
from mlloop.usecase import load_use_case

Part = tuple[pd.DataFrame, np.ndarray]
GENERATED_DAYS = [date(2026, 11, 10) + timedelta(days=i) for i in range(4)]
GENERATED_ROWS = 6_000


@pytest.fixture(scope="session")
def generated_parts() -> dict[str, Part]:
    """Four generated days as model matrices split by time: train, validation, holdout."""
    use_case = load_use_case("card_fraud")
    days = [generate_day(d, rows=GENERATED_ROWS, seed=use_case.source.seed) for d in GENERATED_DAYS]
    raw = pd.concat([d.transactions for d in days], ignore_index=True)
    labels = pd.concat([d.labels for d in days]).set_index(use_case.key_column)[use_case.target_column]
    frame = build_use_case_features(raw, use_case)
    frame[use_case.target_column] = labels.loc[frame[use_case.key_column]].to_numpy()
    split = time_split(frame, use_case.time_column, validation_fraction=0.2, holdout_fraction=0.25)
    columns = feature_columns(use_case.features)
    return {
        name: (
            model_matrix(part, use_case.features, columns),
            part[use_case.target_column].to_numpy(dtype=np.int8),
        )
        for name, part in (
            ("train", split.train),
            ("validation", split.validation),
            ("holdout", split.holdout),
        )
    }
