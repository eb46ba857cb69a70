"""What the service scores with: the champion loaded from the registry, its feature spec, and history.

A ``ServedModel`` is immutable: the model, the feature spec and columns it was trained on (from its
snapshot manifest) and its decision threshold (the gate's threshold at the fixed precision, from its
run). Requests are scored with the *same* ``build_features`` as training: the service keeps each
entity's recent events (``OnlineHistory``) and prepends them to a batch, so history features of a
request see exactly the events before it that the service has seen or was seeded with.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlloop.features.build import build_features, categorical_dtype
from mlloop.features.spec import FeatureSpec

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlloop.storage import Storage
    from mlloop.usecase import UseCase

log = logging.getLogger(__name__)
THRESHOLD_METRIC = "holdout_threshold_at_precision"
_NS_PER_S = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


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
    threshold: float
    model_type: str
    predict: Callable[[pd.DataFrame], np.ndarray]


def predictor(model: Any, spec: FeatureSpec, columns: Sequence[str]) -> Callable[[pd.DataFrame], np.ndarray]:
    """Return ``features -> positive-class scores`` for a model loaded by ``load_model``.

    ``features`` is what ``build_features`` returns. The general path is the training one:
    ``model_matrix`` then ``predict_proba``. For XGBoost, a fast path reads the columns straight into a
    float32 array (categoricals as their codes in the spec's vocabulary) and scores it with one thread:
    for the small batches a service sees, the pandas conversion and OpenMP start-up cost far more than
    the trees. It is used only if it reproduces the general path on a probe covering every category.
    """
    columns = list(columns)

    def general(features: pd.DataFrame) -> np.ndarray:
        from mlloop.training.train import model_matrix

        return np.asarray(model.predict_proba(model_matrix(features, spec, columns)))[:, 1]

    get_booster = getattr(model, "get_booster", None)
    booster = get_booster().copy() if get_booster is not None else None
    if booster is None or list(booster.feature_names or []) != columns:
        return general
    booster.set_param({"nthread": 1})
    try:  # early stopping: predict_proba stops at the best iteration, and so must this
        trees = (0, int(model.best_iteration) + 1)
    except (AttributeError, ValueError, TypeError):
        trees = (0, 0)
    categorical = {c: categorical_dtype(spec.categorical[c]) for c in columns if c in spec.categorical}

    def fast(features: pd.DataFrame) -> np.ndarray:
        matrix = np.empty((len(features), len(columns)), dtype=np.float32)
        for i, column in enumerate(columns):
            values = features[column]
            if column in categorical:
                if not (
                    isinstance(values.dtype, pd.CategoricalDtype)
                    and values.dtype.categories.equals(categorical[column].categories)
                ):
                    return general(features)  # not built by build_features: take the general path
                codes = values.cat.codes.to_numpy()
                matrix[:, i] = np.where(codes < 0, np.nan, codes)
            else:
                matrix[:, i] = values.to_numpy(dtype=np.float32, na_value=np.nan)
        return np.asarray(booster.inplace_predict(matrix, iteration_range=trees, validate_features=False))

    probe = _probe_matrix(spec, columns)
    if not np.allclose(fast(probe), general(probe), rtol=0, atol=1e-6):
        log.warning("The model's category codes differ from the spec's vocabulary; scoring through pandas")
        return general
    return fast


def _probe_matrix(spec: FeatureSpec, columns: Sequence[str], rows: int = 64) -> pd.DataFrame:
    """Return a model matrix whose rows cycle through every category (and null) and spread the numerics."""
    rng = np.random.default_rng(0)
    data: dict[str, Any] = {}
    for column in columns:
        if column in spec.categorical:
            dtype = categorical_dtype(spec.categorical[column])
            codes = np.arange(rows) % (len(dtype.categories) + 1) - 1  # -1: null
            data[column] = pd.Categorical.from_codes(codes, dtype=dtype)
        else:
            data[column] = rng.lognormal(1.0, 1.5, rows).astype(np.float32)
    return pd.DataFrame(data)


def load_served_model(client: MlflowClient, name: str, alias: str) -> ServedModel:
    """Load ``models:/<name>@<alias>`` with its feature spec (snapshot manifest) and threshold.

    Raises:
        NoChampionError: when no version carries the alias.
    """
    import mlflow

    from mlloop.registry.champion import champion_version
    from mlloop.training.snapshot import SnapshotManifest
    from mlloop.training.train import MODEL_TYPE_KEY, load_model

    version = champion_version(client, name, alias)
    if version is None:
        raise NoChampionError(
            f"registered model {name!r} has no version with alias {alias!r} yet; train and promote one "
            "(make demo, or trigger train_model in Airflow)"
        )
    started = time.perf_counter()
    model = load_model(f"models:/{name}/{version.version}")
    manifest = SnapshotManifest.model_validate(
        mlflow.artifacts.load_dict(f"runs:/{version.run_id}/snapshot/manifest.json")
    )
    metrics = client.get_run(version.run_id).data.metrics
    threshold = metrics.get(THRESHOLD_METRIC)
    if threshold is None or not math.isfinite(threshold):
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
        threshold=float(threshold),
        model_type=version.tags.get(MODEL_TYPE_KEY, "xgboost"),
        predict=predictor(model, manifest.spec(), manifest.feature_columns),
    )
    log.info(
        "Loaded %s v%s (%s, %d features, threshold %.4f) in %.1fs",
        name,
        served.version,
        served.model_type,
        len(served.columns),
        served.threshold,
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

    def context(self, entities: Sequence[Any]) -> list[tuple[str, int, float]]:
        """Return (entity, time ns, value) of the held events of ``entities``."""
        out: list[tuple[str, int, float]] = []
        with self._lock:
            for entity in set(entities):
                for when, value, _ in self._events.get(entity, ()):
                    out.append((entity, when, value))
        return out

    def add(
        self, entities: Sequence[Any], times_ns: Sequence[int], values: Sequence[float], keys: Sequence[str]
    ) -> None:
        """Record events; drop what fell out of the lookback now and then."""
        with self._lock:
            for entity, when, value, key in zip(entities, times_ns, values, keys, strict=True):
                if entity is None or key in self._keys:
                    continue
                self._events.setdefault(entity, []).append((int(when), float(value), key))
                self._keys.add(key)
                self._latest_ns = max(self._latest_ns, int(when))
            self._since_prune += len(keys)
            if self._since_prune >= 10_000:
                self._prune()

    def _prune(self) -> None:
        """Forget events older than the lookback before the newest event seen (lock held)."""
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


def request_frame(rows: Sequence[Any], use_case: UseCase) -> pd.DataFrame:
    """Return validated request rows (pydantic models) as a frame with the use case's column dtypes."""
    columns = [c for c in use_case.schema_ if c != use_case.target_column]
    dicts = [row.__dict__ for row in rows]
    data: dict[str, Any] = {}
    for column in columns:
        values = [d[column] for d in dicts]
        kind = use_case.schema_[column]
        if kind == "datetime":
            ns = [(v - _EPOCH) // _MICROSECOND * 1000 for v in values]
            data[column] = pd.DatetimeIndex(np.array(ns, dtype="datetime64[ns]")).tz_localize("UTC")
        elif kind == "float":
            data[column] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        elif kind == "integer" and None not in values:
            data[column] = np.array(values, dtype=np.int64)
        else:
            data[column] = np.array(values, dtype=object)
    return pd.DataFrame(data)


def score_frame(
    served: ServedModel, frame: pd.DataFrame, use_case: UseCase, history: OnlineHistory | None
) -> np.ndarray:
    """Score request rows: features by ``build_features`` over history + rows, then the model.

    The rows are added to ``history`` afterwards, so later requests see them.
    """
    spec = served.spec
    hist_spec = spec.history
    use_history = hist_spec is not None and history is not None
    context = None
    if use_history:
        past = history.context(frame[hist_spec.entity_column].tolist())
        if past:
            entities, times, values = zip(*past, strict=True)
            context = pd.DataFrame(
                {
                    hist_spec.entity_column: np.array(entities, dtype=object),
                    use_case.time_column: pd.DatetimeIndex(
                        np.array(times, dtype="datetime64[ns]")
                    ).tz_localize("UTC"),
                    hist_spec.value_column: np.array(values, dtype=np.float64),
                }
            )
    features = build_features(
        frame, spec, key_column=use_case.key_column, time_column=use_case.time_column, context=context
    )
    scores = served.predict(features)
    if use_history:
        history.add(
            frame[hist_spec.entity_column].tolist(),
            pd.DatetimeIndex(frame[use_case.time_column]).as_unit("ns").asi8.tolist(),
            frame[hist_spec.value_column].to_numpy(dtype=np.float64).tolist(),
            frame[use_case.key_column].astype(str).tolist(),
        )
    return np.asarray(scores, dtype=np.float64)
