"""Names of the generator's per-day scenarios (light: DAG files import this at parse time)."""

DRIFT_SCENARIOS: tuple[str, ...] = (
    "none",
    "covariate_amount",
    "covariate_new_categories",
    "covariate_channel",
    "prior",
    "concept",
)
FAULT_SCENARIOS: tuple[str, ...] = (
    "fault_nulls",
    "fault_wrong_types",
    "fault_out_of_range",
    "fault_renamed_column",
    "fault_missing_column",
    "fault_duplicate_ids",
    "fault_empty",
    "fault_malformed",
)
ALL_SCENARIOS: tuple[str, ...] = DRIFT_SCENARIOS + FAULT_SCENARIOS
