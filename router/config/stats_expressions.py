"""The grammar of a system's stats expressions: `stats_format`, the `stats_count` JSON
pointer (RFC 6901) and the `stats_metric` selector (a Prometheus metric name with labels).

Part of the configuration: a bad expression is refused at start, naming its key
(checks.py), and router/systems/monitoring.py reads the gateways' answers with the parsed
forms. Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

FORMATS = ("json", "prometheus")


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


def metric_families(text: str) -> list[Any]:
    """The exposition-format text as prometheus_client's metric families."""
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
        families = metric_families(line + " 0\n")
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
