"""The gate: allowed() and allowed_clause() by legal basis, revocation at
once, purpose versions, precedence of events, and merged profiles."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import and_, select

from cdp.models import MergeEvent, Profile
from consent import ledger
from consent.purposes import PurposeError, create_purpose, update_purpose
from consent.subjects import lineage
from tests.consent.helpers import allowed, grant, new_profile, sql_allowed

PARTNER = {
    "name": "partner_insurance_offers", "legal_basis": "consent",
    "title_pt": "Compartilhamento com a Seguradora Exemplo", "title_en": "Sharing with Seguradora Exemplo",
    "description_pt": "Enviar nome e e-mail à Seguradora Exemplo S.A. para ofertas de seguro.",
    "description_en": "Share name and e-mail with Seguradora Exemplo S.A. for insurance offers.",
    "retention_days": 365, "notice_version": "aviso-parceiros-1", "recipients": ["Seguradora Exemplo S.A."],
}


def both(rt, pids, purpose="email_marketing") -> set[str]:
    """allowed() and the SQL clause must always agree."""
    py = allowed(rt, pids, purpose)
    assert py == sql_allowed(rt, purpose) & set(pids)
    return py


def test_consent_purpose_needs_a_grant_and_revocation_applies_at_once(crt, make_profiles):
    a, b = make_profiles(crt, 2)
    assert both(crt, [a, b]) == set()  # no grant: not allowed
    grant(crt, a)
    assert both(crt, [a, b]) == {a}
    assert both(crt, [a, b], "personalization") == set()  # specific: a grant covers one purpose only
    grant(crt, a, action="revoked")
    assert both(crt, [a, b]) == set()  # the very next check
    grant(crt, a)
    assert both(crt, [a, b]) == {a}
    grant(crt, a, action="opted_out")  # an opt-out of a consent purpose is a revocation
    assert both(crt, [a]) == set()


def test_legitimate_interest_is_on_until_the_subject_opts_out(crt, make_profiles):
    a, b = make_profiles(crt, 2)
    assert both(crt, [a, b], "analytics") == {a, b}
    grant(crt, a, "analytics", "opted_out")
    assert both(crt, [a, b], "analytics") == {b}
    grant(crt, a, "analytics", "granted")  # withdraws the objection
    assert both(crt, [a, b], "analytics") == {a, b}
    grant(crt, b, "analytics", "revoked")
    assert both(crt, [a, b], "analytics") == {a}


def test_contract_and_legal_obligation_do_not_depend_on_the_subject(crt, make_profiles):
    a, b = make_profiles(crt, 2)
    grant(crt, a, "order_fulfillment", "opted_out")
    assert both(crt, [a, b], "order_fulfillment") == {a, b}
    assert both(crt, [a, b], "tax_records") == {a, b}


def test_unknown_or_retired_purposes_allow_nobody(crt, make_profiles):
    (a,) = make_profiles(crt)
    grant(crt, a)
    assert both(crt, [a], "no_such_purpose") == set()
    with crt.session() as session:
        update_purpose(session, "email_marketing", {"active": False})
    assert both(crt, [a]) == set()
    with crt.session() as session, pytest.raises(ledger.ConsentError, match="retired"):
        ledger.record(session, crt.keys(session), a, "email_marketing", "granted", method="api", collector="t",
                      evidence={"channel": "app", "notice_version": "aviso-2026-01"}, strict=True)


def test_erased_or_merged_ids_are_never_allowed_themselves(crt):
    with crt.session() as session:
        keys = crt.keys(session)
        deleted = new_profile(session, keys, status="deleted")
    assert both(crt, [deleted], "tax_records") == set()


def test_a_changed_purpose_needs_a_new_grant(crt, make_profiles):
    a, b = make_profiles(crt, 2)
    with crt.session() as session:
        create_purpose(session, PARTNER)
    grant(crt, a, PARTNER["name"], notice="aviso-parceiros-1")
    grant(crt, b, PARTNER["name"], notice="aviso-parceiros-1")
    assert both(crt, [a, b], PARTNER["name"]) == {a, b}

    # A new notice text for the same purpose keeps the grants.
    with crt.session() as session:
        purpose, new_version = update_purpose(session, PARTNER["name"], {"notice_version": "aviso-parceiros-1b"})
    assert not new_version and purpose.version == 1
    assert both(crt, [a, b], PARTNER["name"]) == {a, b}

    # Sharing with one more partner changes the purpose: version 2, old grants stop counting.
    with crt.session() as session:
        purpose, new_version = update_purpose(session, PARTNER["name"], {
            "recipients": ["Seguradora Exemplo S.A.", "Corretora Dois Ltda."], "notice_version": "aviso-parceiros-2"})
    assert new_version and purpose.version == 2
    assert both(crt, [a, b], PARTNER["name"]) == set()

    # A grant answering the new notice counts; one answering the old notice
    # (a replay, a late sync) binds to version 1 and does not.
    grant(crt, a, PARTNER["name"], notice="aviso-parceiros-2")
    seq = grant(crt, b, PARTNER["name"], notice="aviso-parceiros-1b")
    assert both(crt, [a, b], PARTNER["name"]) == {a}
    with crt.session() as session:
        assert session.get(ledger.LedgerEntry, seq).purpose_version == 1

    # The notice-only change can also be declared material.
    with crt.session() as session:
        purpose, new_version = update_purpose(session, PARTNER["name"],
                                              {"notice_version": "aviso-parceiros-3", "material": True})
    assert new_version and both(crt, [a, b], PARTNER["name"]) == set()


def test_signals_without_a_notice_bind_to_the_version_in_force_when_given(crt, make_profiles):
    (a,) = make_profiles(crt)
    with crt.session() as session:
        create_purpose(session, PARTNER)
        update_purpose(session, PARTNER["name"], {"description_pt": "Outra finalidade.",
                                                  "notice_version": "aviso-parceiros-2"})
    with crt.session() as session:
        keys = crt.keys(session)
        old, _ = ledger.record(session, keys, a, PARTNER["name"], "granted", method="record", collector="source:x",
                               occurred_at=datetime.now(timezone.utc) - timedelta(days=30))
        assert old.purpose_version == 1  # given before the change
    assert both(crt, [a], PARTNER["name"]) == set()


def test_the_most_recent_event_wins_and_a_replayed_old_grant_does_not(crt, make_profiles):
    (a,) = make_profiles(crt)
    now = datetime.now(timezone.utc)
    grant(crt, a, action="revoked", occurred_at=now - timedelta(hours=1))
    grant(crt, a, occurred_at=now - timedelta(days=10))  # an old grant synced late
    assert both(crt, [a]) == set()
    grant(crt, a, occurred_at=now - timedelta(minutes=1))
    assert both(crt, [a]) == {a}


def test_a_future_time_cannot_outrank_later_revocations(crt, make_profiles):
    (a,) = make_profiles(crt)
    far = datetime.now(timezone.utc) + timedelta(days=365)
    with crt.session() as session:
        with pytest.raises(ledger.ConsentError, match="occurred_at"):
            ledger.record(session, crt.keys(session), a, "email_marketing", "granted", method="api", collector="t",
                          occurred_at=far, evidence={"channel": "app", "notice_version": "aviso-2026-01"}, strict=True)
    with crt.session() as session:  # from a source record it is clamped to now
        entry, _ = ledger.record(session, crt.keys(session), a, "email_marketing", "granted", method="record",
                                 collector="source:x", occurred_at=far)
        assert entry.occurred_at <= datetime.now(timezone.utc)
    grant(crt, a, action="revoked")
    assert both(crt, [a]) == set()


def _merge(rt, survivor: str, absorbed: str) -> None:
    with rt.session() as session:
        profile = session.get(Profile, absorbed)
        profile.status, profile.merged_into = "merged", survivor
        session.add(MergeEvent(kind="merge", profile_id=survivor, other_profile_id=absorbed, record_ids=[],
                               rule="test"))


def test_merged_lineage_most_recent_entry_wins(crt, make_profiles):
    s, x, y = make_profiles(crt, 3)
    grant(crt, x)  # consent given under a profile later merged away
    _merge(crt, s, x)
    with crt.session() as session:
        assert lineage(session, s) == {s, x}
    assert both(crt, [s, x]) == {s}  # the survivor carries it; the merged id itself is not active
    # A second level: s is merged into t; y had revoked after x's grant.
    (t,) = make_profiles(crt)
    grant(crt, y, action="revoked")
    _merge(crt, s, y)
    assert both(crt, [s]) == set()  # y's revocation is the most recent across the lineage
    _merge(crt, t, s)
    with crt.session() as session:
        assert lineage(session, t) == {t, s, x, y}
    assert both(crt, [t]) == set()
    # New events for a merged id land on its survivor.
    seq = grant(crt, x)
    with crt.session() as session:
        assert session.get(ledger.LedgerEntry, seq).subject_id == t
    assert both(crt, [t]) == {t}


def test_allowed_clause_composes_with_other_filters(crt, make_profiles):
    a, b, c = make_profiles(crt, 3)
    grant(crt, a)
    grant(crt, b)
    grant(crt, b, "personalization")
    grant(crt, a, "analytics", "opted_out")
    with crt.session() as session:
        both_purposes = set(session.scalars(select(Profile.id).where(
            and_(ledger.allowed_clause("email_marketing"), ledger.allowed_clause("personalization")))))
        three = set(session.scalars(select(Profile.id).where(
            Profile.id.in_([a, b, c]), ledger.allowed_clause("email_marketing"), ledger.allowed_clause("analytics"))))
    assert both_purposes == {b}
    assert three == {b}


def test_purposes_need_a_legal_basis_and_sensitive_ones_a_narrow_one(crt):
    with crt.session() as session:
        spec = dict(PARTNER, name="sem_base")
        del spec["legal_basis"]
        with pytest.raises(PurposeError) as exc:
            create_purpose(session, spec)
        assert exc.value.field == "legal_basis"
        with pytest.raises(PurposeError, match="Art. 11"):
            create_purpose(session, dict(PARTNER, name="saude", sensitive=True, legal_basis="legitimate_interest"))
        with pytest.raises(PurposeError, match="sensitive"):
            create_purpose(session, dict(PARTNER, name="fraude", legal_basis="fraud_prevention"))
        p = create_purpose(session, dict(PARTNER, name="saude_ok", sensitive=True, legal_basis="health_protection"))
        assert p.version == 1
        with pytest.raises(PurposeError, match="Art. 11"):
            update_purpose(session, "saude_ok", {"legal_basis": "contract"})
        with pytest.raises(PurposeError, match="already exists"):
            create_purpose(session, dict(PARTNER, name="saude_ok", legal_basis="consent"))
