"""Every Redis key name token-router uses, derived from one prefix.

Redis Cluster: the Lua scripts touch several keys at once, so they must hash to one slot;
give `key_prefix` a hash tag (`{tokenrouter}`) there. The affinity script names its keys in
its JSON argument rather than in KEYS (one argument packs far cheaper than hundreds); with
the hash tag they all share the slot of the one key it declares. Plain Redis and Sentinel
need nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def active(self) -> str:
        """The id of the system that receives new sessions (SPEC: the contract key)."""
        return f"{self.prefix}:active"

    @property
    def recorded(self) -> str:
        """The last active value written to the audit stream; makes auditing exactly-once."""
        return f"{self.prefix}:active:recorded"

    @property
    def epoch(self) -> str:
        """'<random id>:<unix time>' written once per Redis lifetime by the first router that
        finds it missing: a router that knew another value knows Redis lost its state."""
        return f"{self.prefix}:epoch"

    @property
    def restoring(self) -> str:
        """Unix time a router last found the state lost and began writing back (TTL 60 s):
        the routers' open counts are incomplete for a few seconds after it."""
        return f"{self.prefix}:epoch:restoring"

    @property
    def default_seed(self) -> str:
        """The value a router with no state of its own seeded into an empty Redis (TTL 60 s):
        a router that knew the state replaces it while it is unchanged."""
        return f"{self.prefix}:active:default"

    @property
    def offline(self) -> str:
        """Set of system ids an operator marked offline."""
        return f"{self.prefix}:offline"

    @property
    def offline_forced(self) -> str:
        """The system token-router marked offline while it was active (`offline --force`):
        the only way the active system is offline. A mark of the active system found without
        it (a bare `SADD`) is refused, like a bare `SET` of an offline system."""
        return f"{self.prefix}:offline:forced"

    @property
    def offline_refused(self) -> str:
        """The active system whose bare `SADD` to the offline set was refused and audited
        (makes that audit exactly-once)."""
        return f"{self.prefix}:offline:refused"

    @property
    def offline_recorded(self) -> str:
        """The offline set as last written to the audit stream (plus the member "" once it
        exists), so a bare SADD/SREM from redis-cli is audited exactly once, like `recorded`."""
        return f"{self.prefix}:offline:recorded"

    @property
    def events(self) -> str:
        """Pub/sub channel that router writers publish to after every state change."""
        return f"{self.prefix}:events"

    @property
    def audit(self) -> str:
        """Stream of switches: time, source, from, to."""
        return f"{self.prefix}:audit"

    @property
    def upgrade(self) -> str:
        """JSON document of the upgrade `token-router upgrade` drives (resume, one at a time)."""
        return f"{self.prefix}:upgrade"

    def affinity(self, kind: str, ident: str) -> str:
        """Which system issued a session token (kind "session") or short code ("code")."""
        return f"{self.prefix}:aff:{kind}:{ident}"

    def open_items(self, system: str) -> str:
        """Sorted set of what `system` issued and has not released; score = expiry time."""
        return f"{self.prefix}:open:{system}"

    def issued(self, kind: str, ident: str) -> str:
        """Who issued an open item and when ('<instance> <unix time>'), for the drain's list;
        lives as long as the item counts as open."""
        return f"{self.prefix}:issued:{kind}:{ident}"

    def throttle(self, scope: str, part: str) -> str:
        """One credential-throttle bucket or mark of a listener (`scope`: admin, preview):
        `all` (the overall bucket), `addr:<address>`, `good:<address>`."""
        return f"{self.prefix}:throttle:{scope}:{part}"

    def revoked_session(self, nonce: str) -> str:
        """Present (with a TTL: the session's lifetime left) once a login session ended."""
        return f"{self.prefix}:session:revoked:{nonce}"

    def preview(self, system: str) -> str:
        """Present (with a TTL) while `system` is being tested through the preview header."""
        return f"{self.prefix}:preview:{system}"

    @property
    def releases(self) -> str:
        """Sorted set of release ids; score = expiry time (last active + retention)."""
        return f"{self.prefix}:releases"

    def release_meta(self, release: str) -> str:
        """Hash: label, digest, manifest (JSON), created, last_active, last_system, systems."""
        return f"{self.prefix}:release:{release}:meta"

    def release_files(self, release: str) -> str:
        """Hash of the release's bytes: `id:<path>`, `gzip:<path>`, `br:<path>`."""
        return f"{self.prefix}:release:{release}:files"

    def system_release(self, system: str) -> str:
        """The release a system served when last fingerprinted."""
        return f"{self.prefix}:system:{system}:release"

    @property
    def generation(self) -> str:
        """Counter bumped by every write through token-router (switch, offline, rollout):
        instances report the generation they applied, which confirms propagation."""
        return f"{self.prefix}:generation"

    @property
    def rollout(self) -> str:
        """JSON document of the running progressive rollout (absent when none runs)."""
        return f"{self.prefix}:rollout"

    def rollout_counts(self, rollout_id: str, step: int) -> str:
        """Hash of token requests and failures per system during one step of a rollout."""
        return f"{self.prefix}:rollout:{rollout_id}:step:{step}"

    @property
    def watch(self) -> str:
        """JSON document of the post-switch watch of the last change of `active`."""
        return f"{self.prefix}:watch"

    def traffic(self, slot: int) -> str:
        """Hash of token requests, failures and latency buckets per system that all instances
        counted in one second (`slot` = unix time // 1): the post-switch watch reads it."""
        return f"{self.prefix}:traffic:{slot}"

    @property
    def leader(self) -> str:
        """The rollout controller's lock: the id of the instance driving rollouts, with expiry."""
        return f"{self.prefix}:leader"

    @property
    def instances(self) -> str:
        """Hash of live router instances: id -> JSON heartbeat (host, pid, applied state)."""
        return f"{self.prefix}:instances"

    def keyspace_channels(self, db: int) -> list[str]:
        """Keyspace-notification channels that signal a change of the dynamic state."""
        return [
            f"__keyspace@{db}__:{self.active}",
            f"__keyspace@{db}__:{self.offline}",
            f"__keyspace@{db}__:{self.rollout}",
        ]
