"""The shapes of the admin API's requests and answers, as pydantic models.

Request models (`Body`, `Params` subclasses) are what handlers parse requests with, so their
limits are enforced as documented. Answer models describe what handlers send; the OpenAPI
document's schemas are generated from them, and the schemathesis test checks every answer
against those schemas.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from router.admin.spec import Body, Params, SystemId, SystemRef
from router.printable import printable
from router.state.rollout import MAX_INTERVAL, MAX_MIN_REQUESTS, MIN_INTERVAL

SYSTEM_STATES = Literal["active", "rollout", "draining", "stalled", "drained", "offline", "preview"]

# --- requests ----------------------------------------------------------------------------


class SystemPath(Params):
    system: SystemId = Field(description="A configured system id.")


class AuditQuery(Params):
    count: int = Field(
        50, ge=1, le=1000, description="How many entries, newest first.", examples=[10, 1000]
    )
    before: str | None = Field(
        None,
        pattern=r"^[0-9]{1,20}-[0-9]{1,20}$",
        description="The next page: only entries older than this id (`next` of the last page).",
        examples=["1733500000000-0"],
    )
    since: float | None = Field(
        None,
        ge=0,
        # A stream id is milliseconds as an integer: 9.2e307 s overflowed into a 500.
        le=1e11,
        description="Only entries written at or after this Unix time (seconds).",
    )


class RefreshQuery(Params):
    system: list[SystemId] = Field(
        default_factory=list, description="Only these systems (repeatable); default all."
    )


# --- answers -----------------------------------------------------------------------------


class Error(BaseModel):
    """Every error of the admin API (and of the proxy)."""

    error: str = Field(description="Stable machine code.")
    message: str = Field(description="What happened and what to do.")
    system: str | None = Field(None, description="The system concerned, if any.")


class Liveness(BaseModel):
    status: Literal["ok"]


RefusedReason = Literal["unknown", "offline", "offline-mark"]


class KeyProblem(BaseModel):
    """A key of the Redis namespace that holds what token-router cannot use, and the fix."""

    key: str
    message: str


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "starting", "stopping"]
    error: str | None = Field(None, description="Why degraded or starting.")
    problems: list[KeyProblem] = Field([], description="Unusable keys (degraded until fixed).")
    refused: str | None = Field(
        None, description="A value in <prefix>:active that routing refused."
    )
    refused_reason: RefusedReason | None = Field(
        None, description="It names no configured system, or a system marked offline."
    )


class System(BaseModel):
    id: SystemRef
    state: SYSTEM_STATES = Field(description="The headline word: the first of `states`.")
    states: list[SYSTEM_STATES] = Field(
        description="Every state that holds, e.g. [preview, draining] or [draining, stalled];"
        " rollout: the target of a running rollout."
    )
    badge: str = Field(
        description="The states as every surface shows them, with the share during a rollout,"
        " e.g. 'rollout target 20 %', 'active 80 %', 'draining + stalled'."
    )
    share: int = Field(description="Percent of new sessions this system gets now.")
    drained: bool = Field(
        description="An idle system that holds no calls (the one drain decision)."
    )
    open: int | None = Field(
        description="The count that decides drain (null: unknown); see source."
    )
    source: Literal["gateway", "router", "unknown"] = Field(
        description="gateway: its stats_url count decides; router: the routers' count of tokens "
        "and short codes (within shortcode_ttl) not yet released."
    )
    router_open: int | None = Field(description="The routers' count.")
    gateway_open: int | None = Field(
        description="The gateway's own count (stats_url), where it answers."
    )
    gateway_error: str | None
    drain_rate: float | None = Field(
        description="Items per second the deciding count falls (negative: rises)."
    )
    drain_eta: float | None = Field(
        description="Seconds until it reaches 0 at that rate, while it falls (null: not"
        " falling, or stalled)."
    )
    stalled: bool = Field(
        description="A draining system whose count has not fallen for router.drain_stall_after."
    )
    stalled_for: float | None = Field(description="Seconds it has not fallen, while stalled.")
    estimate: str = Field(
        description="The trend in the words every surface shows: 'falling 12.0/min, ~40 s to"
        " 0', 'rising 3.0/min', 'steady', 'stalled: no fall for 3 min', 'drained', ..."
    )
    gateway: str
    public_url: str
    version: str | None = Field(description="Configured release label.")


class Refused(BaseModel):
    """A value in <prefix>:active that routing refused: it names no configured system ('unknown')
    or a system marked offline ('offline'); or the active system's bare SADD ('offline-mark')."""

    value: str
    since: float
    reason: RefusedReason


class StoreHealth(BaseModel):
    url: str = Field(description="Redis URL, password redacted.")
    synced: bool
    degraded: bool = Field(description="Redis away: routing on the last known state.")
    degraded_since: float | None
    error: str | None
    problems: list[KeyProblem] = Field(description="Unusable keys, each with its fix.")
    last_sync: float | None
    persistence: Literal["aof", "rdb", "aof+rdb", "none", "unknown", "memory"] = Field(
        description="How Redis persists its data (CONFIG GET)."
    )
    risk: str | None = Field(description="Why Redis persistence is a risk, if it is.")


class TrafficFigures(BaseModel):
    """Token requests to one system over a span, all instances."""

    requests: int
    failures: int
    buckets: list[int] = Field(
        description="Answers per latency bucket of tokenrouter_upstream_seconds (last: +Inf)."
    )


class WatchThresholds(BaseModel):
    max_error_rate: float
    min_requests: int
    max_latency: float = Field(description="p99 seconds; 0: no absolute bound.")
    latency_factor: float = Field(description="Times the baseline's p99; 0: off.")
    latency_floor: float


class PostSwitchWatch(BaseModel):
    """The watch of the last change of the active system (docs/upgrades.md)."""

    id: str = Field(description="The audit entry of the change it watches.")
    system: str = Field(description="The new active system.")
    previous: str = Field(description="The system active before (what an undo goes back to).")
    action: str
    source: str
    started: float
    until: float
    span: float
    thresholds: WatchThresholds
    can_undo: bool = Field(description="False: the old system was offline; alarm only.")
    state: Literal["watching", "passed", "undone", "alarm", "ended"]
    baseline: TrafficFigures | None = Field(description="The old system before the change.")
    baseline_from: float
    current: TrafficFigures = Field(description="The last figures judged.")
    current_from: float
    checked: float
    ended_at: float | None
    reason: str = Field(description="Why it ended: the evidence of an undo or an alarm.")
    left: float = Field(description="Seconds the watch still runs.")
    window: float
    current_p99: float | None
    baseline_p99: float | None
    measures: str = Field(description="What it measures, in words.")
    line: str = Field(description="One line for people (status, the page).")


class RolloutShare(BaseModel):
    """A running or paused rollout as routing applies it."""

    source: str = Field(description="The active system, which keeps the rest.")
    target: str
    percent: int = Field(description="Percent of new sessions to the target.")


class Status(BaseModel):
    active: str = Field(description="The system receiving new sessions.")
    headline: str = Field(
        description="Where new sessions go, as every surface says it: 'new sessions go to a' or"
        " 'rollout b -> a: 20 % of new sessions to a'."
    )
    rollout_share: RolloutShare | None = Field(
        description="The running (or paused) rollout's split of new sessions."
    )
    systems: list[System]
    offline: list[str]
    refused: Refused | None = Field(
        description="A value in <prefix>:active that names no configured system."
    )
    store: StoreHealth
    instance: str = Field(description="host:pid of the answering process.")
    uptime: float
    watch: PostSwitchWatch | None = Field(
        None, description="The post-switch watch of the last change, if any was made."
    )


class Health(BaseModel):
    ok: bool | None = Field(description="null until the first probe.")
    target: str = Field(description="The URL probed.")
    status: int | None
    checked_at: float | None
    latency_ms: float | None
    last_error: str | None
    last_error_at: float | None
    last_ok_at: float | None
    gateway_sessions: int | None
    gateway_codes: int | None


class ReleaseInfo(BaseModel):
    id: str | None
    label: str | None
    error: str | None


class Rate(BaseModel):
    token: float
    all: float


class LiveSystem(System):
    release: ReleaseInfo
    health: Health
    rate: Rate = Field(description="Requests per second seen by this instance.")
    trend: list[int | None] = Field(description="Open items, oldest first, one point per 2 s.")


class AuditEntry(BaseModel):
    id: str = Field(description="Redis stream entry id.")
    time: float = Field(description="Unix time, seconds.")
    action: str = Field(
        description="switch, offline or online (entries written with redis-cli pass as they are)."
    )
    source: str = Field(
        description="Channel and who: 'api (alice@10.0.0.5)' and 'page (...)' name the "
        "operator and address, 'cli (user@host)', 'external (seen by ...)' (redis-cli)."
    )
    from_: str = Field(alias="from")
    to: str


class Live(Status):
    systems: list[LiveSystem]  # type: ignore[assignment]
    audit: list[AuditEntry] | None
    audit_error: str | None
    rates_scope: str
    now: float


class Expired(BaseModel):
    message: str


class Audit(BaseModel):
    entries: list[AuditEntry]
    next: str | None = Field(
        None, description="Older entries exist: pass this as `before` for the next page."
    )


class OfflineResult(BaseModel):
    system: SystemRef
    offline: bool


class Release(BaseModel):
    """A stored release of client libraries, served under `base`."""

    release: str = Field(description="Release id (content digest).")
    label: str | None = Field(description="Human label, e.g. 4.2.1.")
    digest: str
    files: int
    size: int = Field(description="Bytes, uncompressed.")
    created: float
    last_active: float
    last_system: str
    systems: list[str]
    expires: float = Field(description="Unix time the store drops it.")
    base: str = Field(examples=["/v/r-1a2b3c4d5e6f"])


class Serving(BaseModel):
    release: str | None
    label: str | None
    error: str | None = Field(description="Last check error.")


class Releases(BaseModel):
    releases: list[Release]
    systems: dict[str, Serving] = Field(description="System id -> the release it serves.")
    last_check: float | None
    store_error: str | None


class RefreshResult(BaseModel):
    system: SystemRef
    release: str | None
    label: str | None
    previous: str | None
    changed: bool
    stored: bool = Field(description="First time this release was seen.")
    files: int
    size: int
    error: str | None = Field(description="Why the check failed; the system keeps its release.")


class Refresh(BaseModel):
    results: list[RefreshResult]


# --- guarded switching and rollouts (guarded_api.py) ---------------------------------------


class GuardRequest(Body):
    """What every guarded change accepts: override the gates, say why, name the channel."""

    force: bool = Field(
        False, description="Override the gates (offline, health; never expect); audited."
    )
    # Stored as shown: control characters escaped (router/printable.py).
    reason: Annotated[str, AfterValidator(printable)] = Field(
        "",
        max_length=200,
        description="Recorded in the audit stream (control characters escaped, as \\x1b).",
    )
    via: Literal["api", "page"] = Field(
        "api",
        description="Accepted for compatibility and ignored: the audit records 'page' for a"
        " request authenticated by the page's login session, 'api' for any other.",
    )


class GuardedSwitchRequest(GuardRequest):
    system: SystemId = Field(description="The system to make active.")
    expect: SystemId | None = Field(
        None,
        description="Compare-and-set: refused (409, gate 'expect') unless this system is "
        "still the active one. The admin page sends the system it displayed.",
    )


class RolloutRequest(GuardRequest):
    system: SystemId = Field(description="The target system.")
    steps: str | list[Annotated[int, Field(ge=1, le=100)]] = Field(
        description="Percentages of new sessions, strictly increasing, 1..100.",
        examples=["5,25,50,100", [5, 25, 50, 100]],
    )
    interval: float = Field(ge=MIN_INTERVAL, le=MAX_INTERVAL, description="Seconds a step holds.")
    max_error_rate: float = Field(
        0.05, gt=0, le=1, description="Abort when this share of the target's token requests fails."
    )
    min_requests: int = Field(
        20, ge=1, le=MAX_MIN_REQUESTS, description="Token requests before the error share counts."
    )
    max_latency: float | None = Field(
        None,
        ge=0,
        le=3600,
        description="Abort when the target's p99 of token answers exceeds this many seconds"
        " (0: off; default router.latency_max_p99).",
    )
    latency_factor: float | None = Field(
        None,
        ge=0,
        le=1000,
        description="Abort when the target's p99 exceeds this many times the source's in the"
        " same seconds (0: off, else 1 or more; default router.latency_factor).",
    )


class Confirmation(BaseModel):
    """How many live router instances applied the change, and how fast."""

    applied: int
    total: int
    elapsed_ms: float
    laggards: list[str] = Field(
        description="Instances live during the wait that have not applied it (silent ones too)."
    )
    silent: list[str] = Field(
        description="Laggards that stopped heartbeating meanwhile (frozen or gone)."
    )
    timed_out: bool
    complete: bool = Field(
        description="Every instance live during the wait applied it; false: not a success."
    )


class GuardedSwitchResult(BaseModel):
    active: SystemRef
    previous: str | None = Field(description="The system active before (null: none).")
    changed: bool
    forced: str | None = Field(description="What force overrode (null: nothing).")
    confirmation: Confirmation | None
    message: str = Field(description="e.g. 'switched a -> b; applied by 3/3 instances in 12 ms'")


class StepCounts(BaseModel):
    requests: int
    failures: int


class RolloutView(BaseModel):
    """The current or last rollout."""

    id: str
    target: SystemRef
    source: str = Field(description="The system rolled away from.")
    steps: list[int]
    step: int = Field(description="Index into steps.")
    step_number: int
    percent: int = Field(description="Share of new sessions now (0 once over).")
    state: Literal["running", "paused", "promoted", "aborted", "ended"]
    interval: float
    next_in: float | None = Field(description="Seconds to the next step (running only).")
    max_error_rate: float
    min_requests: int
    max_latency: float = Field(description="p99 seconds that abort a step (0: off).")
    latency_factor: float = Field(description="Times the source's p99 that abort (0: off).")
    latency_floor: float
    counts: dict[str, StepCounts] = Field(
        description="Per system: token requests and failures in this step, all instances."
    )
    started: float
    started_by: str
    step_started: float
    paused_at: float | None
    ended_at: float | None
    end_reason: str | None


class RolloutDocument(BaseModel):
    rollout: RolloutView | None


class RolloutAnswer(BaseModel):
    rollout: RolloutView | None
    confirmation: Confirmation


class Instance(BaseModel):
    id: str
    host: str
    pid: int
    version: str
    started: float
    seen: float
    leader: bool
    current: bool = Field(description="Has applied the newest state generation.")
    applied: dict[str, object]


class Instances(BaseModel):
    generation: int
    stale_after: float
    behind: list[str]
    summary: str = Field(
        description="e.g. '2 live, 1 not on the current state: host:123', as status says it."
    )
    instances: list[Instance]
