"""The credential throttle's buckets in Redis: one per address for the whole fleet.

throttle.py's buckets are per process, so `--workers N` and N instances multiplied the rates
a guesser gets (issue 25). Here the same two buckets (per address, overall) and the
exemption mark live in Redis, updated by one script with Redis's own clock (instances' clocks
may differ), so every worker and instance spends from and waits on the same ones. While Redis
cannot answer, each process falls back to its own buckets (throttle.CredentialThrottle,
which is also fed every failure and success meanwhile, so it knows what it saw).
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError

from router.errors import StoreUnavailable
from router.state.keys import Keys
from router.state.redis_client import unavailable
from router.state.redis_store import RedisStore
from router.state.store import StateStore
from router.throttle import Limits, client_key

log = logging.getLogger("router.throttle")

# KEYS: the address's bucket, the overall bucket, the address's exemption mark.
# ARGV: op (wait | fail | good), per-address capacity and rate per ms, overall capacity and
# rate per ms, exemption in ms. A bucket is a hash {tokens, stamp (ms)}; it expires once it
# would be full again, so Redis holds only addresses that failed recently.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function level(key, cap, rate)
  local v = redis.call('HMGET', key, 'tokens', 'stamp')
  if not v[1] then return cap end
  local l = tonumber(v[1]) + (now - tonumber(v[2])) * rate
  if l > cap then return cap end
  return l
end
local function wait(l, rate)
  if l >= 1 then return 0 end
  return math.ceil((1 - l) / rate)
end
local function spend(key, cap, rate)
  local l = level(key, cap, rate) - 1
  if l < 0 then l = 0 end
  redis.call('HSET', key, 'tokens', tostring(l), 'stamp', tostring(now))
  redis.call('PEXPIRE', key, math.ceil((cap - l) / rate) + 1000)
end
local pa, par = tonumber(ARGV[2]), tonumber(ARGV[3])
local ov, ovr = tonumber(ARGV[4]), tonumber(ARGV[5])
if ARGV[1] == 'good' then
  if tonumber(ARGV[6]) > 0 then redis.call('SET', KEYS[3], '1', 'PX', ARGV[6]) end
  return 0
end
if ARGV[1] == 'fail' then
  spend(KEYS[2], ov, ovr)
  spend(KEYS[1], pa, par)
  return 0
end
local w = wait(level(KEYS[1], pa, par), par)
if w > 0 then return w end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
return wait(level(KEYS[2], ov, ovr), ovr)
"""


class SharedThrottle:
    """A listener's credential throttle (`scope`: "admin", "preview"), fleet-wide through
    Redis when the store is Redis, per process otherwise or while Redis is away."""

    def __init__(self, store: StateStore | None, scope: str, limits: Limits) -> None:
        self.limits = limits
        self.local = limits.throttle()
        self.scope = scope
        self._keys: Keys | None = None
        self._script = None
        self._description = ""
        if isinstance(store, RedisStore):
            self._keys = store.keys
            self._script = store.client.register_script(_SCRIPT)
            self._description = store.description

    async def _run(self, op: str, address: str) -> float | None:
        """The script's answer in seconds; None when Redis cannot answer (fall back)."""
        if self._script is None or self._keys is None:
            return None
        key = client_key(address)
        keys = [
            self._keys.throttle(self.scope, f"addr:{key}"),
            self._keys.throttle(self.scope, "all"),
            self._keys.throttle(self.scope, f"good:{key}"),
        ]
        lim = self.limits
        args = [
            op,
            lim.per_address,
            lim.per_address_per_minute / 60_000,
            lim.overall,
            lim.overall_per_minute / 60_000,
            int(lim.good_for * 1000),
        ]
        try:
            waited = await self._script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            error: StoreUnavailable = unavailable(self._description, exc)
            log.debug("credential throttle kept per process: %s", error)
            return None
        return int(waited) / 1000

    async def retry_after(self, address: str) -> float:
        """Seconds until a credential from `address` may be checked; 0 when it may now."""
        shared = await self._run("wait", address)
        return self.local.retry_after(address, time.monotonic()) if shared is None else shared

    async def failed(self, address: str) -> None:
        self.local.failed(address, time.monotonic())
        await self._run("fail", address)

    async def succeeded(self, address: str) -> None:
        self.local.succeeded(address, time.monotonic())
        await self._run("good", address)
