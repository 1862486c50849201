"""Text from operators (or from anyone who can write to Redis) made safe to print and show.

An audit `reason` is free text: typed at the CLI, sent in an API body, or written straight
into the stream with redis-cli. Printed raw, an escape sequence clears an operator's screen
or a line break forges an audit line (issue 25). Every control character, and the invisible
Unicode characters that reorder or hide text, is written as its escape (`\\x1b`, `\\n`,
`\\u202e`), so the text shows what it holds and nothing else. Backslashes are left alone:
an escape an operator typed reads as typed, and escaping twice changes nothing.
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL; zero-width characters and marks; line and paragraph
# separators; bidirectional embeddings, overrides and isolates; word joiners; the BOM.
_HIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with every control or invisible character written as its escape."""
    return _HIDDEN.sub(_escape, text)
