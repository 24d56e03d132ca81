"""The registry of purposes (LGPD Art. 6 I, Art. 7, Art. 11).

Each purpose names its legal basis; a purpose without one cannot exist
(schema and a CHECK constraint). How a purpose gates processing:

* consent: only with an explicit, specific, current grant;
* legitimate_interest: on until the subject opts out;
* every other basis (contract, legal obligation...): not the subject's
  choice, always allowed by the gate (objections go through a DSR).

Versions: a change of what the purpose *is* (legal basis, description,
recipients, sensitivity) makes a new version, and grants given for an older
version no longer count (Art. 8 §6, Art. 9 §2: a change of purpose needs a
new consent). A new notice text for the same purpose (typo, new contact
details) is added to the current version and keeps existing grants, unless
the caller marks it `material`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp.models import utcnow
from consent.models import Purpose, PurposeVersion
from consent.schemas import PurposeIn, PurposeUpdate, check_basis
from schemas.record import flatten_errors

# Changing one of these changes the purpose itself: a new version.
MATERIAL_FIELDS = ("legal_basis", "sensitive", "description_pt", "description_en", "recipients")
DEFINITION_FIELDS = MATERIAL_FIELDS + ("title_pt", "title_en", "retention_days", "notice_version")

# Names sources use for legal bases (RD Station's legal_bases types, Portuguese
# spellings) -> the registry's names.
BASIS_ALIASES = {
    "consent": "consent", "consentimento": "consent",
    "legitimate_interest": "legitimate_interest", "interesse_legitimo": "legitimate_interest",
    "pre_existing_contract": "contract", "contract": "contract", "execucao_de_contrato": "contract",
    "contrato": "contract",
    "legal_obligation": "legal_obligation", "obrigacao_legal": "legal_obligation",
    "judicial_process": "exercise_of_rights", "exercise_of_rights": "exercise_of_rights",
    "vital_interest": "protection_of_life", "protection_of_life": "protection_of_life",
    "public_interest": "public_administration", "public_administration": "public_administration",
    "research": "research", "health_protection": "health_protection", "credit_protection": "credit_protection",
    "protecao_ao_credito": "credit_protection", "fraud_prevention": "fraud_prevention",
}

DEFAULT_NOTICE = "aviso-2026-01"
DEFAULT_PURPOSES = [
    {
        "name": "email_marketing", "legal_basis": "consent",
        "title_pt": "Ofertas e novidades por e-mail", "title_en": "Offers and news by e-mail",
        "description_pt": "Enviar por e-mail ofertas, promoções e novidades da loja a quem pediu para recebê-las.",
        "description_en": "Send the store's offers, promotions and news by e-mail to people who asked for them.",
        "retention_days": 730, "aliases": ["communications", "marketing", "newsletter"],
    },
    {
        "name": "personalization", "legal_basis": "consent",
        "title_pt": "Personalização de ofertas", "title_en": "Personalized offers",
        "description_pt": "Usar o histórico de compras e de navegação para escolher as ofertas mostradas a cada pessoa.",
        "description_en": "Use purchase and browsing history to choose the offers shown to each person.",
        "retention_days": 730,
    },
    {
        "name": "analytics", "legal_basis": "legitimate_interest",
        "title_pt": "Análises estatísticas", "title_en": "Statistical analysis",
        "description_pt": "Medir vendas, uso do site e satisfação em relatórios agregados, sem decisões individuais.",
        "description_en": "Measure sales, site use and satisfaction in aggregate reports, with no individual decisions.",
        "retention_days": 365,
    },
    {
        "name": "order_fulfillment", "legal_basis": "contract",
        "title_pt": "Entrega de pedidos e atendimento", "title_en": "Order fulfilment and customer service",
        "description_pt": "Processar pagamentos, entregar pedidos, tratar trocas e responder reclamações.",
        "description_en": "Process payments, deliver orders, handle returns and answer complaints.",
        "retention_days": 1825,
    },
    {
        "name": "tax_records", "legal_basis": "legal_obligation",
        "title_pt": "Guarda de documentos fiscais", "title_en": "Keeping tax records",
        "description_pt": "Guardar notas fiscais e registros de venda pelo prazo exigido pela legislação tributária.",
        "description_en": "Keep invoices and sales records for the period tax law requires.",
        "retention_days": 1825,
    },
]


class PurposeError(ValueError):
    """Invalid purpose data; `errors` maps field names to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        self.field = next(iter(errors), "_schema")
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))


def requirement(legal_basis: str) -> str:
    """What the gate needs from the subject: a grant, no opt-out, or nothing."""
    return {"consent": "grant", "legitimate_interest": "no_opt_out"}.get(legal_basis, "none")


def _snapshot(p: Purpose) -> dict:
    return {f: getattr(p, f) for f in DEFINITION_FIELDS}


def get_purpose(session: Session, name: str) -> Purpose | None:
    return session.get(Purpose, name)


def list_purposes(session: Session, include_inactive: bool = True) -> list[Purpose]:
    query = select(Purpose).order_by(Purpose.name)
    if not include_inactive:
        query = query.where(Purpose.active.is_(True))
    return list(session.scalars(query))


def purpose_dict(session: Session, p: Purpose) -> dict:
    current = session.get(PurposeVersion, (p.name, p.version))
    return {
        "name": p.name, "version": p.version, "legal_basis": p.legal_basis, "sensitive": p.sensitive,
        "title_pt": p.title_pt, "title_en": p.title_en,
        "description_pt": p.description_pt, "description_en": p.description_en,
        "retention_days": p.retention_days, "notice_version": p.notice_version,
        "notices": list(current.notices) if current else [p.notice_version],
        "recipients": list(p.recipients or []), "aliases": list(p.aliases or []), "active": p.active,
        "requires": requirement(p.legal_basis),
        "created_at": p.created_at.isoformat(), "updated_at": p.updated_at.isoformat(),
    }


def _load(schema, data: dict, partial: bool = False) -> dict:
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise PurposeError(flatten_errors(exc.messages)) from None


def create_purpose(session: Session, data: dict) -> Purpose:
    values = _load(PurposeIn(), data)
    if session.get(Purpose, values["name"]) is not None:
        raise PurposeError({"name": [f"Purpose {values['name']!r} already exists; update it instead."]})
    _check_aliases(session, values["name"], values["aliases"])
    now = utcnow()
    purpose = Purpose(version=1, active=True, created_at=now, updated_at=now, **values)
    session.add(purpose)
    session.flush()
    session.add(PurposeVersion(purpose=purpose.name, version=1, snapshot=_snapshot(purpose),
                               notices=[purpose.notice_version], effective_from=None, created_at=now))
    session.flush()
    return purpose


def update_purpose(session: Session, name: str, data: dict) -> tuple[Purpose, bool]:
    """Apply changes; returns (purpose, whether a new version was made)."""
    purpose = session.get(Purpose, name)
    if purpose is None:
        raise LookupError(name)
    changes = _load(PurposeUpdate(), data)
    force = changes.pop("material", False)
    try:
        check_basis(changes.get("legal_basis", purpose.legal_basis), changes.get("sensitive", purpose.sensitive))
    except ValidationError as exc:
        raise PurposeError(flatten_errors(exc.messages)) from None
    if "aliases" in changes:
        _check_aliases(session, name, changes["aliases"])
    material = force or any(f in changes and changes[f] != getattr(purpose, f) for f in MATERIAL_FIELDS)
    for key, value in changes.items():
        setattr(purpose, key, value)
    now = utcnow()
    purpose.updated_at = now
    if material:
        purpose.version += 1
        session.add(PurposeVersion(purpose=name, version=purpose.version, snapshot=_snapshot(purpose),
                                   notices=[purpose.notice_version], effective_from=now, created_at=now))
    else:
        current = session.get(PurposeVersion, (name, purpose.version))
        notices = list(current.notices or [])
        if purpose.notice_version not in notices:
            notices.append(purpose.notice_version)
        current.notices = notices  # a new list, so the JSON change is saved
        current.snapshot = _snapshot(purpose)
    session.flush()
    return purpose, material


def _check_aliases(session: Session, name: str, aliases: list[str]) -> None:
    names = set(session.scalars(select(Purpose.name)))
    clash = [a for a in aliases if a in names and a != name]
    if clash:
        raise PurposeError({"aliases": [f"{', '.join(clash)} already name(s) a purpose."]})


def seed_defaults(session: Session) -> int:
    """Add the default purposes that are missing (never touches existing
    ones, so edits and retirements survive `cdp init`)."""
    added = 0
    for spec in DEFAULT_PURPOSES:
        if session.get(Purpose, spec["name"]) is None:
            create_purpose(session, {"notice_version": DEFAULT_NOTICE, **spec})
            added += 1
    return added


# -- matching signals and versions ---------------------------------------------------------

@dataclass
class Registry:
    """Purposes and their versions, loaded once per unit of work (the table is small)."""

    purposes: dict[str, Purpose]
    versions: dict[str, list[PurposeVersion]] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> "Registry":
        reg = cls({p.name: p for p in session.scalars(select(Purpose))})
        for v in session.scalars(select(PurposeVersion).order_by(PurposeVersion.purpose, PurposeVersion.version)):
            reg.versions.setdefault(v.purpose, []).append(v)
        return reg

    def find(self, name: str, declared_basis: str | None = None) -> Purpose | None:
        """The purpose a source means: its own name, else an alias (preferring
        the purpose whose basis is the one the source declared)."""
        if name in self.purposes:
            return self.purposes[name]
        candidates = sorted((p for p in self.purposes.values() if name in (p.aliases or [])), key=lambda p: p.name)
        for p in candidates:
            if declared_basis and p.legal_basis == declared_basis:
                return p
        return candidates[0] if candidates else None

    def version_for(self, purpose: Purpose, occurred_at: datetime, notice_version: str | None) -> PurposeVersion:
        """The version the subject answered: the one whose notice they saw,
        else the one in force when they acted."""
        versions = self.versions[purpose.name]
        if notice_version:
            for v in reversed(versions):
                if notice_version in (v.notices or []):
                    return v
        in_force = [v for v in versions if v.effective_from is None or v.effective_from <= occurred_at]
        return in_force[-1] if in_force else versions[0]

    def knows_notice(self, purpose: Purpose, notice_version: str) -> bool:
        return any(notice_version in (v.notices or []) for v in self.versions[purpose.name])


def normalize_basis(text: str | None) -> str | None:
    if not text:
        return None
    return BASIS_ALIASES.get(text.strip().lower().replace("-", "_").replace(" ", "_"), "other")
