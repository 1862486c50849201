"""Static configuration: TOML + environment -> frozen, validated dataclasses.

`load_config` is the only function that reads the file and the environment. Precedence:
environment > file > default. Every key has a help string (`field_help`), the README's
reference table is checked against these fields by a test, so the docs cannot drift.
Static means "needs a restart to change"; what changes at run time lives in Redis (state.py).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import types
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, get_args, get_type_hints
from urllib.parse import parse_qsl, urlsplit

from redis.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url

from router.errors import ConfigError
from router.systems import monitoring
from router.throttle import Limits
from router.trust import TrustedNetworks

ENV_PREFIX = "TOKENROUTER_"
SYSTEM_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
PREFER_POLICIES = ("unless-offline", "never")
OPERATOR_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# Every admin credential: long enough that guessing at a few tries a minute is hopeless.
MIN_TOKEN_LENGTH = 16
# ...and not 16 of one character: the bits its characters carry (their frequencies in the
# token, times its length; `aaaaaaaaaaaaaaaa` has none, `abababababababab` 16,
# `abcdabcdabcdabcd` 32, a random 16-character hex token 50 on average and under 33 about
# once in 100,000 draws, `openssl rand -base64 24` about 150).
MIN_TOKEN_BITS = 33
# The operator name `admin_token` stands for (audit, page).
ADMIN_OPERATOR = "admin"
LOG_FORMATS = ("text", "json")


# The client-library files of FCSDK and Live Assist (FCSDK-API.md): what the router
# fingerprints by default, and what the simulated system serves.
FCSDK_LIBRARY_PATHS: tuple[str, ...] = (
    "/gateway/adapter.js",
    "/gateway/fusion-client-sdk.js",
    "/gateway/csdk-phone.js",
    "/gateway/csdk-aed.js",
    "/assistserver/sdk/web/consumer/assist.js",
    "/assistserver/sdk/web/consumer/assist.css",
    "/assistserver/sdk/web/shared/js/assist-common.js",
    "/assistserver/sdk/web/shared/img/logo.png",
    "/assistserver/sdk/web/agent/js/assist-console.js",
)

# A Live Assist short code is consumed within minutes of its creation.
DEFAULT_SHORTCODE_TTL = 1_800
DEFAULT_AFFINITY_TTL = 43_200

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


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True, slots=True)
class SystemConfig:
    """One complete FCSDK / Live Assist installation behind the router."""

    id: str
    gateway: str = field(metadata=_help("Base URL the router sends this system's requests to."))
    public_url: str = field(
        metadata=_help("URL browsers of this system connect to; rewritten into urlSchemeDetails.")
    )
    version: str = field(
        default="", metadata=_help("Human release label (e.g. '4.2.1'); optional.")
    )
    ca_file: str = field(
        default="", metadata=_help("PEM bundle of a private CA for an https gateway.")
    )
    tls_verify: bool = field(
        default=True, metadata=_help("Verify the gateway's certificate (false only by choice).")
    )
    stats_url: str = field(
        default="",
        metadata=_help("Optional URL of the system's monitoring: its own count of open sessions."),
    )
    stats_format: str = field(
        default="json", metadata=_help("What stats_url answers: json or prometheus (text).")
    )
    stats_count: str = field(
        default="",
        metadata=_help(
            "json: RFC 6901 pointer to the count (e.g. /calls/active); empty: the field "
            "open_sessions, openSessions or sessions."
        ),
    )
    stats_metric: str = field(
        default="",
        metadata=_help(
            'prometheus: metric name with optional labels (e.g. calls{state="active"}); '
            "matching samples are summed."
        ),
    )
    max_connections: int = field(
        default=200, metadata=_help("Connection pool size towards this gateway.")
    )

    @property
    def public_secure(self) -> bool:
        return urlsplit(self.public_url).scheme == "https"

    @property
    def public_host(self) -> str:
        return urlsplit(self.public_url).hostname or ""

    @property
    def public_port(self) -> int:
        parts = urlsplit(self.public_url)
        return parts.port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """The `[router]` table."""

    listen: str = field(
        default="127.0.0.1:8080", metadata=_help("host:port of the proxy listener.")
    )
    admin_listen: str = field(
        default="127.0.0.1:8081",
        metadata=_help("host:port of the admin page, JSON API and /metrics; never the proxy's."),
    )
    redis_url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata=_help("Redis URL (redis://, rediss://, unix://) or memory:// (one process)."),
    )
    redis_sentinels: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "Redis Sentinel addresses (host:port, ...) instead of redis_url; with redis_master."
        ),
    )
    redis_master: str = field(
        default="mymaster", metadata=_help("The master's name the sentinels monitor.")
    )
    redis_password: Secret | None = field(
        default=None,
        metadata=_help("Password of the master and replicas behind redis_sentinels."),
    )
    redis_password_file: str = field(
        default="", metadata=_help("File holding redis_password (first line), instead of inline.")
    )
    redis_sentinel_password: Secret | None = field(
        default=None, metadata=_help("Password of the sentinels themselves, if they need one.")
    )
    redis_sentinel_password_file: str = field(
        default="",
        metadata=_help("File holding redis_sentinel_password (first line), instead of inline."),
    )
    key_prefix: str = field(default="tokenrouter", metadata=_help("Prefix of every Redis key."))
    admin_token: Secret | None = field(
        default=None, metadata=_help("Secret for admin writes (bearer token / login).")
    )
    admin_token_file: str = field(
        default="", metadata=_help("File holding admin_token (first line), instead of inline.")
    )
    admin_tokens: tuple[tuple[str, Secret], ...] = field(
        default=(),
        metadata=_help(
            "Named operators' tokens: [router.admin_tokens] alice = '...' (or alice_file ="
            " '/path'); the audit records the name. admin_token is the operator 'admin'."
        ),
    )
    trusted_networks: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "CIDRs whose callers may mint and delete tokens and short codes (403 to others);"
            " unset: loopback and private ranges."
        ),
    )
    tls_cert: str = field(default="", metadata=_help("PEM certificate for TLS on the proxy."))
    tls_key: str = field(default="", metadata=_help("PEM private key for TLS on the proxy."))
    default_system: str = field(
        default="",
        metadata=_help("System used when Redis holds no active value yet (default: the first)."),
    )
    max_body_size: int = field(
        default=1_048_576, metadata=_help("Largest request body accepted, in bytes (413 above).")
    )
    connect_timeout: float = field(
        default=2.0, metadata=_help("Seconds to connect to a gateway before a 502.")
    )
    read_timeout: float = field(
        default=10.0, metadata=_help("Seconds to wait for a gateway's answer before a 504.")
    )
    total_timeout: float = field(
        default=15.0,
        metadata=_help(
            "Seconds a whole proxied exchange (request body, gateway answer, retry) may take"
            " before a 504 (408 while the body is still arriving), however the gateway"
            " trickles its bytes."
        ),
    )
    max_response_size: int = field(
        default=16_777_216,
        metadata=_help("Largest gateway answer accepted, in bytes (502 above, connection closed)."),
    )
    answer_budget: int = field(
        default=67_108_864,
        metadata=_help(
            "Bytes of gateway answers one worker holds at once, over all requests and"
            " systems (503 overloaded with Retry-After above it, never unbounded growth);"
            " at least max_response_size."
        ),
    )
    client_header_timeout: float = field(
        default=60.0,
        metadata=_help(
            "Seconds a client connection may stay idle or take to send a complete request"
            " head before it is closed (slow-header defence; also the keep-alive idle limit)."
        ),
    )
    resync_interval: float = field(
        default=0.5,
        metadata=_help("Seconds between safety-net re-reads of the dynamic state in Redis."),
    )
    keyspace_events: bool = field(
        default=True,
        metadata=_help("Enable Redis keyspace notifications so a bare SET propagates at once."),
    )
    redis_timeout: float = field(
        default=1.0, metadata=_help("Seconds a single Redis command may take.")
    )
    redis_retry_max: float = field(
        default=5.0,
        metadata=_help(
            "Longest pause between reconnect attempts, in seconds (at most 0.25 with"
            " redis_sentinels, to follow a failover within a second)."
        ),
    )
    shutdown_timeout: float = field(
        default=15.0,
        metadata=_help("Seconds in-flight requests get to finish after SIGTERM."),
    )
    stop_delay: Seconds = field(
        default=0.0,
        metadata=_help(
            "Seconds after SIGTERM that /readyz answers 503 while still serving, so a balancer"
            " takes the instance out before its listener closes."
        ),
    )
    affinity_ttl: int = field(
        default=DEFAULT_AFFINITY_TTL,
        metadata=_help(
            "Seconds a token's or short code's owner is remembered (tokens count as open as long)."
        ),
    )
    shortcode_ttl: int = field(
        default=DEFAULT_SHORTCODE_TTL,
        metadata=_help(
            "Seconds a short code counts as open for drain (its affinity lives affinity_ttl);"
            " at most affinity_ttl (default 1800, or affinity_ttl if shorter)."
        ),
    )
    drain_stall_after: Seconds = field(
        default=120.0,
        metadata=_help(
            "Seconds a draining system's open count may go without falling before every"
            " surface calls the drain stalled instead of estimating an end; 0 never does."
        ),
    )
    affinity_cache_size: int = field(
        default=25_000,
        metadata=_help(
            "Affinity entries each worker keeps in memory, a front for Redis (~1.7 MB per"
            " 10,000; see Notes)."
        ),
    )
    prefer_policy: str = field(
        default="unless-offline",
        metadata=_help("X-Token-Router-Prefer: 'unless-offline' honours it, 'never' ignores it."),
    )
    preview_header: str = field(
        default="X-Token-Router-Preview",
        metadata=_help("Header carrying '<system>:<secret>' to reach an idle system."),
    )
    preview_secret: Secret | None = field(
        default=None,
        metadata=_help(
            "Secret of the preview header; unset disables preview. Like an admin token: 16+"
            " characters of random visible ASCII, and no space, quote, ';' or ',' (a cookie"
            " carries it)."
        ),
    )
    preview_secret_file: str = field(
        default="", metadata=_help("File holding preview_secret (first line), instead of inline.")
    )
    throttle_per_address: int = field(
        default=5,
        metadata=_help(
            "Failed credentials (admin tokens, preview secret) one address may have at once"
            " before it waits; shared by every worker and instance through Redis."
        ),
    )
    throttle_per_address_per_minute: float = field(
        default=3.0, metadata=_help("Failed credentials an address regains per minute.")
    )
    throttle_overall: int = field(
        default=20,
        metadata=_help("Failed credentials the whole fleet accepts at once, from any address."),
    )
    throttle_overall_per_minute: float = field(
        default=10.0, metadata=_help("Failed credentials the whole fleet regains per minute.")
    )
    throttle_exempt_after_login: Seconds = field(
        default=28_800.0,
        metadata=_help(
            "Seconds an address that presented a valid credential stays exempt from the"
            " overall bucket (a spray cannot lock its operator out); 0: no exemption."
        ),
    )
    cors_origins: tuple[str, ...] = field(
        default=(), metadata=_help("Origins allowed to call Live Assist routes from a browser.")
    )
    log_format: str = field(default="text", metadata=_help("'text' or 'json' log lines."))
    log_level: str = field(default="info", metadata=_help("debug, info, warning or error."))
    access_log: bool = field(default=True, metadata=_help("One log line per proxied request."))
    release_paths: tuple[str, ...] = field(
        default=FCSDK_LIBRARY_PATHS,
        metadata=_help(
            "Library files fingerprinted per system (files they reference are followed; "
            "missing ones skipped); empty turns releases off."
        ),
    )
    release_retention_days: float = field(
        default=30.0,
        metadata=_help("Days a release stays servable under /v/ after it was last active."),
    )
    release_check_interval: float = field(
        default=60.0,
        metadata=_help("Seconds between fingerprint checks of every system's libraries."),
    )
    release_max_bytes: int = field(
        default=67_108_864,
        metadata=_help("Largest release (sum of its files, uncompressed) stored, in bytes."),
    )
    release_dir: str = field(
        default="",
        metadata=_help(
            "Directory of the durable, content-addressed archive of release bytes (restores"
            " Redis; default $XDG_STATE_HOME/token-router/releases, ~/.local/state/...)."
        ),
    )
    gate_probe_age: float = field(
        default=5.0,
        metadata=_help(
            "Seconds a gateway's last good health probe counts for the switch gates; an older"
            " one is probed again before the switch."
        ),
    )
    confirm_timeout: float = field(
        default=2.0,
        metadata=_help(
            "Seconds a switch, undo or rollout step waits for every live instance to apply it"
            " before naming the laggards."
        ),
    )
    heartbeat_interval: float = field(
        default=1.0,
        metadata=_help(
            "Seconds between an instance's heartbeats in Redis; silent for 3 beats = dropped."
        ),
    )
    rollout_tick: float = field(
        default=1.0,
        metadata=_help(
            "Seconds between the rollout controller's checks (steps, probes, error share)."
        ),
    )
    leader_ttl: float = field(
        default=5.0,
        metadata=_help(
            "Seconds the rollout controller's lock lives without renewal: how soon another"
            " instance takes over when the leader dies."
        ),
    )
    post_switch_watch: Seconds = field(
        default=600.0,
        metadata=_help(
            "Seconds the routers watch a newly active system after every change of the active"
            " system, and undo the change if it breaches the watch thresholds; 0 turns it off."
        ),
    )
    watch_span: float = field(
        default=60.0,
        metadata=_help(
            "Seconds of the newest token requests the watch judges at each tick (reaching"
            " back, to the switch at most, until watch_min_requests are counted)."
        ),
    )
    watch_max_error_rate: float = field(
        default=0.05,
        metadata=_help(
            "Failed share of token requests (5xx or no answer) that makes the watch undo a"
            " switch, when the old system failed less before it; in (0, 1]."
        ),
    )
    watch_min_requests: int = field(
        default=20,
        metadata=_help("Token requests the watch needs before it judges a share or a p99."),
    )
    latency_max_p99: Seconds = field(
        default=2.0,
        metadata=_help(
            "p99 of the gateway's token answers, in seconds, above which the watch undoes a"
            " switch and a rollout step aborts; 0: no absolute bound."
        ),
    )
    latency_factor: Factor = field(
        default=3.0,
        metadata=_help(
            "Times the old system's p99 (before the switch; a rollout's source in the same"
            " seconds) that the new one may reach before the watch undoes or a step aborts;"
            " 0: no relative bound."
        ),
    )
    latency_floor: Seconds = field(
        default=0.1,
        metadata=_help(
            "Seconds below which a p99 never breaches by latency_factor (a 1 ms baseline"
            " tripled is noise)."
        ),
    )
    release_cache_bytes: int = field(
        default=134_217_728,
        metadata=_help("Bytes of hot release files (all encodings) each process keeps in memory."),
    )

    def throttle_limits(self) -> Limits:
        """The credential throttle's sizes, rates and exemption (throttle.py)."""
        return Limits(
            per_address=self.throttle_per_address,
            per_address_per_minute=self.throttle_per_address_per_minute,
            overall=self.throttle_overall,
            overall_per_minute=self.throttle_overall_per_minute,
            good_for=self.throttle_exempt_after_login,
        )

    def operators(self) -> dict[str, Secret]:
        """Every admin credential by operator name: `admin_token` is the operator 'admin'."""
        named = dict(self.admin_tokens)
        if self.admin_token is not None:
            named[ADMIN_OPERATOR] = self.admin_token
        return named


@dataclass(frozen=True, slots=True)
class Config:
    router: RouterConfig
    systems: Mapping[str, SystemConfig]

    @property
    def default_system(self) -> str:
        return self.router.default_system or next(iter(self.systems))

    @property
    def system_ids(self) -> tuple[str, ...]:
        return tuple(self.systems)


def field_help(cls: type[Any]) -> dict[str, str]:
    """Key -> help text, for `--help`, the README table and its drift test."""
    return {f.name: f.metadata["help"] for f in fields(cls) if "help" in f.metadata}


# --- parsing -------------------------------------------------------------------------------


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
    with none is a programming error, named (tests/test_config.py checks every field)."""
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


def _check_url(key: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"{value!r} is not an http(s) URL")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(key, f"{value!r} must be a base URL without a path")


def check_listen(key: str, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"{value!r} is not host:port (e.g. 127.0.0.1:8080)")
    return host, int(port)


def _check_state_keys(router: RouterConfig) -> None:
    """Keys of the state that must survive: drain lifetimes, release archive, Redis."""
    for item in router.redis_sentinels:
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(
                "router.redis_sentinels", f"{item!r} is not host:port (e.g. s1:26379)"
            )
    if router.redis_sentinels and not router.redis_master:
        raise ConfigError("router.redis_master", "is required with redis_sentinels")
    if router.shortcode_ttl > router.affinity_ttl:
        raise ConfigError(
            "router.shortcode_ttl",
            f"{router.shortcode_ttl} s is longer than affinity_ttl ({router.affinity_ttl} s): a"
            " short code cannot count as open after its owner is forgotten",
        )


def _check_rollout_timing(router: RouterConfig) -> None:
    if router.leader_ttl < 2 * router.rollout_tick:
        raise ConfigError(
            "router.leader_ttl",
            f"{router.leader_ttl:g} s must be at least twice rollout_tick "
            f"({router.rollout_tick:g} s), or the leader loses its lock between renewals",
        )


def _check_watch(router: RouterConfig) -> None:
    if router.watch_max_error_rate > 1:
        raise ConfigError(
            "router.watch_max_error_rate",
            f"{router.watch_max_error_rate:g} must be in (0, 1], e.g. 0.05 for 5 %",
        )
    if router.latency_factor and router.latency_factor < 1:
        raise ConfigError(
            "router.latency_factor",
            f"{router.latency_factor:g} would judge a system as fast as the old one slow:"
            " give 1 or more (or 0 to turn the relative bound off)",
        )


# Query parameters a redis_url may carry: what redis-py parses itself, plus the connection
# arguments it passes through by name (case-sensitive: `?PassWord=x` would reach the
# connection as an unknown argument and fail there, with a traceback).
REDIS_URL_PARAMETERS = frozenset(URL_QUERY_ARGUMENT_PARSERS) | {
    "password",
    "username",
    "client_name",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_cert_reqs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_ciphers",
    "ssl_password",
}


def check_redis_url(url: str) -> None:
    """Refuse a redis_url the client would fail on later (one line naming the key, exit 2).

    Never the URL itself in the message: it may carry a password. redis-py's own parser
    decides, so what passes here is what the client accepts."""
    key = "router.redis_url"
    try:
        parts = urlsplit(url)
        scheme = parts.scheme
        if scheme not in ("redis", "rediss", "unix", "memory"):
            raise ConfigError(
                key, f"scheme {scheme + '://'!r} is not redis://, rediss://, unix:// or memory://"
            )
        if scheme == "memory":
            return
        parse_url(url)  # type: ignore[no-untyped-call]  # port, db, parameters as the client reads them
        port = parts.port  # urlsplit checks the range, redis-py only the digits
    except ValueError as exc:
        # redis-py's and urllib's reasons name the part, not the value (a port at most).
        raise ConfigError(key, f"cannot be read: {exc}") from None
    path = parts.path.strip("/")
    if scheme != "unix" and path and not path.isdigit():
        raise ConfigError(key, "the path is the database number (redis://host:6379/0)")
    if scheme != "unix" and not parts.hostname:
        raise ConfigError(key, "names no host (redis://host:6379/0)")
    if port == 0:
        raise ConfigError(key, "port 0 is not a Redis port")
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if name not in REDIS_URL_PARAMETERS:
            shown = name if name.isidentifier() and len(name) <= 40 else "(unreadable)"
            raise ConfigError(
                key,
                f"unknown query parameter {shown!r} (names are lower-case, e.g. ?password=,"
                " ?db=; or give router.redis_password)",
            )


def _check_answer_budget(router: RouterConfig) -> None:
    if router.answer_budget < router.max_response_size:
        raise ConfigError(
            "router.answer_budget",
            f"{router.answer_budget} is below router.max_response_size"
            f" ({router.max_response_size}): the largest answer allowed could never be held",
        )


def _check_router(router: RouterConfig, systems: Mapping[str, SystemConfig]) -> RouterConfig:
    _, port = check_listen("router.listen", router.listen)
    check_listen("router.admin_listen", router.admin_listen)
    if router.listen == router.admin_listen and port != 0:
        raise ConfigError("router.admin_listen", "must differ from router.listen")
    check_redis_url(router.redis_url)
    if not re.fullmatch(r"[A-Za-z0-9_{}:.-]+", router.key_prefix):
        raise ConfigError("router.key_prefix", f"{router.key_prefix!r} has unsafe characters")
    if router.default_system and router.default_system not in systems:
        raise ConfigError(
            "router.default_system",
            f"{router.default_system!r} is not a configured system ({', '.join(systems)})",
        )
    _check_state_keys(router)
    _check_rollout_timing(router)
    _check_watch(router)
    _check_answer_budget(router)
    if router.prefer_policy not in PREFER_POLICIES:
        raise ConfigError("router.prefer_policy", f"must be one of {', '.join(PREFER_POLICIES)}")
    if router.log_format not in LOG_FORMATS:
        raise ConfigError("router.log_format", f"must be one of {', '.join(LOG_FORMATS)}")
    if router.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("router.log_level", "must be debug, info, warning or error")
    if bool(router.tls_cert) != bool(router.tls_key):
        raise ConfigError("router.tls_key", "tls_cert and tls_key go together")
    for key in ("tls_cert", "tls_key"):
        path = getattr(router, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"router.{key}", f"file {path!r} does not exist")
    TrustedNetworks(router.trusted_networks)  # a bad CIDR is a ConfigError naming the key
    for origin in router.cors_origins:
        if origin != "*" and urlsplit(origin).scheme not in ("http", "https"):
            raise ConfigError("router.cors_origins", f"{origin!r} is not an origin like https://x")
    return router


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


def _check_stats(table: str, values: dict[str, Any]) -> None:
    """stats_format with the one expression it reads (router/systems/monitoring.py), readable."""
    fmt = values.get("stats_format", "json")
    if fmt not in monitoring.FORMATS:
        raise ConfigError(f"{table}.stats_format", f"{fmt!r} is not json or prometheus")
    for key in ("stats_format", "stats_count", "stats_metric"):
        if key in values and not values.get("stats_url"):
            raise ConfigError(f"{table}.{key}", "is read only with stats_url; set stats_url too")
    count, metric = values.get("stats_count", ""), values.get("stats_metric", "")
    try:
        if fmt == "json":
            if metric:
                raise ConfigError(f"{table}.stats_metric", "is for stats_format = prometheus")
            if count:
                monitoring.parse_pointer(count)
        else:
            if count:
                raise ConfigError(f"{table}.stats_count", "is for stats_format = json")
            if not metric:
                raise ConfigError(
                    f"{table}.stats_metric", "is required with stats_format = prometheus"
                )
            monitoring.parse_selector(metric)
    except monitoring.StatsSyntaxError as exc:
        key = "stats_count" if fmt == "json" else "stats_metric"
        raise ConfigError(f"{table}.{key}", str(exc)) from None


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
