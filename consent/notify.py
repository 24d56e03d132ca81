"""Messages to data subjects: an outbox table and a pluggable sender.

Every message is queued in the `outbox` table first (recipient, subject and
body encrypted under a data key of the message's own), then delivered:

* with CDP_SMTP_URL set, e-mail goes out through smtplib, and the message
  key is destroyed once the server accepted it (the text is no longer needed);
* otherwise, and for channels with no sender (SMS), messages stay queued in
  the outbox, where staff (and tests) read them with `outbox()`.

Texts are pt-BR by default, English when the request asked for it.
"""
from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp import crypto
from cdp.models import new_id, utcnow
from cdp.store import KeyStore, Runtime
from consent.dsr.models import OutboxMessage

log = logging.getLogger(__name__)

LANGUAGES = ("pt-BR", "en")
CHANNELS = ("email", "sms")

# (subject, body) per template and language; str.format fields from the context.
TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    "code": {
        "pt-BR": ("Código de verificação do seu pedido LGPD",
                  "Recebemos um pedido sobre seus dados pessoais ({type_label}), protocolo {request_ref}.\n"
                  "Seu código de verificação é {code}. Ele vale por {minutes} minutos e só pode ser usado uma vez.\n"
                  "Se você não fez este pedido, ignore esta mensagem: nada será feito sem o código.\n\n"
                  "{controller} — Encarregado(a): {dpo} ({dpo_contact})"),
        "en": ("Verification code for your data request",
               "We received a request about your personal data ({type_label}), reference {request_ref}.\n"
               "Your verification code is {code}. It is valid for {minutes} minutes and can be used once.\n"
               "If you did not make this request, ignore this message: nothing happens without the code.\n\n"
               "{controller} — Data protection officer: {dpo} ({dpo_contact})"),
    },
    "report_ready": {
        "pt-BR": ("Seu relatório de dados pessoais está pronto",
                  "Seu pedido {request_ref} ({type_label}) foi atendido.\n"
                  "Baixe o relatório (válido até {expires}):\n{links}\n\n"
                  "{controller} — Encarregado(a): {dpo} ({dpo_contact})"),
        "en": ("Your personal data report is ready",
               "Your request {request_ref} ({type_label}) has been fulfilled.\n"
               "Download the report (valid until {expires}):\n{links}\n\n"
               "{controller} — Data protection officer: {dpo} ({dpo_contact})"),
    },
    "completed": {
        "pt-BR": ("Seu pedido LGPD foi concluído",
                  "Seu pedido {request_ref} ({type_label}) foi concluído.\n{summary}\n\n"
                  "{controller} — Encarregado(a): {dpo} ({dpo_contact})"),
        "en": ("Your data request is complete",
               "Your request {request_ref} ({type_label}) is complete.\n{summary}\n\n"
               "{controller} — Data protection officer: {dpo} ({dpo_contact})"),
    },
    "denied": {
        "pt-BR": ("Seu pedido LGPD não pôde ser atendido",
                  "Seu pedido {request_ref} ({type_label}) não pôde ser atendido.\nMotivo: {reason}\n"
                  "Você pode falar com o(a) encarregado(a) ou peticionar à ANPD.\n\n"
                  "{controller} — Encarregado(a): {dpo} ({dpo_contact})"),
        "en": ("Your data request could not be fulfilled",
               "Your request {request_ref} ({type_label}) could not be fulfilled.\nReason: {reason}\n"
               "You may contact the data protection officer or petition the ANPD.\n\n"
               "{controller} — Data protection officer: {dpo} ({dpo_contact})"),
    },
    "extended": {
        "pt-BR": ("Novo prazo para o seu pedido LGPD",
                  "O prazo do seu pedido {request_ref} ({type_label}) passou para {due}.\nMotivo: {reason}\n\n"
                  "{controller} — Encarregado(a): {dpo} ({dpo_contact})"),
        "en": ("New deadline for your data request",
               "The deadline of your request {request_ref} ({type_label}) is now {due}.\nReason: {reason}\n\n"
               "{controller} — Data protection officer: {dpo} ({dpo_contact})"),
    },
}


class Sender(Protocol):
    def send(self, channel: str, to: str, subject: str, body: str) -> bool:
        """Deliver one message; True when delivered, False when the channel
        is not handled (the message stays in the outbox). Raise on failure."""


class OutboxOnlySender:
    """No transport configured: messages wait in the outbox for staff."""

    def send(self, channel, to, subject, body) -> bool:
        return False


@dataclass
class SmtpSender:
    """E-mail over SMTP (smtplib). URL: smtp://user:pass@host:port?from=addr&starttls=1
    or smtps://... for implicit TLS."""

    url: str
    timeout: float = 30.0

    def send(self, channel, to, subject, body) -> bool:
        if channel != "email":
            return False
        parts = urlsplit(self.url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        sender = query.get("from") or "lgpd@localhost"
        message = EmailMessage()
        message["From"] = sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        port = parts.port or (465 if parts.scheme == "smtps" else 25)
        if parts.scheme == "smtps":
            client = smtplib.SMTP_SSL(parts.hostname, port, timeout=self.timeout, context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(parts.hostname, port, timeout=self.timeout)
        with client:
            if parts.scheme == "smtp" and query.get("starttls") in ("1", "true", "yes"):
                client.starttls(context=ssl.create_default_context())
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            client.send_message(message)
        return True


def sender_for(settings) -> Sender:
    return SmtpSender(settings.smtp_url) if settings.smtp_url else OutboxOnlySender()


def render(template: str, language: str, context: dict) -> tuple[str, str]:
    texts = TEMPLATES[template]
    subject, body = texts.get(language) or texts["pt-BR"]
    return subject.format(**context), body.format(**context)


def queue_message(session: Session, keys: KeyStore, *, channel: str, to: str, template: str, language: str,
                  context: dict, request_id: str | None = None) -> str:
    """Store one message, encrypted, for delivery. Returns its id."""
    channel = {"phone": "sms"}.get(channel, channel)  # a phone number is reached by SMS
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
    language = language if language in LANGUAGES else "pt-BR"
    subject, body = render(template, language, context)
    message_id = new_id()
    key_id, dek = keys.create()
    session.add(OutboxMessage(
        id=message_id, request_id=request_id, channel=channel, template=template, language=language, key_id=key_id,
        recipient_ct=crypto.encrypt_json(dek, to, "outbox", message_id, "recipient"),
        subject_ct=crypto.encrypt_json(dek, subject, "outbox", message_id, "subject"),
        body_ct=crypto.encrypt_json(dek, body, "outbox", message_id, "body"),
        status="queued", created_at=utcnow(),
    ))
    return message_id


def _decrypt(keys: KeyStore, m: OutboxMessage) -> dict:
    dek = keys.get(m.key_id)
    return {
        "id": m.id, "request_id": m.request_id, "channel": m.channel, "template": m.template,
        "language": m.language, "status": m.status, "created_at": m.created_at.isoformat(),
        "sent_at": m.sent_at.isoformat() if m.sent_at else None,
        "to": crypto.decrypt_json(dek, m.recipient_ct, "outbox", m.id, "recipient"),
        "subject": crypto.decrypt_json(dek, m.subject_ct, "outbox", m.id, "subject"),
        "body": crypto.decrypt_json(dek, m.body_ct, "outbox", m.id, "body"),
    }


def outbox(session: Session, keys: KeyStore, request_id: str | None = None, status: str | None = "queued") -> list[dict]:
    """Messages waiting in the outbox, decrypted (staff only: they hold personal data)."""
    query = select(OutboxMessage).order_by(OutboxMessage.created_at, OutboxMessage.id)
    if request_id is not None:
        query = query.where(OutboxMessage.request_id == request_id)
    if status is not None:
        query = query.where(OutboxMessage.status == status)
    out = []
    for m in session.scalars(query):
        try:
            out.append(_decrypt(keys, m))
        except crypto.DecryptionError:
            continue  # delivered and shredded
    return out


def deliver_pending(runtime: Runtime, sender: Sender | None = None, request_id: str | None = None,
                    limit: int = 200) -> dict[str, int]:
    """Try to deliver queued messages; each in its own transaction."""
    sender = sender or sender_for(runtime.settings)
    counts = {"sent": 0, "kept": 0, "failed": 0}
    with runtime.session() as session:
        query = select(OutboxMessage.id).where(OutboxMessage.status == "queued").order_by(OutboxMessage.created_at)
        if request_id is not None:
            query = query.where(OutboxMessage.request_id == request_id)
        ids = list(session.scalars(query.limit(limit)))
    for message_id in ids:
        with runtime.session() as session:
            m = session.get(OutboxMessage, message_id)
            if m is None or m.status != "queued":
                continue
            keys = runtime.keys(session)
            msg = _decrypt(keys, m)
            try:
                delivered = sender.send(m.channel, msg["to"], msg["subject"], msg["body"])
            except Exception as exc:  # noqa: BLE001 - a transport error must not stop the others
                m.attempts += 1
                m.error = type(exc).__name__
                m.status = "failed" if m.attempts >= 5 else "queued"
                counts["failed"] += 1
                log.warning("message delivery failed message=%s error=%s", m.id, type(exc).__name__)
                continue
            if not delivered:
                counts["kept"] += 1
                continue
            m.status, m.sent_at, m.attempts = "sent", utcnow(), m.attempts + 1
            keys.destroy([m.key_id])  # delivered: the text is not kept
            counts["sent"] += 1
    return counts
