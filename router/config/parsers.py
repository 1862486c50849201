"""Parsers keyed on a field's type: a TOML or environment value -> the field's value, or a
ConfigError naming the key."""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from typing import Any, get_args, get_type_hints

from router.config.values import Factor, Seconds, Secret
from router.errors import ConfigError


def _parse_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(key, f"{value!r} is not a boolean (use true or false)")


def _parse_int(key: str, value: Any) -> int:
    # A fraction is refused, not truncated: `max_body_size = 1.5` is a typo, not 1 byte.
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(key, f"{value!r} is not a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"{value!r} is not a whole number") from None
    if number <= 0:
        raise ConfigError(key, f"{number} must be greater than 0")
    return number


def _to_seconds(key: str, value: Any) -> float:
    # Parsed, not compared with a list of spellings: `false` is not 0 s, "0.00" is.
    if isinstance(value, bool):
        raise ConfigError(key, f"{value!r} is not a number of seconds")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"{value!r} is not a number of seconds") from None


def _parse_float(key: str, value: Any) -> float:
    number = _to_seconds(key, value)
    if not math.isfinite(number):
        raise ConfigError(key, f"{value!r} is not a finite number of seconds")
    if not number > 0:
        raise ConfigError(key, f"{number} must be greater than 0")
    return number


def _parse_seconds(key: str, value: Any) -> float:
    """A duration that may be 0 (a feature switched off), never negative or infinite."""
    number = _to_seconds(key, value)
    if not number >= 0:
        raise ConfigError(key, f"{number} must be 0 or more")
    if not math.isfinite(number):
        raise ConfigError(key, f"{value!r} is not a finite number of seconds")
    return number


def _parse_factor(key: str, value: Any) -> float:
    """A multiplier that may be 0 (the check it sets switched off), never negative."""
    if isinstance(value, bool):
        raise ConfigError(key, f"{value!r} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(key, f"{value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise ConfigError(key, f"{value!r} must be a finite number, 0 or more")
    return number


def _parse_str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"{value!r} is not a string")
    return value


def _parse_secret(key: str, value: Any) -> Secret | None:
    text = _parse_str(key, value)
    return Secret(text) if text else None


def _parse_list(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ConfigError(key, f"{value!r} is not a list of strings")


Parser = Callable[[str, Any], Any]

# Keyed on the field's type itself (resolved by get_type_hints), not on how it is spelled.
_PARSERS: dict[object, Parser] = {
    bool: _parse_bool,
    int: _parse_int,
    float: _parse_float,
    Seconds: _parse_seconds,
    Factor: _parse_factor,
    str: _parse_str,
    Secret | None: _parse_secret,
    tuple[str, ...]: _parse_list,
}


def _optional(parse: Parser) -> Parser:
    """`X | None`: an empty value (an unset environment variable's "") is None."""

    def parse_optional(key: str, value: Any) -> Any:
        return None if value is None or value == "" else parse(key, value)

    return parse_optional


def parser_for(hint: object) -> Parser:
    """The parser of a field's type; `X | None` for any X in the table works too. A type
    with none is a programming error, named (tests/config/test_config.py checks every field)."""
    if hint in _PARSERS:
        return _PARSERS[hint]
    arms = get_args(hint) if isinstance(hint, types.UnionType) else ()
    if len(arms) == 2 and type(None) in arms:
        inner = next(arm for arm in arms if arm is not type(None))
        return _optional(parser_for(inner))
    raise TypeError(f"no configuration parser for the type {hint!r}")


_HINTS: dict[type[Any], dict[str, Any]] = {}


def field_types(cls: type[Any]) -> dict[str, Any]:
    """Field name -> its type, resolved once per configuration dataclass."""
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls, include_extras=True)
    return _HINTS[cls]


def _parse_table(cls: type[Any], section: str, table: Mapping[str, Any]) -> dict[str, Any]:
    known = {f.name: f for f in fields(cls) if f.name != "id"}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key not in known:
            allowed = ", ".join(sorted(known))
            raise ConfigError(f"{section}.{key}", f"unknown key (known keys: {allowed})")
        values[key] = parser_for(field_types(cls)[key])(f"{section}.{key}", raw)
    for name, f in known.items():
        if name not in values and f.default is MISSING:
            raise ConfigError(f"{section}.{name}", "is required")
    return values
