"""MLflow "models from code" entry of the torch tabular model: this file is logged, the model is not pickled.

``mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"state_dict": ..., "preprocessing": ...})``
copies this file and the two artifacts; loading runs it, and ``load_context`` reads the weights with
``torch.load(..., weights_only=True)``. ``predict`` takes the model matrix's columns (categoricals as
strings or categories) and returns the calibrated positive-class probability per row (the calibration
comes in the model config; none for a model logged before calibration). Needs ``mlloop`` installed.
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
        """Load the network, its preprocessing (artifacts, CPU) and its calibration (model config)."""
        from mlloop.training.calibration import CALIBRATION_KEY, Calibration, served_model
        from mlloop.training.torch_model import load_files

        calibration = Calibration.from_dict((context.model_config or {}).get(CALIBRATION_KEY))
        network = load_files(context.artifacts)
        self.model = served_model(network, calibration, network.task == "binary")

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """Return the calibrated P(positive) (binary) or the predicted value per row of ``model_input``."""
        return self.model.scores(model_input)


mlflow.models.set_model(TorchTabularPyfunc())
