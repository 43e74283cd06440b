"""The command lifecycle: ONE transition table. Anything not in it is invalid.

::

    planned --approve--> approved --send--> sent --confirm--> confirmed
       |                    |                 |--refuse/mismatch--> failed --retry--> sent
       +--cancel------------+--block-->       |--no_reply---------> unknown --retry--> sent
                          cancelled           |                               --confirm--> confirmed
                                              failed/unknown --escalate--> escalated (field work order)
                                              escalated --field_done--> confirmed

``send`` is recorded (and committed) *before* the frame goes out, so a restart finds the
command in ``sent`` and verifies by read-back instead of sending again. A reconnect is a
command of its own (kind ``reconnect``) with the same lifecycle; it is created already
``approved`` by policy (restoring supply needs no second operator) and is never ``block``ed.
A disconnect still waiting (planned/approved) when the customer pays is cancelled
(``paid``). A confirmed disconnect is ``superseded`` when its reconnect is confirmed.
"""

from __future__ import annotations

from enum import StrEnum

from protocols.errors import HeadendError

__all__ = ["ACTIVE", "FINAL", "TRANSITIONS", "Event", "InvalidTransition", "State", "next_state"]


class State(StrEnum):
    PLANNED = "planned"
    APPROVED = "approved"
    SENT = "sent"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    UNKNOWN = "unknown"
    ESCALATED = "escalated"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"  # a confirmed cut undone by a confirmed reconnect


class Event(StrEnum):
    APPROVE = "approve"
    CANCEL = "cancel"
    BLOCK = "block"  # interlocks refused at send time: no frame
    PAID = "paid"  # arrears cleared before the cut went out
    SEND = "send"  # recorded before the frame is transmitted
    CONFIRM = "confirm"  # read-back shows the intended relay state
    REFUSE = "refuse"  # the meter answered with an error (e.g. password)
    MISMATCH = "mismatch"  # accepted, but the read-back shows the other state
    NO_REPLY = "no_reply"  # no answer to the command or the read-back
    RETRY = "retry"
    ESCALATE = "escalate"  # attempts exhausted: a field work order
    FIELD_DONE = "field_done"  # the crew confirmed the state on site
    SUPERSEDE = "supersede"


S, E = State, Event

#: (state, event) -> next state. The whole lifecycle; audited as data.
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.PLANNED, E.APPROVE): S.APPROVED,
    (S.PLANNED, E.CANCEL): S.CANCELLED,
    (S.PLANNED, E.PAID): S.CANCELLED,
    (S.APPROVED, E.CANCEL): S.CANCELLED,
    (S.APPROVED, E.PAID): S.CANCELLED,
    (S.APPROVED, E.BLOCK): S.CANCELLED,
    (S.APPROVED, E.SEND): S.SENT,
    (S.SENT, E.CONFIRM): S.CONFIRMED,
    (S.SENT, E.REFUSE): S.FAILED,
    (S.SENT, E.MISMATCH): S.FAILED,
    (S.SENT, E.NO_REPLY): S.UNKNOWN,
    (S.FAILED, E.RETRY): S.SENT,
    (S.FAILED, E.ESCALATE): S.ESCALATED,
    (S.FAILED, E.PAID): S.CANCELLED,
    (S.UNKNOWN, E.RETRY): S.SENT,
    (S.UNKNOWN, E.CONFIRM): S.CONFIRMED,
    (S.UNKNOWN, E.ESCALATE): S.ESCALATED,
    (S.ESCALATED, E.FIELD_DONE): S.CONFIRMED,
    (S.CONFIRMED, E.SUPERSEDE): S.SUPERSEDED,
    (S.ESCALATED, E.SUPERSEDE): S.SUPERSEDED,
}

#: States a command can still move out of by the executor.
ACTIVE = frozenset({S.PLANNED, S.APPROVED, S.SENT, S.FAILED, S.UNKNOWN})
FINAL = frozenset({S.CONFIRMED, S.ESCALATED, S.CANCELLED, S.SUPERSEDED})


class InvalidTransition(HeadendError):
    """The event is not allowed in the command's current state."""


def next_state(state: State | str, event: Event | str) -> State:
    try:
        return TRANSITIONS[(State(state), Event(event))]
    except (KeyError, ValueError):
        raise InvalidTransition(f"{event} is not allowed for a command that is {state}") from None
