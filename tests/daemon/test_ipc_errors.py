"""A daemon's error answer is raised in the CLI as the same exception type (read and load paths)."""

from __future__ import annotations

import pytest

from headend.ipc import error_payload, raise_remote
from protocols.errors import (
    ConfigError,
    DeviceError,
    FrameError,
    HeadendError,
    LocalProtocolError,
    NoResponseError,
    TransportError,
    UnknownOutcomeError,
)


@pytest.mark.parametrize("exc", [
    NoResponseError("no answer from 000000000001"),
    TransportError("port closed"),
    ConfigError("bad channel"),
    LocalProtocolError("request too long"),
    UnknownOutcomeError("relay state unknown"),
])
def test_round_trip_keeps_type_and_message(exc: HeadendError) -> None:
    with pytest.raises(type(exc)) as got:
        raise_remote(error_payload(exc))
    assert type(got.value) is type(exc) and str(exc) in str(got.value)


def test_device_and_frame_errors_keep_their_details() -> None:
    with pytest.raises(DeviceError) as dev:
        raise_remote({"type": "DeviceError", "message": "refused", "code": 4, "flags": ["password"]})
    assert dev.value.code == 4 and tuple(dev.value.flags) == ("password",)
    with pytest.raises(FrameError):
        raise_remote({"type": "FrameError", "message": "bad checksum", "reason": "checksum"})


def test_unknown_type_is_a_transport_error_with_the_default_message() -> None:
    with pytest.raises(TransportError, match="daemon load command failed"):
        raise_remote({"type": "SomethingNew"}, "daemon load command failed")
