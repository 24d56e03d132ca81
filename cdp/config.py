"""Settings read from the environment, validated once at start-up.

A missing or malformed setting raises ConfigError with one line that says
what to fix; the CLI prints it and exits 2 (no traceback).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class ConfigError(Exception):
    """A setting is missing or malformed; the message says what to fix."""


SURVIVORSHIP_RULES = ("source_trust", "most_recent", "most_complete")
MATCH_RULES = ("cpf", "cnpj", "email", "phone_name", "custom")


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str | None
    instance_path: Path
    keys_file: Path
    keyring_json: str | None = None
    queue_name: str = "cdp"
    # Identity resolution (deterministic rules, in priority order).
    match_rules: tuple[str, ...] = MATCH_RULES
    name_threshold: float = 85.0
    # Probabilistic matching: auto-merge at or above match_threshold, queue
    # for a person between review_threshold and match_threshold.
    match_threshold: float = 0.95
    review_threshold: float = 0.60
    max_block: int = 200  # a blocking key shared by more records is too common to use
    # The name-only key ("same name sound") is the weakest and the most
    # crowded (Maria Silva); past this many holders it finds no one a
    # stronger key would not (FEBRL and the Brazilian set score the same
    # with 5, 10 and 30), and its comparisons dominate resolution time.
    max_name_block: int = 10
    # Golden record: how to pick a value when sources disagree.
    survivorship: tuple[str, ...] = SURVIVORSHIP_RULES
    resolve_batch_size: int = 500
    # Matching features of recently seen records a worker keeps in memory
    # (about 1.9 KB each): a miss costs a select, a decryption and a re-parse.
    feature_cache: int = 100_000
    # Processes for the rebuild's pair scoring when no rq workers are configured
    # (0: one per available core).
    rebuild_processes: int = 0
    # LGPD: controller and encarregado (DPO), named in every report and notice to a subject.
    controller_name: str = "(defina CDP_CONTROLLER_NAME)"
    dpo_name: str = "(defina CDP_DPO_NAME)"
    dpo_contact: str = "(defina CDP_DPO_CONTACT)"
    # Consent receipts (Kantara fields): controller contact, DPO substitute (Res. CD/ANPD 18/2024), policy URL.
    controller_contact: str = "(defina CDP_CONTROLLER_CONTACT)"
    dpo_substitute: str = "(defina CDP_DPO_SUBSTITUTE)"
    privacy_policy_url: str = ""
    # Data-subject requests: Art. 19 deadline in days, doubled for small agents (Res. CD/ANPD 2/2022).
    dsr_deadline_days: int = 15
    small_agent: bool = False
    smtp_url: str | None = None  # smtp[s]://user:pass@host:port?from=addr&starttls=1; unset: outbox only
    erasure_log: Path | None = None  # durable erasure log outside the database (default instance/erasure-log.jsonl)
    public_url: str = "http://127.0.0.1:8000"  # base of links sent to data subjects (CDP_PUBLIC_URL)
    extra: dict = field(default_factory=dict)

    def block_cap(self, kind: str) -> int:
        """How many records may share a blocking key of this kind before it is too common to use."""
        return self.block_caps().get(kind, self.max_block)

    def block_caps(self) -> dict[str, int]:
        """The kinds whose cap is not `max_block`."""
        return {"bk:nm": self.max_name_block}

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: os._Environ | dict | None = None, **overrides) -> "Settings":
        env = dict(os.environ if environ is None else environ)
        instance = Path(env.get("CDP_INSTANCE_PATH") or Path.cwd() / "instance").resolve()
        database_url = normalize_database_url(env.get("DATABASE_URL") or f"sqlite:///{instance / 'cdp.sqlite3'}")
        _check_database_url(database_url)
        redis_url = env.get("REDIS_URL") or None
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
        keys_file = Path(env.get("CDP_KEYS_FILE") or instance / "keys.json")
        values = dict(
            database_url=database_url,
            redis_url=redis_url,
            instance_path=instance,
            keys_file=keys_file,
            keyring_json=env.get("CDP_KEYRING") or None,
            queue_name=env.get("CDP_QUEUE", "cdp"),
            match_rules=_choice_list(env, "CDP_MATCH_RULES", MATCH_RULES),
            name_threshold=_number(env, "CDP_NAME_THRESHOLD", 85.0, 0, 100),
            match_threshold=_number(env, "CDP_MATCH_THRESHOLD", 0.95, 0.5, 1.0),
            review_threshold=_number(env, "CDP_REVIEW_THRESHOLD", 0.60, 0.0, 1.0),
            max_block=int(_number(env, "CDP_MAX_BLOCK", 200, 2, 100_000)),
            max_name_block=int(_number(env, "CDP_MAX_NAME_BLOCK", 10, 2, 100_000)),
            survivorship=_choice_list(env, "CDP_SURVIVORSHIP", SURVIVORSHIP_RULES),
            resolve_batch_size=int(_number(env, "CDP_RESOLVE_BATCH_SIZE", 500, 1, 100_000)),
            feature_cache=int(_number(env, "CDP_FEATURE_CACHE", 100_000, 0, 10_000_000)),
            rebuild_processes=int(_number(env, "CDP_REBUILD_PROCESSES", 0, 0, 256)),
            controller_name=env.get("CDP_CONTROLLER_NAME") or cls.controller_name,
            dpo_name=env.get("CDP_DPO_NAME") or cls.dpo_name,
            dpo_contact=env.get("CDP_DPO_CONTACT") or cls.dpo_contact,
            controller_contact=env.get("CDP_CONTROLLER_CONTACT") or cls.controller_contact,
            dpo_substitute=env.get("CDP_DPO_SUBSTITUTE") or cls.dpo_substitute,
            privacy_policy_url=env.get("CDP_PRIVACY_POLICY_URL") or "",
            dsr_deadline_days=int(_number(env, "CDP_DSR_DEADLINE_DAYS", 15, 1, 365)),
            small_agent=_flag(env, "CDP_SMALL_AGENT"),
            smtp_url=_smtp_url(env),
            erasure_log=Path(env.get("CDP_ERASURE_LOG") or instance / "erasure-log.jsonl"),
            public_url=(env.get("CDP_PUBLIC_URL") or cls.public_url).rstrip("/"),
        )
        values.update(overrides)
        return cls(**values)


def _flag(env: dict, name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(f"{name} must be 1 or 0")


def _smtp_url(env: dict) -> str | None:
    raw = env.get("CDP_SMTP_URL") or None
    if raw and not raw.startswith(("smtp://", "smtps://")):
        raise ConfigError("CDP_SMTP_URL must start with smtp:// or smtps:// (e.g. smtp://user:pass@host:587?starttls=1)")
    return raw


def _check_database_url(url: str) -> None:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("DATABASE_URL is not a valid URL (e.g. postgresql+psycopg://user@host/db)") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"DATABASE_URL backend {backend!r} is not supported (use sqlite or postgresql)")


def normalize_database_url(url: str) -> str:
    """Map postgres:// and postgresql:// to the psycopg 3 driver we install
    (plain postgresql:// would make SQLAlchemy look for psycopg2)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def _choice_list(env: dict, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if not raw:
        return allowed
    items = tuple(part.strip() for part in raw.split(",") if part.strip())
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise ConfigError(f"{name} has unknown value(s) {unknown}; allowed: {', '.join(allowed)}")
    return items


def _number(env: dict, name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number between {low} and {high}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}")
    return value
