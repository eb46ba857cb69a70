"""The MLflow model registry as the platform uses it: versions, the champion/previous aliases, audit."""

from mlloop.registry.champion import (
    CHAMPION,
    PREVIOUS,
    AuditRecord,
    PromotionError,
    append_audit,
    archive,
    audit_log,
    champion_version,
    promote,
    register_version,
    reject,
    rollback,
)

__all__ = [
    "CHAMPION",
    "PREVIOUS",
    "AuditRecord",
    "PromotionError",
    "append_audit",
    "archive",
    "audit_log",
    "champion_version",
    "promote",
    "register_version",
    "reject",
    "rollback",
]
