"""Building blocks shared by every configuration section (settings, daemon fleet, remote control)."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict

__all__ = ["Section", "check_zone"]


class Section(BaseModel):
    """A config section: unknown keys are errors, so a typo is reported instead of ignored."""

    model_config = ConfigDict(extra="forbid")


def check_zone(v: str | None) -> str | None:
    """Validator: an IANA time-zone name (or None)."""
    if v is None:
        return v
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r}") from None
    return v
