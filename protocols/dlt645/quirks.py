"""Vendor quirks as data: how a particular meter bends DL/T 645, set in TOML, never in code.

A quirks file (see ``config/quirks/dlt645.toml``)::

    [defaults]                 # optional; overrides the built-in defaults for every meter
    request_preamble = 4

    [[meter]]                  # later and more specific entries win
    vendor = "acme"            # fnmatch patterns, case-insensitive; "*" = any
    model = "DDS1*"
    firmware = "*"
    address_padding = "AA"
    time_reversed = true

:func:`load_quirks` returns a :class:`QuirkBook`; ``book.match(vendor, model, firmware)``
merges the defaults and every matching entry (fewer wildcards first, so the most specific
entry is applied last) into one frozen :class:`Quirks`. Unknown keys are a
:class:`~protocols.errors.ConfigError`, so a typo cannot silently do nothing.
"""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from protocols.dlt645.formats import FormatOptions, format_options
from protocols.errors import ConfigError

__all__ = ["DEFAULT_QUIRKS", "QuirkBook", "Quirks", "load_quirks", "quirks_from_mapping"]


@dataclass(frozen=True, slots=True)
class Quirks:
    """Per-meter deviations and timing. Defaults follow the standard."""

    name: str = "standard"
    # Short addresses ("1234") are left-padded with "0" or with "A" (AA bytes) to 12 digits.
    address_padding: str = "0"
    # FE wake-up bytes we send before a request / the meter (or simulator) sends before a reply.
    request_preamble: int = 4
    reply_preamble: int = 0
    # Time fields sent most significant byte first (YY first) instead of low byte first.
    time_reversed: bool = False
    # Strict: a reply whose data does not fit the DI's layout is a protocol error.
    # Lenient (default): it is returned with Decoded.error set and the raw bytes kept.
    strict: bool = False
    # Accept a reply whose address differs from the request's (virtual meters echoing AA...).
    accept_any_address: bool = False
    # Protocol generation for reads: 2007 or 1997.
    version: int = 2007
    # Timing (seconds): response timeout, inter-byte gap, bus turnaround before the next request.
    response_timeout: float = 1.0
    inter_byte_timeout: float = 0.5
    turnaround: float = 0.02
    # Largest DATA the meter accepts in one read reply before splitting into follow-ups.
    max_data: int = 200
    # DI remapping: the meter serves a standard item under another DI ({standard: vendor}).
    di_map: Mapping[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.address_padding.upper() not in {"0", "A", "00", "AA"}:
            raise ConfigError(f"address_padding must be '00' or 'AA', got {self.address_padding!r}")
        if not 0 <= self.request_preamble <= 16 or not 0 <= self.reply_preamble <= 16:
            raise ConfigError("preamble counts must be 0..16")
        if self.version not in (1997, 2007):
            raise ConfigError(f"version must be 1997 or 2007, got {self.version!r}")
        for name in ("response_timeout", "inter_byte_timeout", "turnaround"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")

    def __hash__(self) -> int:  # di_map is a dict: hash its items so a Quirks can key caches
        return hash(tuple((f.name, getattr(self, f.name)) for f in fields(self) if f.name != "di_map")) ^ hash(
            tuple(sorted(self.di_map.items()))
        )

    @property
    def format_options(self) -> FormatOptions:
        return format_options(self.time_reversed)

    def pad_address(self, address: str) -> str:
        """Pad a short address to 12 digits with this meter's padding digit."""
        a = address.strip().upper()
        pad = self.address_padding.upper()[0]
        return a.rjust(12, pad)

    def wire_di(self, di: int) -> int:
        return self.di_map.get(di, di)

    def standard_di(self, di: int) -> int:
        for std, vendor in self.di_map.items():
            if vendor == di:
                return std
        return di


DEFAULT_QUIRKS = Quirks()
_KEYS = {f.name for f in fields(Quirks)}
_MATCH_KEYS = ("vendor", "model", "firmware")


def _di_int(v: Any) -> int:
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.replace(" ", ""), 16)
        except ValueError:
            pass
    raise ConfigError(f"bad DI {v!r} in di_map (write it as a hex string, e.g. \"00010000\")")


def _settings(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k in _MATCH_KEYS:
            continue
        if k not in _KEYS:
            raise ConfigError(f"{where}: unknown quirk {k!r}; known: {', '.join(sorted(_KEYS))}")
        if k == "di_map":
            if not isinstance(v, Mapping):
                raise ConfigError(f"{where}: di_map must be a table")
            v = {_di_int(a): _di_int(b) for a, b in v.items()}
        out[k] = v
    return out


def quirks_from_mapping(raw: Mapping[str, Any], base: Quirks = DEFAULT_QUIRKS, where: str = "quirks") -> Quirks:
    try:
        return replace(base, **_settings(raw, where))
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass(frozen=True, slots=True)
class _Entry:
    vendor: str
    model: str
    firmware: str
    settings: Mapping[str, Any]
    order: int

    def matches(self, vendor: str, model: str, firmware: str) -> bool:
        return all(
            fnmatch.fnmatchcase(value.lower(), pattern.lower())
            for value, pattern in ((vendor, self.vendor), (model, self.model), (firmware, self.firmware))
        )

    @property
    def specificity(self) -> int:
        return sum(p != "*" for p in (self.vendor, self.model, self.firmware))


@dataclass(frozen=True, slots=True)
class QuirkBook:
    defaults: Quirks = DEFAULT_QUIRKS
    entries: tuple[_Entry, ...] = ()

    def match(self, vendor: str = "", model: str = "", firmware: str = "") -> Quirks:
        """The quirks for a meter; unknown meters get the defaults."""
        hits = sorted(
            (e for e in self.entries if e.matches(vendor, model, firmware)), key=lambda e: (e.specificity, e.order)
        )
        q = self.defaults
        names = []
        for e in hits:
            q = replace(q, **e.settings)
            names.append("/".join(p for p in (e.vendor, e.model, e.firmware) if p != "*") or "*")
        if names and "name" not in hits[-1].settings:
            q = replace(q, name="+".join(names))
        return q


def load_quirks(path: str | Path | None = None, *, text: str | None = None) -> QuirkBook:
    """Read a quirks TOML file (or ``text``); ``None`` gives the built-in defaults only."""
    if path is None and text is None:
        return QuirkBook()
    where = str(path) if path is not None else "quirks"
    try:
        if text is None:
            assert path is not None
            text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read quirks {where}: {exc}") from None
    unknown = set(data) - {"defaults", "meter"}
    if unknown:
        raise ConfigError(f"{where}: unknown tables {', '.join(sorted(unknown))} (use [defaults] and [[meter]])")
    defaults = quirks_from_mapping(data.get("defaults", {}), where=f"{where} [defaults]")
    entries = []
    meters = data.get("meter", [])
    if not isinstance(meters, list):
        raise ConfigError(f"{where}: 'meter' must be an array of tables ([[meter]])")
    for i, m in enumerate(meters):
        w = f"{where} [[meter]] #{i + 1}"
        settings = _settings(m, w)
        quirks_from_mapping(settings, defaults, w)  # validate now, not at match time
        entries.append(
            _Entry(
                str(m.get("vendor", "*")), str(m.get("model", "*")), str(m.get("firmware", "*")), settings, i
            )
        )
    return QuirkBook(defaults, tuple(entries))
