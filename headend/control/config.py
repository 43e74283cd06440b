"""The ``[control]`` configuration section: per-utility disconnection policy, roles, calendar.

No secret lives here: meter passwords and operator codes come from the secrets file or the
environment (:mod:`headend.control.secrets`). A ``password`` key anywhere in this section is
refused, so a secret pasted into the main config is caught at start-up.
"""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from headend.configbase import Section as _Section
from headend.configbase import check_zone

__all__ = ["ROLE_NAMES", "ControlPolicy", "ControlSettings", "ExemptionKind"]

#: Exemption kinds understood by the rules (any other kind is stored and also blocks when listed).
ExemptionKind = Literal["medical", "life_support", "critical", "keep_power", "dispute", "payment_plan"]
ROLE_NAMES = ("import", "plan", "approve", "execute")
_SECRET_WORDS = ("password", "passwd", "operator_code", "secret")


class ControlPolicy(_Section):
    """One utility's rules. Every field is a rule input; see docs/control.md for the meaning."""

    timezone: str | None = Field(default=None, description="local zone of the rules (default: global timezone)")
    # -- who is a candidate
    min_amount: float = Field(default=0.01, ge=0, description="arrears at least this amount")
    min_days_overdue: int = Field(default=30, ge=0, description="arrears overdue at least this many days")
    # -- notices
    notice_days: float = Field(default=7, ge=0, description="a notice delivered at least N days before the cut")
    notice_methods: list[str] | None = Field(default=None, description="accepted delivery methods (None = any)")
    renotice_hours: float | None = Field(default=None, gt=0, description="a re-notice within M hours before the cut")
    # -- when
    business_start: time = time(8, 30)
    business_end: time = time(17, 0)
    cutoff: time | None = Field(default=time(14, 0), description="no cut at or after this local time")
    no_cut_weekdays: list[int] = Field(default_factory=list, description="0=Monday..6=Sunday, e.g. [4] no Fridays")
    weekend: list[int] = Field(default_factory=lambda: [5, 6])
    no_cut_weekends: bool = True
    no_cut_holidays: bool = True
    no_cut_holiday_eve: bool = True
    # -- exemptions and external blocks
    blocking_exemptions: list[str] = Field(
        default_factory=lambda: ["medical", "life_support", "critical", "keep_power", "dispute", "payment_plan"])
    external_blocks: list[str] = Field(
        default_factory=list,
        description="hooks: 'module:function' (called with accounts, time) or 'cmd:program args' (JSON on stdin)")
    # -- volume
    batch_per_bus: int = Field(default=20, ge=1, description="at most this many cuts per bus in one plan")
    max_per_bus_day: int = Field(default=50, ge=1, description="at most this many cuts per bus per local day")
    max_per_day: int = Field(default=1000, ge=1, description="at most this many cuts per local day")
    min_gap_per_bus: float = Field(default=0.0, ge=0, description="seconds between two commands on one bus")
    approval_threshold: int = Field(default=10, ge=0, description="plans with more cuts need a second operator")
    # -- execution
    command_valid_minutes: float = Field(default=10, gt=0, description="valid-until sent with each command")
    max_attempts: int = Field(default=2, ge=1, le=5, description="sends per command before a work order")
    readback_attempts: int = Field(default=2, ge=1, le=5)
    readback_delay: float = Field(default=0.0, ge=0, description="seconds between the command and the read-back")
    # -- reconnection (never blocked by the cut rules)
    reconnect_within_hours: float = Field(default=24, gt=0)
    reconnect_mode: Literal["close_direct", "close_permit"] = "close_direct"

    _zone = field_validator("timezone")(check_zone)

    @field_validator("no_cut_weekdays", "weekend")
    @classmethod
    def _days(cls, v: list[int]) -> list[int]:
        if any(not 0 <= d <= 6 for d in v):
            raise ValueError("weekdays are 0 (Monday) .. 6 (Sunday)")
        return v

    @model_validator(mode="after")
    def _hours(self) -> ControlPolicy:
        if self.business_end <= self.business_start:
            raise ValueError("business_end must be after business_start")
        return self


class ControlSettings(_Section):
    """``[control]``: utilities' policies, the holiday calendar and roles."""

    default_utility: str = "default"
    utilities: dict[str, ControlPolicy] = Field(default_factory=lambda: {"default": ControlPolicy()})
    holidays: Path | None = Field(default=None, description="holiday calendar file (TOML or CSV)")
    roles: dict[str, list[str]] = Field(
        default_factory=dict,
        description="role -> operators: import, plan, approve, execute ('*' = any operator)")
    system_operator: str = Field(default="system", description="identity recorded for automatic reconnects")

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        def walk(obj: Any, path: str) -> None:
            if isinstance(obj, dict):
                for k, v in obj.items():
                    if any(w in str(k).lower() for w in _SECRET_WORDS):
                        raise ValueError(f"{path}{k}: secrets belong in the secrets file or the environment, "
                                         "never in the main config")
                    walk(v, f"{path}{k}.")

        walk(data, "control.")
        return data

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        bad = sorted(set(v) - set(ROLE_NAMES))
        if bad:
            raise ValueError(f"unknown roles {', '.join(bad)}; known: {', '.join(ROLE_NAMES)}")
        return v

    def policy(self, utility: str | None) -> ControlPolicy:
        u = utility or self.default_utility
        if u in self.utilities:
            return self.utilities[u]
        if self.default_utility in self.utilities:
            return self.utilities[self.default_utility]
        return ControlPolicy()
