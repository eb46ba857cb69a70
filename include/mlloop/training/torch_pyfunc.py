"""MLflow "models from code" entry of the torch tabular model: this file is logged, the model is not pickled.

``mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"state_dict": ..., "preprocessing": ...})``
copies this file and the two artifacts; loading runs it, and ``load_context`` reads the weights with
``torch.load(..., weights_only=True)``. ``predict`` takes the model matrix's columns (categoricals as
strings or categories) and returns the fraud probability per row. Needs ``mlloop`` installed.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext


class TorchTabularPyfunc(PythonModel):
    """Scores a model matrix with the saved torch tabular network."""

    def load_context(self, context: PythonModelContext) -> None:
        """Load the network and its preprocessing from the model's artifacts (CPU)."""
        from mlloop.training.torch_model import load_files

        self.model = load_files(context.artifacts)

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Return P(fraud) for each row of ``model_input``."""
        return self.model.predict_proba(model_input)[:, 1]


mlflow.models.set_model(TorchTabularPyfunc())
