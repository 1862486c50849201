"""The value types of configuration keys: a secret that never prints, and the float
spellings whose 0 means "off" (the parser table tells them from `float` by type)."""

from __future__ import annotations

from typing import Annotated

# A duration in seconds where 0 is allowed (see _parse_seconds); plain `float` keys must be > 0.
# Annotated, so the parser table tells it from `float` by type while mypy sees a float.
Seconds = Annotated[float, "seconds, 0 allowed"]
# A multiplier where 0 is allowed (0 turns the check it sets off; see _parse_factor).
Factor = Annotated[float, "factor, 0 allowed"]


class Secret:
    """A string that never shows in `repr()`, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
