"""Metric names three ways, for checking deploy/prometheus and deploy/grafana against the
router: what a running router's /metrics declares, what docs/operations.md lists, and what an
expression (PromQL) names."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The sample names each metric type produces from its family name.
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}
# Series Prometheus makes itself for every scrape target.
PROMETHEUS_OWN = {"up"}


def exported(exposition: str) -> set[str]:
    """Sample names a /metrics text declares (`# TYPE` lines: present even for a family with
    no sample at the moment, such as the gateway's own count without stats_url)."""
    names = set()
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        for suffix in SUFFIXES[kind]:
            names.add(family + suffix if not family.endswith(suffix) else family)
    return names


def documented() -> set[str]:
    """Sample names of the metrics table in docs/operations.md."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    names: set[str] = set()
    for name, kind in re.findall(r"^\| `(tokenrouter_[a-z0-9_]+)` \| (\w+) \|", text, re.M):
        base = name.removesuffix("_total")
        names.update(base + suffix for suffix in SUFFIXES[kind])
    return names


def referenced(expression: str) -> set[str]:
    """The router's metric names an expression uses (recording rules' names have colons and
    are not among them)."""
    return set(re.findall(r"(?<![:\w])(tokenrouter_[a-z0-9_]+)\b", expression))
