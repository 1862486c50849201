"""Credentials: secrets read from files, and the rules that refuse a guessable or
unusable admin token or preview secret (never printing the value)."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

from router.config.parsers import _parse_str
from router.config.schema import ADMIN_OPERATOR, RouterConfig
from router.config.values import Secret
from router.errors import ConfigError

OPERATOR_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# Every admin credential: long enough that guessing at a few tries a minute is hopeless.
MIN_TOKEN_LENGTH = 16
# ...and not 16 of one character: the bits its characters carry (their frequencies in the
# token, times its length; `aaaaaaaaaaaaaaaa` has none, `abababababababab` 16,
# `abcdabcdabcdabcd` 32, a random 16-character hex token 50 on average and under 33 about
# once in 100,000 draws, `openssl rand -base64 24` about 150).
MIN_TOKEN_BITS = 33


# Secrets that may be given as `<key>_file` instead (admin_token has its own, older rule:
# the inline token wins).
SECRET_FILE_KEYS = ("redis_password", "redis_sentinel_password", "preview_secret")


def _read_secret_files(values: dict[str, Any]) -> None:
    """Secrets mounted as files (a Kubernetes Secret volume, systemd's LoadCredential=): the
    value never sits in the environment or the configuration file."""
    for key in SECRET_FILE_KEYS:
        path = values.get(f"{key}_file")
        if path and values.get(key):
            raise ConfigError(f"router.{key}_file", f"give {key} or {key}_file, not both")
        if path:
            values[key] = _read_token_file(path, f"router.{key}_file")


def _read_token_file(path: str, key: str = "router.admin_token_file") -> Secret:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path!r}: {exc.strerror}") from None
    if not lines or not lines[0].strip():
        raise ConfigError(key, f"{path!r} is empty")
    return Secret(lines[0].strip())


def token_bits(value: str) -> float:
    """The bits `value`'s characters carry: its length times the entropy of their
    frequencies in it. A crude bound that refuses repetition, not a dictionary check."""
    counts = Counter(value)
    return -sum(n * math.log2(n / len(value)) for n in counts.values())


# What a header (and, for the preview secret, a cookie value) carries as it is: visible ASCII.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+( [\x21-\x7e]+)*")
_COOKIE_UNSAFE = frozenset(' ";,\\')


def check_token(key: str, token: Secret, *, cookie: bool = False) -> None:
    """Refuse a guessable or unusable credential (one line naming `key`, never the value,
    exit 2): an admin token, or with `cookie` the preview secret, which also rides in a
    cookie value."""
    value = token.reveal()
    if not value.strip():
        raise ConfigError(key, "is only whitespace; set a long random token")
    if value != value.strip():
        raise ConfigError(key, "has leading or trailing whitespace, which no header can carry")
    if not _HEADER_SAFE.fullmatch(value):
        raise ConfigError(
            key,
            "holds characters a header cannot carry as they are (control, invisible or"
            " non-ASCII characters): use letters, digits and punctuation",
        )
    if cookie and _COOKIE_UNSAFE & set(value):
        raise ConfigError(
            key, "holds a space, quote, ';', ',' or backslash, which a cookie cannot carry"
        )
    if len(value) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            key,
            f"is {len(value)} characters; use at least {MIN_TOKEN_LENGTH}"
            " (e.g. the output of: openssl rand -base64 24)",
        )
    if token_bits(value) < MIN_TOKEN_BITS:
        raise ConfigError(
            key,
            f"repeats too few characters to be guessed slowly ({len(set(value))} distinct in"
            f" {len(value)}): use a random value (e.g. the output of: openssl rand -base64 24)",
        )


def _parse_admin_tokens(table: Any) -> tuple[tuple[str, Secret], ...]:
    if not isinstance(table, dict):
        raise ConfigError(
            "router.admin_tokens", 'must be a table: [router.admin_tokens] alice = "..."'
        )
    tokens: dict[str, Secret] = {}
    for raw_key, value in table.items():
        key = f"router.admin_tokens.{raw_key}"
        from_file = raw_key.endswith("_file")
        name = raw_key[: -len("_file")] if from_file else raw_key
        if not OPERATOR_NAME.match(name):
            raise ConfigError(
                key, "an operator name is a lower-case letter, then letters, digits, '_' or '-'"
            )
        text = _parse_str(key, value)
        if name in tokens:
            raise ConfigError(key, f"give {name} or {name}_file, not both")
        tokens[name] = _read_token_file(text, key) if from_file else Secret(text)
        check_token(key, tokens[name])
    return tuple(sorted(tokens.items()))


def _check_credentials(router: RouterConfig, admin_key: str) -> None:
    if router.admin_token is not None:
        check_token(admin_key, router.admin_token)
    if router.preview_secret is not None:
        preview_key = "router.preview_secret" + ("_file" if router.preview_secret_file else "")
        check_token(preview_key, router.preview_secret, cookie=True)
    seen: dict[Secret, str] = {}
    if router.admin_token is not None:
        seen[router.admin_token] = admin_key
    for name, token in router.admin_tokens:
        key = f"router.admin_tokens.{name}"
        if name == ADMIN_OPERATOR and router.admin_token is not None:
            raise ConfigError(key, "clashes with router.admin_token, which is the operator 'admin'")
        if token in seen:
            raise ConfigError(key, f"is the same token as {seen[token]}; give each their own")
        seen[token] = key
