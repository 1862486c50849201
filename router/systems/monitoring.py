"""How a system's own count of open sessions is read from the monitoring operators have.

No FCSDK component answers a count of its own (FCSDK-API.md); what operators have is their
monitoring: a JSON status page of some shape, or a Prometheus exporter. Per system,
`stats_format = "json"` reads a number at an RFC 6901 JSON pointer (`stats_count`, e.g.
`/calls/active`; without one, the first of the field names `open_sessions`, `openSessions`,
`sessions` at the top level), and `stats_format = "prometheus"` sums the samples of a
metric whose labels include the ones named (`stats_metric`, e.g.
`media_broker_calls{state="active"}`), parsed by prometheus_client's own text parser.

Pure functions over bytes and plain data: the configuration checks the expressions at
start (a bad one exits 2 naming its key), the prober and the CLI read answers with them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

FORMATS = ("json", "prometheus")
# Field names a JSON answer may use for its open sessions when no pointer is configured.
COUNT_FIELDS = ("open_sessions", "openSessions", "sessions")


class StatsSyntaxError(ValueError):
    """A `stats_count` pointer or `stats_metric` selector that cannot be read."""


def parse_pointer(text: str) -> tuple[str, ...]:
    """An RFC 6901 JSON pointer as its reference tokens, `~1` and `~0` unescaped.

    A few lines rather than a dependency: the RFC's whole evaluation is split, unescape and
    index (section 4), and the lock would carry a package for it.
    """
    if not text.startswith("/"):
        raise StatsSyntaxError(f"{text!r} is not a JSON pointer: it starts with '/'")
    tokens = []
    for raw in text[1:].split("/"):
        rest = raw.replace("~0", "").replace("~1", "")
        if "~" in rest:
            raise StatsSyntaxError(f"{text!r}: '~' is followed by 0 or 1 in a JSON pointer")
        tokens.append(raw.replace("~1", "/").replace("~0", "~"))
    return tuple(tokens)


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


@dataclass(frozen=True, slots=True)
class MetricSelector:
    """A metric name and the labels its samples must carry (others may be there too)."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        return name == self.name and all(labels.get(k) == v for k, v in self.labels)

    def __str__(self) -> str:
        if not self.labels:
            return self.name
        inner = ",".join(f'{k}="{v}"' for k, v in self.labels)
        return f"{self.name}{{{inner}}}"


def _families(text: str) -> list[Any]:
    # Imported here, not at the top: the configuration imports this module, and with
    # --workers prometheus_client must first be imported after its multiprocess set-up
    # (router/metrics.py), which runs after the configuration is read.
    from prometheus_client.parser import text_string_to_metric_families

    return list(text_string_to_metric_families(text))


@lru_cache(maxsize=64)
def parse_selector(text: str) -> MetricSelector:
    """`name` or `name{label="value",...}`: read as one line of the exposition format by
    prometheus_client's parser, so the selector's syntax is exactly the metric's."""
    line = text.strip()
    if not line or "\n" in line or line.startswith("#"):
        raise StatsSyntaxError(f"{text!r} is not a metric name with optional labels")
    try:
        families = _families(line + " 0\n")
    except (ValueError, TypeError, IndexError) as exc:
        raise StatsSyntaxError(
            f'{text!r} is not a metric name with optional labels (e.g. calls{{state="active"}}): '
            f"{exc}"
        ) from None
    samples = [s for f in families for s in f.samples]
    if len(samples) != 1 or samples[0].value != 0 or samples[0].timestamp is not None:
        raise StatsSyntaxError(f"{text!r} is not a metric name with optional labels")
    sample = samples[0]
    return MetricSelector(sample.name, tuple(sorted(sample.labels.items())))


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
            for family in _families(text)
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
