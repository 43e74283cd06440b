"""Execution: drive each command through the transition table, over the meter's own protocol.

Per command (:meth:`Executor.run_one`), under a claim (a lease in ``control_commands``, so two
executors never drive the same command; a crashed executor's claim expires after
:data:`CLAIM_SECONDS`); database connections are held only for the database work, never
across the exchange on the bus:

1. ``approved``: re-check every interlock *now* (rules, exemptions, daily limits); a block
   cancels the command and no frame is sent. A paid account cancels it too.
2. ``send`` is committed *before* the frame goes out (attempt counted, valid-until fixed).
3. The frame goes out through :class:`protocols.client.RelayControl` with control priority.
4. Read-back of the relay state; the result is one event of the table: ``confirm``,
   ``refuse`` (abnormal reply), ``mismatch`` or ``no_reply``.
5. ``failed``/``unknown``: retry while attempts remain and a retry is safe (a read-back
   proved the relay is not in the wanted state; a password error is never retried), else
   ``escalate`` with a field work order.

A command found in ``sent`` (an executor died between send and result) is resolved by a
read-back first, never by sending again: a restart resumes, it does not repeat.
Reconnects are never subject to the cut rules.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time as _time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from headend.control import store
from headend.control.config import ControlSettings
from headend.control.directory import ClientProvider, MeterDirectory
from headend.control.planner import ExternalHook, Planner
from headend.control.rules import MANUAL_RULES, AccountState, apply_limits, evaluate
from headend.control.secrets import SecretStore
from headend.control.store import Command
from headend.control.transitions import FINAL, Event, State
from protocols.client import ControlResult, RelayCommand, RelayRequest, RelayState
from protocols.errors import DeviceError, HeadendError

__all__ = ["TARGETS", "ExecutionReport", "Executor", "Outcome", "raise_field_order"]

LOGGER = logging.getLogger(__name__)

#: Relay states that confirm each command. A close-permit only arms the relay (the customer
#: closes it with the button), so either state confirms it once the meter accepted.
TARGETS: dict[RelayCommand, frozenset[RelayState]] = {
    RelayCommand.TRIP: frozenset({RelayState.OPEN}),
    RelayCommand.CLOSE_DIRECT: frozenset({RelayState.CLOSED}),
    RelayCommand.CLOSE_PERMIT: frozenset({RelayState.OPEN, RelayState.CLOSED}),
}
#: How long an executor's claim on a command lasts (renewed per command; a crashed one expires).
CLAIM_SECONDS = 120.0


@dataclass(slots=True)
class Outcome:
    command_id: int
    meter: str
    kind: str
    state: str
    attempts: int
    reason: str = ""
    work_order_id: int | None = None
    started: float = 0.0  # monotonic, when this executor took the command
    finished: float = 0.0

    @property
    def elapsed(self) -> float:
        return self.finished - self.started

    def as_dict(self) -> dict[str, Any]:
        return {"command": self.command_id, "meter": self.meter, "kind": self.kind, "state": self.state,
                "attempts": self.attempts, "reason": self.reason, "work_order": self.work_order_id,
                "seconds": round(self.elapsed, 3)}


@dataclass(slots=True)
class _Prepared:
    cmd: Command
    utility: str | None
    checked: bool = False  # interlocks already re-checked (a block has already cancelled the command)


@dataclass(slots=True)
class ExecutionReport:
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # locked by another executor

    def count(self, state: str) -> int:
        return sum(1 for o in self.outcomes if o.state == state)

    def as_dict(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for o in self.outcomes:
            states[o.state] = states.get(o.state, 0) + 1
        return {"states": states, "skipped": self.skipped, "commands": [o.as_dict() for o in self.outcomes]}


async def raise_field_order(conn: AsyncConnection[Any], cmd: Command, evidence: Mapping[str, Any]) -> int:
    """The one place that opens a field work order (VEE helper's API, mdm/workorders.py)."""
    from mdm.workorders import WorkOrderType, raise_work_order

    wtype = WorkOrderType.DISCONNECT_VISIT if cmd.kind == "disconnect" else WorkOrderType.RECONNECT_VISIT
    ref = await raise_work_order(conn, meter=cmd.meter, type=wtype, evidence=dict(evidence), source="control")
    return int(ref.id)


class Executor:
    """Executes plans, manual commands and due reconnects against the meters."""

    def __init__(
        self,
        conninfo: str,
        settings: ControlSettings,
        directory: MeterDirectory,
        secrets: SecretStore,
        *,
        clients: Mapping[str, Any] | None = None,
        timezone: str = "Asia/Shanghai",
        now: Callable[[], datetime] | None = None,
        hooks: Sequence[str | ExternalHook] | None = None,
        pool_size: int | None = None,
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.secrets = secrets
        self.clients = ClientProvider(directory, clients)
        self.planner = Planner(settings, directory, timezone=timezone, hooks=hooks)
        self.now = now or (lambda: datetime.now(UTC))
        if pool_size is None:  # about one connection per two buses driven in parallel, within reason
            pool_size = max(2, min(40, len({r.bus for r in directory.routes.values()}) // 2 + 2))
        self.pool = AsyncConnectionPool(conninfo, min_size=1, max_size=pool_size, open=False,
                                        kwargs={"autocommit": True})
        self._secret_values = tuple(secrets.values())
        self.executor_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: command id -> seconds spent on the bus (waiting for it, command, read-back), for benchmarks
        self.bus_seconds: dict[int, float] = {}

    async def __aenter__(self) -> Executor:
        await self.pool.open(wait=True, timeout=10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.clients.aclose()
        await self.pool.close()

    # -- entry points ------------------------------------------------------------------------------
    async def execute_plan(self, plan_id: int, operator: str,
                           progress: Callable[[int, Outcome | None], None] | None = None) -> ExecutionReport:
        from headend.control.roles import require_role

        require_role(self.settings, "execute", operator)
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT status FROM control_plans WHERE id = %s", (plan_id,))
            row = await cur.fetchone()
            if row is None:
                raise HeadendError(f"no plan {plan_id}")
            if row[0] not in ("approved", "executing", "done"):
                from headend.control.roles import PermissionDenied

                raise PermissionDenied(f"plan {plan_id} is {row[0]}: it must be approved before it is executed")
            await conn.execute("UPDATE control_plans SET status = 'executing' WHERE id = %s AND status = 'approved'",
                               (plan_id,))
            ids = [c.id for c in await store.list_commands(conn, "plan_id = %s", (plan_id,), limit=100000)]
        report = await self.execute_ids(ids, operator, progress)
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM control_commands WHERE plan_id = %s AND state IN "
                                     "('planned', 'approved', 'sent', 'failed', 'unknown')", (plan_id,))
            left = await cur.fetchone()
            if left is not None and left[0] == 0:
                await conn.execute("UPDATE control_plans SET status = 'done' WHERE id = %s", (plan_id,))
        return report

    async def execute_ids(self, ids: Sequence[int], operator: str,
                          progress: Callable[[int, Outcome | None], None] | None = None) -> ExecutionReport:
        """Run commands, buses in parallel, one command at a time per bus, in id order.

        ``progress(total, outcome)`` is called once with ``(total, None)``, then after every command."""
        async with self.pool.connection() as conn:
            cmds = await store.list_commands(conn, "id = ANY(%s)", (list(ids),), limit=len(ids) + 1)
        by_bus: dict[str, list[int]] = {}
        for c in cmds:
            by_bus.setdefault(c.bus or self.directory.bus_of(c.meter), []).append(c.id)
        report = ExecutionReport()
        if progress is not None:
            progress(len(cmds), None)

        async def bus_worker(bus_ids: list[int]) -> None:
            # The database half of the next command (claim, interlock re-check) runs while the current
            # one is on the bus, so database latency does not add to the bus's time per command.
            nxt: asyncio.Task[_Prepared | None] | None = asyncio.create_task(self._prepare(bus_ids[0], operator))
            try:
                for i, cid in enumerate(bus_ids):
                    assert nxt is not None
                    prep = await nxt
                    nxt = None
                    out: Outcome | None = None
                    if prep is not None:
                        # start preparing the next one once this one's `send` is committed (so today's
                        # counts seen by its interlock check include this command), or once it ended
                        sent = asyncio.Event()
                        finish = asyncio.create_task(self._finish(prep, operator, sent.set))
                        waiter = asyncio.create_task(sent.wait())
                        try:
                            await asyncio.wait({finish, waiter}, return_when=asyncio.FIRST_COMPLETED)
                            if i + 1 < len(bus_ids):
                                nxt = asyncio.create_task(self._prepare(bus_ids[i + 1], operator))
                            out = await finish
                        except BaseException:
                            finish.cancel()  # never leave a command running on its own
                            raise
                        finally:
                            waiter.cancel()
                    elif i + 1 < len(bus_ids):
                        nxt = asyncio.create_task(self._prepare(bus_ids[i + 1], operator))
                    if out is None:
                        report.skipped.append(cid)
                    else:
                        report.outcomes.append(out)
                    if progress is not None:
                        progress(len(cmds), out)
                    gap = self.planner.policy(None).min_gap_per_bus
                    if gap and i + 1 < len(bus_ids):
                        await asyncio.sleep(gap)
            finally:
                if nxt is not None:  # interrupted: do not keep a claim on a command we will not run
                    nxt.cancel()
                    try:
                        left = await nxt
                    except (asyncio.CancelledError, HeadendError):
                        left = None
                    if left is not None:
                        await self._release(left.cmd.id)

        async with asyncio.TaskGroup() as tg:
            for bus_ids in by_bus.values():
                tg.create_task(bus_worker(bus_ids))
        return report

    async def create_command(self, meter: str, kind: str, *, operator: str, reason: str,
                             command: RelayCommand | None = None) -> int:
        """A manual disconnect or reconnect, approved by the operator who asks for it."""
        from headend.control import audit
        from headend.control.roles import require_role

        require_role(self.settings, "execute", operator)
        if not reason.strip():
            raise HeadendError("a reason is required")
        route = self.directory.route(meter)
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT account, utility FROM control_accounts WHERE meter = %s LIMIT 1",
                                     (meter,))
            row = await cur.fetchone()
            account = row[0] if row else None
            util = row[1] if row else None
            if command is None:
                command = RelayCommand.TRIP if kind == "disconnect" else RelayCommand(
                    self.planner.policy(util).reconnect_mode)
            deadline = self.now() + timedelta(hours=self.planner.policy(util).reconnect_within_hours) \
                if kind == "reconnect" else None
            busy = await store.list_commands(conn, "meter = %s AND state IN ('planned', 'approved', 'sent', "
                                                   "'failed', 'unknown')", (meter,), limit=1)
            if busy:
                from headend.control.roles import PermissionDenied

                raise PermissionDenied(f"meter {meter} already has {busy[0].kind} command {busy[0].id} "
                                       f"({busy[0].state}); finish or cancel it first")
            undoes = None
            if kind == "reconnect":  # a reconnect undoes the cut in force, so that cut is superseded when confirmed
                cur = await conn.execute("SELECT id FROM control_commands WHERE meter = %s AND kind = 'disconnect' "
                                         "AND state IN ('confirmed', 'escalated') ORDER BY id DESC LIMIT 1", (meter,))
                prev = await cur.fetchone()
                undoes = prev[0] if prev else None
            cur = await conn.execute(
                """INSERT INTO control_commands (account, meter, bus, kind, command, state, operator, approver,
                                                 reason, deadline_at, undoes)
                   VALUES (%s, %s, %s, %s, %s, 'approved', %s, %s, %s, %s, %s) RETURNING id""",
                (account, meter, route.bus, kind, command.value, operator, operator, reason, deadline, undoes))
            r = await cur.fetchone()
            assert r is not None
            await audit.record(conn, action=f"command.create.{kind}", operator=operator, approver=operator,
                               command_id=int(r[0]), meter=meter, account=account, to_state="approved",
                               reason=reason, details={"command": command.value, "manual": True})
            return int(r[0])

    async def queue_reconnects(self, operator: str | None = None) -> tuple[list[int], list[int]]:
        """For cleared accounts: cancel pending cuts, create approved reconnects. Returns (cancelled, created)."""
        from headend.control import audit

        who = operator or self.settings.system_operator
        cancelled: list[int] = []
        created: list[int] = []
        async with self.pool.connection() as conn, conn.transaction():
            pending = await store.list_commands(
                conn, "kind = 'disconnect' AND state IN ('planned', 'approved', 'failed') AND account IN "
                      "(SELECT account FROM arrears WHERE cleared_at IS NOT NULL)", limit=100000)
            for cmd in pending:
                await store.transition(conn, cmd, Event.PAID, operator=who, reason="arrears cleared before the cut")
                cancelled.append(cmd.id)
            cur = await conn.execute(
                """SELECT DISTINCT ON (c.meter) c.id, c.account, c.meter, c.bus, a.cleared_at,
                          a.cleared_by_payment, coalesce(ca.utility, 'default')
                     FROM control_commands c JOIN arrears a ON a.account = c.account
                     LEFT JOIN control_accounts ca ON ca.account = c.account
                    WHERE c.kind = 'disconnect' AND c.state IN ('confirmed', 'escalated')
                      AND a.cleared_at IS NOT NULL
                      AND NOT EXISTS (SELECT 1 FROM control_commands r WHERE r.undoes = c.id
                                      AND r.state <> 'cancelled')
                    ORDER BY c.meter, c.id DESC""")
            for did, account, meter, bus, cleared_at, payment, util in await cur.fetchall():
                pol = self.planner.policy(util)
                cur2 = await conn.execute(
                    """INSERT INTO control_commands (account, meter, bus, kind, command, state, operator, approver,
                                                     reason, deadline_at, undoes, payment_id)
                       VALUES (%s, %s, %s, 'reconnect', %s, 'approved', %s, 'policy:auto-reconnect', %s, %s, %s, %s)
                       ON CONFLICT DO NOTHING RETURNING id""",
                    (account, meter, bus, pol.reconnect_mode, who, "arrears cleared: restore supply",
                     cleared_at + timedelta(hours=pol.reconnect_within_hours), did, payment))
                r = await cur2.fetchone()
                if r is not None:
                    created.append(int(r[0]))
                    await audit.record(conn, action="command.create.reconnect", operator=who,
                                       approver="policy:auto-reconnect", command_id=int(r[0]), meter=meter,
                                       account=account, to_state="approved", reason="arrears cleared",
                                       details={"undoes": did, "payment": payment, "mode": pol.reconnect_mode})
        return cancelled, created

    async def sync_field_orders(self) -> list[int]:
        """Escalated commands whose field work order the crew completed: ``field_done`` -> confirmed.

        The crew's identity (``closed_by``) is recorded as the operator, the order's outcome as details.
        A cancelled order leaves the command escalated (a person decided; nothing is assumed).
        """
        done: list[int] = []
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                """SELECT c.id, w.id, coalesce(w.closed_by, ''), w.outcome FROM control_commands c
                     JOIN work_orders w ON w.id = c.work_order_id
                    WHERE c.state = 'escalated' AND w.status = 'completed' ORDER BY c.id""")
            for cid, wid, crew, outcome in await cur.fetchall():
                cmd = await store.get_command(conn, cid, lock=True)
                if cmd is None or cmd.state != State.ESCALATED:
                    continue
                relay = (outcome or {}).get("relay") if isinstance(outcome, dict) else None
                await store.transition(conn, cmd, Event.FIELD_DONE, operator=crew or "field",
                                       reason=f"field work order {wid} completed", confirmed_at=self.now(),
                                       relay_state=relay if relay in ("open", "closed") else cmd.relay_state,
                                       details={"work_order": wid, "outcome": outcome or {}})
                await self._after_confirm(conn, cmd, crew or "field")
                done.append(cid)
        return done

    async def run_due(self, operator: str | None = None) -> ExecutionReport:
        """Close commands settled in the field, queue reconnects for cleared accounts, and drive every
        approved reconnect and unfinished command."""
        who = operator or self.settings.system_operator
        await self.sync_field_orders()
        await self.queue_reconnects(who)
        async with self.pool.connection() as conn:
            cmds = await store.list_commands(
                conn, "(kind = 'reconnect' AND state IN ('approved', 'sent', 'failed', 'unknown')) OR "
                      "(kind = 'disconnect' AND state IN ('sent', 'failed', 'unknown'))", limit=100000)
        return await self.execute_ids([c.id for c in cmds], who)

    # -- one command ---------------------------------------------------------------------------------
    async def run_one(self, command_id: int, operator: str) -> Outcome | None:
        """Drive one command to a resting state; None when another executor holds its claim."""
        prep = await self._prepare(command_id, operator)
        return None if prep is None else await self._finish(prep, operator)

    async def _prepare(self, command_id: int, operator: str) -> _Prepared | None:
        """Claim the command and, for a cut about to be sent, re-check every interlock (a block cancels it)."""
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                f"""UPDATE control_commands c SET claimed_by = %s, claimed_until = now() + make_interval(secs => %s)
                     WHERE id = %s AND (claimed_until IS NULL OR claimed_until < now() OR claimed_by = %s)
                 RETURNING {store.COLUMNS},
                           (SELECT utility FROM control_accounts a WHERE a.account = c.account) AS utility""",
                (self.executor_id, CLAIM_SECONDS, command_id, self.executor_id))
            row = await cur.fetchone()
            if row is None:
                return None
        utility = row.pop("utility")
        prep = _Prepared(Command(**row), utility)
        if prep.cmd.state == State.APPROVED and prep.cmd.kind == "disconnect":
            try:
                prep.checked = True
                await self._interlocks_pass(prep.cmd, operator)
            except BaseException:
                await self._release(command_id)
                raise
        return prep

    async def _release(self, command_id: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("UPDATE control_commands SET claimed_by = NULL, claimed_until = NULL "
                               "WHERE id = %s AND claimed_by = %s", (command_id, self.executor_id))

    async def _finish(self, prep: _Prepared, operator: str, on_sent: Callable[[], None] | None = None) -> Outcome:
        """The bus half: send, read back, retry or escalate; then release the claim."""
        started = _time.monotonic()
        command_id = prep.cmd.id
        try:
            cmd = await self._drive(prep.cmd, prep.utility, operator, checked=prep.checked, on_sent=on_sent)
        except HeadendError as exc:  # e.g. no route or no password for this meter: the others go on
            LOGGER.error("command %s not executed: %s", command_id, exc)
            async with self.pool.connection() as conn:
                cmd = await self._reload(conn, command_id)
            cmd.last_error = str(exc)
        finally:
            await self._release(command_id)
        return Outcome(cmd.id, cmd.meter, cmd.kind, cmd.state, cmd.attempts, cmd.last_error, cmd.work_order_id,
                       started, _time.monotonic())

    @asynccontextmanager
    async def _tx(self, transaction: bool = True) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection (in a transaction unless told otherwise: a single statement is atomic anyway),
        held only for the database work, never across bus I/O."""
        async with self.pool.connection() as conn:
            if transaction:
                async with conn.transaction():
                    yield conn
            else:
                yield conn

    async def _reload(self, conn: AsyncConnection[Any], command_id: int) -> Command:
        cmd = await store.get_command(conn, command_id)
        if cmd is None:
            raise HeadendError(f"no command {command_id}")
        return cmd

    async def _drive(self, cmd: Command, utility: str | None, operator: str, *, checked: bool = False,
                     on_sent: Callable[[], None] | None = None) -> Command:
        policy = self.planner.policy(utility)
        relay_cmd = RelayCommand(cmd.command)
        target = TARGETS[relay_cmd]
        for _ in range(4 * policy.max_attempts + 4):  # bounded: every path below makes progress
            if State(cmd.state) in FINAL or cmd.state == State.PLANNED:
                return cmd
            if cmd.state == State.APPROVED:
                if cmd.kind == "disconnect" and not checked and not await self._interlocks_pass(cmd, operator):
                    return cmd
                await self._send(cmd, Event.SEND, operator, relay_cmd, target, policy.command_valid_minutes,
                                 policy.readback_attempts, policy.readback_delay, on_sent)
                continue
            if cmd.state == State.SENT:  # found after a restart: resolve by read-back, never resend blindly
                rb = await self._readback(cmd.meter, policy.readback_attempts, policy.readback_delay)
                async with self._tx() as conn:
                    if rb in target:
                        await store.transition(conn, cmd, Event.CONFIRM, operator=operator,
                                               reason="resumed: read-back confirms", relay_state=rb.value,
                                               confirmed_at=self.now(), details={"relay": rb.value},
                                               secrets=self._secret_values)
                        await self._after_confirm(conn, cmd, operator)
                    else:
                        await store.transition(conn, cmd, Event.NO_REPLY, operator=operator,
                                               reason="resumed: outcome of the last send unknown",
                                               relay_state=rb.value if rb else None,
                                               last_error="resumed after restart; read-back "
                                                          + (rb.value if rb else "failed"),
                                               details={"relay": rb.value if rb else None})
                if cmd.state == State.UNKNOWN and rb is None:
                    await self._escalate(cmd, operator, "no reply to the read-back after a restart")
                continue
            if cmd.state in (State.FAILED, State.UNKNOWN):
                retryable = cmd.attempts < policy.max_attempts and "password" not in cmd.last_error \
                    and cmd.relay_state is not None  # a read-back proved it is not done (unknown: never blind)
                if retryable and cmd.kind == "disconnect" and not await self._still_wanted(cmd, operator):
                    return cmd
                if retryable:
                    await self._send(cmd, Event.RETRY, operator, relay_cmd, target,
                                     policy.command_valid_minutes, policy.readback_attempts, policy.readback_delay)
                else:
                    await self._escalate(cmd, operator, cmd.last_error or f"{cmd.state} after "
                                                                                 f"{cmd.attempts} attempts")
                continue
        return cmd

    async def _still_wanted(self, cmd: Command, operator: str) -> bool:
        """Before a retry of a cut: a payment meanwhile cancels it (failed --paid--> cancelled)."""
        if cmd.account is None or cmd.state != State.FAILED:
            return True
        async with self._tx() as conn:
            cur = await conn.execute("SELECT cleared_at IS NOT NULL FROM arrears WHERE account = %s", (cmd.account,))
            row = await cur.fetchone()
            if row and row[0]:
                await store.transition(conn, cmd, Event.PAID, operator=operator, reason="arrears cleared: no retry")
                return False
        return True

    async def _interlocks_pass(self, cmd: Command, operator: str) -> bool:
        """Every rule again, now, for a cut about to be sent. A block cancels the command: no frame."""
        async with self.pool.connection() as conn:
            return await self._interlocks_on(conn, cmd, operator)

    async def _interlocks_on(self, conn: AsyncConnection[Any], cmd: Command, operator: str) -> bool:
        at = self.now()
        if cmd.account and cmd.plan_id is not None:
            states = await store.load_accounts(conn, self.directory, [cmd.account])
            state = states[0] if states else AccountState(cmd.account, cmd.meter, 0.0, 0)
            rules = None
        else:  # manual cut: the protections, not the arrears rules
            state = AccountState(cmd.account or "", cmd.meter, 0.0, 0, bus=cmd.bus)
            if cmd.account:
                found = await store.load_accounts(conn, self.directory, [cmd.account])
                if found:
                    state = found[0]
            rules = MANUAL_RULES
        state = AccountState(state.account, cmd.meter, state.amount, state.days_overdue, state.utility, cmd.bus,
                             state.notices, state.exemptions, state.cleared)
        policy = self.planner.policy(state.utility)
        decision = evaluate(state, at, policy, self.planner.calendar(state.utility),
                            (await self._external(state, at)), rules)
        per_bus, total = await store.sent_today(conn, self.planner.day_start(at, state.utility))
        big = policy.model_copy(update={"batch_per_bus": 10**9})  # the batch size was applied when planning
        decision = apply_limits([decision], lambda _d: big, per_bus, total)[0]
        if decision.cut:
            return True
        async with conn.transaction():
            event = Event.PAID if state.cleared and rules is None else Event.BLOCK
            await store.transition(conn, cmd, event, operator=operator, reason="interlock at send time: "
                                   + "; ".join(c.message for c in decision.reasons),
                                   last_error="; ".join(c.code for c in decision.reasons),
                                   details={"reasons": [c.code for c in decision.reasons]})
        return False

    async def _external(self, state: AccountState, at: datetime) -> list[str]:
        hooks = self.planner.hooks(state.utility)
        if not hooks:
            return []
        from headend.control.planner import run_external_blocks

        return (await run_external_blocks(hooks, [state], at)).get(state.account, [])

    async def _send(self, cmd: Command, event: Event, operator: str,
                    relay_cmd: RelayCommand, target: frozenset[RelayState], valid_minutes: float,
                    rb_attempts: int, rb_delay: float, on_sent: Callable[[], None] | None = None) -> None:
        route = self.directory.route(cmd.meter)
        credentials = self.secrets.credentials(cmd.meter, cmd.operator or operator)
        client = await self.clients.get(route)
        valid_until = datetime.now(UTC) + timedelta(minutes=valid_minutes)
        async with self._tx(transaction=False) as conn:  # one statement, committed before the frame goes out
            await store.transition(conn, cmd, event, operator=operator, attempts=cmd.attempts + 1,
                                   sent_at=self.now(), valid_until=valid_until,
                                   details={"command": relay_cmd.value, "attempt": cmd.attempts + 1,
                                            "protocol": route.protocol, "bus": route.bus})
        if on_sent is not None:
            on_sent()
        request = RelayRequest(cmd.meter, relay_cmd, valid_until, credentials, operator_id=operator,
                               request_id=f"cmd{cmd.id}-{cmd.attempts}")
        result: ControlResult | None = None
        error: BaseException | None = None
        # The read-back is queued right behind the command (same control priority, later arrival), so
        # it gets the bus as soon as the command releases it, ahead of waiting bulk reads.
        t_bus = _time.monotonic()
        send = asyncio.create_task(client.relay_command(request))
        await asyncio.sleep(0)
        readback = asyncio.create_task(self._readback(cmd.meter, rb_attempts, rb_delay)) if not rb_delay else None
        try:
            result = await send
        except DeviceError as exc:
            result = ControlResult(request.request_id, False, "refused: " + (", ".join(exc.flags) or str(exc.code)))
        except HeadendError as exc:  # no reply, garbled reply, breaker open, transport: outcome unknown
            error = exc
        except BaseException:
            if readback is not None:
                readback.cancel()
            raise
        tx = result.tx if result else None
        rx = result.rx if result else None
        if result is not None and not result.accepted:
            if readback is not None:
                readback.cancel()
            reason = result.reason or "refused by the meter"
            async with self._tx(transaction=False) as conn:
                await store.transition(conn, cmd, Event.REFUSE, operator=operator, reason=reason, tx=tx, rx=rx,
                                       last_error=reason, relay_state=None, secrets=self._secret_values)
            return
        rb = await readback if readback is not None else await self._readback(cmd.meter, rb_attempts, rb_delay)
        self.bus_seconds[cmd.id] = self.bus_seconds.get(cmd.id, 0.0) + _time.monotonic() - t_bus
        async with self._tx(transaction=cmd.kind == "reconnect") as conn:  # reconnect also supersedes
            if rb in target:
                why = "read-back confirms" if error is None else \
                    f"no reply to the command ({error}); read-back confirms"
                await store.transition(conn, cmd, Event.CONFIRM, operator=operator, reason=why, tx=tx, rx=rx,
                                       relay_state=rb.value, confirmed_at=self.now(), last_error="",
                                       details={"relay": rb.value}, secrets=self._secret_values)
                await self._after_confirm(conn, cmd, operator)
            elif rb is None:
                why = f"{'no reply to the command: ' + str(error) if error else 'command accepted'}; read-back failed"
                await store.transition(conn, cmd, Event.NO_REPLY, operator=operator, reason=why, tx=tx, rx=rx,
                                       relay_state=None, last_error=why, secrets=self._secret_values)
            elif error is not None:
                why = f"no reply to the command ({error}); read-back shows relay {rb.value}"
                await store.transition(conn, cmd, Event.NO_REPLY, operator=operator, reason=why, tx=tx, rx=rx,
                                       relay_state=rb.value, last_error=why, secrets=self._secret_values)
            else:
                why = f"command accepted but read-back shows relay {rb.value}"
                await store.transition(conn, cmd, Event.MISMATCH, operator=operator, reason=why, tx=tx, rx=rx,
                                       relay_state=rb.value, last_error=why, details={"relay": rb.value},
                                       secrets=self._secret_values)

    async def _readback(self, meter: str, attempts: int, delay: float) -> RelayState | None:
        route = self.directory.route(meter)
        client = await self.clients.get(route)
        for _ in range(attempts):
            if delay:
                await asyncio.sleep(delay)
            try:
                state = await client.relay_state(meter)
            except HeadendError as exc:
                LOGGER.debug("read-back of %s failed: %s", meter, exc)
                continue
            if state is not RelayState.UNKNOWN:
                return state
        return None

    async def _after_confirm(self, conn: AsyncConnection[Any], cmd: Command, operator: str) -> None:
        if cmd.kind == "reconnect" and cmd.undoes is not None:
            prev = await store.get_command(conn, cmd.undoes, lock=True)
            if prev is not None and prev.state in (State.CONFIRMED, State.ESCALATED):
                await store.transition(conn, prev, Event.SUPERSEDE, operator=operator,
                                       reason=f"supply restored by command {cmd.id}")

    async def _escalate(self, cmd: Command, operator: str, why: str) -> None:
        async with self._tx() as conn:
            evidence = {"summary": f"remote {cmd.kind} not confirmed: {why}", "command_id": cmd.id,
                        "key": f"cmd-{cmd.id}", "attempts": cmd.attempts, "relay_state": cmd.relay_state,
                        "account": cmd.account}
            wo = await raise_field_order(conn, cmd, evidence)
            await store.transition(conn, cmd, Event.ESCALATE, operator=operator, reason=why, work_order_id=wo,
                                   details={"work_order": wo})
        LOGGER.warning("command %s (%s %s): %s; work order %s", cmd.id, cmd.kind, cmd.meter, why, wo)
