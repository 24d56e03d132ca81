"""Does the work for one data subject grow with the size of the database?

    .venv/bin/python bench/dsr_scaling.py [--sizes 10000,200000] [--subjects 10]
                                          [--pg postgresql://postgres@127.0.0.1:5432/test]

For each size, a fresh database is filled with N synthetic profiles (bulk
inserted directly — keys, profiles, records, blind indexes, events — with
random ciphertext, since nobody reads them), then a few real subjects are
ingested through the normal path. For each subject it times the access
report and the complete deletion (snapshot, suppression, shredding,
purge, sweep, propagation), and prints the median per subject. Every
lookup a request makes is by an indexed id or blind index, so the figures
should stay flat as N grows twentyfold.
"""
from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402
from tqdm import tqdm  # noqa: E402

CHUNK = 5000


def _fill(runtime, n: int) -> None:
    from cdp.models import DataKey, Event, Identifier, Profile, Source, SourceRecord

    now = datetime.now(timezone.utc)
    with runtime.session() as session:
        session.add(Source(name="bulk", plugin="api", trust=50))
    bar = tqdm(total=n, desc=f"fill {n}", unit="profile", file=sys.stderr)
    for start in range(0, n, CHUNK):
        size = min(CHUNK, n - start)
        keys, profiles, records, idents, events = [], [], [], [], []
        for _ in range(size):
            pkey, rkey, pid, rid = (str(uuid.uuid4()) for _ in range(4))
            keys += [{"id": pkey, "kek_id": "bench", "wrapped": secrets.token_bytes(60), "created_at": now},
                     {"id": rkey, "kek_id": "bench", "wrapped": secrets.token_bytes(60), "created_at": now}]
            profiles.append({"id": pid, "key_id": pkey, "golden_ct": secrets.token_bytes(200), "provenance": {},
                             "status": "active", "record_count": 1, "created_at": now, "updated_at": now})
            records.append({"id": rid, "source": "bulk", "external_key": secrets.token_bytes(32),
                            "external_id_ct": secrets.token_bytes(40), "key_id": rkey, "profile_id": pid,
                            "version": 1, "content_hash": secrets.token_bytes(32),
                            "payload_ct": secrets.token_bytes(300), "status": "resolved", "link_rule": "new_profile",
                            "observed_at": now, "received_at": now, "updated_at": now})
            idents += [{"record_id": rid, "kind": kind, "blind_index": secrets.token_bytes(16), "strong": True}
                       for kind in ("email", "cpf", "phone")]
            events.append({"id": str(uuid.uuid4()), "record_id": rid, "profile_id": pid, "type": "purchase",
                           "occurred_at": now, "amount": 10, "currency": "BRL",
                           "attributes_ct": secrets.token_bytes(60)})
        with runtime.session() as session:
            for model, rows in ((DataKey, keys), (Profile, profiles), (SourceRecord, records),
                                (Identifier, idents), (Event, events)):
                session.execute(insert(model.__table__), rows)
        bar.update(size)
    bar.close()


def _subjects(runtime, count: int) -> list[str]:
    from cdp.ingest import ingest_batch
    from cdp.models import SourceRecord

    cpfs = _valid_cpfs(count)
    pids = []
    for i, cpf in enumerate(cpfs):
        records = [{"external_id": f"erp-{i}", "identifiers": {"cpf": cpf, "email": f"titular{i}@example.com"},
                    "traits": {"full_name": f"Titular Numero {i}"},
                    "events": [{"type": "purchase", "occurred_at": "2026-03-01T10:00:00-03:00", "amount": "50.00"}]}]
        summary = ingest_batch(runtime, "erp", records)
        ingest_batch(runtime, "loja", [{"external_id": f"loja-{i}", "identifiers": {"cpf": cpf},
                                        "traits": {"city": "Recife"}}])
        with runtime.session() as session:
            pids.append(session.get(SourceRecord, summary.record_ids[0]).profile_id)
    return pids


def _valid_cpfs(count: int) -> list[str]:
    from stdnum.br import cpf

    out, base = [], 100_000_000
    while len(out) < count:
        digits = f"{base:09d}"
        d1 = (sum(int(d) * w for d, w in zip(digits, range(10, 1, -1))) * 10 % 11) % 10
        d2 = (sum(int(d) * w for d, w in zip(digits + str(d1), range(11, 1, -1))) * 10 % 11) % 10
        candidate = digits + str(d1) + str(d2)
        if cpf.is_valid(candidate):
            out.append(candidate)
        base += 7919
    return out


def _timed_request(runtime, type_: str, pid: str, index: int) -> float:
    from consent.dsr import service
    from consent.dsr.execute import run_request

    opened = service.open_request(runtime, type=type_, identifiers={"email": f"titular{index}@example.com"},
                                  actor="bench", channel="staff")
    started = time.perf_counter()
    service.verify_by_staff(runtime, opened.request_id, actor="bench", profile_ids=[pid], note="bench")
    run_request(runtime, opened.request_id)
    if type_ == "deletion":
        view = service.get_request(runtime, opened.request_id)
        for system in view["systems"]:
            service.confirm_system(runtime, opened.request_id, system["system"], actor="bench")
        assert service.get_request(runtime, opened.request_id)["status"] == "completed"
    return (time.perf_counter() - started) * 1000


def measure(size: int, subjects: int, database_url: str | None) -> dict:
    from cdp import migrate
    from cdp.config import Settings
    from cdp.crypto import Keyring
    from cdp.store import Runtime

    with tempfile.TemporaryDirectory() as tmp:
        env = {"CDP_INSTANCE_PATH": tmp}
        if database_url:
            env["DATABASE_URL"] = database_url
        settings = Settings.from_env(env)
        keyring = Keyring.load_or_create(settings)
        migrate.upgrade(settings)
        runtime = Runtime(settings, keyring)
        _fill(runtime, size)
        pids = _subjects(runtime, subjects)
        access = [_timed_request(runtime, "access", pid, i) for i, pid in enumerate(pids)]
        deletion = [_timed_request(runtime, "deletion", pid, i) for i, pid in enumerate(pids)]
        runtime.engine.dispose()
    return {"size": size, "access_ms": statistics.median(access), "deletion_ms": statistics.median(deletion)}


def _pg_database(admin_url: str) -> tuple[str, callable]:
    import psycopg

    name = f"cdp_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{admin_url.rsplit('/', 1)[0]}/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,200000")
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--pg", help="PostgreSQL admin URL (a scratch database is created and dropped)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = [("sqlite", None)] + ([("postgresql", args.pg)] if args.pg else [])
    print(f"{'backend':<11} {'profiles':>9} {'access ms/subject':>18} {'deletion ms/subject':>20}")
    for backend, admin in backends:
        results = []
        for size in sizes:
            if admin:
                url, drop = _pg_database(admin)
                try:
                    results.append(measure(size, args.subjects, url))
                finally:
                    from cdp.store import get_engine

                    from cdp.config import normalize_database_url
                    get_engine(normalize_database_url(url)).dispose()
                    drop()
            else:
                results.append(measure(size, args.subjects, None))
            r = results[-1]
            print(f"{backend:<11} {r['size']:>9} {r['access_ms']:>18.1f} {r['deletion_ms']:>20.1f}", flush=True)
        first, last = results[0], results[-1]
        print(f"{backend:<11} growth x{last['size'] / first['size']:.0f} profiles -> access x"
              f"{last['access_ms'] / first['access_ms']:.2f}, deletion x{last['deletion_ms'] / first['deletion_ms']:.2f}")


if __name__ == "__main__":
    os.environ.pop("REDIS_URL", None)  # requests run in-process here
    main()
