"""Why a profile is what it is: the rule or the per-field weights behind each
record's link and each merge (also the answer to an LGPD Art. 20 review
request about automated decisions)."""
from __future__ import annotations

from sqlalchemy import select

from cdp.models import MergeEvent, SourceRecord

RULE_TEXT = {
    "new_profile": ("Primeiro registro desta pessoa.", "First record of this person."),
    "same_cpf": ("Mesmo CPF válido.", "Same valid CPF."),
    "same_cnpj": ("Mesmo CNPJ.", "Same CNPJ."),
    "same_email": ("Mesmo e-mail, sem conflito de nome.", "Same e-mail, names do not conflict."),
    "same_phone_and_name": ("Mesmo telefone e nome compatível.", "Same phone and a compatible name."),
    "probabilistic": ("Modelo probabilístico (Fellegi–Sunter): pesos por campo abaixo.",
                      "Probabilistic model (Fellegi–Sunter): per-field weights below."),
    "review_match": ("Confirmado por uma pessoa na fila de revisão.", "Confirmed by a person in the review queue."),
    "rebuild": ("Reconstrução em lote.", "Batch rebuild."),
}


def describe(rule: str, language: str = "pt-BR") -> str:
    if rule.startswith("same_custom:"):
        return ("Mesmo identificador " if language == "pt-BR" else "Same identifier ") + rule[len("same_custom:"):]
    pt, en = RULE_TEXT.get(rule, (rule, rule))
    return pt if language == "pt-BR" else en


def explain_profile(session, profile_id: str, language: str = "pt-BR") -> dict:
    records = session.execute(
        select(SourceRecord.id, SourceRecord.source, SourceRecord.link_rule, SourceRecord.link_details)
        .where(SourceRecord.profile_id == profile_id).order_by(SourceRecord.received_at, SourceRecord.id)
    ).all()
    merges = session.scalars(select(MergeEvent).where(
        (MergeEvent.profile_id == profile_id) | (MergeEvent.other_profile_id == profile_id)).order_by(MergeEvent.id))
    return {
        "profile_id": profile_id,
        "links": [{"record_id": r.id, "source": r.source, "rule": r.link_rule,
                   "explanation": describe(r.link_rule or "new_profile", language), "evidence": r.link_details or {}}
                  for r in records],
        "merges": [{"id": m.id, "kind": m.kind, "rule": m.rule, "explanation": describe(m.rule, language),
                    "profile_id": m.profile_id, "other_profile_id": m.other_profile_id, "evidence": m.details,
                    "actor": m.actor, "at": m.created_at.isoformat(),
                    "undone_at": m.undone_at.isoformat() if m.undone_at else None} for m in merges],
    }
