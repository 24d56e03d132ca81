"""A small base of customers whose metrics are computed by hand in the tests."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select

from cdp.ingest import ingest_batch
from cdp.models import SourceRecord
from tests.factories import record

NOW = datetime(2026, 7, 1, tzinfo=timezone.utc)


def buy(day: str, amount: str) -> dict:
    return {"type": "purchase", "occurred_at": f"{day}T00:00:00Z", "amount": amount}


def survey(day: str, kind: str = "survey_response", **attrs) -> dict:
    return {"type": kind, "occurred_at": f"{day}T12:00:00Z", "attributes": attrs}


def complaint(day: str, **attrs) -> dict:
    return {"type": "complaint", "occurred_at": f"{day}T12:00:00Z", "attributes": attrs}


PEOPLE = {
    "p1": [buy("2025-07-01", "100.00"), buy("2026-01-01", "200.00"), buy("2026-06-01", "300.00"),
           survey("2026-01-01", "nps_response", nps=3), survey("2026-05-01", nps=10, csat=5, ces=2)],
    "p2": [buy("2026-06-21", "50.00"), survey("2026-06-22", nps=8, csat=4, ces=4)],
    "p3": [buy("2024-07-01", "80.00"), buy("2025-07-01", "120.00"), survey("2025-08-01", nps=6, csat=2, ces=5),
           complaint("2025-09-01", status="resolvida", rating=8, would_do_business_again="sim"),
           complaint("2025-10-01", status="nao_respondida")],
    "p4": [{**buy("2026-03-01", "200.00"), "id": f"PED-4-{i}"} for i in range(5)] + [survey("2026-03-02", nps=9)],
    "p5": [buy(f"2025-12-0{d}", "10.00") for d in (1, 2, 3, 4)] +
          [complaint("2026-01-10", status="respondida", rating=3, would_do_business_again=False)],
    "p6": [survey("2026-02-01", nps=9, csat=3),
           complaint("2026-02-02", status="resolvida", rating=10, would_do_business_again=True)],
}


def load_people(runtime) -> dict[str, str]:
    """Ingest and resolve one record per person; returns name -> profile id."""
    records = [record(external_id=name, email=f"{name}@exemplo.com.br", name=f"Pessoa {name}", events=events)
               for name, events in PEOPLE.items()]
    summary = ingest_batch(runtime, "loja", records)
    with runtime.session() as session:
        return {name: session.scalar(select(SourceRecord.profile_id).where(SourceRecord.id == result.record_id))
                for name, result in zip(PEOPLE, summary.results)}
