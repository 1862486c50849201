"""Static configuration: the frozen dataclasses, every key with its default and help.

`load_config` (load.py) is the only function that reads the file and the environment.
Precedence: environment > file > default. Every key has a help string (`field_help`), the
README's reference table is checked against these fields by a test, so the docs cannot drift.
Static means "needs a restart to change"; what changes at run time lives in Redis (state/).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from router.config.values import Factor, Seconds, Secret
from router.throttle import Limits

# The operator name `admin_token` stands for (audit, page).
ADMIN_OPERATOR = "admin"


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
