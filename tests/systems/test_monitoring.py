"""A system's count read through an RFC 6901 pointer or a Prometheus selector
(router/systems/monitoring.py), and the expressions checked as the configuration is
(router/config/stats_expressions.py)."""

from __future__ import annotations

from typing import Any

import pytest

from router.config import build_config
from router.config.stats_expressions import (
    MetricSelector,
    StatsSyntaxError,
    parse_pointer,
    parse_selector,
)
from router.errors import ConfigError
from router.systems.monitoring import json_count, prometheus_count, resolve_pointer

# --- RFC 6901 -----------------------------------------------------------------------------

# The example document and its pointers from RFC 6901 section 5.
RFC_DOC: dict[str, Any] = {
    "foo": ["bar", "baz"],
    "": 0,
    "a/b": 1,
    "c%d": 2,
    "e^f": 3,
    "g|h": 4,
    "i\\j": 5,
    'k"l': 6,
    " ": 7,
    "m~n": 8,
}


@pytest.mark.parametrize(
    ("pointer", "value"),
    [
        ("/foo", ["bar", "baz"]),
        ("/foo/0", "bar"),
        ("/", 0),
        ("/a~1b", 1),
        ("/c%d", 2),
        ("/e^f", 3),
        ("/g|h", 4),
        ("/i\\j", 5),
        ('/k"l', 6),
        ("/ ", 7),
        ("/m~0n", 8),
    ],
)
def test_rfc6901_examples(pointer: str, value: object) -> None:
    assert resolve_pointer(RFC_DOC, parse_pointer(pointer)) == value


@pytest.mark.parametrize("pointer", ["/foo/2", "/foo/01", "/foo/-", "/nope", "/foo/0/x"])
def test_pointer_to_nothing(pointer: str) -> None:
    with pytest.raises(KeyError):
        resolve_pointer(RFC_DOC, parse_pointer(pointer))


@pytest.mark.parametrize("pointer", ["calls/active", "/a~2b", "/a~"])
def test_pointer_syntax(pointer: str) -> None:
    with pytest.raises(StatsSyntaxError):
        parse_pointer(pointer)


@pytest.mark.parametrize(
    ("body", "pointer", "expected"),
    [
        (b'{"calls": {"active": 4}}', "/calls/active", (4, "")),
        (b'{"nodes": [{"calls": 2}, {"calls": 5}]}', "/nodes/1/calls", (5, "")),
        (b'{"calls": {"active": 4.0}}', "/calls/active", (4, "")),
        (b'{"open_sessions": 3}', "", (3, "")),
        (
            b'{"calls": {}}',
            "/calls/active",
            (None, "stats_url answer has nothing at /calls/active (stats_count)"),
        ),
        (
            b'{"calls": {"active": "4"}}',
            "/calls/active",
            (None, "stats_url answer has '4' at /calls/active, not a count (stats_count)"),
        ),
        (
            b'{"calls": {"active": -1}}',
            "/calls/active",
            (None, "stats_url answer has -1 at /calls/active, not a count (stats_count)"),
        ),
        (b"<html>", "/calls/active", (None, "stats_url answer is not JSON")),
    ],
)
def test_json_count(body: bytes, pointer: str, expected: tuple[int | None, str]) -> None:
    assert json_count(body, pointer) == expected


# --- Prometheus ---------------------------------------------------------------------------

EXPOSITION = b"""# HELP calls Calls per broker.
# TYPE calls gauge
calls{broker="mb1",state="active"} 3
calls{broker="mb2",state="active"} 4
calls{broker="mb1",state="held"} 9
# TYPE sessions_total counter
sessions_total 12
odd{x="1"} NaN
"""


def test_selector_is_read_by_the_exposition_parser() -> None:
    assert parse_selector("calls") == MetricSelector("calls")
    assert parse_selector('calls{state="active", broker="mb1"}') == MetricSelector(
        "calls", (("broker", "mb1"), ("state", "active"))
    )
    assert str(parse_selector('calls{state="active"}')) == 'calls{state="active"}'


@pytest.mark.parametrize(
    "text", ["", "calls{", "calls{state=active}", "two words", "calls 3", "# HELP x", "a\nb"]
)
def test_selector_syntax(text: str) -> None:
    with pytest.raises(StatsSyntaxError):
        parse_selector(text)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ('calls{state="active"}', (7, "")),  # summed over the brokers
        ('calls{broker="mb1",state="active"}', (3, "")),
        ("calls", (16, "")),
        ("sessions_total", (12, "")),
        (
            'calls{state="gone"}',
            (None, 'stats_url answer has no sample calls{state="gone"} (stats_metric)'),
        ),
        ("odd", (None, "stats_url samples of odd sum to nan, not a count")),
    ],
)
def test_prometheus_count(selector: str, expected: tuple[int | None, str]) -> None:
    assert prometheus_count(EXPOSITION, parse_selector(selector)) == expected


def test_prometheus_count_of_garbage() -> None:
    count, error = prometheus_count(b'calls{state="active" 3\n', parse_selector("calls"))
    assert count is None and error.startswith("stats_url answer is not Prometheus text")


# --- configuration ------------------------------------------------------------------------


def config_of(**system: Any) -> None:
    build_config(
        {
            "systems": {
                "a": {"gateway": "http://gw:1", "public_url": "https://a.example.com", **system}
            }
        },
        {},
    )


@pytest.mark.parametrize(
    ("system", "key", "message"),
    [
        ({"stats_url": "http://m/x", "stats_format": "xml"}, "stats_format", "not json or"),
        ({"stats_format": "json"}, "stats_format", "set stats_url too"),
        ({"stats_count": "/a"}, "stats_count", "set stats_url too"),
        ({"stats_url": "http://m/x", "stats_count": "a/b"}, "stats_count", "starts with '/'"),
        ({"stats_url": "http://m/x", "stats_metric": "x"}, "stats_metric", "prometheus"),
        (
            {"stats_url": "http://m/x", "stats_format": "prometheus"},
            "stats_metric",
            "is required",
        ),
        (
            {"stats_url": "http://m/x", "stats_format": "prometheus", "stats_metric": "a{"},
            "stats_metric",
            "not a metric name",
        ),
        (
            {
                "stats_url": "http://m/x",
                "stats_format": "prometheus",
                "stats_metric": "a",
                "stats_count": "/a",
            },
            "stats_count",
            "stats_format = json",
        ),
    ],
)
def test_bad_stats_config_names_the_key(system: dict[str, str], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_of(**system)
    assert caught.value.key == f"systems.a.{key}"
    assert message in str(caught.value)


def test_good_stats_config() -> None:
    config_of(stats_url="http://m/x", stats_count="/calls/active")
    config_of(stats_url="http://m/x", stats_format="prometheus", stats_metric='c{s="a"}')
    config_of(stats_url="http://m/x")  # today's field names


# --- JSON without a pointer: today's field names --------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"open_sessions": 3}', 3),
        (b'{"openSessions": 4}', 4),
        (b'{"sessions": 5}', 5),
        (b'{"open_sessions": 0}', 0),
        (b'{"open_sessions": 1, "openSessions": 2, "sessions": 3}', 1),
        (b'{"open_sessions": "7", "sessions": 2}', 2),
        (b'{"open_sessions": -1}', None),
        (b'{"open_sessions": true}', None),
        (b'{"open_sessions": 2.5}', None),
        (b'{"open_sessions": null}', None),
        (b'{"other": 1}', None),
        (b"[1, 2]", None),
        (b"3", None),
        (b"not json", None),
        (b"", None),
    ],
    ids=[
        "snake",
        "camel",
        "sessions",
        "zero",
        "preference-order",
        "string-skipped",
        "negative",
        "bool",
        "float",
        "null",
        "no-field",
        "list",
        "number",
        "not-json",
        "empty",
    ],
)
def test_json_count_without_a_pointer(body: bytes, expected: int | None) -> None:
    assert json_count(body)[0] == expected
