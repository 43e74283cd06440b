"""The append-only audit trail (table ``control_audit``, guarded by a trigger in migration 0052).

Every import, plan, approval, transition and frame is one row: who (operator, approver),
why (reason), what (action, from/to state) and the frames sent and received, masked
(see :mod:`headend.control.secrets` for the masking decision).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from headend.control.secrets import mask_frame, mask_text

__all__ = ["frame_text", "mask_text", "record"]

_INSERT = """
INSERT INTO control_audit (command_id, plan_id, meter, account, action, from_state, to_state,
                           operator, approver, reason, tx_frame, rx_frame, details)
VALUES (%(command_id)s, %(plan_id)s, %(meter)s, %(account)s, %(action)s, %(from_state)s, %(to_state)s,
        %(operator)s, %(approver)s, %(reason)s, %(tx)s, %(rx)s, %(details)s)
RETURNING id
"""


def frame_text(raw: bytes | None, secrets: Iterable[str]) -> str | None:
    """A frame as stored: hex with the secret bytes masked."""
    if not raw:
        return None
    return mask_text(mask_frame(raw), secrets)


async def record(
    conn: AsyncConnection[Any],
    *,
    action: str,
    operator: str,
    command_id: int | None = None,
    plan_id: int | None = None,
    meter: str | None = None,
    account: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    approver: str | None = None,
    reason: str = "",
    tx: bytes | None = None,
    rx: bytes | None = None,
    details: Mapping[str, Any] | None = None,
    secrets: Iterable[str] = (),
) -> int:
    """Append one audit row in the caller's transaction; frames are masked before storing."""
    secrets = tuple(secrets)
    cur = await conn.execute(_INSERT, {
        "command_id": command_id, "plan_id": plan_id, "meter": meter, "account": account, "action": action,
        "from_state": from_state, "to_state": to_state, "operator": operator, "approver": approver,
        "reason": mask_text(reason, secrets), "tx": frame_text(tx, secrets), "rx": frame_text(rx, secrets),
        "details": Jsonb(dict(details or {})),
    })
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])
