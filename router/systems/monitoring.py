"""How a system's own count of open sessions is read from the monitoring operators have.

No FCSDK component answers a count of its own (FCSDK-API.md); what operators have is their
monitoring: a JSON status page of some shape, or a Prometheus exporter. Per system,
`stats_format = "json"` reads a number at an RFC 6901 JSON pointer (`stats_count`, e.g.
`/calls/active`; without one, the first of the field names `open_sessions`, `openSessions`,
`sessions` at the top level), and `stats_format = "prometheus"` sums the samples of a
metric whose labels include the ones named (`stats_metric`, e.g.
`media_broker_calls{state="active"}`), parsed by prometheus_client's own text parser.

Pure functions over bytes and plain data. The expressions' grammar is the configuration's
(router/config/stats_expressions.py: a bad one exits 2 at start, naming its key); the prober
and the CLI read answers with the parsed forms here.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from router.config.stats_expressions import (
    MetricSelector,
    metric_families,
    parse_pointer,
    parse_selector,
)

# Field names a JSON answer may use for its open sessions when no pointer is configured.
COUNT_FIELDS = ("open_sessions", "openSessions", "sessions")


def resolve_pointer(doc: Any, tokens: tuple[str, ...]) -> Any:
    """The value at `tokens` in `doc`; KeyError when the document has none there."""
    value = doc
    for token in tokens:
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif (
            isinstance(value, list)
            and token.isdigit()
            and (token == "0" or not token.startswith("0"))
            and int(token) < len(value)
        ):
            value = value[int(token)]
        else:
            raise KeyError(token)
    return value


def _count(value: object) -> int | None:
    """A count is a non-negative whole number (a float such as 3.0 from Prometheus too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 0 and value.is_integer():
        return int(value)
    return None


def json_document(body: bytes) -> dict[str, Any] | None:
    """A JSON answer as an object, or None when it is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def json_count(body: bytes, pointer: str = "") -> tuple[int | None, str]:
    """(count, "") from a JSON answer, or (None, why not)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, "stats_url answer is not JSON"
    if not pointer:
        if isinstance(doc, dict):
            for name in COUNT_FIELDS:
                count = _count(doc.get(name))
                if count is not None:
                    return count, ""
        return None, "stats_url answer has no open_sessions count"
    try:
        value = resolve_pointer(doc, parse_pointer(pointer))
    except KeyError:
        return None, f"stats_url answer has nothing at {pointer} (stats_count)"
    count = _count(value)
    if count is None:
        return None, f"stats_url answer has {value!r} at {pointer}, not a count (stats_count)"
    return count, ""


def prometheus_count(body: bytes, selector: MetricSelector) -> tuple[int | None, str]:
    """(sum of the matching samples, "") from Prometheus text, or (None, why not)."""
    try:
        text = body.decode("utf-8")
        values = [
            sample.value
            for family in metric_families(text)
            for sample in family.samples
            if selector.matches(sample.name, sample.labels)
        ]
    except (UnicodeDecodeError, ValueError, TypeError, IndexError) as exc:
        return None, f"stats_url answer is not Prometheus text: {exc}"
    if not values:
        return None, f"stats_url answer has no sample {selector} (stats_metric)"
    total = _count(float(sum(values)))
    if total is None:
        return None, f"stats_url samples of {selector} sum to {sum(values)!r}, not a count"
    return total, ""


def read_count(
    body: bytes, stats_format: str, stats_count: str, stats_metric: str
) -> tuple[int | None, str]:
    """The open-session count in a stats answer as one system's config reads it."""
    if stats_format == "prometheus":
        return prometheus_count(body, parse_selector(stats_metric))
    return json_count(body, stats_count)
