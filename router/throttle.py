"""Slows down credential guessing: per address and overall, in bounded memory.

Used for the admin listener's tokens (admin/auth.py) and the proxy's preview secret.

Two token buckets decide whether a presented credential is checked at all:
- one per client address (an IPv6 client counts per /64, the block one subscriber gets):
  `PER_ADDRESS` failures at once, then `PER_ADDRESS_PER_MINUTE`;
- one for the whole process: `OVERALL` failures at once, then `OVERALL_PER_MINUTE`, so
  spraying from many addresses gains nothing over guessing from one.

Only failures spend from the buckets; a correct credential spends nothing. An address that
authenticated successfully within `GOOD_FOR` seconds is exempt from the overall bucket (never
from its own): an operator at another address is not locked out by someone else's spray, and a
sprayer cannot earn the exemption without a valid credential. An operator who shares an address
with a guesser is slowed with them (a few tries a minute), never locked out for good.

Memory is bounded without an eviction anyone can trigger: an address gets an entry only by
failing, failing needs a token from the overall bucket (or the exemption), so the table grows
at most by the overall rate; entries whose bucket is full again carry no information and are
dropped first. Spraying therefore cannot flush the table and reset a guesser's bucket.

This module is the per-process throttle, pure (every method takes `now`; tested without
sockets or clocks). The listeners use it through state/shared_throttle.py, which keeps the
same buckets in Redis, one per address for the whole fleet (every worker and instance), and
falls back to this one while Redis cannot answer. Sizes, rates and the exemption window are
configuration (`Limits`, router.throttle_*).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

PER_ADDRESS = 5
PER_ADDRESS_PER_MINUTE = 3.0
OVERALL = 20
OVERALL_PER_MINUTE = 10.0
GOOD_FOR = 8 * 3600.0  # one login session's lifetime
MAX_ADDRESSES = 4096
MAX_GOOD = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The buckets' sizes and refill rates and the exemption window (router.throttle_*)."""

    per_address: int = PER_ADDRESS
    per_address_per_minute: float = PER_ADDRESS_PER_MINUTE
    overall: int = OVERALL
    overall_per_minute: float = OVERALL_PER_MINUTE
    good_for: float = GOOD_FOR  # 0: no exemption from the overall bucket

    def throttle(self) -> CredentialThrottle:
        """A per-process throttle with these limits."""
        return CredentialThrottle(
            per_address=self.per_address,
            per_address_per_minute=self.per_address_per_minute,
            overall=self.overall,
            overall_per_minute=self.overall_per_minute,
            good_for=self.good_for,
        )


def client_key(address: str) -> str:
    """The unit throttled: the address, or its /64 for IPv6 (one subscriber's block)."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class Bucket:
    """Token bucket: `tokens` at `stamp`, refilling at `rate` per second up to `capacity`."""

    capacity: float
    rate: float
    tokens: float
    stamp: float

    def level(self, now: float) -> float:
        return min(self.capacity, self.tokens + max(0.0, now - self.stamp) * self.rate)

    def wait(self, now: float) -> float:
        """Seconds until one token is available (0: now)."""
        level = self.level(now)
        return 0.0 if level >= 1.0 else (1.0 - level) / self.rate

    def spend(self, now: float) -> None:
        self.tokens = max(0.0, self.level(now) - 1.0)
        self.stamp = now

    def full(self, now: float) -> bool:
        return self.level(now) >= self.capacity


@dataclass
class CredentialThrottle:
    per_address: int = PER_ADDRESS
    per_address_per_minute: float = PER_ADDRESS_PER_MINUTE
    overall: int = OVERALL
    overall_per_minute: float = OVERALL_PER_MINUTE
    good_for: float = GOOD_FOR
    max_addresses: int = MAX_ADDRESSES
    max_good: int = MAX_GOOD
    addresses: dict[str, Bucket] = field(default_factory=dict)
    good: OrderedDict[str, float] = field(default_factory=OrderedDict)
    total: Bucket | None = None

    def _overall(self, now: float) -> Bucket:
        if self.total is None:
            self.total = Bucket(self.overall, self.overall_per_minute / 60.0, self.overall, now)
        return self.total

    def _is_good(self, key: str, now: float) -> bool:
        since = self.good.get(key)
        if since is None:
            return False
        if now - since > self.good_for:
            del self.good[key]
            return False
        return True

    def retry_after(self, address: str, now: float) -> float:
        """Seconds until a credential from `address` may be checked; 0 when it may now."""
        key = client_key(address)
        bucket = self.addresses.get(key)
        if bucket is not None:
            wait = bucket.wait(now)
            if wait > 0:
                return wait
        if self._is_good(key, now):
            return 0.0
        return self._overall(now).wait(now)

    def failed(self, address: str, now: float) -> None:
        """A wrong credential from `address` (after retry_after said it could be checked)."""
        key = client_key(address)
        self._overall(now).spend(now)
        bucket = self.addresses.get(key)
        if bucket is None:
            if len(self.addresses) >= self.max_addresses:
                self._forget_idle(now)
            if len(self.addresses) >= self.max_addresses:
                return  # still counted overall; never evict a bucket that holds information
            rate = self.per_address_per_minute / 60.0
            bucket = self.addresses[key] = Bucket(self.per_address, rate, self.per_address, now)
        bucket.spend(now)

    def succeeded(self, address: str, now: float) -> None:
        if self.good_for <= 0:
            return
        key = client_key(address)
        self.good[key] = now
        self.good.move_to_end(key)
        while len(self.good) > self.max_good:
            self.good.popitem(last=False)

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, b in self.addresses.items() if b.full(now)]:
            del self.addresses[key]
