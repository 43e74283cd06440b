"""Meter passwords and operator codes: from a secrets file or the environment only.

Never from the main config (the ``[control]`` section refuses any ``password`` key), never
in logs, never in ``--json`` output, never stored in clear in the database.

Secrets file (TOML, keep it ``chmod 600``; path from ``secrets_file`` in the config or
``HEADEND_SECRETS_FILE``)::

    [meters.default]            # every meter without its own entry
    password = "123456"         # 6 hex digits (P0..P2), as the meter expects
    level = 2                   # PA: password level
    [meters."000000000007"]
    password = "654321"
    level = 4
    [operators]                 # operator code (C0..C3) sent to the meter per person
    default = "00000000"
    alice = "00000001"

Environment (wins over the file): ``HEADEND_METER_PASSWORD``, ``HEADEND_METER_PASSWORD_LEVEL``,
``HEADEND_METER_PASSWORD_<ADDRESS>``, ``HEADEND_OPERATOR_CODE`` (default code) and
``HEADEND_OPERATOR_CODE_<OPERATOR>``.

Decision on stored frames: the audit trail keeps every frame sent and received *masked*:
the password and operator-code bytes of DL/T 645 frames that carry them (14H, 18H-1CH) are
replaced by ``**`` in the stored hex, and so is the checksum (it would give away the sum of
the secret bytes); the rest (address, control code, PA level, N1, valid-until) stays as
sent. Masking is chosen over encryption so that the audit trail can be read and exported
without a key, and a database dump cannot leak a password at all.
Masking of logs: :func:`install_log_masking` wraps the log-record factory so that any
record (including the ``headend.trace`` frame dumps) has secrets and their on-the-wire
forms replaced by ``***`` before any handler sees it.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.client import Credentials
from protocols.dlt645.services import masked_hex
from protocols.errors import ConfigError

__all__ = [
    "SecretStore",
    "install_log_masking",
    "load_secrets",
    "mask_frame",
    "mask_text",
    "uninstall_log_masking",
    "wire_forms",
]

LOGGER = logging.getLogger(__name__)

MASK = "***"
_HEX = set("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class _MeterSecret:
    password: str = field(repr=False)
    level: int = 2


@dataclass(slots=True)
class SecretStore:
    """Passwords per meter (with a default) and operator codes per person (with a default)."""

    meters: dict[str, _MeterSecret] = field(default_factory=dict, repr=False)
    operators: dict[str, str] = field(default_factory=dict, repr=False)
    source: str = "none"

    def __repr__(self) -> str:
        return f"SecretStore(source={self.source!r}, meters={len(self.meters)}, operators={len(self.operators)})"

    def credentials(self, meter: str, operator: str) -> Credentials:
        ms = self.meters.get(meter) or self.meters.get("default")
        if ms is None:
            raise ConfigError(f"no meter password for {meter}: add it to the secrets file or set "
                              "HEADEND_METER_PASSWORD")
        code = self.operators.get(operator) or self.operators.get("default") or "00000000"
        return Credentials(password=ms.password, password_level=ms.level, operator=code)

    def values(self) -> set[str]:
        vals = {m.password for m in self.meters.values()} | set(self.operators.values())
        # A code of all zeros is the protocol's "no operator"; masking it would mask every zero run.
        return {v for v in vals if v and v.strip("0")}


def _check_hex(value: object, what: str, digits: int) -> str:
    s = str(value).strip()
    if not s or len(s) > digits or any(c not in _HEX for c in s):
        raise ConfigError(f"{what}: expected up to {digits} hex digits")  # never echo the value
    return s.upper().rjust(digits, "0")


def load_secrets(path: Path | None = None, env: Mapping[str, str] | None = None) -> SecretStore:
    """The secrets file (if any), then the environment on top."""
    env = os.environ if env is None else env
    store = SecretStore()
    sources: list[str] = []
    path = path or (Path(env["HEADEND_SECRETS_FILE"]) if env.get("HEADEND_SECRETS_FILE") else None)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"secrets file not found: {path}")
        try:
            data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"cannot read secrets file {path}: line {getattr(exc, 'lineno', '?')}") from None
        for meter, item in (data.get("meters") or {}).items():
            if not isinstance(item, dict) or "password" not in item:
                raise ConfigError(f"secrets file: meters.{meter} needs a password")
            store.meters[str(meter)] = _MeterSecret(_check_hex(item["password"], f"meters.{meter}.password", 6),
                                                    int(item.get("level", 2)))
        for op, code in (data.get("operators") or {}).items():
            store.operators[str(op)] = _check_hex(code, f"operators.{op}", 8)
        sources.append("file")
    level = int(env.get("HEADEND_METER_PASSWORD_LEVEL", "2"))
    for key, value in env.items():
        if key == "HEADEND_METER_PASSWORD":
            store.meters["default"] = _MeterSecret(_check_hex(value, key, 6), level)
        elif key.startswith("HEADEND_METER_PASSWORD_") and key != "HEADEND_METER_PASSWORD_LEVEL":
            store.meters[key.removeprefix("HEADEND_METER_PASSWORD_")] = _MeterSecret(_check_hex(value, key, 6), level)
        elif key == "HEADEND_OPERATOR_CODE":
            store.operators["default"] = _check_hex(value, key, 8)
        elif key.startswith("HEADEND_OPERATOR_CODE_"):
            store.operators[key.removeprefix("HEADEND_OPERATOR_CODE_")] = _check_hex(value, key, 8)
        else:
            continue
        if "env" not in sources:
            sources.append("env")
    store.source = "+".join(sources) or "none"
    return store


def wire_forms(secret: str) -> set[str]:
    """The ways a hex secret can show up in text: as typed, and as DL/T 645 wire bytes.

    On the wire the digits are little-endian bytes, each +33H; frame dumps are hex with or
    without spaces, upper or lower case.
    """
    s = secret.strip()
    forms = {s, s.upper(), s.lower()}
    if len(s) % 2 == 0 and s and all(c in _HEX for c in s):
        le = bytes.fromhex(s)[::-1]
        for raw in (le, bytes((b + 0x33) & 0xFF for b in le)):
            for h in (raw.hex(), raw.hex(" ")):
                forms |= {h, h.upper()}
    return {f for f in forms if len(f) >= 4}


def mask_text(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        for form in sorted(wire_forms(s), key=len, reverse=True):
            if form in text:
                text = text.replace(form, MASK)
    return text


def mask_frame(raw: bytes) -> str:
    """Hex of a frame with the password and operator-code bytes (and the checksum) shown as ``**``.

    The DL/T 645 codec owns which bytes carry secrets; anything else is plain hex (callers
    still run mask_text).
    """
    return masked_hex(raw)


_installed: dict[str, Any] = {"secrets": set(), "factory": None, "previous": None}


def install_log_masking(store: SecretStore | Iterable[str]) -> None:
    """Mask these secrets (and 1C frame auth bytes in trace dumps) in every log record from now on."""
    values = store.values() if isinstance(store, SecretStore) else set(store)
    _installed["secrets"] = set(_installed["secrets"]) | values
    if _installed["factory"] is not None:
        return
    previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            if record.name == "headend.trace" and isinstance(record.args, tuple) and len(record.args) == 3:
                a0, a1, a2 = record.args
                if isinstance(a2, str) and a2 and all(c in _HEX or c == " " for c in a2):
                    record.args = (a0, a1, mask_frame(bytes.fromhex(a2.replace(" ", ""))))
            secrets = _installed["secrets"]
            if secrets:
                msg = record.getMessage()
                masked = mask_text(msg, secrets)
                if masked != msg:
                    record.msg, record.args = masked, ()
        except Exception:  # never let masking break logging; drop the message instead
            record.msg, record.args = "(log message dropped: could not mask)", ()
        return record

    _installed["factory"] = factory
    _installed["previous"] = previous
    logging.setLogRecordFactory(factory)


def uninstall_log_masking() -> None:
    """Restore the log-record factory found by :func:`install_log_masking` (tests, embedding code)."""
    factory = _installed["factory"]
    if factory is not None and logging.getLogRecordFactory() is factory:
        logging.setLogRecordFactory(_installed["previous"])
    _installed.update(secrets=set(), factory=None, previous=None)
