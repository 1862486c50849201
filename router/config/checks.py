"""Checks of values and across keys, after parsing: listeners, URLs, Redis, timings, the
watch; each refusal is one line naming the key (exit 2)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from redis.connection import URL_QUERY_ARGUMENT_PARSERS, parse_url

from router.config.schema import RouterConfig, SystemConfig
from router.config.stats_expressions import FORMATS, StatsSyntaxError, parse_pointer, parse_selector
from router.errors import ConfigError
from router.trust import TrustedNetworks

PREFER_POLICIES = ("unless-offline", "never")
LOG_FORMATS = ("text", "json")


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


def _check_stats(table: str, values: dict[str, Any]) -> None:
    """stats_format with the one expression it reads (stats_expressions.py), readable."""
    fmt = values.get("stats_format", "json")
    if fmt not in FORMATS:
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
                parse_pointer(count)
        else:
            if count:
                raise ConfigError(f"{table}.stats_count", "is for stats_format = json")
            if not metric:
                raise ConfigError(
                    f"{table}.stats_metric", "is required with stats_format = prometheus"
                )
            parse_selector(metric)
    except StatsSyntaxError as exc:
        key = "stats_count" if fmt == "json" else "stats_metric"
        raise ConfigError(f"{table}.{key}", str(exc)) from None
