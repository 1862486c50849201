"""Environment variables -> configuration keys (TOKENROUTER_<KEY> and friends)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from router.config.schema import RouterConfig, SystemConfig
from router.errors import ConfigError

ENV_PREFIX = "TOKENROUTER_"


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """TOKENROUTER_<KEY> -> router key; TOKENROUTER_SYSTEMS_<ID>_<KEY> -> system key;
    TOKENROUTER_ADMIN_TOKENS_<NAME>[_FILE] -> one named operator's token (a table).

    A system id's '-' is written '_' in the environment; the key is matched from the end,
    since ids may contain underscores' stand-ins but key names are known.
    """
    router_keys = {f.name for f in fields(RouterConfig)}
    system_keys = sorted((f.name for f in fields(SystemConfig) if f.name != "id"), key=len)
    router: dict[str, Any] = {}
    systems: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if rest.startswith("systems_"):
            body = rest[len("systems_") :]
            for key in reversed(system_keys):
                if body.endswith("_" + key) and len(body) > len(key) + 1:
                    sid = body[: -len(key) - 1].replace("_", "-")
                    systems.setdefault(sid, {})[key] = value
                    break
            else:
                raise ConfigError(name, "names no system key (TOKENROUTER_SYSTEMS_<ID>_<KEY>)")
        elif rest.startswith("admin_tokens_") and len(rest) > len("admin_tokens_"):
            router.setdefault("admin_tokens", {})[rest[len("admin_tokens_") :]] = value
        elif rest == "admin_tokens":
            raise ConfigError(name, "name the operator: TOKENROUTER_ADMIN_TOKENS_<NAME>[_FILE]")
        elif rest in router_keys:
            router[rest] = value
        else:
            raise ConfigError(name, "is not a configuration key (see README, Configuration)")
    return router, systems
