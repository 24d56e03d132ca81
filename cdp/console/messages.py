"""Every console text, pt-BR first, English available (one place)."""
from __future__ import annotations

LANGUAGES = ("pt-BR", "en")
DEFAULT = "pt-BR"

MESSAGES: dict[str, tuple[str, str]] = {
    # (pt-BR, en)
    "title": ("Console do Encarregado (LGPD)", "DPO console (LGPD)"),
    "login": ("Entrar", "Sign in"),
    "logout": ("Sair", "Sign out"),
    "email": ("E-mail", "E-mail"),
    "password": ("Senha", "Password"),
    "login_failed": ("E-mail ou senha incorretos.", "Wrong e-mail or password."),
    "login_required": ("Entre para continuar.", "Sign in to continue."),
    "too_many_attempts": ("Muitas tentativas. Tente novamente em alguns minutos.",
                          "Too many attempts. Try again in a few minutes."),
    "csrf_failed": ("Formulário expirado ou inválido. Recarregue a página e tente novamente.",
                    "Expired or invalid form. Reload the page and try again."),
    "forbidden": ("Seu perfil (analista) pode consultar, mas não agir sobre pedidos de titulares.",
                  "Your role (analyst) can view but not act on data-subject requests."),
    "not_found": ("Página ou registro não encontrado.", "Page or record not found."),
    "bad_request": ("Dados inválidos.", "Invalid input."),
    "language": ("Idioma", "Language"),
    "nav_queue": ("Pedidos de titulares", "Data-subject requests"),
    "nav_subject": ("Titular", "Data subject"),
    "nav_purposes": ("Finalidades", "Purposes"),
    "nav_ledger": ("Registro de consentimentos", "Consent ledger"),
    "nav_records": ("Registro das operações (Art. 37)", "Records of processing (Art. 37)"),
    "queue_title": ("Fila de pedidos", "Request queue"),
    "filter": ("Filtrar", "Filter"),
    "all": ("Todos", "All"),
    "status": ("Situação", "Status"),
    "type": ("Tipo", "Type"),
    "created": ("Aberto em", "Opened"),
    "due": ("Prazo", "Due"),
    "overdue": ("Atrasado", "Overdue"),
    "due_soon": ("Vence em breve", "Due soon"),
    "paused": ("Pausado", "Paused"),
    "no_requests": ("Nenhum pedido.", "No requests."),
    "request": ("Pedido", "Request"),
    "article": ("Artigo", "Article"),
    "channel": ("Canal", "Channel"),
    "outcome": ("Resultado", "Outcome"),
    "profiles": ("Perfis", "Profiles"),
    "timeline": ("Linha do tempo (trilha de auditoria)", "Timeline (audit trail)"),
    "when": ("Quando", "When"),
    "actor": ("Quem", "Who"),
    "action": ("Ação", "Action"),
    "transition": ("Mudança", "Change"),
    "steps": ("Etapas", "Steps"),
    "systems": ("Sistemas", "Systems"),
    "actions": ("Ações", "Actions"),
    "verify_code": ("Verificar identidade com o código recebido pelo titular",
                    "Verify identity with the code the subject received"),
    "code": ("Código", "Code"),
    "verify": ("Verificar", "Verify"),
    "verify_other": ("Marcar como verificado por outro meio", "Mark as verified by other means"),
    "how_verified": ("Como a identidade foi verificada", "How the identity was verified"),
    "profile_ids": ("IDs de perfil (separados por vírgula)", "Profile ids (comma separated)"),
    "execute": ("Executar", "Execute"),
    "deny": ("Negar", "Deny"),
    "reason": ("Motivo", "Reason"),
    "reason_detail": ("Detalhe do motivo", "Reason detail"),
    "extend": ("Prorrogar prazo", "Extend deadline"),
    "days": ("Dias", "Days"),
    "confirm_done": ("Confirmar como feito", "Confirm as done"),
    "download_report": ("Baixar relatório de acesso", "Download access report"),
    "verified_ok": ("Identidade verificada.", "Identity verified."),
    "code_wrong": ("Código incorreto ou expirado. Tentativas restantes: {left}.",
                   "Wrong or expired code. Attempts left: {left}."),
    "done": ("Feito.", "Done."),
    "subject_title": ("Titular", "Data subject"),
    "profile_id": ("ID do perfil", "Profile id"),
    "show": ("Mostrar", "Show"),
    "consent_states": ("Consentimentos: situação atual", "Consent: current state"),
    "consent_history": ("Histórico de consentimentos", "Consent history"),
    "purpose": ("Finalidade", "Purpose"),
    "legal_basis": ("Base legal", "Legal basis"),
    "allowed": ("Permitido", "Allowed"),
    "yes": ("sim", "yes"),
    "no": ("não", "no"),
    "source_records": ("Registros de origem por fonte", "Source records by source"),
    "source": ("Fonte", "Source"),
    "record": ("Registro", "Record"),
    "observed": ("Observado em", "Observed"),
    "disclosures": ("Compartilhamentos", "Disclosures"),
    "recipient": ("Destinatário", "Recipient"),
    "fields": ("Campos", "Fields"),
    "none": ("Nenhum.", "None."),
    "purposes_title": ("Finalidades e bases legais", "Purposes and legal bases"),
    "name": ("Nome", "Name"),
    "version": ("Versão", "Version"),
    "retention": ("Retenção (dias)", "Retention (days)"),
    "active": ("Ativa", "Active"),
    "ledger_title": ("Integridade do registro de consentimentos", "Consent ledger integrity"),
    "run_verify": ("Verificar agora", "Verify now"),
    "ledger_ok": ("Cadeia íntegra: {entries} entradas verificadas.", "Chain intact: {entries} entries verified."),
    "ledger_bad": ("Cadeia ALTERADA a partir da entrada {seq} ({reason}).",
                   "Chain TAMPERED from entry {seq} ({reason})."),
    "records_title": ("Registro das operações de tratamento (LGPD Art. 37)",
                      "Records of processing operations (LGPD Art. 37)"),
    "records_text": ("Baixe o registro com destinatários, finalidades, campos e contagens.",
                     "Download the record with recipients, purposes, fields and counts."),
    "download_json": ("Baixar JSON", "Download JSON"),
    "download_csv": ("Baixar CSV", "Download CSV"),
    "status_received": ("recebido", "received"),
    "status_identity_verified": ("identidade verificada", "identity verified"),
    "status_in_progress": ("em andamento", "in progress"),
    "status_completed": ("concluído", "completed"),
    "status_denied": ("negado", "denied"),
}

# Field names the services report in errors, in words a DPO reads.
FIELDS: dict[str, tuple[str, str]] = {
    "code": ("código", "code"), "note": ("como foi verificado", "how verified"),
    "profile_ids": ("IDs de perfil", "profile ids"), "reason": ("motivo", "reason"),
    "reason_code": ("motivo", "reason"), "reason_text": ("detalhe do motivo", "reason detail"),
    "days": ("dias", "days"), "until": ("nova data", "new date"), "status": ("situação", "status"),
    "scope": ("perfis", "profiles"), "type": ("tipo", "type"), "profile_id": ("ID do perfil", "profile id"),
    "format": ("formato", "format"),
    "system": ("sistema", "system"),
}
INVALID_FIELD = ("Campo inválido: {field}.", "Invalid field: {field}.")
INVALID_STATE = ("Ação não permitida na situação atual do pedido ({field}).",
                 "Action not allowed in the request's current state ({field}).")


def text(key: str, language: str, **kwargs) -> str:
    pt, en = MESSAGES[key]
    value = en if language == "en" else pt
    return value.format(**kwargs) if kwargs else value


def field_error(field: str, language: str, state: bool = False) -> str:
    name = FIELDS.get(field, (field, field))[1 if language == "en" else 0]
    template = (INVALID_STATE if state else INVALID_FIELD)[1 if language == "en" else 0]
    return template.format(field=name)
