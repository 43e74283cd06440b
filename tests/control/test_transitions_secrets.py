"""The transition table as data, secrets loading and masking, roles and config guards."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.control.config import ControlSettings
from headend.control.roles import PermissionDenied, require_role, resolve_operator
from headend.control.secrets import install_log_masking, load_secrets, mask_frame, mask_text, wire_forms
from headend.control.transitions import FINAL, TRANSITIONS, Event, InvalidTransition, State, next_state
from protocols.dlt645.frame import Frame, encode_frame
from protocols.errors import ConfigError


def test_table_lifecycle_paths() -> None:
    s = State.PLANNED
    for ev in (Event.APPROVE, Event.SEND, Event.NO_REPLY, Event.RETRY, Event.MISMATCH, Event.ESCALATE,
               Event.FIELD_DONE):
        s = next_state(s, ev)
    assert s is State.CONFIRMED
    assert next_state(State.APPROVED, Event.BLOCK) is State.CANCELLED
    with pytest.raises(InvalidTransition):
        next_state(State.PLANNED, Event.SEND)  # never sent without approval
    with pytest.raises(InvalidTransition):
        next_state(State.CANCELLED, Event.SEND)
    with pytest.raises(InvalidTransition):
        next_state(State.SENT, Event.SEND)  # a sent command is resolved, never sent again as is


def test_every_state_reachable_and_only_approved_or_retry_sends() -> None:
    reach = {State.PLANNED}
    frontier = [State.PLANNED]
    while frontier:
        s = frontier.pop()
        for (a, _e), b in TRANSITIONS.items():
            if a == s and b not in reach:
                reach.add(b)
                frontier.append(b)
    assert reach == set(State)
    into_sent = {(a, e) for (a, e), b in TRANSITIONS.items() if b is State.SENT}
    assert into_sent == {(State.APPROVED, Event.SEND), (State.FAILED, Event.RETRY), (State.UNKNOWN, Event.RETRY)}
    assert not any(a in (State.CANCELLED, State.SUPERSEDED) for a, _ in TRANSITIONS)
    assert State.CONFIRMED in FINAL


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(Event)), max_size=30))
def test_random_event_sequences_stay_in_the_table(events: list[Event]) -> None:
    s = State.PLANNED
    sends = 0
    for ev in events:
        try:
            n = next_state(s, ev)
        except InvalidTransition:
            assert (s, ev) not in TRANSITIONS
            continue
        assert (s, ev) in TRANSITIONS
        if n is State.SENT:
            sends += 1
            assert s in (State.APPROVED, State.FAILED, State.UNKNOWN)
        s = n


def test_secrets_from_env_and_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "secrets.toml"
    f.write_text('[meters.default]\npassword = "a1b2c3"\nlevel = 4\n[meters."000000000009"]\npassword = "999999"\n'
                 '[operators]\nalice = "00000042"\n')
    s = load_secrets(f, {"HEADEND_OPERATOR_CODE": "11112222"})
    c = s.credentials("000000000001", "alice")
    assert (c.password, c.password_level, c.operator) == ("A1B2C3", 4, "00000042")
    assert s.credentials("000000000009", "bob").operator == "11112222"
    assert "a1b2c3" not in repr(s).lower() and "a1b2c3" not in repr(c).lower()
    assert s.source == "file+env"
    with pytest.raises(ConfigError) as exc:
        load_secrets(None, {"HEADEND_METER_PASSWORD": "not-hex-secret"})
    assert "not-hex-secret" not in str(exc.value)
    with pytest.raises(ConfigError):
        load_secrets(None, {}).credentials("000000000001", "alice")


def test_main_config_refuses_secrets() -> None:
    with pytest.raises(ValueError, match="secrets file"):
        ControlSettings.model_validate({"utilities": {"default": {"meter_password": "123456"}}})


def test_roles_and_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    cs = ControlSettings(roles={"plan": ["alice"], "approve": ["*"]})
    require_role(cs, "plan", "alice")
    require_role(cs, "approve", "anyone")
    with pytest.raises(PermissionDenied):
        require_role(cs, "plan", "mallory")
    with pytest.raises(PermissionDenied, match="nobody holds"):
        require_role(cs, "execute", "alice")
    monkeypatch.delenv("HEADEND_OPERATOR", raising=False)
    with pytest.raises(PermissionDenied):
        resolve_operator(None)
    monkeypatch.setenv("HEADEND_OPERATOR", "carol")
    assert resolve_operator(None) == "carol"


def test_frame_masking_hides_password_operator_and_checksum() -> None:
    # 1C plain data: PA P0..P2 C0..C3 N1 N2 valid-until (ss mm hh DD MM YY, BCD)
    data = bytes([0x02]) + bytes.fromhex("654321")[::-1] + bytes.fromhex("13572468")[::-1] + bytes(
        [0x1A, 0x00, 0x00, 0x00, 0x10, 0x24, 0x11, 0x26])
    raw = encode_frame(Frame("000000000001", 0x1C, data))
    masked = mask_frame(raw)
    assert masked.count("**") == 8  # P0..P2, C0..C3, CS
    assert "68 1c 10 35" in masked  # PA level (02+33) still visible, N1 etc. kept
    for form in wire_forms("654321") | wire_forms("13572468"):
        assert form not in masked
    assert mask_text("pw 654321 seen", ["654321"]) == "pw *** seen"


def test_log_masking_covers_trace_dumps_and_messages(caplog: pytest.LogCaptureFixture) -> None:
    install_log_masking(["a1b2c3", "24681357"])
    caplog.set_level(5)
    raw = bytes.fromhex("fefefefe680100000000006814104d33") + bytes((0xC3 + 0x33) & 0xFF, )
    logging.getLogger("headend.trace").log(5, "%s %s %s", "bus", "TX", raw.hex(" "))
    logging.getLogger("x").warning("oops password=%s code=%s", "A1B2C3", "24681357")
    le = bytes((b + 0x33) & 0xFF for b in bytes.fromhex("a1b2c3")[::-1]).hex(" ")
    logging.getLogger("x").warning("frame %s", "68 1c 10 35 " + le)
    text = caplog.text.lower()
    assert "a1b2c3" not in text and "24681357" not in text and le not in text
    assert text.count("***") >= 3


def test_example_configs_load() -> None:
    from datetime import date
    from pathlib import Path

    from headend.control.calendar import load_calendar
    from headend.settings import load_settings

    root = Path(__file__).resolve().parents[2] / "config"
    s = load_settings(root / "control.example.toml")
    assert s.control.policy("industrial").reconnect_mode == "close_permit"
    assert s.control.policy("nope").notice_days == 7  # unknown utility -> default
    cal = load_calendar(root / "holidays.example.toml", "default")
    assert cal.holiday(date(2026, 10, 1)) == "National Day" and not cal.is_rest_day(date(2026, 2, 14))
    store = load_secrets(root / "secrets.example.toml", {})
    assert store.credentials("000000000007", "alice").password_level == 4
