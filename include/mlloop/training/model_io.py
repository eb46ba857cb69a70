"""Model I/O: log a trained model in a safe format, load a logged or registered one, score and size it.

Training logs through here, and the gate, serving and monitoring load and score through here, so every
reader sees a model the same way. Two model types: ``xgboost`` (the XGBoost flavour, UBJ) and ``torch`` (a
state dict plus a preprocessing JSON through MLflow "models from code", ``torch_pyfunc.py``); nothing is
pickled. Either carries its task (``TASK_KEY``) and calibration (``CALIBRATION_KEY``) in the MLmodel
metadata, and ``load_model`` returns it wrapped for its task: a ``CalibratedModel`` (binary: every score is
a probability) or a ``RegressionModel`` (the predicted value). Readers score with ``model.scores(matrix)``.
"""

from __future__ import annotations

import logging
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlloop.registry.tags import MODEL_TYPE_TAG

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

    from mlloop.promotion import ScoredModel
    from mlloop.training.calibration import CalibratedModel, RegressionModel

TORCH_PYFUNC_PATH = Path(__file__).with_name("torch_pyfunc.py")
MODEL_TYPE_KEY = MODEL_TYPE_TAG  # in the MLmodel metadata of a torch model, and a run/version tag
PACKAGES = ("mlloop", "xgboost", "pandas", "numpy", "scikit-learn", "mlflow", "great_expectations", "torch")
TASK_KEY = (
    "mlloop.task"  # in the MLmodel metadata: binary (the default of a model logged without it) or regression
)
IMPORTANCE_ARTIFACT = "importance.json"  # {"kind": ..., "importance": {feature: value}}, most important first


def _pinned(*names: str) -> list[str]:
    """Return ``name==version`` requirements of installed packages (local build tags such as +cpu dropped)."""
    versions = package_versions()
    return [f"{name}=={versions[name].split('+')[0]}" for name in names]


def log_model(
    model_type: str,
    model: CalibratedModel | RegressionModel,
    example: pd.DataFrame,
    signature: ModelSignature,
    task: str = "binary",
) -> ModelInfo:
    """Log ``model`` to the active MLflow run as ``model`` in a safe format, with signature and example.

    XGBoost goes through its flavour as UBJ. Torch goes through "models from code": the state dict and
    the preprocessing JSON are artifacts, ``torch_pyfunc.py`` is the code; nothing is pickled. The
    calibration is two numbers in the MLmodel metadata (``CALIBRATION_KEY``), which ``load_model`` reads.
    """
    import mlflow

    from mlloop.training.calibration import CALIBRATION_KEY

    calibration = {CALIBRATION_KEY: model.calibration.to_dict(), TASK_KEY: task}
    if model_type == "xgboost":
        # The XGBoost flavour needs pandas categoricals, which a JSON request cannot carry, so MLflow's
        # serving check of the example can only fail and log a traceback; mlloop scores through
        # model_matrix (load_model), so that check's warning is silenced here and nowhere else.
        checker = logging.getLogger("mlflow.models.model")
        level = checker.level
        checker.setLevel(logging.ERROR)
        try:
            return mlflow.xgboost.log_model(
                model.model,
                name="model",
                model_format="ubj",
                input_example=example,
                signature=signature,
                # Pinned rather than inferred: inference runs predict on the JSON-decoded example.
                pip_requirements=_pinned("mlflow", "xgboost", "pandas", "numpy"),
                metadata=calibration,
            )
        finally:
            checker.setLevel(level)
    with tempfile.TemporaryDirectory(prefix="mlloop-torch-") as tmp:
        files = model.model.save(Path(tmp))
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(TORCH_PYFUNC_PATH),
            artifacts={name: str(path) for name, path in files.items()},
            input_example=serving_frame(example),
            signature=signature,
            # Pinned here rather than inferred (inference loads the model in a subprocess). The code
            # also needs the mlloop package itself, which the serving image installs.
            pip_requirements=_pinned("mlflow", "torch", "pandas", "numpy"),
            metadata={MODEL_TYPE_KEY: "torch"} | calibration,
            model_config=calibration,  # what the logged code (torch_pyfunc) can read of it
        )


def serving_frame(matrix: pd.DataFrame) -> pd.DataFrame:
    """Return ``matrix`` as a client sends it: categoricals as strings (None where missing)."""
    import pandas as pd

    return matrix.assign(
        **{
            str(c): matrix[c].astype(object).where(matrix[c].notna(), None)
            for c in matrix.columns
            if isinstance(matrix[c].dtype, pd.CategoricalDtype)
        }
    )


def load_model(model_uri: str) -> CalibratedModel | RegressionModel:
    """Load a logged or registered model of either type (on the CPU) for ``score_model``.

    XGBoost models load through their flavour (an ``XGBClassifier``); torch models load from their
    state dict and preprocessing JSON with ``weights_only=True``, without running the logged code.
    A binary model is wrapped with the calibration in its metadata (the identity for a model logged
    without one), a regression model (metadata ``TASK_KEY``) as a ``RegressionModel``. The tracking URI
    must already be set (``registry.runner.use_configured_mlflow``).

    Returns:
        a model whose ``scores(matrix)`` gives calibrated probabilities or predicted values.

    Raises:
        ValueError: when the model is of neither type (naming the flavours it has).
    """
    import mlflow
    from mlflow.models import Model

    from mlloop.tasks import task_spec
    from mlloop.training.calibration import CALIBRATION_KEY, Calibration, served_model

    with tempfile.TemporaryDirectory(prefix="mlloop-model-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        logged = Model.load(str(local))
        metadata = logged.metadata or {}
        calibration = Calibration.from_dict(metadata.get(CALIBRATION_KEY))
        calibrated = task_spec(metadata.get(TASK_KEY, "binary")).calibrated
        if "xgboost" in logged.flavors:
            return served_model(mlflow.xgboost.load_model(str(local)), calibration, calibrated)
        if metadata.get(MODEL_TYPE_KEY) == "torch":
            from mlloop.training.torch_model import load_files

            artifacts = logged.flavors["python_function"]["artifacts"]
            network = load_files({name: local / entry["path"] for name, entry in artifacts.items()})
            return served_model(network, calibration, calibrated)
    raise ValueError(
        f"model {model_uri} has flavours {sorted(logged.flavors)} and metadata {logged.metadata}; "
        f"load_model reads XGBoost models and torch models logged by mlloop.training.train "
        f"(metadata {MODEL_TYPE_KEY}=torch). Retrain it with --model xgboost or --model torch."
    )


def model_size_mb(model: Any) -> float:
    """Return a model's size in its saved safe format, in MB: XGBoost UBJ or the torch state dict.

    A calibrated model is sized by the model it wraps (its calibration is two numbers).

    Raises:
        TypeError: when the model is of neither type.
    """
    from mlloop.training.calibration import unwrap

    model = unwrap(model)[0]
    if hasattr(model, "get_booster"):
        return len(model.get_booster().save_raw(raw_format="ubj")) / 1e6
    if hasattr(model, "state_dict_bytes"):
        return len(model.state_dict_bytes()) / 1e6
    raise TypeError(
        f"cannot size a {type(model).__name__}: expected an XGBoost model or a torch TabularModel "
        "(load registered models with load_model)"
    )


def package_versions() -> dict[str, str]:
    """Return the installed versions of the packages a model depends on."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def score_model(name: str, model: Any, matrix: pd.DataFrame) -> ScoredModel:
    """Score ``matrix`` with a model of either type, timing it (ms per 1,000 rows) and sizing it (MB)."""
    from mlloop.promotion import ScoredModel

    started = time.perf_counter()
    scores = model.scores(matrix)
    latency = (time.perf_counter() - started) * 1e6 / max(len(matrix), 1)
    return ScoredModel(name, scores, batch_latency_ms_per_1k_rows=latency, size_mb=model_size_mb(model))
