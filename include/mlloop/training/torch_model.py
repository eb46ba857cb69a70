"""A PyTorch tabular network on the model matrix: embeddings for categoricals, standardised numerics, an MLP.

Training puts the whole data on the device once as tensors and steps through large slices of it, so a
GPU is never starved by a host-side data loader. Class imbalance is handled by ``pos_weight`` in the
loss; early stopping keeps the epoch of best validation PR-AUC. A regression network (``task="regression"``)
fits the standardised target on mean squared error, keeps the epoch of lowest validation RMSE, and predicts
the value in the target's units. On the CPU a seed gives identical
weights and scores run after run.

The saved model is two files and nothing executable: the state dict (``torch.save(state_dict)``,
read back with ``torch.load(..., weights_only=True)``) and a JSON of the preprocessing (columns,
vocabularies, train-set means and stds) and the architecture. No Python object is pickled.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mlloop.features.spec import UNKNOWN_CATEGORY
from mlloop.promotion.metrics import pr_auc

log = logging.getLogger("mlloop.training")

STATE_DICT_FILE = "state_dict.pt"
PREPROCESSING_FILE = "preprocessing.json"
FORMAT_VERSION = 1
# Standardised values beyond this are heavy-tail outliers (amounts, sums); clipped so no row dominates a step.
CLIP_STD = 10.0
SCORING_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class TabularParams:
    """Hyperparameters of the network and of its training."""

    hidden_sizes: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    max_embedding_dim: int = 16
    missing_indicators: bool = True
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    batch_size: int = 2048
    max_epochs: int = 40
    patience: int = 6
    seed: int = 42


@dataclass(frozen=True)
class Preprocessing:
    """How a model matrix becomes tensors; fitted on the training rows, JSON-able.

    A missing or non-finite number reads as the train-set mean (0 once standardised), flagged by its
    indicator input. A categorical value outside its vocabulary, or a missing one, takes the extra last
    index (or the vocabulary's ``UNKNOWN_CATEGORY`` slot for a non-null unseen value, when it has one).
    """

    numeric: list[str]
    means: list[float]
    stds: list[float]
    indicators: list[str]  # numeric columns that also get a 0/1 "was missing" input
    categorical: dict[str, list[str]]

    @classmethod
    def fit(cls, matrix: pd.DataFrame, *, missing_indicators: bool = True) -> Preprocessing:
        """Learn column roles, vocabularies (the categorical dtypes') and train-set means and stds."""
        categorical = {
            str(c): [str(v) for v in matrix[c].cat.categories]
            for c in matrix.columns
            if isinstance(matrix[c].dtype, pd.CategoricalDtype)
        }
        numeric = [str(c) for c in matrix.columns if c not in categorical]
        values = matrix[numeric].to_numpy(dtype=np.float64, na_value=np.nan)
        observed = np.isfinite(values)
        counts = np.maximum(observed.sum(axis=0), 1)
        means = np.where(observed, values, 0.0).sum(axis=0) / counts
        stds = np.sqrt(np.where(observed, (values - means) ** 2, 0.0).sum(axis=0) / counts)
        stds = np.where(stds > 0, stds, 1.0)
        indicators = [c for c, full in zip(numeric, observed.all(axis=0), strict=True) if not full]
        return cls(
            numeric=numeric,
            means=[float(v) for v in means],
            stds=[float(v) for v in stds],
            indicators=indicators if missing_indicators else [],
            categorical=categorical,
        )

    @property
    def columns(self) -> list[str]:
        """Return the input columns the model reads."""
        return [*self.numeric, *self.categorical]

    @property
    def numeric_width(self) -> int:
        """Return the number of numeric inputs: standardised values, then missing indicators."""
        return len(self.numeric) + len(self.indicators)

    @property
    def cardinalities(self) -> list[int]:
        """Return each categorical's embedding rows: its vocabulary plus the unknown-or-missing index."""
        return [len(v) + 1 for v in self.categorical.values()]

    def encode(self, matrix: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Return (float32 numeric inputs, int64 category indices) for the rows of ``matrix``.

        Raises:
            ValueError: naming the columns the matrix lacks.
        """
        missing = [c for c in self.columns if c not in matrix.columns]
        if missing:
            raise ValueError(
                f"the torch model needs columns {missing} that the input lacks (it has "
                f"{list(matrix.columns)}); build the input with the model's feature spec (model_matrix)"
            )
        values = matrix[self.numeric].to_numpy(dtype=np.float64, na_value=np.nan)
        was_missing = ~np.isfinite(values)  # NaN, and infinities too: no train-set scale fits them
        standardised = np.clip((values - self.means) / self.stds, -CLIP_STD, CLIP_STD)
        standardised[was_missing] = 0.0
        flags = was_missing[:, [self.numeric.index(c) for c in self.indicators]]
        numeric = np.concatenate([standardised, flags], axis=1).astype(np.float32)
        categorical = np.empty((len(matrix), len(self.categorical)), dtype=np.int64)
        for i, (column, vocabulary) in enumerate(self.categorical.items()):
            categorical[:, i] = _category_indices(matrix[column], vocabulary)
        return numeric, categorical


def _category_indices(values: pd.Series, vocabulary: list[str]) -> np.ndarray:
    """Return vocabulary positions; unseen non-null values go to UNKNOWN_CATEGORY if declared, else last."""
    codes = pd.Categorical(values.astype(object), categories=vocabulary).codes.astype(np.int64)
    unseen = codes < 0
    if UNKNOWN_CATEGORY in vocabulary:
        codes[unseen & values.notna().to_numpy()] = vocabulary.index(UNKNOWN_CATEGORY)
    codes[codes < 0] = len(vocabulary)
    return codes


@dataclass(frozen=True)
class Architecture:
    """The network's shape: all that is needed to rebuild it before loading a state dict."""

    numeric_width: int
    cardinalities: list[int]
    embedding_dims: list[int]
    hidden_sizes: list[int]
    dropout: float

    @classmethod
    def for_data(cls, preprocessing: Preprocessing, params: TabularParams) -> Architecture:
        """Size embeddings by cardinality (half of it, capped) and take the MLP from the params."""
        cards = preprocessing.cardinalities
        return cls(
            numeric_width=preprocessing.numeric_width,
            cardinalities=cards,
            embedding_dims=[min(params.max_embedding_dim, (c + 1) // 2) for c in cards],
            hidden_sizes=list(params.hidden_sizes),
            dropout=params.dropout,
        )


class TabularNet(nn.Module):
    """Embeddings of the categoricals, concatenated with the numeric inputs, through an MLP to one logit."""

    def __init__(self, architecture: Architecture) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, d)
            for c, d in zip(architecture.cardinalities, architecture.embedding_dims, strict=True)
        )
        for embedding in self.embeddings:
            # Small: a category never seen in training (unknown, missing) stays near the centre.
            nn.init.normal_(embedding.weight, std=0.01)
        layers: list[nn.Module] = []
        width = architecture.numeric_width + sum(architecture.embedding_dims)
        for hidden in architecture.hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(architecture.dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        """Return one logit per row."""
        parts = [numeric, *(emb(categorical[:, i]) for i, emb in enumerate(self.embeddings))]
        return self.mlp(torch.cat(parts, dim=1)).squeeze(1)


@dataclass(frozen=True)
class DeviceData:
    """Encoded rows living on one device: numeric inputs, category indices and (when known) labels."""

    numeric: torch.Tensor
    categorical: torch.Tensor
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.numeric.shape[0]

    def head(self, rows: int) -> DeviceData:
        """Return the first ``rows`` rows (views on the same device, no copy)."""
        labels = None if self.labels is None else self.labels[:rows]
        return DeviceData(self.numeric[:rows], self.categorical[:rows], labels)


def to_device(
    preprocessing: Preprocessing, matrix: pd.DataFrame, labels: np.ndarray | None, device: str
) -> DeviceData:
    """Encode ``matrix`` and move it (and the labels) to ``device`` in one transfer each."""
    numeric, categorical = preprocessing.encode(matrix)
    return DeviceData(
        torch.from_numpy(numeric).to(device),
        torch.from_numpy(categorical).to(device),
        None if labels is None else torch.as_tensor(labels, dtype=torch.float32, device=device),
    )


def train_epoch(
    net: TabularNet,
    data: DeviceData,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    *,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """Run one epoch over ``data`` in shuffled slices on its device; return the mean training loss."""
    if data.labels is None:
        raise ValueError("train_epoch needs labelled rows; pass the labels to to_device")
    net.train()
    order = torch.randperm(len(data), generator=generator, device=data.numeric.device)
    total = torch.zeros((), device=data.numeric.device)
    for start in range(0, len(data), batch_size):
        rows = order[start : start + batch_size]
        loss = loss_fn(net(data.numeric[rows], data.categorical[rows]), data.labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(rows)  # stays on the device: one sync per epoch, not per batch
    return float(total) / max(len(data), 1)


@torch.no_grad()
def predict_logits(net: TabularNet, data: DeviceData, batch_rows: int = SCORING_BATCH_ROWS) -> np.ndarray:
    """Return the network's logits for every row of ``data`` (eval mode, in large slices), as float64."""
    net.eval()
    chunks = [
        net(data.numeric[s : s + batch_rows], data.categorical[s : s + batch_rows])
        for s in range(0, len(data), batch_rows)
    ]
    if not chunks:
        return np.empty(0, dtype=np.float64)
    return torch.cat(chunks).double().cpu().numpy()


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    """Return the logistic function of ``logits`` without overflow warnings."""
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


@dataclass
class TabularModel:
    """A fitted network and its preprocessing; scores a model matrix like a scikit-learn classifier.

    ``logit_offset`` undoes the ``pos_weight`` of training (which multiplies the odds by it), so
    ``predict_proba`` returns positive-class probabilities at the data's base rate, not inflated ones.
    A regression network's output is the standardised target: ``predict`` maps it back with
    ``target_mean`` and ``target_scale``.
    """

    net: TabularNet
    preprocessing: Preprocessing
    architecture: Architecture
    logit_offset: float
    device: str = "cpu"
    training: dict[str, Any] = field(default_factory=dict)
    task: str = "binary"
    target_mean: float = 0.0
    target_scale: float = 1.0

    def predict(self, matrix: pd.DataFrame) -> np.ndarray:
        """Return the predicted value per row of ``matrix`` (a regression network), in the target's units."""
        outputs = predict_logits(self.net, to_device(self.preprocessing, matrix, None, self.device))
        return outputs * self.target_scale + self.target_mean

    def scores(self, matrix: pd.DataFrame) -> np.ndarray:
        """Return the number this network serves per row: P(positive), or the predicted value (regression)."""
        return self.predict(matrix) if self.task == "regression" else self.predict_proba(matrix)[:, 1]

    def predict_proba(self, matrix: pd.DataFrame) -> np.ndarray:
        """Return an (n, 2) array of [P(negative), P(positive)] per row of ``matrix``."""
        logits = predict_logits(self.net, to_device(self.preprocessing, matrix, None, self.device))
        positive = _sigmoid(logits - self.logit_offset)
        return np.column_stack([1.0 - positive, positive])

    def state_dict_bytes(self) -> bytes:
        """Return the state dict as ``torch.save`` writes it (CPU tensors only)."""
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.net.state_dict().items()}, buffer)
        return buffer.getvalue()

    def size_mb(self) -> float:
        """Return the size of the saved state dict in MB."""
        return len(self.state_dict_bytes()) / 1e6

    def description(self) -> dict[str, Any]:
        """Return the JSON saved next to the state dict: preprocessing, architecture, offset, training."""
        return {
            "format_version": FORMAT_VERSION,
            "preprocessing": asdict(self.preprocessing),
            "architecture": asdict(self.architecture),
            "logit_offset": self.logit_offset,
            "task": self.task,
            "target_mean": self.target_mean,
            "target_scale": self.target_scale,
            "training": self.training,
            "torch_version": torch.__version__,
        }

    def save(self, directory: Path) -> dict[str, Path]:
        """Write the state dict and the preprocessing JSON into ``directory``; return their paths by name."""
        directory.mkdir(parents=True, exist_ok=True)
        files = {"state_dict": directory / STATE_DICT_FILE, "preprocessing": directory / PREPROCESSING_FILE}
        files["state_dict"].write_bytes(self.state_dict_bytes())
        files["preprocessing"].write_text(json.dumps(self.description(), indent=2))
        return files

    @classmethod
    def load(cls, state_dict: Path, preprocessing: Path, device: str = "cpu") -> TabularModel:
        """Rebuild the network from the JSON and load the weights with ``weights_only=True`` (no pickle).

        Raises:
            ValueError: when the JSON has another format version or the weights do not fit the architecture.
        """
        described = json.loads(Path(preprocessing).read_text())
        if described.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{preprocessing} has format version {described.get('format_version')!r}; this code reads "
                f"version {FORMAT_VERSION}. Load it with the mlloop version that trained it, or retrain."
            )
        architecture = Architecture(**described["architecture"])
        net = TabularNet(architecture)
        weights = torch.load(state_dict, map_location="cpu", weights_only=True)
        try:
            net.load_state_dict(weights)
        except RuntimeError as err:
            raise ValueError(
                f"the weights in {state_dict} do not match the architecture in {preprocessing}: {err}. "
                "The two files must come from the same saved model."
            ) from err
        return cls(
            net=net.to(device),
            preprocessing=Preprocessing(**described["preprocessing"]),
            architecture=architecture,
            logit_offset=float(described["logit_offset"]),
            device=device,
            training=described.get("training", {}),
            task=described.get("task", "binary"),
            target_mean=float(described.get("target_mean", 0.0)),
            target_scale=float(described.get("target_scale", 1.0)),
        )


def fit_tabular(
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    x_val: pd.DataFrame,
    y_val: np.ndarray,
    params: TabularParams,
    device: str = "cpu",
    task: str = "binary",
) -> TabularModel:
    """Train the network on ``device``, keeping the weights of the epoch with the best validation score.

    Binary: BCE with ``pos_weight``, best validation PR-AUC. Regression: MSE on the standardised target,
    lowest validation RMSE.

    Raises:
        ValueError: when the training or the validation labels lack a class (binary).
    """
    if task == "regression":
        return _fit_regression(x_train, y_train, x_val, y_val, params, device)
    for part, labels in (("training", y_train), ("validation", y_val)):
        if not 0 < int(np.sum(labels)) < len(labels):
            raise ValueError(
                f"the {part} rows hold {int(np.sum(labels))} positives out of {len(labels)}; the torch "
                "model needs both classes in each. Widen the training window or wait for more labels."
            )
    positives = int(np.sum(y_train))
    pos_weight = (len(y_train) - positives) / positives
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    net, preprocessing, architecture, stopped = _fit_network(
        x_train, y_train, x_val, params, device, loss_fn, lambda out: pr_auc(y_val, out), "PR-AUC"
    )
    best = stopped.pop("best_score")
    return TabularModel(
        net=net,
        preprocessing=preprocessing,
        architecture=architecture,
        logit_offset=float(np.log(pos_weight)),
        device=device,
        training={**stopped, "best_validation_pr_auc": best, "pos_weight": pos_weight},
    )


def _fit_regression(
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    x_val: pd.DataFrame,
    y_val: np.ndarray,
    params: TabularParams,
    device: str,
) -> TabularModel:
    """Fit the network on MSE of the standardised target, keeping the epoch of lowest validation RMSE."""
    mean, scale = float(np.mean(y_train)), float(np.std(y_train)) or 1.0
    standardised = (np.asarray(y_train, dtype=np.float64) - mean) / scale

    def negative_rmse(outputs: np.ndarray) -> float:
        return -float(np.sqrt(np.mean((outputs * scale + mean - y_val) ** 2)))

    net, preprocessing, architecture, stopped = _fit_network(
        x_train, standardised, x_val, params, device, nn.MSELoss(), negative_rmse, "-RMSE"
    )
    best = stopped.pop("best_score")
    return TabularModel(
        net=net,
        preprocessing=preprocessing,
        architecture=architecture,
        logit_offset=0.0,
        device=device,
        training={**stopped, "best_validation_rmse": -best},
        task="regression",
        target_mean=mean,
        target_scale=scale,
    )


def _fit_network(
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    x_val: pd.DataFrame,
    params: TabularParams,
    device: str,
    loss_fn: nn.Module,
    validation_score: Any,
    score_name: str,
) -> tuple[TabularNet, Preprocessing, Architecture, dict[str, Any]]:
    """Train epochs until ``validation_score`` (of the validation outputs; higher is better) stops rising.

    Returns the network at its best epoch, its preprocessing and architecture, and where it stopped.
    """
    torch.manual_seed(params.seed)  # weight init and dropout
    generator = torch.Generator(device=device).manual_seed(params.seed)  # batch order
    preprocessing = Preprocessing.fit(x_train, missing_indicators=params.missing_indicators)
    architecture = Architecture.for_data(preprocessing, params)
    train_data = to_device(preprocessing, x_train, y_train, device)
    val_data = to_device(preprocessing, x_val, None, device)
    net = TabularNet(architecture).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)

    best_score, best_epoch, best_state = -np.inf, 0, {}
    epoch = 0
    for epoch in range(1, params.max_epochs + 1):
        started = time.perf_counter()
        loss = train_epoch(
            net, train_data, optimizer, loss_fn, batch_size=params.batch_size, generator=generator
        )
        seconds = time.perf_counter() - started
        score = validation_score(predict_logits(net, val_data))
        log.info(
            "epoch %d/%d: train loss %.4f, validation %s %.4f (%.0f rows/s on %s)",
            epoch,
            params.max_epochs,
            loss,
            score_name,
            score,
            len(train_data) / max(seconds, 1e-9),
            device,
        )
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif epoch - best_epoch >= params.patience:
            break
    net.load_state_dict(best_state)
    log.info(
        "Torch stopped after %d epochs (best validation %s %.4f at epoch %d)",
        epoch,
        score_name,
        best_score,
        best_epoch,
    )
    stopped = {"best_epoch": best_epoch, "epochs_run": epoch, "best_score": float(best_score)}
    return net, preprocessing, architecture, stopped | {"params": asdict(params)}


def load_files(files: Mapping[str, str | Path], device: str = "cpu") -> TabularModel:
    """Load a model from the artifact files ``save`` names (``state_dict``, ``preprocessing``)."""
    return TabularModel.load(Path(files["state_dict"]), Path(files["preprocessing"]), device=device)
