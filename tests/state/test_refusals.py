"""router/state/refusals.py: a script's error reply read once, by its first word."""

from __future__ import annotations

import pytest

from router.errors import Conflict, GateRefused
from router.state.refusals import refusal


@pytest.mark.parametrize(
    ("reply", "kind", "gate", "system"),
    [
        pytest.param("EXPECT b", GateRefused, "expect", "b", id="expect-names-the-actual"),
        pytest.param("EXPECT ", GateRefused, "expect", "(none)", id="expect-nothing-active"),
        pytest.param("OFFLINE", GateRefused, "offline", "a", id="offline"),
        pytest.param("ACTIVE", GateRefused, "active", "a", id="active"),
        pytest.param("CHANGED", Conflict, None, None, id="changed"),
    ],
)
def test_a_refusal_is_named_by_its_first_word(
    reply: str, kind: type[Exception], gate: str | None, system: str | None
) -> None:
    found = refusal(reply, system="a", expected="a")
    assert type(found) is kind
    if isinstance(found, GateRefused):
        assert found.gate == gate
        assert found.system == system


@pytest.mark.parametrize(
    "reply",
    [
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "ERR Error running script: OFFLINE inside another message",
        "NOSCRIPT No matching script",
        "",
    ],
)
def test_any_other_error_is_no_refusal(reply: str) -> None:
    assert refusal(reply, system="a", expected="a") is None
