"""The incident register: deadlines in Brazilian business days, affected
subjects from the disclosure log and the request audit trail, export."""
from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime, timedelta, timezone

import pytest

from cdp.disclosures import Recipient, record_disclosures
from consent import incidents
from consent.dsr.deadlines import BRASILIA


def _at(day: str, hour: int = 10) -> datetime:
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00").replace(tzinfo=BRASILIA)


@pytest.mark.parametrize("detected,small,expected", [
    # Thursday 19 Nov 2026; Friday 20 Nov is the national Black Awareness Day: Mon 23, Tue 24, Wed 25.
    ("2026-11-19", False, "2026-11-25"),
    ("2026-11-19", True, "2026-11-30"),  # doubled: six business days
    # Thursday 2 April 2026; Friday 3 April is Good Friday.
    ("2026-04-02", False, "2026-04-08"),
    # Learned on Saturday: counting starts on Monday.
    ("2026-03-07", False, "2026-03-11"),
    # Christmas and New Year's Day inside the window.
    ("2026-12-23", False, "2026-12-29"),
])
def test_notification_deadline_in_brazilian_business_days(runtime, detected, small, expected):
    created = incidents.create_incident(runtime, title="Vazamento de planilha", detected_at=_at(detected),
                                        actor="staff:dpo", small_agent=small, data_categories=["contact"])
    assert created["notification_due"] == expected


def test_detection_late_at_night_counts_from_the_brasilia_date(runtime):
    # 23:30 in Brasília on Wednesday 18 Nov is already Thursday in UTC.
    late = datetime(2026, 11, 19, 2, 30, tzinfo=timezone.utc)
    created = incidents.create_incident(runtime, title="Acesso indevido", detected_at=late, actor="staff:dpo")
    # Counted from Wednesday: Thu 19, (Fri 20 holiday), Mon 23, Tue 24 — from the UTC date it would be Wed 25.
    assert created["notification_due"] == "2026-11-24"


def test_business_days_helper_against_the_calendar():
    assert incidents.is_business_day(date(2026, 11, 20)) is False
    assert incidents.is_business_day(date(2026, 11, 23)) is True
    assert incidents.business_days_after(date(2026, 4, 20), 1) == date(2026, 4, 22)  # 21 April: Tiradentes


def test_register_find_affected_decide_notify_export(runtime):
    leaked_at = datetime.now(timezone.utc) - timedelta(hours=2)
    with runtime.session() as session:
        record_disclosures(session, Recipient("api_key", "7", "parceiro"), "analytics", ["p1", "p2"], ["email"],
                           at=leaked_at)
        record_disclosures(session, Recipient("api_key", "8", "outro"), "analytics", ["p3"], ["email"], at=leaked_at)
        record_disclosures(session, Recipient("api_key", "7", "parceiro"), "analytics", ["p4"], ["email"],
                           at=leaked_at - timedelta(days=10))
    created = incidents.create_incident(runtime, title="Chave de API do parceiro vazada", actor="staff:dpo",
                                        detected_at=datetime.now(timezone.utc), data_categories=["contact"],
                                        description="A chave 7 apareceu em um repositório público.",
                                        data_encrypted=False, risk="relevant")
    iid = created["id"]
    with pytest.raises(incidents.IncidentError):
        incidents.close_incident(runtime, iid, actor="staff:dpo")  # decide first
    found = incidents.find_affected(runtime, iid, actor="staff:dpo", recipients=[("api_key", "7")],
                                    since=leaked_at - timedelta(hours=1))
    assert found["affected_subjects"] == 2
    assert {a["profile_id"] for a in incidents.affected_profiles(runtime, iid)} == {"p1", "p2"}
    incidents.decide(runtime, iid, actor="staff:dpo", decision="notify", reason="risco relevante a titulares")
    notified = incidents.record_notification(runtime, iid, actor="staff:dpo", anpd=True, subjects=True)
    assert notified["anpd_notified_at"] and notified["subjects_notified_at"]
    assert incidents.close_incident(runtime, iid, actor="staff:dpo")["status"] == "closed"

    form = json.loads(incidents.export_incident(runtime, iid, "json"))
    assert form["titulares_afetados"] == 2 and form["categorias_de_dados"] == ["contact"]
    assert form["titulo"] == "Chave de API do parceiro vazada" and form["guardar_ate"] >= "2031-12-31"
    rows = dict(csv.reader(io.StringIO(incidents.export_incident(runtime, iid, "csv"))))
    assert rows["titulares_afetados"] == "2"
    # Kept at least five years: nothing is purged before that.
    assert incidents.purge_expired(runtime, date.today() + timedelta(days=365 * 4)) == 0
    assert incidents.get_incident(runtime, iid)["status"] == "closed"
    assert incidents.purge_expired(runtime, date(2040, 1, 1)) == 1
    with pytest.raises(incidents.IncidentNotFound):
        incidents.get_incident(runtime, iid)


def test_incident_api_validates_and_exports(client, api_key):
    staff = {"Authorization": f"Bearer {api_key('privacy')}"}
    bad = client.post("/api/v1/incidents", headers=staff, json={"title": "x", "detected_at": "2026-11-19T10:00:00-03:00",
                                                                "data_categories": ["horoscope"]})
    assert bad.status_code == 422 and "data_categories" in bad.get_json()["detail"]
    made = client.post("/api/v1/incidents", headers=staff, json={"title": "Notebook furtado",
                                                                 "detected_at": "2026-11-19T10:00:00-03:00",
                                                                 "data_encrypted": True})
    assert made.status_code == 201 and made.get_json()["notification_due"] == "2026-11-25"
    export = client.get(f"/api/v1/incidents/{made.get_json()['id']}/export?format=csv", headers=staff)
    assert export.status_code == 200 and "dados_ininteligiveis_criptografados,True" in export.get_data(as_text=True)
