"""Request types (LGPD Art. 18 and Art. 20), statuses and denial reasons,
with the texts data subjects see (pt-BR, English)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestType:
    name: str
    article: str
    label_pt: str
    label_en: str
    auto: bool  # runs as soon as identity is verified (no staff decision needed)

    def label(self, language: str) -> str:
        return self.label_en if language == "en" else self.label_pt


_TYPES = [
    RequestType("confirmation", "Art. 18, I", "confirmação da existência de tratamento", "confirmation of processing",
                True),
    RequestType("access", "Art. 18, II", "acesso aos dados", "access to the data", True),
    RequestType("correction", "Art. 18, III", "correção de dados incompletos, inexatos ou desatualizados",
                "correction of incomplete, inaccurate or outdated data", False),
    RequestType("anonymization", "Art. 18, IV", "anonimização de dados desnecessários, excessivos ou ilícitos",
                "anonymization of unnecessary, excessive or unlawful data", False),
    RequestType("blocking", "Art. 18, IV", "bloqueio de dados desnecessários, excessivos ou ilícitos",
                "blocking of unnecessary, excessive or unlawful data", False),
    RequestType("deletion", "Art. 18, IV", "eliminação de dados desnecessários, excessivos ou ilícitos",
                "deletion of unnecessary, excessive or unlawful data", False),
    RequestType("portability", "Art. 18, V", "portabilidade dos dados", "data portability", True),
    RequestType("consent_data_deletion", "Art. 18, VI", "eliminação dos dados tratados com consentimento",
                "deletion of data processed with consent", False),
    RequestType("sharing_info", "Art. 18, VII", "informação sobre compartilhamento",
                "information about sharing", True),
    RequestType("consent_info", "Art. 18, VIII", "informação sobre a possibilidade de não consentir",
                "information about refusing consent", True),
    RequestType("consent_revocation", "Art. 18, IX", "revogação do consentimento", "revocation of consent", True),
    RequestType("automated_review", "Art. 20", "revisão de decisão automatizada", "review of an automated decision",
                False),
]
REQUEST_TYPES: dict[str, RequestType] = {t.name: t for t in _TYPES}
ERASURE_TYPES = ("deletion", "anonymization", "consent_data_deletion")

RECEIVED, VERIFIED, IN_PROGRESS, COMPLETED, DENIED = "received", "identity_verified", "in_progress", "completed", "denied"
STATUSES = (RECEIVED, VERIFIED, IN_PROGRESS, COMPLETED, DENIED)
OPEN_STATUSES = (RECEIVED, VERIFIED, IN_PROGRESS)
TRANSITIONS = {
    RECEIVED: {VERIFIED, DENIED},
    VERIFIED: {IN_PROGRESS, DENIED},
    IN_PROGRESS: {COMPLETED, DENIED},
    COMPLETED: set(),
    DENIED: set(),
}

# Art. 18 §4: when the request cannot be met, the subject is told why.
DENIAL_REASONS: dict[str, tuple[str, str]] = {
    "identity_not_verified": ("Não foi possível confirmar a sua identidade.",
                              "Your identity could not be verified."),
    "not_controller": ("Não somos o agente de tratamento destes dados; o agente responsável está indicado abaixo.",
                       "We are not the processing agent of this data; the responsible agent is named below."),
    "legal_obligation": ("Os dados precisam ser mantidos para cumprir obrigação legal ou regulatória (LGPD, art. 16, I).",
                         "The data must be kept to comply with a legal or regulatory obligation (LGPD Art. 16, I)."),
    "exercise_of_rights": ("Os dados são necessários ao exercício regular de direitos em processo.",
                           "The data is needed for the regular exercise of rights in proceedings."),
    "manifestly_unfounded": ("O pedido não tem fundamento ou é excessivo.", "The request is unfounded or excessive."),
    "other": ("O pedido não pôde ser atendido; veja a explicação abaixo.",
              "The request could not be fulfilled; see the explanation below."),
}

# Art. 18 VIII: what happens when a person refuses consent, by legal basis.
REFUSAL_CONSEQUENCES: dict[str, tuple[str, str]] = {
    "consent": ("Você pode recusar ou revogar a qualquer momento, sem custo. A única consequência é não recebermos "
                "nem usarmos seus dados para esta finalidade.",
                "You may refuse or revoke at any time, free of charge. The only consequence is that we do not "
                "receive or use your data for this purpose."),
    "legitimate_interest": ("Esta finalidade não depende de consentimento (legítimo interesse), mas você pode se "
                            "opor a ela; sem ela, nada muda nos serviços que contratou.",
                            "This purpose does not depend on consent (legitimate interest), but you may object to "
                            "it; without it, nothing changes in the services you use."),
    "_other": ("Esta finalidade não depende de consentimento: é necessária por outra base legal (contrato, "
               "obrigação legal...). Recusá-la pode impedir o serviço que depende dela.",
               "This purpose does not depend on consent: another legal basis requires it (contract, legal "
               "obligation...). Refusing it may prevent the service that depends on it."),
}


def type_label(name: str, language: str) -> str:
    t = REQUEST_TYPES.get(name)
    return t.label(language) if t else name


def denial_text(code: str, language: str) -> str:
    pt, en = DENIAL_REASONS.get(code, DENIAL_REASONS["other"])
    return en if language == "en" else pt
