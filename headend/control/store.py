"""Database access for the control module: account states for the rules, commands and their transitions.

Every state change goes through :func:`transition`, which checks the move against the one
transition table (:mod:`headend.control.transitions`) and appends the audit row in the same
transaction, so the command row and its audit trail never disagree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

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


_COLS = ("id, plan_id, account, meter, bus, kind, command, state, attempts, operator, approver, reason, created_at, "
         "sent_at, confirmed_at, deadline_at, valid_until, relay_state, last_error, work_order_id, undoes")


async def get_command(conn: AsyncConnection[Any], command_id: int, *, lock: bool = False) -> Command | None:
    async with conn.cursor(row_factory=class_row(Command)) as cur:
        await cur.execute(f"SELECT {_COLS} FROM control_commands WHERE id = %s" + (" FOR UPDATE" if lock else ""),
                          (command_id,))
        return await cur.fetchone()


async def list_commands(conn: AsyncConnection[Any], where: str = "TRUE", params: Sequence[Any] = (),
                        limit: int = 1000) -> list[Command]:
    async with conn.cursor(row_factory=class_row(Command)) as cur:
        await cur.execute(f"SELECT {_COLS} FROM control_commands WHERE {where} ORDER BY id LIMIT {int(limit)}",
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
    sets = ["state = %s", "updated_at = now()"]
    params: list[Any] = [new.value]
    for k, v in fields.items():
        if k not in Command.__slots__:  # column names come from the dataclass, never from input
            raise ValueError(k)
        sets.append(f"{k} = %s")
        params.append(v)
    cur = await conn.execute(f"UPDATE control_commands SET {', '.join(sets)} WHERE id = %s AND state = %s",
                             [*params, cmd.id, cmd.state])
    if cur.rowcount != 1:
        raise RuntimeError(f"command {cmd.id} changed under us (expected state {cmd.state})")
    await audit.record(conn, action=f"command.{event.value}", operator=operator,
                       approver=fields.get("approver", cmd.approver),
                       command_id=cmd.id, plan_id=cmd.plan_id, meter=cmd.meter, account=cmd.account,
                       from_state=cmd.state, to_state=new.value, reason=reason or cmd.reason, tx=tx, rx=rx,
                       details=details, secrets=secrets)
    cmd.state = new.value
    for k, v in fields.items():
        setattr(cmd, k, v)
    return new


async def load_accounts(
    conn: AsyncConnection[Any],
    directory: MeterDirectory,
    accounts: Sequence[str] | None = None,
) -> list[AccountState]:
    """Accounts in arrears (or the given ones) with notices and exemptions, for the rules."""
    where, params = ("a.account = ANY(%s)", [list(accounts)]) if accounts is not None else ("TRUE", [])
    cur = await conn.execute(
        f"""SELECT a.account, ca.meter, a.amount, a.days_overdue, coalesce(ca.utility, 'default'),
                   a.cleared_at IS NOT NULL
              FROM arrears a LEFT JOIN control_accounts ca ON ca.account = a.account
             WHERE {where} ORDER BY a.account""", params)
    rows = await cur.fetchall()
    names = [r[0] for r in rows]
    notices: dict[str, list[Notice]] = defaultdict(list)
    cur = await conn.execute("SELECT account, kind, delivered_at, method FROM notices WHERE account = ANY(%s)",
                             (names,))
    for acc, kind, delivered, method in await cur.fetchall():
        notices[acc].append(Notice(kind, delivered, method))
    exemptions: dict[str, list[Exemption]] = defaultdict(list)
    cur = await conn.execute("SELECT account, kind, until, note FROM exemptions WHERE account = ANY(%s) "
                             "AND since <= now()", (names,))
    for acc, kind, until, note in await cur.fetchall():
        exemptions[acc].append(Exemption(kind, until, note))
    return [
        AccountState(account=acc, meter=meter, amount=float(amount), days_overdue=int(days), utility=util,
                     bus=directory.bus_of(meter), notices=tuple(notices[acc]), exemptions=tuple(exemptions[acc]),
                     cleared=bool(cleared))
        for acc, meter, amount, days, util, cleared in rows
    ]


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
