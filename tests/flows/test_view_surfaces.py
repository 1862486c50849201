"""Every surface renders the one view model (router/systems/view.py) and says the same thing.

The same history of counts is fed once through `view_report` (the function `/api/status`,
`/api/live`, the page, `status`, `status --watch`, `drain-wait`, `upgrade` and `/metrics`
all call); each renderer's output is then held to the view's own words and numbers. The page
in a real browser against `status` and `/api/status` at the same moment:
tests/admin/test_page_view.py.
"""

from __future__ import annotations

import io
import re
from html import unescape
from typing import Any

import orjson
import pytest

from router.admin.assets import find_assets
from router.admin.templates import Templates
from router.cli.status import status_lines
from router.cli.watch import Watch
from router.config import build_config
from router.metrics import drain_families
from router.state.rollout import Share
from router.state.snapshot import Snapshot
from router.systems.drain import DrainHistory, Trend, describe, measured_trend
from router.systems.reports import SystemReport, view_report
from router.systems.view import View

CONFIG = build_config(
    {
        "router": {"drain_stall_after": 60},
        "systems": {
            "a": {"gateway": "http://gw-a:8080", "public_url": "https://a.example.com"},
            "b": {"gateway": "http://gw-b:8080", "public_url": "https://b.example.com"},
        },
    },
    {},
)


def _feed(
    snapshot: Snapshot, counts: list[tuple[float, dict[str, int]]]
) -> tuple[View, list[SystemReport]]:
    """The history as the surfaces gather it: one read after the other, into one history."""
    history = DrainHistory(CONFIG.router.drain_stall_after)
    out = None
    for now, c in counts:
        out = view_report(CONFIG, snapshot, c, frozenset(), None, history, now)
    assert out is not None
    return out


# a drains (30 -> 10 in 10 s), b is active.
DRAIN = (Snapshot("b"), [(100.0 + t, {"a": 30 - 2 * t, "b": 4 + t}) for t in range(11)])
# A rollout b -> a at 20 %; a's count rises, b's falls.
ROLLOUT = (
    Snapshot("b", rollout=Share("a", 0.2, "r1", 0)),
    [(100.0 + t, {"a": t, "b": 40 - t}) for t in range(11)],
)
# a's count stopped falling 70 s ago (drain_stall_after is 60 s).
STALLED = (Snapshot("b"), [(100.0 + t, {"a": max(3, 10 - t), "b": 1}) for t in range(0, 80, 2)])


def _status_doc(view: View, rows: list[SystemReport]) -> dict[str, Any]:
    """What `token-router status` builds (cli/status.status_document), health and releases
    filled in."""
    return {
        "store": "redis://127.0.0.1:6379/0",
        "active": view.active,
        **view.to_json(),
        "refused": None,
        "generation": 3,
        "rollout": None,
        "systems": [
            {
                **r.to_json(),
                "health": {"ok": True, "checked_at": 1.0, "error": None},
                "release": None,
            }
            for r in rows
        ],
        "instances": [],
        "history": [],
    }


def _page_doc(view: View, rows: list[SystemReport]) -> dict[str, Any]:
    """What the page is rendered from (admin/live.live_document), the view's part as the API
    builds it."""
    health = {"ok": True, "last_error": None}
    return {
        "active": view.active,
        **view.to_json(),
        "systems": [
            {
                **r.to_json(),
                "health": health,
                "release": {"id": None, "label": None, "error": None},
                "rate": {"token": 0.0, "all": 0.0},
                "trend": [],
            }
            for r in rows
        ],
        "offline": [],
        "refused": None,
        "store": {
            "degraded": False,
            "error": None,
            "risk": None,
            "persistence": "none",
            "url": "-",
        },
        "audit": [],
        "audit_error": None,
        "instance": "host:1",
        "now": 0.0,
        "rates_scope": "this instance",
    }


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


@pytest.mark.parametrize("case", [DRAIN, ROLLOUT, STALLED], ids=["drain", "rollout", "stalled"])
def test_every_renderer_says_what_the_view_says(case: tuple[Snapshot, Any]) -> None:
    snapshot, counts = case
    view, rows = _feed(snapshot, counts)
    doc = _status_doc(view, rows)

    # /api/status and /api/live: the view's fields, verbatim.
    api = {s["id"]: s for s in doc["systems"]}
    for d in view.systems:
        assert api[d.system]["badge"] == d.badge
        assert api[d.system]["estimate"] == d.estimate
        assert api[d.system]["share"] == d.share
        assert api[d.system]["stalled"] == d.stalled
    assert doc["headline"] == view.headline

    # `status` and `status --watch` (a frame as a pipe receives it).
    lines = status_lines(doc, 0.0)
    out = io.StringIO()
    Watch(out, 1.0).draw(doc, lines, as_json=False)
    for text in ("\n".join(lines), out.getvalue()):
        assert view.headline in text
        for d in view.systems:
            row = next(line for line in text.splitlines() if line.startswith(f"{d.system} "))
            assert d.badge in row
            assert (d.estimate or "-") in row

    # `drain-wait` and `upgrade`'s drain step: describe() of the same Drain.
    for d in view.systems:
        line = describe(d)
        assert line.startswith(d.badge)
        if d.estimate.startswith(("falling", "rising", "stalled", "steady")):
            assert d.estimate in line

    # /metrics: the same numbers, with the one sign (positive: falling).
    metrics = {
        (sample.name, sample.labels.get("system")): sample.value
        for family in drain_families(view.systems)
        for sample in family.samples
    }
    for d in view.systems:
        assert metrics[("tokenrouter_new_sessions_percent", d.system)] == d.share
        assert metrics[("tokenrouter_drain_stalled", d.system)] == float(d.stalled)
        if d.rate is None:
            assert ("tokenrouter_drain_rate", d.system) not in metrics
        else:
            assert metrics[("tokenrouter_drain_rate", d.system)] == pytest.approx(d.rate)

    # The page as the server renders it (the script then shows the same fields live).
    page = Templates(find_assets()).render(
        "admin.html",
        {
            "doc": _page_doc(view, rows),
            "csrf": "x",
            "prefix": "tokenrouter",
            "operator": "o",
        },
    )
    assert page.text is not None
    shown = _text(page.text)
    assert view.headline in shown
    for d in view.systems:
        assert d.badge in shown
        if d.estimate:
            assert d.estimate in shown


def test_the_cases_say_what_an_operator_must_see() -> None:
    """The scenarios above, in words: the defects of issue 24 stay fixed."""
    view, _ = _feed(*DRAIN)
    a = view.system("a")
    assert (a.badge, a.estimate) == ("draining", "falling 120.0/min, ~5 s to 0")
    assert view.headline == "new sessions go to b"

    view, _ = _feed(*ROLLOUT)
    assert view.headline == "rollout b -> a: 20 % of new sessions to a"
    assert [d.badge for d in view.systems] == ["rollout target 20 %", "active 80 %"]
    assert view.system("a").estimate == ""  # it takes new sessions: no end to estimate

    view, _ = _feed(*STALLED)
    a = view.system("a")
    assert a.states == ("draining", "stalled")
    assert a.estimate == "stalled: no fall for 70 s"
    assert a.eta is None


@pytest.mark.parametrize("case", [DRAIN, ROLLOUT, STALLED], ids=["drain", "rollout", "stalled"])
def test_a_one_shot_status_renders_a_routers_trend_in_its_words(case: tuple[Snapshot, Any]) -> None:
    """A one-shot `status` reads the counts once and takes the trend from a router's
    /api/status (cli/routers.trend_from): from those JSON fields, without a history, the view
    says exactly what the router's view said, stall included."""
    snapshot, counts = case
    view, rows = _feed(snapshot, counts)
    answer = orjson.loads(orjson.dumps([r.to_json() for r in rows]))  # as it crosses a socket
    measured = {s["id"]: measured_trend(s) for s in answer}
    now, last = counts[-1]
    one_shot, _ = view_report(CONFIG, snapshot, last, frozenset(), None, None, now, None, measured)
    for d in view.systems:
        again = one_shot.system(d.system)
        assert (again.badge, again.estimate, again.states) == (d.badge, d.estimate, d.states)
    # Without it the same single reading has no rate yet.
    alone, _ = view_report(CONFIG, snapshot, last, frozenset(), None, None, now)
    assert alone.system("a").estimate in ("measuring the rate", "")


def test_a_routers_stall_does_not_make_a_receiving_system_stalled() -> None:
    """The router's trend is only the trend: states still come from this reading. A system
    that became active since the router answered is not `stalled`, whatever it said."""
    view, _ = view_report(
        CONFIG, Snapshot("a"), {"a": 3, "b": 0}, frozenset(), None, None, 100.0, None,
        {"a": Trend(0.0, None, 300.0)},
    )  # fmt: skip
    assert view.system("a").states == ("active",) and not view.system("a").stalled
