"""Remote disconnect and reconnect for arrears: rules, one transition table, execution, audit.

See docs/control.md. Modules: :mod:`rules` (cut rules as data, pure), :mod:`transitions`
(the lifecycle table), :mod:`planner`, :mod:`executor`, :mod:`secrets`, :mod:`roles`,
:mod:`audit`, :mod:`calendar`, :mod:`imports`.
"""
