"""Rate limits on the public request endpoints (the `limits` library):
per requester IP and per identifier, so neither a script nor a flood of
requests about one person gets through. Keys are keyed hashes (no IP or
identifier in Redis or memory in clear). Storage: Redis when REDIS_URL is
set (shared by every process), memory otherwise."""
from __future__ import annotations

import time
from dataclasses import dataclass

from limits import parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from cdp import crypto

OPEN_PER_IP = "10/hour"
OPEN_PER_IDENTIFIER = "3/hour;10/day"
VERIFY_PER_IP = "30/hour"


class RateLimited(Exception):
    def __init__(self, field: str, retry_after: int):
        super().__init__(f"{field}: too many requests, retry later")
        self.field = field
        self.retry_after = retry_after


@dataclass
class _Rule:
    field: str
    limits: list
    key: str


class RequestLimiter:
    def __init__(self, settings, keyring: crypto.Keyring, namespace: str = "cdp-dsr"):
        storage = storage_from_string(settings.redis_url) if settings.redis_url else MemoryStorage()
        self.limiter = MovingWindowRateLimiter(storage)
        self.keyring = keyring
        self.namespace = namespace

    def _key(self, *parts: str) -> str:
        return self.keyring.keyed_hash("rate-limit", *parts).hex()[:32]

    def _apply(self, rules: list[_Rule]) -> None:
        # Check every rule first, then count the hit everywhere: a refused
        # request does not use up the other counters.
        for rule in rules:
            for limit in rule.limits:
                if not self.limiter.test(limit, self.namespace, rule.key):
                    reset = self.limiter.get_window_stats(limit, self.namespace, rule.key).reset_time
                    raise RateLimited(rule.field, max(1, int(reset - time.time())))
        for rule in rules:
            for limit in rule.limits:
                self.limiter.hit(limit, self.namespace, rule.key)

    def opening(self, ip: str, identifiers: dict[str, str]) -> None:
        rules = [_Rule("ip", _parse(OPEN_PER_IP), self._key("open-ip", ip or "-"))]
        for kind, value in sorted(identifiers.items()):
            rules.append(_Rule(f"identifiers.{kind}", _parse(OPEN_PER_IDENTIFIER), self._key("open-id", kind, value)))
        self._apply(rules)

    def verifying(self, ip: str) -> None:
        self._apply([_Rule("ip", _parse(VERIFY_PER_IP), self._key("verify-ip", ip or "-"))])


def _parse(spec: str) -> list:
    return [parse(part) for part in spec.split(";")]
