"""router/printable.py: operator text made safe for terminals and pages (issue 25, item 5)."""

from __future__ import annotations

import pytest

from router.printable import printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        pytest.param("planned upgrade", "planned upgrade", id="plain"),
        pytest.param("café ✓ 日本", "café ✓ 日本", id="unicode-kept"),
        pytest.param("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H", id="clear-screen"),
        pytest.param(
            "ok\n2026-01-01  switch a -> b", "ok\\n2026-01-01  switch a -> b", id="newline"
        ),
        pytest.param("a\rb\tc\x00", "a\\rb\\tc\\x00", id="cr-tab-nul"),
        pytest.param("\x9b31m", "\\x9b31m", id="c1-csi"),
        pytest.param("\x7f", "\\x7f", id="del"),
        pytest.param("abc\u202edcba", "abc\\u202edcba", id="bidi-override"),
        pytest.param("\u200b" * 3, "\\u200b" * 3, id="zero-width"),
        pytest.param("line\u2028sep", "line\\u2028sep", id="line-separator"),
        pytest.param("back\\x1b", "back\\x1b", id="backslash-kept"),
    ],
)
def test_printable(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert printable(printable(raw)) == shown  # escaping twice changes nothing
