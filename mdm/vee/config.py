"""VEE thresholds per meter class, loaded from ``config/vee.toml`` (defaults here).

A class is a block of thresholds (``[classes.residential]``, ``[classes.commercial]``,
``[classes.large]``...). Any key left out of a class falls back to the defaults below, so a
class only lists what differs. Meters name their class in the store (``meters.meter_class``
when present); others use ``default_class``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocols.errors import ConfigError

__all__ = ["Thresholds", "VeeConfig", "default_config_path", "load_vee_config"]


class Thresholds(BaseModel):
    """Every rule's thresholds for one meter class. Energies in kWh per interval unless noted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # gaps / counts / time
    gap_min_intervals: int = Field(1, description="a run of this many missing intervals is a gap")
    gap_error_intervals: int = Field(8, description="gaps this long or longer are errors, shorter ones warnings")
    comm_min_failed: int = Field(6, description="read jobs failed (none ok) in the range: communication failure")
    future_tolerance_s: int = Field(300, description="timestamps this far ahead of now are in the future")
    clock_drift_warn_s: float = Field(60.0, description="|meter clock - head-end| above this: warning")
    clock_drift_error_s: float = Field(300.0, description="above this: error (beyond broadcast-sync reach)")
    # registers
    register_max: float = Field(1_000_000.0, description="register rolls over to 0 at this value (kWh)")
    rollover_margin: float = Field(0.05, description="a drop from within this fraction of max to near 0 is a rollover")
    decrease_tolerance: float = Field(0.01, description="register drops smaller than this (kWh) are ignored")
    # running fast
    nominal_voltage: float = Field(220.0, description="V, phase voltage")
    phases: int = Field(1, description="1 or 3")
    rated_max_current: float = Field(60.0, description="A, Imax of the meter (per phase)")
    fast_factor: float = Field(1.2, description="energy above factor x (U x Imax x phases x t) is impossible")
    fast_history_factor: float = Field(5.0, description="daily energy above factor x the history maximum")
    fast_history_min_kwh: float = Field(5.0, description="and at least this much a day")
    # stopped
    stopped_min_intervals: int = Field(4, description="flat register for this many intervals under load")
    stopped_current_a: float = Field(0.5, description="current above this means load")
    stopped_power_kw: float = Field(0.05, description="power above this means load")
    # spikes / history
    spike_factor: float = Field(8.0, description="interval above factor x the meter's median of the window")
    spike_min_kw: float = Field(5.0, description="and at least this much (as average kW) above the neighbours")
    history_days: int = Field(28, description="days of own history for high/low")
    high_factor: float = Field(3.0, description="daily energy above factor x the history mean (and mean+4 sd)")
    low_factor: float = Field(0.2, description="daily energy below factor x the history mean")
    history_min_mean_kwh: float = Field(0.5, description="skip high/low when the history mean is below this")
    # sum checks
    sum_rel_tolerance: float = Field(0.02, description="intervals vs register delta, relative")
    sum_abs_tolerance: float = Field(0.05, description="and absolute, kWh (register resolution)")
    tou_abs_tolerance: float = Field(0.02, description="tariff registers vs total, kWh")
    # power quality
    voltage_high_pct: float = Field(7.0, description="+% of nominal")
    voltage_low_pct: float = Field(10.0, description="-% of nominal")
    voltage_min_intervals: int = Field(2, description="out of band for this many intervals")
    voltage_loss_pct: float = Field(60.0, description="失压: phase voltage below this % of nominal")
    loss_current_a: float = Field(0.5, description="失压 needs the phase (or meter) current above this")
    current_loss_a: float = Field(0.05, description="失流: phase current below this while another phase loads")
    current_load_a: float = Field(1.0, description="another phase's current above this is load")
    phase_min_intervals: int = Field(2, description="失压/失流 for this many intervals")
    imbalance_pct: float = Field(50.0, description="(max-min)/max of phase currents above this %")
    imbalance_min_current_a: float = Field(5.0, description="only when the largest phase carries this much")
    imbalance_min_intervals: int = Field(4)
    reverse_min_kwh: float = Field(0.01, description="export energy above this on a meter without generation")
    reverse_power_kw: float = Field(-0.05, description="signed total power below this is reverse")
    has_generation: bool = Field(False, description="customer exports legitimately (PV): no reverse-energy rule")
    pf_min: float = Field(0.5, description="power factor below this under load")
    pf_min_power_kw: float = Field(0.5, description="only judge pf when power is above this")
    # neutral
    neutral_mismatch_pct: float = Field(25.0, description="|In - Ia| above this % of the larger")
    neutral_min_current_a: float = Field(1.0)
    neutral_min_intervals: int = Field(8)
    # estimation
    linear_max_intervals: int = Field(8, description="gaps up to this long: linear interpolation allowed")
    like_days: int = Field(3, description="like days of the plain like-day method")
    estimate_blend_hours: float = Field(8.0, description="estimator: the line's weight falls to 0 at this gap length")
    estimate_like_days: int = Field(10, description="estimator: like days averaged for its shape")
    estimate_decay_hours: float = Field(1.5, description="estimator: edge residual decays with this time constant")
    prolonged_estimated_intervals: int = Field(192, description="estimated intervals in the window before an alarm")
    # anomalies
    drop_ratio: float = Field(0.5, description="sustained drop: recent mean below ratio x own history")
    drop_min_days: int = Field(7, description="recent window (days) that must stay low")
    peer_z: float = Field(3.0, description="robust z-score against the peer group")
    area_loss_pct: float = Field(8.0, description="transformer-area loss above this is abnormal")
    area_loss_negative_pct: float = Field(-2.0, description="loss below this: bad customer list or check meter")


_DEFAULT_CLASSES: dict[str, dict[str, Any]] = {
    "residential": {},
    "commercial": {"phases": 3, "rated_max_current": 100.0, "spike_min_kw": 20.0, "history_min_mean_kwh": 5.0},
    "large": {"phases": 3, "rated_max_current": 1500.0, "spike_min_kw": 200.0, "history_min_mean_kwh": 50.0,
              "nominal_voltage": 220.0},
}


_DEFAULT_CLASS_MAP: dict[str, str] = {"single_phase": "residential", "three_phase": "commercial", "ct": "large",
                                       "industrial": "large"}


class VeeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_class: str = "residential"
    timezone: str | None = Field(default=None, description="local zone for day counts; None = the headend timezone")
    interval_seconds: int = 900
    daily_run_at: str = Field(default="06:30", pattern=r"^\d{2}:\d{2}$",
                              description="local time the daemon plug-in validates the previous day")
    anomaly_min_score: float = Field(default=3.0, description="suspects at or above this get a theft order")
    classes: dict[str, Thresholds] = Field(
        default_factory=lambda: {k: Thresholds(**v) for k, v in _DEFAULT_CLASSES.items()})
    class_map: dict[str, str] = Field(
        default_factory=lambda: dict(_DEFAULT_CLASS_MAP),
        description="store meter_class -> VEE class (e.g. single_phase -> residential, ct -> large)")

    def class_name(self, name: str | None) -> str:
        if name and name in self.classes:
            return name
        mapped = self.class_map.get(name or "")
        return mapped if mapped in self.classes else self.default_class

    def for_class(self, name: str | None) -> Thresholds:
        return self.classes[self.class_name(name)]


def default_config_path() -> Path:
    env = os.environ.get("HEADEND_VEE_CONFIG")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "config" / "vee.toml"


def load_vee_config(path: Path | str | None = None) -> VeeConfig:
    """Load thresholds; a missing default file gives the built-in defaults, a missing explicit file is an error."""
    explicit = path is not None
    p = Path(path) if path is not None else default_config_path()
    if not p.is_file():
        if explicit:
            raise ConfigError(f"VEE config not found: {p}")
        return VeeConfig()
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read {p}: {exc}") from None
    classes_raw = raw.pop("classes", {})
    try:
        classes = {name: Thresholds(**{**_DEFAULT_CLASSES.get(name, {}), **vals})
                   for name, vals in classes_raw.items()}
        merged = {k: Thresholds(**v) for k, v in _DEFAULT_CLASSES.items()}
        merged.update(classes)
        cfg = VeeConfig(**raw, classes=merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid VEE config {p}: {problems}") from None
    if cfg.default_class not in cfg.classes:
        raise ConfigError(f"invalid VEE config {p}: default_class {cfg.default_class!r} has no [classes] block")
    return cfg
