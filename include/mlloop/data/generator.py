"""Synthetic card transactions, one UTC day per batch, with fraud labels that arrive later.

The generator stands in for a real source in the demo loop: ``generate_day`` returns one day's
delivery (a frame of raw transactions in the column order of ``usecases/card_fraud.yaml`` and the
Parquet bytes a source would drop) plus the ground truth, which a real system learns only days or
weeks later (chargebacks), so labels come separately with a ``label_time``.

How the data is made (broadly; the platform must not depend on these details):

- A stable customer population derived from the seed alone: each customer has a card number
  (16-digit, Luhn-valid), a home country, a birth date, an account-open date, a spending level and
  an activity level, so the same customer looks the same on every day (``account_age_days`` grows
  with the day). Customers keep joining: recent accounts come from the days just before the batch.
- Event times follow a daily cycle (quiet nights, busy afternoons and evenings, in UTC).
- Merchants belong to a category; the category drives amount (lognormal per category), the
  channel mix (card present, online, mobile, ATM) and, through the channel, the device.
- Most payments happen in the home country, in its currency; a few abroad, far from home.
- History-style features (transactions in the last hour and day, amount in the last day) follow
  each customer's activity level, with occasional bursts.
- Fraud is drawn from a hidden logistic model plus unobserved noise: it rises with amounts far above
  the customer's usual spend, online and mobile channels, young accounts, bursts of velocity,
  night hours, payments abroad and a few risky merchant categories. The base rate is about 1.5%.
  A model sees most of these only through proxies (distance for "abroad", the 24 h sum for
  "usual spend"), so it can learn the pattern well but never perfectly.

Scenarios (``SCENARIOS`` holds the one-line descriptions):

- ``none``: the clean reference behaviour.
- Drift (still valid data: same columns, no nulls, in range, unique ids):
  ``covariate_amount`` inflates all amounts (x1.6) without changing who commits fraud;
  ``covariate_new_categories`` moves a fifth of the payments to merchant categories never seen
  before; ``covariate_channel`` shifts the channel mix strongly to online and mobile; ``prior``
  multiplies the fraud rate by about four; ``concept`` keeps the inputs but moves the fraud
  pattern (small card-testing amounts at everyday merchants, in person, by day, older customers),
  so a model trained on ``none`` loses much of its skill; a model trained on as many ``concept`` days
  gets it back (the moved pattern is as learnable as the base one).
- Faults (each breaks the raw data contract in one clear way): ``fault_nulls``,
  ``fault_wrong_types``, ``fault_out_of_range``, ``fault_renamed_column``, ``fault_missing_column``,
  ``fault_duplicate_ids``, ``fault_empty`` and ``fault_malformed`` (the frame is clean, the
  delivered file is not readable Parquet).

Everything is deterministic for (seed, day, scenario) and fully vectorised (a million rows take a
few seconds). Run ``python -m mlloop.data.generator --help`` to write days to a folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlloop.data.scenarios import DRIFT_SCENARIOS, FAULT_SCENARIOS  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Public vocabulary
# --------------------------------------------------------------------------------------------------

COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "event_time",
    "customer_id",
    "card_number",
    "merchant_id",
    "merchant_category",
    "amount",
    "currency",
    "country",
    "channel",
    "device",
    "customer_age",
    "account_age_days",
    "tx_count_1h",
    "tx_count_24h",
    "amount_sum_24h",
    "distance_from_home_km",
)
LABEL_COLUMNS: tuple[str, ...] = ("transaction_id", "is_fraud", "label_time")

SCENARIOS: dict[str, str] = {
    "none": "Clean reference day: about 1.5% fraud from the base pattern.",
    "covariate_amount": "Amounts (and 24 h sums) inflated x1.6; who commits fraud is unchanged.",
    "covariate_new_categories": "A fifth of payments go to merchant categories never seen before.",
    "covariate_channel": "Channel mix shifts strongly from card-present to online and mobile.",
    "prior": "Fraud rate about four times the usual, same pattern.",
    "concept": "Same inputs, moved fraud pattern: small in-person daytime payments at everyday shops.",
    "fault_nulls": "About 5% nulls in amount and in merchant_id.",
    "fault_wrong_types": "amount delivered as text such as '12.50 EUR'.",
    "fault_out_of_range": "About 1% negative amounts and about 1% customer_age of 150.",
    "fault_renamed_column": "merchant_category delivered under the name 'mcc'.",
    "fault_missing_column": "The country column is missing.",
    "fault_duplicate_ids": "About 2% of rows repeat another row's transaction_id.",
    "fault_empty": "Zero rows (the columns are there).",
    "fault_malformed": "The delivered file is truncated and is not readable Parquet.",
}

ALLOWED_COUNTRIES: tuple[str, ...] = (
    "AT",
    "BE",
    "CH",
    "DE",
    "ES",
    "FI",
    "FR",
    "GB",
    "IE",
    "IT",
    "NL",
    "PT",
    "US",
)
ALLOWED_CURRENCIES: tuple[str, ...] = ("CHF", "EUR", "GBP", "USD")
ALLOWED_CHANNELS: tuple[str, ...] = ("card_present", "online", "mobile", "atm")
ALLOWED_DEVICES: tuple[str, ...] = (
    "pos_terminal",
    "atm_terminal",
    "desktop",
    "mobile_app",
    "mobile_web",
    "tablet",
)


@dataclass(frozen=True)
class _Category:
    """A merchant category: popularity, amount distribution, channel mix and fraud risk."""

    name: str
    weight: float
    median_eur: float
    sigma: float
    channels: tuple[float, float, float, float]  # card_present, online, mobile, atm
    base_risk: float
    concept_risk: float


_BASE_CATEGORIES: tuple[_Category, ...] = (
    _Category("grocery", 0.22, 35.0, 0.60, (0.86, 0.08, 0.06, 0.0), -0.6, 1.3),
    _Category("restaurants", 0.14, 28.0, 0.50, (0.82, 0.05, 0.13, 0.0), -0.4, 0.9),
    _Category("fuel", 0.08, 55.0, 0.35, (0.95, 0.0, 0.05, 0.0), -0.3, 1.4),
    _Category("retail", 0.14, 60.0, 0.80, (0.55, 0.30, 0.15, 0.0), 0.0, -0.2),
    _Category("electronics", 0.05, 220.0, 0.90, (0.35, 0.45, 0.20, 0.0), 1.3, -1.0),
    _Category("travel", 0.04, 380.0, 0.80, (0.10, 0.65, 0.25, 0.0), 0.6, -0.4),
    _Category("entertainment", 0.06, 30.0, 0.70, (0.40, 0.35, 0.25, 0.0), 0.1, -0.3),
    _Category("digital_goods", 0.06, 15.0, 0.90, (0.0, 0.55, 0.45, 0.0), 1.1, -1.0),
    _Category("health", 0.05, 45.0, 0.70, (0.80, 0.12, 0.08, 0.0), -0.5, 0.6),
    _Category("utilities", 0.04, 85.0, 0.50, (0.05, 0.70, 0.25, 0.0), -0.8, -0.6),
    _Category("cash_withdrawal", 0.06, 120.0, 0.60, (0.0, 0.0, 0.0, 1.0), 0.3, 0.8),
    _Category("jewelry", 0.015, 450.0, 0.90, (0.60, 0.35, 0.05, 0.0), 1.4, -0.6),
    _Category("gambling", 0.015, 40.0, 1.00, (0.0, 0.50, 0.50, 0.0), 1.0, -0.8),
    _Category("money_transfer", 0.03, 200.0, 1.00, (0.0, 0.50, 0.50, 0.0), 1.2, -0.6),
)
# Categories that only appear under covariate_new_categories (a drift, not a fault).
_NEW_CATEGORIES: tuple[_Category, ...] = (
    _Category("crypto_exchange", 0.35, 250.0, 1.00, (0.0, 0.50, 0.50, 0.0), 1.0, -0.5),
    _Category("buy_now_pay_later", 0.40, 90.0, 0.70, (0.20, 0.50, 0.30, 0.0), 0.3, 0.0),
    _Category("ev_charging", 0.25, 18.0, 0.40, (0.90, 0.0, 0.10, 0.0), -0.5, 0.5),
)
MERCHANT_CATEGORIES: tuple[str, ...] = tuple(c.name for c in _BASE_CATEGORIES)
NEW_MERCHANT_CATEGORIES: tuple[str, ...] = tuple(c.name for c in _NEW_CATEGORIES)

# --------------------------------------------------------------------------------------------------
# Fixed shape of the synthetic world
# --------------------------------------------------------------------------------------------------

_ALL_CATEGORIES = _BASE_CATEGORIES + _NEW_CATEGORIES
_CATEGORY_NAMES = np.array([c.name for c in _ALL_CATEGORIES], dtype=object)
_CAT_MEDIAN = np.array([c.median_eur for c in _ALL_CATEGORIES])
_CAT_SIGMA = np.array([c.sigma for c in _ALL_CATEGORIES])
_CAT_CHANNELS = np.array([c.channels for c in _ALL_CATEGORIES])
_CAT_MERCHANTS = np.array([max(30, round(c.weight * 40_000)) for c in _ALL_CATEGORIES])

_ONLINE, _MOBILE = ALLOWED_CHANNELS.index("online"), ALLOWED_CHANNELS.index("mobile")
# Rows: channel; columns: ALLOWED_DEVICES.
_CHANNEL_DEVICES = np.array(
    [
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.62, 0.0, 0.23, 0.15],
        [0.0, 0.0, 0.0, 0.85, 0.15, 0.0],
        [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    ]
)
_HOME_WEIGHTS = np.array([3, 4, 3, 22, 9, 2, 16, 14, 2, 9, 7, 3, 6], dtype=float)
_COUNTRY_CURRENCY = np.array(
    [
        ALLOWED_CURRENCIES.index({"CH": "CHF", "GB": "GBP", "US": "USD"}.get(c, "EUR"))
        for c in ALLOWED_COUNTRIES
    ]
)
_FX_FROM_EUR = np.array([0.95, 1.0, 0.86, 1.08])  # per ALLOWED_CURRENCIES
# Share of payments per UTC hour (Europe-centred daily cycle).
_HOUR_WEIGHTS = np.concatenate(
    [
        [0.9, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.4, 3.6, 4.4, 4.8, 5.2],  # 00-11 UTC
        [5.8, 5.6, 5.2, 5.0, 5.2, 5.8, 6.2, 6.0, 5.0, 3.8, 2.6, 1.6],  # 12-23 UTC
    ]
)
_BINS = np.array([453201, 476173, 491761, 522183, 535110, 548921], dtype=np.int64)

_EPOCH = dt.date(1950, 1, 1)  # customer keys count account-open days from here
_FIRST_DAY = dt.date(1980, 1, 1)
_LAST_DAY = dt.date(2199, 12, 31)
_SLOTS = 64  # customers opening an account per day
_NEW_ACCOUNT_SHARE = 0.05  # payments made from accounts opened in the last 90 days
_MAX_ACCOUNT_DAYS = 25 * 365
_AVG_TICKET_EUR = 50.0
_MS_PER_HOUR = 3_600_000
_NS_PER_MS = 1_000_000
_DAY_S = 86_400.0

_AMOUNT_INFLATION = 1.6
_NEW_CATEGORY_SHARE = 0.2
_CHANNEL_SHIFT = np.array([0.3, 3.0, 4.0, 1.0])  # multiplies the channel mix under covariate_channel
_PRIOR_SHIFT = 2.3  # logit shift under prior: about four times the fraud rate


@dataclass(frozen=True)
class _FraudPattern:
    """Weights of the hidden logistic fraud model."""

    intercept: float
    category: np.ndarray  # per _ALL_CATEGORIES
    channel: np.ndarray  # per ALLOWED_CHANNELS
    hour: np.ndarray  # per UTC hour
    new_account: float  # account younger than 30 days
    young_account: float  # account younger than 180 days
    abroad: float
    amount_up: float  # per unit of log(amount / usual), above the usual
    amount_down: float  # per unit of log(usual / amount), below the usual
    velocity: float  # per unit of log1p(tx_count_1h)
    senior: float  # customer aged 70 or more
    noise: float  # standard deviation of the unobserved part


def _hour_profile(weights: dict[range, float]) -> np.ndarray:
    """Return a 24-hour weight vector from {range of UTC hours: weight}."""
    profile = np.zeros(24)
    for hours, weight in weights.items():
        profile[list(hours)] = weight
    return profile


# Strong enough that a model can find it (a perfect model of the logit reaches PR-AUC ~0.5 at 1.5% fraud),
# noisy enough that it cannot be perfect.
_BASE_PATTERN = _FraudPattern(
    intercept=-9.2,
    category=np.array([2.0 * c.base_risk for c in _ALL_CATEGORIES]),
    channel=np.array([-1.0, 1.4, 1.0, 0.4]),
    hour=_hour_profile({range(0, 5): 2.8, range(5, 6): 1.2, range(22, 24): 0.8}),
    new_account=3.0,
    young_account=1.0,
    abroad=2.8,
    amount_up=2.0,
    amount_down=0.0,
    velocity=2.0,
    senior=0.6,
    noise=0.5,
)
# The moved pattern. As learnable as the base one at the closed loop's volume, so that a concept event tests the
# loop's recovery and not a harder world: its weights are the first draft's times 1.4, the intercept re-solved
# for the same ~1.5% rate. The two patterns differ in shape, so the yardsticks disagree; measured with the
# training code (mean of three starts, PR-AUC on the next day after training on 1/2/3/4 days):
#   60k-row days (make simulate ROWS=60000; calibrated here): base 0.414/0.439/0.427/0.456 (mean 0.434),
#     this 0.411/0.439/0.459/0.464 (mean 0.443);
#   20k-row days: base 0.344/0.356/0.410/0.405 (mean 0.379), this 0.383/0.431/0.418/0.479 (mean 0.428);
#   ceiling (PR-AUC of the noise-free logit, 200k rows): base 0.526, this 0.496.
# The draft's weights x1.3 (an earlier calibration on 20k rows, two starts) reached 0.397 at 60k rows, so a
# recovered model stayed below the level of the model before the change.
_CONCEPT_PATTERN = _FraudPattern(
    intercept=-11.0,
    category=np.array([1.4 * c.concept_risk for c in _ALL_CATEGORIES]),
    channel=np.array([0.84, 0.0, 0.0, 2.24]),
    hour=_hour_profile({range(9, 18): 2.24}),
    new_account=2.24,
    young_account=0.0,
    abroad=2.8,
    amount_up=0.0,
    amount_down=1.68,
    velocity=3.36,
    senior=2.8,
    noise=0.5,
)

# --------------------------------------------------------------------------------------------------
# The delivered day
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GeneratedDay:
    """One day's delivery (transactions as a source would drop them) and its delayed ground truth."""

    day: dt.date
    scenario: str
    transactions: pd.DataFrame
    labels: pd.DataFrame

    @property
    def fraud_rate(self) -> float:
        """Return the share of fraudulent transactions (0.0 for an empty day)."""
        return float(self.labels["is_fraud"].mean()) if len(self.labels) else 0.0

    def to_file_bytes(self) -> bytes:
        """Return the delivered file: deterministic Parquet bytes (not readable for fault_malformed)."""
        data = frame_to_parquet_bytes(self.transactions)
        if self.scenario == "fault_malformed":
            # A writer killed mid-upload: header and part of the data, no footer.
            return data[: len(data) // 2]
        return data

    def labels_file_bytes(self) -> bytes:
        """Return the labels of this day's transactions as deterministic Parquet bytes."""
        return frame_to_parquet_bytes(self.labels)


def frame_to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Return ``frame`` as Parquet bytes that are identical for identical frames (no timestamps)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # Empty or all-null text columns would be typed "null"; keep them strings so readers see the schema.
    fields = [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema]
    schema = pa.schema(fields, metadata=table.schema.metadata)
    if not schema.equals(table.schema):
        table = table.cast(schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue().to_pybytes()


def generate_day(day: dt.date, *, rows: int, seed: int, scenario: str = "none") -> GeneratedDay:
    """Generate one UTC day of transactions and their labels, deterministic for (seed, day, scenario).

    Raises:
        ValueError: for an unknown scenario (naming the valid ones), rows < 0, seed < 0, or a day
            outside 1980-01-01..2199-12-31.
    """
    day = _check_inputs(day, rows=rows, seed=seed, scenario=scenario)
    clean, labels = _clean_day(day, rows=rows, seed=seed, scenario=scenario)
    delivered = _apply_fault(clean, day=day, seed=seed, scenario=scenario)
    if scenario == "fault_empty":
        labels = labels.iloc[0:0].reset_index(drop=True)
    return GeneratedDay(day=day, scenario=scenario, transactions=delivered, labels=labels)


def _check_inputs(day: dt.date, *, rows: int, seed: int, scenario: str) -> dt.date:
    """Validate the arguments of ``generate_day`` and return the day as a plain date."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; use one of {sorted(SCENARIOS)}")
    if isinstance(day, dt.datetime):
        day = day.date()
    if not isinstance(day, dt.date):
        raise TypeError(f"day must be a datetime.date, got {type(day).__name__} {day!r}")
    if not _FIRST_DAY <= day <= _LAST_DAY:
        raise ValueError(f"day {day} is outside the generator's range {_FIRST_DAY}..{_LAST_DAY}")
    if isinstance(rows, bool) or not isinstance(rows, int | np.integer) or rows < 0:
        raise ValueError(f"rows must be an integer >= 0 (rows per day), got {rows!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return day


# --------------------------------------------------------------------------------------------------
# Customers: attributes are pure functions of (seed, customer key), so they are stable across days
# --------------------------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1


def _splitmix_scalar(value: int) -> int:
    """Return the splitmix64 hash of one integer."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _splitmix(values: np.ndarray) -> np.ndarray:
    """Return the splitmix64 hash of each uint64 (wrap-around arithmetic is intended)."""
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hash_uniform(keys: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """Return one uniform [0, 1) number per key for the given seed and attribute stream."""
    salt = np.uint64(_splitmix_scalar((seed * 1_000_003 + stream) & _MASK64))
    return (_splitmix(keys ^ salt) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _hash_normal(keys: np.ndarray, seed: int, stream: int) -> np.ndarray:
    """Return one standard normal number per key (Box-Muller over two hash streams)."""
    u1 = _hash_uniform(keys, seed, stream)
    u2 = _hash_uniform(keys, seed, stream + 101)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


@dataclass(frozen=True)
class _Customers:
    """Attributes of a set of customers, aligned with their keys."""

    customer_id: np.ndarray
    card_number: np.ndarray
    home: np.ndarray
    birth_ordinal: np.ndarray
    spend: np.ndarray
    activity: np.ndarray


def _customers(keys: np.ndarray, seed: int) -> _Customers:
    """Return the attributes of the customers with these keys (stable for a seed)."""
    ukeys = keys.astype(np.uint64)
    open_ordinal = _EPOCH.toordinal() + keys // _SLOTS
    salt = _splitmix_scalar(seed)
    # Affine maps modulo 10**9 are bijections on keys < 10**8: ids and card accounts never collide.
    customer_number = (keys * 1_000_000_007 + salt % 1_000_000_000) % 1_000_000_000
    account_number = (keys * 982_451_653 + (salt >> 32) % 1_000_000_000) % 1_000_000_000
    bins = _BINS[(_hash_uniform(ukeys, seed, 1) * len(_BINS)).astype(np.int64)]
    card_number = _luhn_complete(bins * 1_000_000_000 + account_number)
    home = np.searchsorted(np.cumsum(_HOME_WEIGHTS) / _HOME_WEIGHTS.sum(), _hash_uniform(ukeys, seed, 2))
    age_at_open = np.clip(38.0 + 13.0 * _hash_normal(ukeys, seed, 3), 18.0, 75.0)
    birth_ordinal = open_ordinal - np.floor(age_at_open * 365.25).astype(np.int64)
    spend = np.exp(0.55 * _hash_normal(ukeys, seed, 4))
    activity = np.exp(np.log(2.5) + 0.6 * _hash_normal(ukeys, seed, 5))
    return _Customers(
        customer_id=_format_numbers("C", customer_number, 9),
        card_number=_format_numbers("", card_number, 16),
        home=home,
        birth_ordinal=birth_ordinal,
        spend=spend,
        activity=activity,
    )


def _luhn_complete(payload: np.ndarray) -> np.ndarray:
    """Append the Luhn check digit to each 15-digit payload, giving valid 16-digit card numbers."""
    powers = 10 ** np.arange(14, -1, -1, dtype=np.int64)
    digits = (payload[:, None] // powers) % 10
    doubled = np.zeros(15, dtype=bool)
    doubled[14::-2] = True  # the rightmost payload digit sits next to the check digit
    digits = np.where(doubled, digits * 2, digits)
    digits = np.where(digits > 9, digits - 9, digits)
    check = (10 - digits.sum(axis=1) % 10) % 10
    return payload * 10 + check


def _format_numbers(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Return ``prefix`` + zero-padded decimal ``numbers`` as an object array of str, vectorised."""
    head = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    chars = np.empty((len(numbers), len(head) + width), dtype=np.uint8)
    chars[:, : len(head)] = head
    chars[:, len(head) :] = (numbers.astype(np.int64)[:, None] // powers) % 10 + ord("0")
    size = chars.shape[1]
    return np.ascontiguousarray(chars).view(f"S{size}").ravel().astype(f"U{size}").astype(object)


# --------------------------------------------------------------------------------------------------
# One clean day
# --------------------------------------------------------------------------------------------------


def _utc_times(ns_since_epoch: np.ndarray) -> pd.DatetimeIndex:
    """Return nanoseconds since the Unix epoch as UTC timestamps (datetime64[ns, UTC])."""
    return pd.DatetimeIndex(ns_since_epoch.astype("datetime64[ns]")).tz_localize("UTC")


def _pick(cdf_rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Return, per row, the index chosen by uniform ``u`` from that row's cumulative distribution."""
    return np.minimum((u[:, None] >= cdf_rows).sum(axis=1), cdf_rows.shape[1] - 1)


def _clean_day(day: dt.date, *, rows: int, seed: int, scenario: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the valid transactions and labels of a day (faults are applied afterwards).

    Each step draws from one generator in a fixed order, so a (seed, day, scenario) always gives the same
    day: keep the order when changing a step.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, day.toordinal()]))
    n = rows
    ms_of_day, hour = _draw_times(rng, n)
    account_age, customers, inverse, customer_age = _draw_accounts(rng, n, day, seed)
    category, channel, device, merchant_number = _draw_merchants(rng, n, scenario)
    remote, abroad, country, currency = _draw_geography(rng, n, channel, customers.home[inverse])
    spend = customers.spend[inverse]
    log_ratio, amount_eur = _draw_amounts(rng, n, category, spend)
    tx_count_1h, tx_count_24h, amount_sum_eur = _draw_history(rng, n, customers.activity[inverse], spend)
    distance = _draw_distance(rng, n, remote, abroad)
    drivers = _FraudDrivers(
        category, channel, hour, account_age, abroad, log_ratio, tx_count_1h, customer_age
    )
    is_fraud = _draw_fraud(rng, n, scenario, drivers)
    delay_s = _draw_label_delays(rng, n, is_fraud)

    inflation = _AMOUNT_INFLATION if scenario == "covariate_amount" else 1.0
    fx = _FX_FROM_EUR[currency] * inflation
    amount = np.maximum(np.round(amount_eur * fx, 2), 0.1)
    amount_sum_24h = np.round(amount_sum_eur * fx, 2)

    start_ns = pd.Timestamp(day.isoformat(), tz="UTC").value
    event_ns = start_ns + ms_of_day * _NS_PER_MS
    event_time = _utc_times(event_ns)
    label_time = _utc_times(event_ns + np.round(delay_s).astype(np.int64) * 1_000_000_000)
    transaction_id = _format_numbers(f"T{day:%Y%m%d}-", np.arange(1, n + 1), 9)
    merchants, merchant_inverse = np.unique(merchant_number, return_inverse=True)

    transactions = pd.DataFrame(
        {
            "transaction_id": transaction_id,
            "event_time": event_time,
            "customer_id": customers.customer_id[inverse],
            "card_number": customers.card_number[inverse],
            "merchant_id": _format_numbers("M", merchants, 7)[merchant_inverse],
            "merchant_category": _CATEGORY_NAMES[category],
            "amount": amount.astype(np.float64),
            "currency": np.array(ALLOWED_CURRENCIES, dtype=object)[currency],
            "country": np.array(ALLOWED_COUNTRIES, dtype=object)[country],
            "channel": np.array(ALLOWED_CHANNELS, dtype=object)[channel],
            "device": np.array(ALLOWED_DEVICES, dtype=object)[device],
            "customer_age": customer_age.astype(np.int64),
            "account_age_days": account_age,
            "tx_count_1h": tx_count_1h.astype(np.int64),
            "tx_count_24h": tx_count_24h.astype(np.int64),
            "amount_sum_24h": amount_sum_24h.astype(np.float64),
            "distance_from_home_km": distance.astype(np.float64),
        },
        columns=list(COLUMNS),
    )
    labels = pd.DataFrame(
        {
            "transaction_id": transaction_id,
            "is_fraud": is_fraud.astype(np.int8),
            "label_time": label_time,
        },
        columns=list(LABEL_COLUMNS),
    )
    return transactions, labels


def _draw_times(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Return when: milliseconds into the day (sorted: delivered in time order) and the UTC hour."""
    hour_cdf = np.cumsum(_HOUR_WEIGHTS) / _HOUR_WEIGHTS.sum()
    hour = np.searchsorted(hour_cdf, rng.random(n), side="right")
    ms_of_day = np.sort(hour * _MS_PER_HOUR + (rng.random(n) * _MS_PER_HOUR).astype(np.int64))
    return ms_of_day, ms_of_day // _MS_PER_HOUR


def _draw_accounts(
    rng: np.random.Generator, n: int, day: dt.date, seed: int
) -> tuple[np.ndarray, _Customers, np.ndarray, np.ndarray]:
    """Return who: account ages, the customers (recent accounts from 90 days, the rest up to 25 years),
    each row's customer index and the customer's age."""
    is_new = rng.random(n) < _NEW_ACCOUNT_SHARE
    new_age = rng.integers(0, 90, n)
    old_age = 90 + np.minimum(np.floor(rng.lognormal(np.log(1400.0), 0.8, n)), _MAX_ACCOUNT_DAYS - 90)
    account_age = np.where(is_new, new_age, old_age).astype(np.int64)
    slot = rng.integers(0, _SLOTS, n)
    keys = (day.toordinal() - account_age - _EPOCH.toordinal()) * _SLOTS + slot
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    customers = _customers(unique_keys, seed)
    # Accounts open at 18 or older; the clip only absorbs day-count rounding at the boundaries.
    customer_age = np.clip((day.toordinal() - customers.birth_ordinal[inverse]) // 365.25, 18, 100)
    return account_age, customers, inverse, customer_age


def _draw_merchants(
    rng: np.random.Generator, n: int, scenario: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return where: merchant category, channel, device and merchant number of each payment."""
    weights = np.array([c.weight for c in _ALL_CATEGORIES])
    if scenario == "covariate_new_categories":
        base = len(_BASE_CATEGORIES)
        weights[:base] *= (1.0 - _NEW_CATEGORY_SHARE) / weights[:base].sum()
        weights[base:] *= _NEW_CATEGORY_SHARE / weights[base:].sum()
    else:
        weights[len(_BASE_CATEGORIES) :] = 0.0
    category = np.searchsorted(np.cumsum(weights) / weights.sum(), rng.random(n), side="right")
    category = np.minimum(category, len(weights) - 1)
    channel_mix = _CAT_CHANNELS * (_CHANNEL_SHIFT if scenario == "covariate_channel" else 1.0)
    channel_cdf = np.cumsum(channel_mix / channel_mix.sum(axis=1, keepdims=True), axis=1)
    channel = _pick(channel_cdf[category], rng.random(n))
    device_cdf = np.cumsum(_CHANNEL_DEVICES, axis=1)
    device = _pick(device_cdf[channel], rng.random(n))
    merchant_rank = (_CAT_MERCHANTS[category] * rng.random(n) ** 2).astype(np.int64)
    return category, channel, device, category * 100_000 + merchant_rank


def _draw_geography(
    rng: np.random.Generator, n: int, channel: np.ndarray, home: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return whether each payment is remote and abroad, its country and its currency."""
    remote = (channel == _ONLINE) | (channel == _MOBILE)
    abroad = rng.random(n) < np.where(remote, 0.08, 0.04)
    n_countries = len(ALLOWED_COUNTRIES)
    other = (home + 1 + (rng.random(n) * (n_countries - 1)).astype(np.int64)) % n_countries
    country = np.where(abroad, other, home)
    currency = _COUNTRY_CURRENCY[country]
    foreign_currency = rng.random(n) < 0.03  # dynamic currency conversion at the terminal
    currency = np.where(
        foreign_currency, (rng.random(n) * len(ALLOWED_CURRENCIES)).astype(np.int64), currency
    )
    return remote, abroad, country, currency


def _draw_amounts(
    rng: np.random.Generator, n: int, category: np.ndarray, spend: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return how much: the log ratio to the customer's usual level and the amount in EUR (lognormal per
    category, a few big purchases)."""
    big = rng.random(n) < 0.03
    log_ratio = _CAT_SIGMA[category] * rng.standard_normal(n)
    log_ratio += np.where(big, 0.6 + 0.8 * np.abs(rng.standard_normal(n)), 0.0)
    return log_ratio, _CAT_MEDIAN[category] * spend * np.exp(log_ratio)


def _draw_history(
    rng: np.random.Generator, n: int, activity: np.ndarray, spend: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the payments in the last hour and day and the day's sum in EUR (activity-driven, bursts)."""
    tx_count_24h = rng.poisson(activity)
    tx_count_1h = rng.binomial(tx_count_24h, 0.1)
    burst = np.where(rng.random(n) < 0.025, rng.geometric(0.25, n), 0)
    tx_count_1h += burst
    tx_count_24h += burst
    amount_sum_eur = spend * _AVG_TICKET_EUR * tx_count_24h * np.exp(0.3 * rng.standard_normal(n))
    return tx_count_1h, tx_count_24h, amount_sum_eur


def _draw_distance(rng: np.random.Generator, n: int, remote: np.ndarray, abroad: np.ndarray) -> np.ndarray:
    """Return the distance in km between the payment and the customer's home."""
    near = np.where(remote, np.log(18.0), np.log(5.0))
    distance = np.exp(
        np.where(abroad, np.log(900.0) + 0.7 * rng.standard_normal(n), near + rng.standard_normal(n))
    )
    return np.round(np.minimum(distance, 19_000.0), 1)


@dataclass(frozen=True)
class _FraudDrivers:
    """The drawn attributes the hidden fraud pattern reads."""

    category: np.ndarray
    channel: np.ndarray
    hour: np.ndarray
    account_age: np.ndarray
    abroad: np.ndarray
    log_ratio: np.ndarray
    tx_count_1h: np.ndarray
    customer_age: np.ndarray


def _draw_fraud(rng: np.random.Generator, n: int, scenario: str, x: _FraudDrivers) -> np.ndarray:
    """Return the ground truth: the hidden logistic pattern (the concept scenario's own) plus noise."""
    pattern = _CONCEPT_PATTERN if scenario == "concept" else _BASE_PATTERN
    logit = (
        pattern.intercept
        + pattern.category[x.category]
        + pattern.channel[x.channel]
        + pattern.hour[x.hour]
        + pattern.new_account * (x.account_age < 30)
        + pattern.young_account * (x.account_age < 180)
        + pattern.abroad * x.abroad
        + pattern.amount_up * np.clip(x.log_ratio, 0.0, 4.0)
        + pattern.amount_down * np.clip(-x.log_ratio, 0.0, 3.0)
        + pattern.velocity * np.log1p(x.tx_count_1h)
        + pattern.senior * (x.customer_age >= 70)
        + pattern.noise * rng.standard_normal(n)
    )
    if scenario == "prior":
        logit += _PRIOR_SHIFT
    return rng.random(n) < 1.0 / (1.0 + np.exp(-logit))


def _draw_label_delays(rng: np.random.Generator, n: int, is_fraud: np.ndarray) -> np.ndarray:
    """Return each label's delay in seconds: chargebacks take longer than confirmations of genuine ones."""
    return np.where(
        is_fraud,
        np.clip(np.exp(np.log(9 * _DAY_S) + 0.75 * rng.standard_normal(n)), 3_600.0, 120 * _DAY_S),
        np.clip(np.exp(np.log(3 * _DAY_S) + 0.55 * rng.standard_normal(n)), 3_600.0, 45 * _DAY_S),
    )


# --------------------------------------------------------------------------------------------------
# Faults: each breaks the raw data contract in one clear way
# --------------------------------------------------------------------------------------------------


def _some_rows(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """Return a boolean mask selecting about ``share`` of ``n`` rows, at least one when n > 0."""
    mask = rng.random(n) < share
    if n and not mask.any():
        mask[rng.integers(0, n)] = True
    return mask


def _apply_fault(clean: pd.DataFrame, *, day: dt.date, seed: int, scenario: str) -> pd.DataFrame:
    """Return the frame as delivered under ``scenario`` (the clean frame for drift scenarios)."""
    if scenario not in FAULT_SCENARIOS or scenario == "fault_malformed":
        return clean
    rng = np.random.default_rng(np.random.SeedSequence([seed, day.toordinal(), 0xFA17]))
    frame = clean.copy()
    n = len(frame)
    if scenario == "fault_nulls":
        frame.loc[_some_rows(rng, n, 0.05), "amount"] = np.nan
        merchant_id = frame["merchant_id"].to_numpy(copy=True)
        merchant_id[_some_rows(rng, n, 0.05)] = None
        frame["merchant_id"] = merchant_id
    elif scenario == "fault_wrong_types":
        cents = np.round(frame["amount"].to_numpy() * 100).astype(np.int64)
        text = np.strings.add(np.strings.add((cents // 100).astype(str), "."), (cents % 100).astype(str))
        text = np.strings.add(np.strings.add(text, " "), frame["currency"].to_numpy().astype(str))
        # zero-pad cents: "12.5 EUR" -> "12.50 EUR"
        text = np.where(cents % 100 < 10, np.strings.replace(text, ".", ".0", count=1), text)
        frame["amount"] = text.astype(object)
    elif scenario == "fault_out_of_range":
        negative = _some_rows(rng, n, 0.01)
        frame.loc[negative, "amount"] = -frame.loc[negative, "amount"]
        frame.loc[_some_rows(rng, n, 0.01), "customer_age"] = 150
    elif scenario == "fault_renamed_column":
        frame = frame.rename(columns={"merchant_category": "mcc"})
    elif scenario == "fault_missing_column":
        frame = frame.drop(columns=["country"])
    elif scenario == "fault_duplicate_ids":
        if n >= 2:
            repeat = np.flatnonzero(_some_rows(rng, n, 0.02))
            source = (repeat + 1 + rng.integers(0, n - 1, len(repeat))) % n  # never the row itself
            ids = frame["transaction_id"].to_numpy(copy=True)
            ids[repeat] = ids[source]
            frame["transaction_id"] = ids
    elif scenario == "fault_empty":
        frame = frame.iloc[0:0].reset_index(drop=True)
    return frame


# --------------------------------------------------------------------------------------------------
# Files and CLI
# --------------------------------------------------------------------------------------------------


def write_day_files(generated: GeneratedDay, out: Path) -> tuple[Path, list[Path]]:
    """Write a day atomically as a files source delivers it: the day's transactions, its labels as a feed.

    ``<out>/transactions/date=D/part-0.parquet``, and each label under the UTC day it became known,
    ``<out>/labels/transactions/date=K/transactions-D.parquet`` (``mlloop.labels.feed_files``).
    """
    from mlloop.labels import feed_files

    transactions_path = Path(out) / "transactions" / f"date={generated.day.isoformat()}" / "part-0.parquet"
    _write_atomic(transactions_path, generated.to_file_bytes())
    label_paths = []
    for key, rows in feed_files(generated.labels, "transactions", generated.day):
        label_paths.append(Path(out) / key)
        _write_atomic(label_paths[-1], frame_to_parquet_bytes(rows))
    return transactions_path, label_paths


def _write_atomic(path: Path, data: bytes) -> None:
    """Write bytes to a hidden temporary file next to ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _scenario_plan(start: dt.date, days: int, specs: Sequence[str]) -> dict[dt.date, str]:
    """Return the scenario per day from ``NAME`` (every other day) and ``YYYY-MM-DD=NAME`` specs."""
    all_days = [start + dt.timedelta(days=i) for i in range(days)]
    default = "none"
    dated: dict[dt.date, str] = {}
    for spec in specs:
        day_text, sep, name = spec.rpartition("=")
        if name not in SCENARIOS:
            raise ValueError(
                f"--scenario {spec!r}: unknown scenario {name!r}; use one of {sorted(SCENARIOS)}"
            )
        if not sep:
            default = name
            continue
        try:
            day = dt.date.fromisoformat(day_text)
        except ValueError:
            raise ValueError(
                f"--scenario {spec!r}: {day_text!r} is not a date; write YYYY-MM-DD=NAME"
            ) from None
        if day not in all_days:
            raise ValueError(
                f"--scenario {spec!r}: {day} is outside the generated days {all_days[0]}..{all_days[-1]}; "
                "change --start/--days or the date"
            )
        dated[day] = name
    return {day: dated.get(day, default) for day in all_days}


def _build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of ``python -m mlloop.data.generator``."""
    scenario_lines = "\n".join(f"  {name:<26} {text}" for name, text in SCENARIOS.items())
    parser = argparse.ArgumentParser(
        prog="python -m mlloop.data.generator",
        description=(
            "Write synthetic card transactions, one UTC day per partition, with their delayed labels:\n"
            "  <out>/transactions/date=YYYY-MM-DD/part-0.parquet\n"
            "  <out>/labels/transactions/date=<known day>/transactions-YYYY-MM-DD.parquet\n"
            "      (that day's labels, each under the day it became known)\n"
            "This is the layout a 'files' source and its label feed read."
        ),
        epilog=f"scenarios:\n{scenario_lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--start", type=dt.date.fromisoformat, required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=1, help="number of consecutive days (default 1)")
    parser.add_argument("--rows", type=int, default=20_000, help="transactions per day (default 20000)")
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="seed of the customer population and of every day's draws (default 42)",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        metavar="[YYYY-MM-DD=]NAME",
        help="scenario for one day (YYYY-MM-DD=NAME) or for all other days (NAME); may repeat; default none",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the generator CLI; return the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error(f"--days must be >= 1, got {args.days}")
    if args.rows < 0:
        parser.error(f"--rows must be >= 0, got {args.rows}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    try:
        plan = _scenario_plan(args.start, args.days, args.scenario)
    except ValueError as exc:
        parser.error(str(exc))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    total_rows = 0
    total_fraud = 0
    for day, scenario in plan.items():
        started = time.perf_counter()
        generated = generate_day(day, rows=args.rows, seed=args.seed, scenario=scenario)
        transactions_path, _ = write_day_files(generated, args.out)
        total_rows += len(generated.transactions)
        total_fraud += int(generated.labels["is_fraud"].sum())
        logger.info(
            "day %s scenario=%s rows=%d fraud_rate=%.2f%% seconds=%.2f -> %s",
            day,
            scenario,
            len(generated.transactions),
            100.0 * generated.fraud_rate,
            time.perf_counter() - started,
            transactions_path,
        )
    rate = 100.0 * total_fraud / total_rows if total_rows else 0.0
    special = {d.isoformat(): s for d, s in plan.items() if s != "none"}
    print(
        f"wrote {len(plan)} day(s) {args.start}..{max(plan)} to {args.out}: {total_rows} transactions, "
        f"{rate:.2f}% fraud, scenarios {special or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
