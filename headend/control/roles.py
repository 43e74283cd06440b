"""Who may do what: roles from the ``[control.roles]`` config, plus the two-person rule.

::

    [control.roles]
    import = ["billing-bot", "alice"]
    plan = ["alice", "bob"]
    approve = ["carol"]
    execute = ["alice", "bob", "daemon"]

``"*"`` grants a role to any identified operator. An operator is always required
(``--operator`` or ``HEADEND_OPERATOR``); an empty identity is refused.
"""

from __future__ import annotations

import os

from headend.control.config import ROLE_NAMES, ControlSettings
from protocols.errors import HeadendError

__all__ = ["PermissionDenied", "require_role", "resolve_operator"]


class PermissionDenied(HeadendError):
    """The operator lacks the role, or the two-person rule refuses the action."""


def resolve_operator(operator: str | None) -> str:
    op = (operator or os.environ.get("HEADEND_OPERATOR") or "").strip()
    if not op:
        raise PermissionDenied("an operator identity is required: --operator NAME or HEADEND_OPERATOR")
    return op


def require_role(settings: ControlSettings, role: str, operator: str) -> None:
    if role not in ROLE_NAMES:
        raise ValueError(f"unknown role {role}")
    members = settings.roles.get(role, [])
    if operator in members or ("*" in members and operator):
        return
    if not members:
        raise PermissionDenied(f"nobody holds the {role!r} role: configure [control.roles] {role} = [...]")
    raise PermissionDenied(f"operator {operator!r} does not hold the {role!r} role")
