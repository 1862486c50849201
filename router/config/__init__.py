"""Static configuration: TOML + environment -> frozen, validated dataclasses.

One module per job: `values` (Secret, Seconds, Factor), `schema` (the dataclasses, every key
with its default and help), `parsers` (keyed on a field's type), `environment`
(TOKENROUTER_* names), `checks` (values and cross-key rules), `credentials` (secret files,
token strength) and `load` (`build_config`, `load_config`). The names below are the
package's surface: import them from `router.config`.
"""

from __future__ import annotations

from router.config.checks import (
    LOG_FORMATS,
    PREFER_POLICIES,
    REDIS_URL_PARAMETERS,
    check_listen,
    check_redis_url,
)
from router.config.credentials import (
    MIN_TOKEN_BITS,
    MIN_TOKEN_LENGTH,
    OPERATOR_NAME,
    SECRET_FILE_KEYS,
    check_token,
    token_bits,
)
from router.config.environment import ENV_PREFIX
from router.config.load import SYSTEM_ID, build_config, load_config
from router.config.parsers import Parser, field_types, parser_for
from router.config.schema import (
    ADMIN_OPERATOR,
    DEFAULT_AFFINITY_TTL,
    DEFAULT_SHORTCODE_TTL,
    FCSDK_LIBRARY_PATHS,
    Config,
    RouterConfig,
    SystemConfig,
    field_help,
)
from router.config.values import Factor, Seconds, Secret

__all__ = [
    "ADMIN_OPERATOR",
    "DEFAULT_AFFINITY_TTL",
    "DEFAULT_SHORTCODE_TTL",
    "ENV_PREFIX",
    "FCSDK_LIBRARY_PATHS",
    "LOG_FORMATS",
    "MIN_TOKEN_BITS",
    "MIN_TOKEN_LENGTH",
    "OPERATOR_NAME",
    "PREFER_POLICIES",
    "REDIS_URL_PARAMETERS",
    "SECRET_FILE_KEYS",
    "SYSTEM_ID",
    "Config",
    "Factor",
    "Parser",
    "RouterConfig",
    "Seconds",
    "Secret",
    "SystemConfig",
    "build_config",
    "check_listen",
    "check_redis_url",
    "check_token",
    "field_help",
    "field_types",
    "load_config",
    "parser_for",
    "token_bits",
]
