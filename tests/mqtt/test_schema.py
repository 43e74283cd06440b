"""Topic and payload schema: what validates, what becomes a dead letter and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from protocols.errors import ConfigError
from protocols.mqtt.client import MqttClient, MqttUrl
from protocols.mqtt.schema import (
    Channel,
    Command,
    PayloadError,
    Response,
    Status,
    Telemetry,
    Topics,
    decode,
    encode,
)

NOW = datetime(2026, 11, 27, 6, 45, tzinfo=UTC)


def test_topics_round_trip_and_shared_filters():
    t = Topics("ami")
    assert t.topic("LMT00001", Channel.TELEMETRY) == "ami/terminal/LMT00001/telemetry"
    assert t.parse("ami/terminal/LMT00001/resp") == ("LMT00001", Channel.RESPONSE)
    assert t.filter(Channel.STATUS) == "ami/terminal/+/status"
    assert t.filter(Channel.EVENT, shared_group="g1") == "$share/g1/ami/terminal/+/event"
    for bad in ("other/terminal/X/telemetry", "ami/terminal/X/telemetry/extra", "ami/terminal/X/bogus",
                "ami/terminal/bad id/telemetry"):
        with pytest.raises(PayloadError) as exc:
            t.parse(bad)
        assert exc.value.reason == "topic"
    with pytest.raises(PayloadError):
        t.topic("a/b", Channel.COMMAND)


def test_valid_payloads_decode_and_encode_round_trip():
    tel = Telemetry(ts=NOW, values={"power.active.total": 41.2, "interval.energy.active.import": 10.3}, seq=3)
    assert decode(Channel.TELEMETRY, encode(tel)) == tel
    assert decode(Channel.TELEMETRY, b'{"v":1,"ts":1764225900,"values":{"voltage.a":230}}').ts.tzinfo is not None
    st = decode(Channel.STATUS, b'{"v":1,"state":"offline"}')  # the Last Will
    assert isinstance(st, Status) and st.state == "offline" and st.relay is None
    cmd = Command(request_id="r-1", command="purchase_energy", issued_at=NOW, value=100)
    assert cmd.has_side_effects and not Command(request_id="r-2", command="read", issued_at=NOW).has_side_effects
    resp = Response(request_id="r-1", status="accepted", ts=NOW, values={"balance.energy": 150})
    assert decode(Channel.RESPONSE, encode(resp)) == resp


@pytest.mark.parametrize(
    ("channel", "payload", "reason", "words"),
    [
        (Channel.TELEMETRY, b"", "empty", "empty"),
        (Channel.TELEMETRY, b"{not json", "json", "json"),
        (Channel.TELEMETRY, b'{"v":1,"ts":"2026-11-27T06:45:00","values":{"voltage.a":1}}', "schema", "timezone"),
        (Channel.TELEMETRY, b'{"v":1,"ts":1,"values":{"voltage.z":1}}', "schema", "unknown quantity code"),
        (Channel.TELEMETRY, b'{"v":1,"ts":1,"values":{"voltage.a":"high"}}', "schema", "number"),
        (Channel.TELEMETRY, b'{"v":1,"ts":1,"values":{"voltage.a":NaN}}', "schema", "finite"),
        (Channel.TELEMETRY, b'{"v":1,"ts":1,"values":{}}', "schema", "at least 1"),
        (Channel.TELEMETRY, b'{"v":2,"ts":1,"values":{"voltage.a":1}}', "schema", "v"),
        (Channel.TELEMETRY, b'{"v":1,"ts":1,"values":{"voltage.a":1},"colour":"red"}', "schema", "colour"),
        (Channel.STATUS, b'{"v":1,"state":"sleeping"}', "schema", "state"),
        (Channel.EVENT, b'{"v":1,"ts":1,"event":"Cover Open!"}', "schema", "event"),
        (Channel.COMMAND, b'{"v":1,"request_id":"r","command":"set_power_limit","issued_at":1}', "schema",
         "needs a value"),
        (Channel.COMMAND, b'{"v":1,"request_id":"r","command":"purchase_energy","issued_at":1,"value":-5}',
         "schema", "positive"),
        (Channel.COMMAND, b'{"v":1,"request_id":"r","command":"self_destruct","issued_at":1}', "schema", "command"),
        (Channel.RESPONSE, b'{"v":1,"request_id":"r","status":"maybe","ts":1}', "schema", "status"),
    ],
)
def test_invalid_payloads_name_their_reason(channel, payload, reason, words):
    with pytest.raises(PayloadError) as exc:
        decode(channel, payload)
    assert exc.value.reason == reason
    assert words in str(exc.value)


def test_urls_and_options():
    u = MqttUrl.parse("mqtt://user@10.0.0.5:1884?prefix=x&timeout=2")
    assert (u.host, u.port, u.username, u.options) == ("10.0.0.5", 1884, "user", {"prefix": "x", "timeout": "2"})
    c = MqttClient.from_url("mqtt://127.0.0.1?prefix=x&timeout=2", tz="Asia/Shanghai", breaker=False)
    assert c.topics.prefix == "x" and c.timeout == 2.0 and c.conn.port == 1883
    assert c.conn.clean_session  # a random id: no session left behind
    assert not MqttClient.from_url("mqtt://h:1?client_id=hub-1").conn.clean_session
    for bad in ("tcp://h:1", "mqtt://", "mqtt://h:1?colour=red", "mqtt://h:1?timeout=soon", "mqtt://h:1?password=x"):
        with pytest.raises(ConfigError):
            MqttClient.from_url(bad)


def test_encode_is_compact_json():
    doc = json.loads(encode(Status(state="online", relay="closed")))
    assert doc == {"v": 1, "state": "online", "relay": "closed"}
