"""What the service scores with: the champion loaded from the registry, its feature spec, and history.

A ``ServedModel`` is immutable: the model, the feature spec and columns it was trained on (from its
snapshot manifest) and its decision threshold (the gate's threshold at the fixed precision, from its
run; none for a regression model, which serves its predicted value).
Requests are scored with the *same* feature code as training (``feature_arrays``, the core of
``build_features``, called on numpy arrays): the service keeps each entity's recent events
(``OnlineHistory``) and passes them as context, so history features of a request see exactly the
events before it that the service has seen or was seeded with.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlloop.features.build import (
    HistoryEvents,
    categorical_dtype,
    epoch_nanoseconds,
    feature_arrays,
    feature_frame,
    model_matrix,
)
from mlloop.features.spec import FeatureSpec, feature_columns
from mlloop.tasks import BINARY, TaskSpec, task_spec

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlloop.storage import Storage
    from mlloop.usecase import UseCase

log = logging.getLogger(__name__)
THRESHOLD_METRIC = "holdout_threshold_at_precision"
_NS_PER_S = 1_000_000_000


class NoChampionError(RuntimeError):
    """Raised when the registry has no version under the followed alias yet."""


@dataclass(frozen=True)
class ServedModel:
    """A registered model version ready to score: model, feature spec, columns and threshold."""

    name: str
    version: str
    run_id: str
    model: Any
    spec: FeatureSpec
    columns: tuple[str, ...]
    threshold: float | None  # None: a regression model (no decision)
    model_type: str
    predict: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    task: TaskSpec = BINARY


Features = Mapping[str, np.ndarray]


def predictor(model: Any, spec: FeatureSpec, columns: Sequence[str]) -> Callable[[Features], np.ndarray]:
    """Return ``features -> served numbers`` (positive-class scores or predicted values) for a ``load_model``
    model.

    ``features`` is what ``feature_arrays`` returns. The general path is the training one: the
    ``build_features`` frame, ``model_matrix``, then ``predict_proba``. For XGBoost, a fast path reads
    the arrays straight into a float32 matrix (categoricals as their codes in the spec's vocabulary)
    and scores it with one thread, then applies the model's calibration: for the small batches a service
    sees, the pandas conversion and OpenMP start-up cost far more than the trees. It is used only if it
    reproduces the general path on a probe covering every category.
    """
    from mlloop.training.calibration import as_served, unwrap

    columns = list(columns)
    raw, calibration = unwrap(model)
    served = as_served(model)

    def general(features: Features) -> np.ndarray:
        frame = model_matrix(feature_frame(features, spec), spec, columns)
        return np.asarray(served.scores(frame))

    get_booster = getattr(raw, "get_booster", None)
    booster = get_booster().copy() if get_booster is not None else None
    if booster is None or list(booster.feature_names or []) != columns:
        return general
    booster.set_param({"nthread": 1})
    try:  # early stopping: predict_proba stops at the best iteration, and so must this
        trees = (0, int(raw.best_iteration) + 1)
    except (AttributeError, ValueError, TypeError):
        trees = (0, 0)
    categorical = {c for c in columns if c in spec.categorical}

    def fast(features: Features) -> np.ndarray:
        matrix = np.empty((len(features[columns[0]]), len(columns)), dtype=np.float32)
        for i, column in enumerate(columns):
            values = features[column]
            matrix[:, i] = np.where(values < 0, np.nan, values) if column in categorical else values
        scores = booster.inplace_predict(matrix, iteration_range=trees, validate_features=False)
        return calibration.apply(scores)

    probe = _probe_features(spec)
    if not np.allclose(fast(probe), general(probe), rtol=0, atol=1e-6):
        log.warning("The model's category codes differ from the spec's vocabulary; scoring through pandas")
        return general
    return fast


def _probe_features(spec: FeatureSpec, rows: int = 64) -> dict[str, np.ndarray]:
    """Return features whose rows cycle through every category (and null) and spread the numerics."""
    rng = np.random.default_rng(0)
    data: dict[str, np.ndarray] = {}
    for column in feature_columns(spec):
        if column in spec.categorical:
            data[column] = (
                np.arange(rows) % (len(categorical_dtype(spec.categorical[column]).categories) + 1) - 1
            )
        else:  # float32-exact values: both paths see the same numbers
            data[column] = rng.lognormal(1.0, 1.5, rows).astype(np.float32).astype(np.float64)
    return data


def load_served_model(
    client: MlflowClient, name: str, alias: str, version: Any = None, task: str = "binary"
) -> ServedModel:
    """Load ``models:/<name>@<alias>`` with its feature spec (snapshot manifest) and threshold.

    ``version`` (a ModelVersion the caller just resolved from the alias) saves asking the registry again.
    ``task`` is the use case's: a regression model has no threshold.

    Raises:
        NoChampionError: when no version carries the alias.
    """
    import mlflow

    from mlloop.registry.champion import champion_version
    from mlloop.training.model_io import MODEL_TYPE_KEY, load_model
    from mlloop.training.snapshot import SnapshotManifest

    version = version or champion_version(client, name, alias)
    if version is None:
        raise NoChampionError(
            f"registered model {name!r} has no version with alias {alias!r} yet; train and promote one "
            "(make demo, or trigger the use case's train DAG in Airflow)"
        )
    started = time.perf_counter()
    model = load_model(f"models:/{name}/{version.version}")
    manifest = SnapshotManifest.model_validate(
        mlflow.artifacts.load_dict(f"runs:/{version.run_id}/snapshot/manifest.json")
    )
    spec = task_spec(task)
    metrics = client.get_run(version.run_id).data.metrics
    threshold = metrics.get(THRESHOLD_METRIC) if spec.calibrated else None
    if spec.calibrated and (threshold is None or not math.isfinite(threshold)):
        log.warning(
            "%s v%s has no %s metric (no score reached the gate's precision); flagging at 0.5",
            name,
            version.version,
            THRESHOLD_METRIC,
        )
        threshold = 0.5
    served = ServedModel(
        name=name,
        version=str(version.version),
        run_id=version.run_id,
        model=model,
        spec=manifest.spec(),
        columns=tuple(manifest.feature_columns),
        threshold=None if threshold is None else float(threshold),
        model_type=version.tags.get(MODEL_TYPE_KEY, "xgboost"),
        predict=predictor(model, manifest.spec(), manifest.feature_columns),
        task=spec,
    )
    log.info(
        "Loaded %s v%s (%s, %s, %d features, threshold %s) in %.1fs",
        name,
        served.version,
        served.model_type,
        spec.name,
        len(served.columns),
        "none" if served.threshold is None else f"{served.threshold:.4f}",
        time.perf_counter() - started,
    )
    return served


class OnlineHistory:
    """Each entity's recent events (time, value, key), kept for the spec's longest window.

    Thread-safe. Events are de-duplicated by key, so a retried request does not count twice.
    """

    def __init__(self, entity_column: str, value_column: str, lookback_s: float) -> None:
        """Keep events of ``entity_column`` with their ``value_column`` for ``lookback_s`` seconds."""
        self.entity_column = entity_column
        self.value_column = value_column
        self.lookback_ns = int(lookback_s * _NS_PER_S)
        self._events: dict[str, list[tuple[int, float, str]]] = {}
        self._keys: set[str] = set()
        self._lock = threading.Lock()
        self._latest_ns = 0
        self._since_prune = 0

    def __len__(self) -> int:
        """Return the number of events held."""
        return len(self._keys)

    def matches(self, spec: FeatureSpec) -> bool:
        """Return whether this history serves ``spec``'s history features."""
        history = spec.history
        return (
            history is not None
            and history.entity_column == self.entity_column
            and history.value_column == self.value_column
            and history.lookback.total_seconds() * _NS_PER_S <= self.lookback_ns
        )

    def events(self, entities: Sequence[Any]) -> HistoryEvents | None:
        """Return the held events of ``entities`` (None when there are none)."""
        held: list[tuple[Any, int, float]] = []
        with self._lock:
            for entity in set(entities):
                held.extend((entity, when, value) for when, value, _ in self._events.get(entity, ()))
        if not held:
            return None
        owners, times, values = zip(*held, strict=True)
        return HistoryEvents(
            entities=np.array(owners, dtype=object),
            times_ns=np.array(times, dtype=np.int64),
            values=np.array(values, dtype=np.float64),
        )

    def add(
        self, entities: Sequence[Any], times_ns: Sequence[int], values: Sequence[float], keys: Sequence[str]
    ) -> None:
        """Record events; drop what fell out of the lookback now and then.

        "Now" is the newest event of the latest call, not of all calls: traffic replayed from the past
        (a backfill, a simulation) after newer events were seeded must keep its own recent history.
        """
        with self._lock:
            for entity, when, value, key in zip(entities, times_ns, values, keys, strict=True):
                if entity is None or key in self._keys:
                    continue
                self._events.setdefault(entity, []).append((int(when), float(value), key))
                self._keys.add(key)
            if len(times_ns):
                self._latest_ns = int(max(times_ns))
            self._since_prune += len(keys)
            if self._since_prune >= 10_000:
                self._prune()

    def _prune(self) -> None:
        """Forget events older than the lookback before the latest traffic (lock held); newer ones stay."""
        horizon = self._latest_ns - self.lookback_ns
        for entity in list(self._events):
            kept = [e for e in self._events[entity] if e[0] >= horizon]
            for dropped in self._events[entity]:
                if dropped[0] < horizon:
                    self._keys.discard(dropped[2])
            if kept:
                self._events[entity] = kept
            else:
                del self._events[entity]
        self._since_prune = 0

    @classmethod
    def for_spec(cls, spec: FeatureSpec) -> OnlineHistory | None:
        """Return an empty history for ``spec`` (None when it has no history features)."""
        if spec.history is None:
            return None
        return cls(
            spec.history.entity_column, spec.history.value_column, spec.history.lookback.total_seconds()
        )

    def seed(self, storage: Storage, use_case: UseCase, days: int | None = None) -> int:
        """Load the newest validated days covering the lookback; return the number of events held."""
        from mlloop.storage.store import partition_key

        wanted = days if days is not None else math.ceil(self.lookback_ns / (86_400 * _NS_PER_S)) + 1
        partitions = sorted(set(storage.iter_partitions("validated", use_case.dataset)))[-wanted:]
        for day in partitions:
            for key in storage.list(partition_key("validated", use_case.dataset, day)):
                if not key.endswith(".parquet"):
                    continue
                frame = storage.read_frame(key)
                times = pd.DatetimeIndex(frame[use_case.time_column]).as_unit("ns").asi8
                self.add(
                    frame[self.entity_column].tolist(),
                    times.tolist(),
                    frame[self.value_column].to_numpy(dtype=np.float64).tolist(),
                    frame[use_case.key_column].astype(str).tolist(),
                )
        log.info("History seeded from %d validated day(s): %d events", len(partitions), len(self))
        return len(self)


def request_inputs(
    rows: Sequence[Any], use_case: UseCase, spec: FeatureSpec
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Return validated request rows (pydantic models) as ``feature_arrays`` inputs and event times (ns)."""
    dicts = [row.__dict__ for row in rows]
    numeric = {*spec.numeric, *spec.log1p}
    if spec.history is not None:
        numeric.add(spec.history.value_column)
    inputs: dict[str, np.ndarray] = {}
    for column in spec.input_columns():
        values = [d[column] for d in dicts]
        if column in numeric:
            inputs[column] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        else:
            inputs[column] = np.array(values, dtype=object)
    return inputs, epoch_nanoseconds([d[use_case.time_column] for d in dicts])


def score_rows(
    served: ServedModel, rows: Sequence[Any], use_case: UseCase, history: OnlineHistory | None
) -> np.ndarray:
    """Score validated request rows: the training feature code over history + rows, then the model.

    The rows are added to ``history`` afterwards, so later requests see them.
    """
    spec = served.spec
    hist_spec = spec.history
    inputs, event_ns = request_inputs(rows, use_case, spec)
    use_history = hist_spec is not None and history is not None
    context = history.events(inputs[hist_spec.entity_column].tolist()) if use_history else None
    features = feature_arrays(spec, inputs, event_ns, history=hist_spec, context=context)
    scores = served.predict(features)
    if use_history:
        history.add(
            inputs[hist_spec.entity_column].tolist(),
            event_ns.tolist(),
            inputs[hist_spec.value_column].tolist(),
            [str(row.__dict__[use_case.key_column]) for row in rows],
        )
    return np.asarray(scores, dtype=np.float64)
