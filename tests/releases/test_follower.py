"""The follower's pure decision: what the store's liveness means for the releases held here.
(The loops themselves run end to end in test_service.py and tests/flows/.)"""

from __future__ import annotations

import pytest

from router.releases.follower import Fates, fates

NOW = 1000.0


@pytest.mark.parametrize(
    ("liveness", "serving", "expected"),
    [
        pytest.param({}, set(), Fates(), id="nothing-held"),
        pytest.param(
            {"r1": (NOW + 60, "1.0")},
            {"r1"},
            Fates(alive={"r1": (NOW + 60, "1.0")}),
            id="alive-and-served",
        ),
        pytest.param(
            {"r1": (NOW + 60, "")},
            set(),
            Fates(alive={"r1": (NOW + 60, "")}),
            id="alive-not-served-is-kept",
        ),
        pytest.param({"r1": None}, set(), Fates(gone=["r1"]), id="expired-not-served-forgotten"),
        pytest.param(
            {"r1": (NOW, "1.0")}, set(), Fates(gone=["r1"]), id="expiring-now-counts-as-expired"
        ),
        pytest.param({"r1": None}, {"r1"}, Fates(lost=["r1"]), id="served-but-lost-by-store"),
        pytest.param({"r1": (NOW - 1, "1.0")}, {"r1"}, Fates(lost=["r1"]), id="served-but-expired"),
        pytest.param(
            {"r3": None, "r1": None, "r2": (NOW + 1, "2.0"), "r4": None},
            {"r1", "r3"},
            Fates(lost=["r3", "r1"], gone=["r4"], alive={"r2": (NOW + 1, "2.0")}),
            id="mixed-in-the-order-asked",
        ),
    ],
)
def test_fates(
    liveness: dict[str, tuple[float, str] | None], serving: set[str], expected: Fates
) -> None:
    assert fates(liveness, serving, NOW) == expected
