"""The entry points: a TOML document plus the environment -> a validated `Config`."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from router.config.checks import _check_router, _check_stats, _check_url
from router.config.credentials import (
    _check_credentials,
    _parse_admin_tokens,
    _read_secret_files,
    _read_token_file,
)
from router.config.environment import _env_overrides
from router.config.parsers import _parse_table
from router.config.schema import (
    DEFAULT_AFFINITY_TTL,
    DEFAULT_SHORTCODE_TTL,
    Config,
    RouterConfig,
    SystemConfig,
)
from router.errors import ConfigError

SYSTEM_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def _system_table(sid: str, table: Any) -> dict[str, Any]:
    # Checked before dict(): `systems.a = "http://gw"` must be a ConfigError, not a traceback.
    if not isinstance(table, dict):
        raise ConfigError(f"systems.{sid}", "must be a table")
    return dict(table)


def _explicit_state_keys(values: dict[str, Any]) -> None:
    """Rules that depend on which keys were given, not only on their values."""
    if values.get("redis_sentinels") and "redis_url" in values:
        raise ConfigError(
            "router.redis_sentinels",
            "set either redis_url or redis_sentinels (with redis_master), not both",
        )
    if "shortcode_ttl" not in values:
        # The default never exceeds a shorter affinity_ttl: only an explicit value is refused.
        affinity_ttl = values.get("affinity_ttl", DEFAULT_AFFINITY_TTL)
        values["shortcode_ttl"] = min(DEFAULT_SHORTCODE_TTL, affinity_ttl)


def build_config(data: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    """Validate a parsed TOML document plus environment overrides into a `Config`."""
    unknown = set(data) - {"router", "systems"}
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown table (known: [router], [systems.<id>])")
    env_router, env_systems = _env_overrides(environ)

    raw_systems = data.get("systems", {})
    if not isinstance(raw_systems, dict):
        raise ConfigError("systems", "must be a table of [systems.<id>] tables")
    merged = {sid: _system_table(sid, t) for sid, t in raw_systems.items()}
    for sid, table in env_systems.items():
        merged.setdefault(sid, {}).update(table)
    if not merged:
        raise ConfigError("systems", "no system configured: add [systems.a] and [systems.b]")

    systems: dict[str, SystemConfig] = {}
    for sid, table in merged.items():
        if not SYSTEM_ID.match(sid):
            raise ConfigError(f"systems.{sid}", "an id is lower-case letters, digits and '-'")
        values = _parse_table(SystemConfig, f"systems.{sid}", table)
        _check_url(f"systems.{sid}.gateway", values["gateway"])
        _check_url(f"systems.{sid}.public_url", values["public_url"])
        for key in ("stats_url",):
            if values.get(key) and urlsplit(values[key]).scheme not in ("http", "https"):
                raise ConfigError(f"systems.{sid}.{key}", f"{values[key]!r} is not an http(s) URL")
        _check_stats(f"systems.{sid}", values)
        if values.get("ca_file") and not Path(values["ca_file"]).is_file():
            raise ConfigError(
                f"systems.{sid}.ca_file", f"file {values['ca_file']!r} does not exist"
            )
        systems[sid] = SystemConfig(id=sid, **values)

    raw_router = data.get("router", {})
    if not isinstance(raw_router, dict):
        raise ConfigError("router", "must be a table")
    tokens_table = raw_router.get("admin_tokens", {})
    if isinstance(tokens_table, dict):
        tokens_table = {**tokens_table, **env_router.pop("admin_tokens", {})}
    plain = {k: v for k, v in {**raw_router, **env_router}.items() if k != "admin_tokens"}
    router_values = _parse_table(RouterConfig, "router", plain)
    _explicit_state_keys(router_values)
    router_values["admin_tokens"] = _parse_admin_tokens(tokens_table)
    admin_key = "router.admin_token"
    if router_values.get("admin_token_file") and not router_values.get("admin_token"):
        router_values["admin_token"] = _read_token_file(router_values["admin_token_file"])
        admin_key = "router.admin_token_file"
    _read_secret_files(router_values)
    router = _check_router(RouterConfig(**router_values), systems)
    _check_credentials(router, admin_key)
    return Config(router=router, systems=systems)


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Config:
    """Read the TOML file (if any) and the environment; raise `ConfigError` on any problem."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError("--config", f"file {str(path)!r} does not exist") from None
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {str(path)!r}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{str(path)!r} is not valid TOML: {exc}") from None
    return build_config(data, environ)
