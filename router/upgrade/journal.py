"""The upgrade document (`<prefix>:upgrade`) and the audit entries of every upgrade step.

Written with a compare-and-set, so two `token-router upgrade` processes racing to start
cannot both win. Audit entries go to the same stream as switches (`<prefix>:audit`), so
`token-router history` and the admin page show the upgrade's steps among the switches.
"""

from __future__ import annotations

import time
from typing import Protocol

from redis.exceptions import RedisError

from router.errors import StoreUnavailable
from router.state.key_problems import diagnose, is_wrong_type
from router.state.keys import Keys
from router.state.memory_store import MemoryStore
from router.state.redis_client import redact, redis_client, unavailable
from router.state.store import AUDIT_MAXLEN, AuditEntry

_CAS = """
-- KEYS: upgrade ; ARGV: expected ('' = absent), new
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


class Journal(Protocol):
    description: str

    async def read(self) -> str | None: ...
    async def write(self, expected: str | None, new: str) -> bool: ...
    async def audit(self, action: str, source: str, from_: str, to: str, reason: str) -> None: ...
    async def close(self) -> None: ...


class RedisJournal:
    def __init__(self, url: str, keys: Keys, *, timeout: float) -> None:
        self.description = redact(url)
        self.keys = keys
        self._client = redis_client(
            url, timeout=timeout, decode_responses=True, client_name="token-router-upgrade"
        )
        self._cas = self._client.register_script(_CAS)

    async def _failure(self, exc: BaseException, key: str) -> StoreUnavailable:
        """A key of the wrong type is named with its fix (Redis is up); else unavailable."""
        if is_wrong_type(exc):
            return await diagnose(self._client, self.keys, [key], exc)
        return unavailable(self.description, exc)

    async def read(self) -> str | None:
        try:
            value = await self._client.get(self.keys.upgrade)
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.upgrade) from exc
        return None if value is None else str(value)

    async def write(self, expected: str | None, new: str) -> bool:
        try:
            done = await self._cas(keys=[self.keys.upgrade], args=[expected or "", new])
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.upgrade) from exc
        return bool(done)

    async def audit(self, action: str, source: str, from_: str, to: str, reason: str) -> None:
        fields = {
            "action": action,
            "from": from_,
            "to": to,
            "source": source,
            "time": repr(time.time()),
            "reason": reason,
        }
        try:
            await self._client.xadd(
                self.keys.audit,
                fields,  # type: ignore[arg-type]
                maxlen=AUDIT_MAXLEN,
                approximate=True,
            )
        except (RedisError, OSError) as exc:
            raise await self._failure(exc, self.keys.audit) from exc

    async def close(self) -> None:
        await self._client.aclose()


class MemoryJournal:
    """For a memory:// store (the drill without redis-server): beside the store, in process."""

    def __init__(self, store: MemoryStore) -> None:
        self.description = "memory://"
        self.store = store
        self.value: str | None = None
        self.reasons: dict[str, str] = {}  # audit entry id -> reason (memory entries have none)

    async def read(self) -> str | None:
        return self.value

    async def write(self, expected: str | None, new: str) -> bool:
        if (self.value or "") != (expected or ""):
            return False
        self.value = new
        return True

    async def audit(self, action: str, source: str, from_: str, to: str, reason: str) -> None:
        now = time.time()
        entry_id = f"{int(now * 1000)}-u{len(self.store.entries)}"
        self.store.entries.append(
            AuditEntry(id=entry_id, time=now, action=action, source=source, from_=from_, to=to)
        )
        self.reasons[entry_id] = reason
        del self.store.entries[:-AUDIT_MAXLEN]

    async def close(self) -> None:
        return None


def open_journal(url: str, keys: Keys, *, timeout: float, store: object = None) -> Journal:
    if url.startswith("memory://"):
        if not isinstance(store, MemoryStore):
            raise StoreUnavailable("memory:// upgrade journal needs the in-process store")
        return MemoryJournal(store)
    return RedisJournal(url, keys, timeout=timeout)
