"""Database access for the control module: account states for the rules, commands and their transitions.

Every state change goes through :func:`transition`, which checks the move against the one
transition table (:mod:`headend.control.transitions`) and appends the audit row in the same
transaction, so the command row and its audit trail never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from headend.control import audit
from headend.control.directory import MeterDirectory
from headend.control.rules import AccountState, Exemption, Notice
from headend.control.transitions import Event, State, next_state

__all__ = ["Command", "get_command", "load_accounts", "sent_today", "transition"]

_ACTIVE = ("planned", "approved", "sent", "failed", "unknown")


@dataclass(slots=True)
class Command:
    id: int
    plan_id: int | None
    account: str | None
    meter: str
    bus: str
    kind: str
    command: str
    state: str
    attempts: int
    operator: str
    approver: str | None
    reason: str
    created_at: datetime
    sent_at: datetime | None
    confirmed_at: datetime | None
    deadline_at: datetime | None
    valid_until: datetime | None
    relay_state: str | None
    last_error: str
    work_order_id: int | None
    undoes: int | None


COLUMNS = ("id, plan_id, account, meter, bus, kind, command, state, attempts, operator, approver, reason, created_at, "
         "sent_at, confirmed_at, deadline_at, valid_until, relay_state, last_error, work_order_id, undoes")


async def get_command(conn: AsyncConnection[Any], command_id: int, *, lock: bool = False) -> Command | None:
    async with conn.cursor(row_factory=class_row(Command)) as cur:
        await cur.execute(f"SELECT {COLUMNS} FROM control_commands WHERE id = %s" + (" FOR UPDATE" if lock else ""),
                          (command_id,))
        return await cur.fetchone()


async def list_commands(conn: AsyncConnection[Any], where: str = "TRUE", params: Sequence[Any] = (),
                        limit: int = 1000) -> list[Command]:
    async with conn.cursor(row_factory=class_row(Command)) as cur:
        await cur.execute(f"SELECT {COLUMNS} FROM control_commands WHERE {where} ORDER BY id LIMIT {int(limit)}",
                          params)
        return await cur.fetchall()


async def transition(
    conn: AsyncConnection[Any],
    cmd: Command,
    event: Event,
    *,
    operator: str,
    reason: str = "",
    tx: bytes | None = None,
    rx: bytes | None = None,
    details: dict[str, Any] | None = None,
    secrets: Iterable[str] = (),
    **fields: Any,
) -> State:
    """Move ``cmd`` by ``event`` (validated against the table), update columns, append the audit row."""
    new = next_state(cmd.state, event)
    sets = ["state = %(new_state)s", "updated_at = now()"]
    params: dict[str, Any] = {"new_state": new.value, "id": cmd.id, "old_state": cmd.state}
    for k, v in fields.items():
        if k not in Command.__slots__:  # column names come from the dataclass, never from input
            raise ValueError(k)
        sets.append(f"{k} = %(f_{k})s")
        params[f"f_{k}"] = v
    secrets = tuple(secrets)
    params.update({
        "action": f"command.{event.value}", "operator": operator, "approver": fields.get("approver", cmd.approver),
        "plan_id": cmd.plan_id, "meter": cmd.meter, "account": cmd.account,
        "reason": audit.mask_text(reason or cmd.reason, secrets), "tx": audit.frame_text(tx, secrets),
        "rx": audit.frame_text(rx, secrets), "details": Jsonb(dict(details or {})),
    })
    # One statement: the row moves and its audit row is written atomically, in one round trip.
    cur = await conn.execute(
        f"""WITH moved AS (UPDATE control_commands SET {', '.join(sets)}
                            WHERE id = %(id)s AND state = %(old_state)s RETURNING id)
            INSERT INTO control_audit (command_id, plan_id, meter, account, action, from_state, to_state,
                                       operator, approver, reason, tx_frame, rx_frame, details)
            SELECT id, %(plan_id)s, %(meter)s, %(account)s, %(action)s, %(old_state)s, %(new_state)s,
                   %(operator)s, %(approver)s, %(reason)s, %(tx)s, %(rx)s, %(details)s FROM moved
            RETURNING id""", params)
    if await cur.fetchone() is None:
        raise RuntimeError(f"command {cmd.id} changed under us (expected state {cmd.state})")
    cmd.state = new.value
    for k, v in fields.items():
        setattr(cmd, k, v)
    return new


async def load_accounts(
    conn: AsyncConnection[Any],
    directory: MeterDirectory,
    accounts: Sequence[str] | None = None,
) -> list[AccountState]:
    """Accounts in arrears (or the given ones) with notices and exemptions, for the rules.

    The meter comes from the billing link (``control_accounts``), else from the store's asset tables
    (account -> service point -> current meter installation); the store's ``accounts.keep_power``
    flag (保电) counts as a keep-power exemption.
    """
    where, params = ("a.account = ANY(%s)", [list(accounts)]) if accounts is not None else ("TRUE", [])
    cur = await conn.execute(
        f"""SELECT a.account,
                   coalesce(ca.meter, (SELECT mi.meter FROM accounts ba
                                         JOIN service_points sp ON sp.account_id = ba.id
                                         JOIN meter_installations mi ON mi.service_point_id = sp.id
                                        WHERE ba.account_no = a.account AND mi.removed_at IS NULL
                                        ORDER BY mi.installed_at DESC LIMIT 1)),
                   a.amount, a.days_overdue, coalesce(ca.utility, 'default'),
                   a.cleared_at IS NOT NULL,
                   (SELECT coalesce(json_agg(json_build_array(n.kind, n.delivered_at, n.method)), '[]')
                      FROM notices n WHERE n.account = a.account),
                   (SELECT coalesce(jsonb_agg(jsonb_build_array(e.kind, e.until, e.note)), '[]'::jsonb)
                      FROM exemptions e WHERE e.account = a.account AND e.since <= now())
                   || (SELECT coalesce(jsonb_agg(jsonb_build_array('keep_power', NULL, 'keep-power flag on the '
                                                                   || 'account')), '[]'::jsonb)
                         FROM accounts ba WHERE ba.account_no = a.account AND ba.keep_power)
              FROM arrears a LEFT JOIN control_accounts ca ON ca.account = a.account
             WHERE {where} ORDER BY a.account""", params)
    return [
        AccountState(account=acc, meter=meter, amount=float(amount), days_overdue=int(days), utility=util,
                     bus=directory.bus_of(meter), cleared=bool(cleared),
                     notices=tuple(Notice(k, _ts(d), m) for k, d, m in notices),
                     exemptions=tuple(Exemption(k, _ts(u), note) for k, u, note in exemptions))
        for acc, meter, amount, days, util, cleared, notices, exemptions in await cur.fetchall()
    ]


def _ts(value: str | None) -> datetime | None:
    """A timestamptz from json_build_array (ISO text; infinity never occurs for these columns)."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


async def sent_today(conn: AsyncConnection[Any], since: datetime) -> tuple[dict[str, int], int]:
    """Disconnects sent since ``since`` (start of the local day): per bus and in total."""
    cur = await conn.execute(
        "SELECT bus, count(*) FROM control_commands WHERE kind = 'disconnect' AND sent_at >= %s GROUP BY bus",
        (since,))
    per_bus = {b: int(n) for b, n in await cur.fetchall()}
    return per_bus, sum(per_bus.values())


async def busy_meters(conn: AsyncConnection[Any]) -> dict[str, tuple[int, str, str]]:
    """Meters with a disconnect in flight or in force: meter -> (command id, kind, state)."""
    cur = await conn.execute(
        """SELECT DISTINCT ON (meter) meter, id, kind, state FROM control_commands
             WHERE state = ANY(%s) OR (kind = 'disconnect' AND state IN ('confirmed', 'escalated'))
             ORDER BY meter, id DESC""", (list(_ACTIVE),))
    return {m: (int(i), k, s) for m, i, k, s in await cur.fetchall()}
