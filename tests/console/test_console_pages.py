"""The DPO console through Flask's test client: sign-in, CSRF, roles, every
page in pt-BR and English, DSR actions and bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.console.conftest import PASSWORD, csrf_of, login, post_form
from tests.dsr.conftest import VICTIM, add_person, codes_for, open_and_dispatch


GRANT = {"purpose": "email_marketing", "status": "granted", "legal_basis": "consent",
         "occurred_at": "2026-01-10T09:30:00-03:00", "evidence": {"channel": "web_form", "notice_version": "aviso-2026-01"}}


def _status(runtime, request_id: str) -> str:
    from consent.dsr.service import get_request

    return get_request(runtime, request_id)["status"]


def test_pages_need_a_signed_in_staff_user(client, staff):
    staff("dpo")
    anonymous = client.get("/console/requests")
    assert anonymous.status_code == 302 and "/console/login" in anonymous.headers["Location"]
    wrong = login(client, "dpo@empresa.com.br", "senha-errada-mas-longa")
    assert wrong.status_code == 401 and "E-mail ou senha incorretos." in wrong.get_data(as_text=True)
    unknown = login(client, "ninguem@empresa.com.br")
    assert unknown.status_code == 401
    ok = login(client, "dpo@empresa.com.br")
    assert ok.status_code == 303 and ok.headers["Location"].endswith("/console/requests")
    page = client.get("/console/requests")
    assert page.status_code == 200 and "Fila de pedidos" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    # The session cookie is signed (HttpOnly) and holds no e-mail.
    cookie = client.get_cookie("session")
    assert cookie.http_only and "empresa" not in cookie.value
    post_form(client, "/console/logout")
    assert client.get("/console/requests").status_code == 302


def test_password_is_stored_as_a_scrypt_hash_and_email_as_a_keyed_hash(runtime, staff):
    from sqlalchemy import select

    from cdp.console.models import StaffUser

    staff("admin")
    with runtime.session() as session:
        user = session.scalars(select(StaffUser)).one()
        assert user.password_hash.startswith("scrypt:") and PASSWORD not in user.password_hash
        assert b"admin@empresa" not in user.email_hash


def test_a_post_without_the_csrf_token_is_refused(dpo_client, runtime):
    add_person(runtime, VICTIM)
    opened = open_and_dispatch(runtime, "deletion", {"email": VICTIM["email"]})
    code = codes_for(runtime, opened.request_id)[VICTIM["email"]]
    url = f"/console/requests/{opened.request_id}/verify-code"
    for data in ({"code": code}, {"code": code, "csrf_token": "forged"}):
        refused = dpo_client.post(url, data=data)
        assert refused.status_code == 400
        assert "Formulário expirado ou inválido" in refused.get_data(as_text=True)
    assert _status(runtime, opened.request_id) == "received"
    # A login form posted from elsewhere (no token) is refused too.
    other = type(dpo_client)(dpo_client.application)
    assert other.post("/console/login", data={"email": "dpo@empresa.com.br", "password": PASSWORD}).status_code == 400


def test_logins_are_rate_limited_per_account(client, staff):
    email = staff("dpo")
    for _ in range(5):
        assert login(client, email, "senha-errada-mas-longa").status_code == 401
    blocked = login(client, email)  # the right password, too late
    assert blocked.status_code == 429 and "Muitas tentativas" in blocked.get_data(as_text=True)
    assert client.get("/console/requests").status_code == 302
    # Another account from the same client is not locked out by them.
    assert login(client, staff("admin")).status_code == 303


def test_an_analyst_views_but_cannot_act(client, staff, runtime):
    add_person(runtime, VICTIM)
    opened = open_and_dispatch(runtime, "deletion", {"email": VICTIM["email"]})
    code = codes_for(runtime, opened.request_id)[VICTIM["email"]]
    assert login(client, staff("analyst")).status_code == 303
    page = client.get(f"/console/requests/{opened.request_id}")
    assert page.status_code == 200 and "verify-code" not in page.get_data(as_text=True)
    for action, data in (("verify-code", {"code": code}), ("execute", {}),
                         ("deny", {"reason_code": "manifestly_unfounded"}),
                         ("extend", {"days": "10", "reason": "complexidade"})):
        refused = post_form(client, f"/console/requests/{opened.request_id}/{action}", data)
        assert refused.status_code == 403, action
        assert "analista" in refused.get_data(as_text=True)
    assert client.get(f"/console/requests/{opened.request_id}/download").status_code == 403
    assert _status(runtime, opened.request_id) == "received"


def test_verify_with_the_code_then_execute_a_deletion(dpo_client, runtime):
    profile = add_person(runtime, VICTIM)
    opened = open_and_dispatch(runtime, "deletion", {"email": VICTIM["email"]})
    code = codes_for(runtime, opened.request_id)[VICTIM["email"]]
    url = f"/console/requests/{opened.request_id}"
    wrong = post_form(dpo_client, f"{url}/verify-code", {"code": "000000" if code != "000000" else "111111"})
    assert wrong.status_code == 400 and "Tentativas restantes: 4" in wrong.get_data(as_text=True)
    not_digits = post_form(dpo_client, f"{url}/verify-code", {"code": "abc"})
    assert not_digits.status_code == 400 and "Campo inválido: código" in not_digits.get_data(as_text=True)
    ok = post_form(dpo_client, f"{url}/verify-code", {"code": code})
    assert ok.status_code == 303
    assert "Identidade verificada." in dpo_client.get(url).get_data(as_text=True)
    assert _status(runtime, opened.request_id) == "identity_verified"
    assert post_form(dpo_client, f"{url}/execute").status_code == 303
    # The CRM has no connector that erases: a person confirms it there.
    assert _status(runtime, opened.request_id) == "in_progress"
    assert 'data-system="source:crm"' in dpo_client.get(url).get_data(as_text=True)
    unknown = post_form(dpo_client, f"{url}/confirm-system", {"system": "source:nada"})
    assert unknown.status_code == 400 and "sistema" in unknown.get_data(as_text=True)
    assert post_form(dpo_client, f"{url}/confirm-system", {"system": "source:crm"}).status_code == 303
    assert _status(runtime, opened.request_id) == "completed"
    html = dpo_client.get(url).get_data(as_text=True)
    assert "concluído" in html and "identity_verified" in html and "execution_requested" in html
    # The timeline names the staff member who typed the code, not the subject.
    from consent.dsr.service import get_request

    trail = get_request(runtime, opened.request_id)["audit"]
    assert any(e["action"] == "identity_verified" and e["actor"].startswith("staff:") for e in trail)
    with runtime.session() as session:
        from cdp.models import Profile

        assert session.get(Profile, profile).status != "active"
    # Nothing more to do on a closed request.
    again = post_form(dpo_client, f"{url}/execute")
    assert again.status_code == 409 and "não permitida" in again.get_data(as_text=True)


def test_verify_by_other_means_deny_and_extend_with_reasons(dpo_client, runtime):
    profile = add_person(runtime, VICTIM)
    opened = open_and_dispatch(runtime, "deletion", {"email": VICTIM["email"]})
    url = f"/console/requests/{opened.request_id}"
    no_note = post_form(dpo_client, f"{url}/verify-staff", {"note": " ", "profile_ids": profile})
    assert no_note.status_code == 400 and "como foi verificado" in no_note.get_data(as_text=True)
    bad_profile = post_form(dpo_client, f"{url}/verify-staff", {"note": "RG no balcão", "profile_ids": "x"})
    assert bad_profile.status_code == 400 and "IDs de perfil" in bad_profile.get_data(as_text=True)
    ok = post_form(dpo_client, f"{url}/verify-staff", {"note": "RG conferido no balcão", "profile_ids": profile})
    assert ok.status_code == 303 and _status(runtime, opened.request_id) == "identity_verified"

    bad_days = post_form(dpo_client, f"{url}/extend", {"days": "muitos", "reason": "x"})
    assert bad_days.status_code == 400 and "dias" in bad_days.get_data(as_text=True)
    no_reason = post_form(dpo_client, f"{url}/extend", {"days": "10", "reason": ""})
    assert no_reason.status_code == 400 and "motivo" in no_reason.get_data(as_text=True)
    from consent.dsr.service import get_request

    before = get_request(runtime, opened.request_id)["due_at"]
    assert post_form(dpo_client, f"{url}/extend", {"days": "10", "reason": "sistemas legados"}).status_code == 303
    assert get_request(runtime, opened.request_id)["due_at"] > before

    bad_reason = post_form(dpo_client, f"{url}/deny", {"reason_code": "porque sim"})
    assert bad_reason.status_code == 400
    other_without_text = post_form(dpo_client, f"{url}/deny", {"reason_code": "other"})
    assert other_without_text.status_code == 400 and "detalhe do motivo" in other_without_text.get_data(as_text=True)
    denied = post_form(dpo_client, f"{url}/deny", {"reason_code": "legal_obligation"})
    assert denied.status_code == 303 and _status(runtime, opened.request_id) == "denied"
    assert "deadline_extended" in dpo_client.get(url).get_data(as_text=True)


def test_queue_filters_and_deadline_highlighting(dpo_client, runtime):
    from datetime import timedelta

    from cdp.models import utcnow
    from consent.dsr.models import DsrRequest

    late = open_and_dispatch(runtime, "deletion", {"email": "atrasado@example.com"}).request_id
    soon = open_and_dispatch(runtime, "access", {"email": "logo@example.com"}).request_id
    later = open_and_dispatch(runtime, "correction", {"email": "depois@example.com"},
                              details={"changes": {"traits": {"city": "Recife"}}}).request_id
    with runtime.session() as session:
        session.get(DsrRequest, late).due_at = utcnow() - timedelta(days=1)
        session.get(DsrRequest, soon).due_at = utcnow() + timedelta(days=1)
    html = dpo_client.get("/console/requests").get_data(as_text=True)
    assert f'class="overdue" data-request-id="{late}"' in html
    assert f'class="due-soon" data-request-id="{soon}"' in html
    assert f'class="" data-request-id="{later}"' in html
    only = dpo_client.get("/console/requests?type=deletion").get_data(as_text=True)
    assert late in only and soon not in only and later not in only
    none = dpo_client.get("/console/requests?status=completed").get_data(as_text=True)
    assert "Nenhum pedido." in none
    bad = dpo_client.get("/console/requests?status=talvez")
    assert bad.status_code == 400 and "Campo inválido: situação" in bad.get_data(as_text=True)


@pytest.mark.parametrize("lang,words", [
    ("pt-BR", {"queue": "Fila de pedidos", "request": "Linha do tempo", "subject": "Histórico de consentimentos",
               "purposes": "Finalidades e bases legais", "ledger": "Cadeia íntegra",
               "records": "Registro das operações"}),
    ("en", {"queue": "Request queue", "request": "Timeline (audit trail)", "subject": "Consent history",
            "purposes": "Purposes and legal bases", "ledger": "Chain intact", "records": "Records of processing"}),
])
def test_every_page_renders_in_both_languages(dpo_client, runtime, lang, words):
    from consent.purposes import seed_defaults

    with runtime.session() as session:
        seed_defaults(session)
    profile = add_person(runtime, VICTIM, consents=[GRANT])
    opened = open_and_dispatch(runtime, "access", {"email": VICTIM["email"]})
    switched = dpo_client.get(f"/console/lang/{lang}?next=/console/purposes")
    assert switched.status_code == 302 and switched.headers["Location"].endswith("/console/purposes")
    pages = {"queue": "/console/requests", "request": f"/console/requests/{opened.request_id}",
             "subject": f"/console/subjects?profile_id={profile}", "purposes": "/console/purposes",
             "records": "/console/records"}
    for name, url in pages.items():
        page = dpo_client.get(url)
        assert page.status_code == 200, name
        html = page.get_data(as_text=True)
        assert words[name] in html and f'<html lang="{lang}">' in html, name
    subject = dpo_client.get(f"/console/subjects?profile_id={profile}").get_data(as_text=True)
    assert "crm" in subject and VICTIM["email"] not in subject and VICTIM["name"] not in subject
    assert "email_marketing" in subject  # the consent history
    assert "tax_records" in dpo_client.get("/console/purposes").get_data(as_text=True)
    verified = post_form(dpo_client, "/console/ledger", page="/console/ledger")
    assert verified.status_code == 200 and words["ledger"] in verified.get_data(as_text=True)
    as_json = dpo_client.get("/console/records/processing.json")
    assert as_json.status_code == 200 and "attachment" in as_json.headers["Content-Disposition"]
    assert isinstance(json.loads(as_json.get_data(as_text=True)), (dict, list))
    as_csv = dpo_client.get("/console/records/processing.csv")
    assert as_csv.status_code == 200 and as_csv.mimetype == "text/csv"


def test_tampered_ledger_is_reported(dpo_client, runtime):
    from sqlalchemy import update

    from consent.models import LedgerEntry
    from consent.purposes import seed_defaults

    with runtime.session() as session:
        seed_defaults(session)
    add_person(runtime, VICTIM, consents=[GRANT])
    add_person(runtime, VICTIM, external_id="crm-2", consents=[dict(GRANT, purpose="personalization")])
    from tests.consent.helpers import drop_guard

    drop_guard(runtime)  # what a DBA could do
    with runtime.session() as session:
        session.execute(update(LedgerEntry).where(LedgerEntry.seq == 1).values(action="revoked"))
    html = post_form(dpo_client, "/console/ledger", page="/console/ledger").get_data(as_text=True)
    assert "Cadeia ALTERADA a partir da entrada 1" in html


def test_bad_input_and_unknown_things(dpo_client, runtime):
    assert dpo_client.get("/console/requests/not-a-uuid").status_code == 404
    missing = dpo_client.get("/console/requests/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404 and "não encontrado" in missing.get_data(as_text=True)
    bad = dpo_client.get("/console/subjects?profile_id=abc")
    assert bad.status_code == 400 and "ID do perfil" in bad.get_data(as_text=True)
    assert dpo_client.get("/console/subjects?profile_id=00000000-0000-4000-8000-000000000000").status_code == 404
    assert dpo_client.get("/console/lang/fr").status_code == 404
    assert dpo_client.get("/console/records/processing.xml").status_code == 404
    # `next` never leaves the console (no open redirect).
    assert dpo_client.get("/console/lang/en?next=https://evil.example/").headers["Location"].endswith(
        "/console/requests")
    client = type(dpo_client)(dpo_client.application)
    page = client.get("/console/login")
    sent = client.post("/console/login", data={"email": "dpo@empresa.com.br", "password": PASSWORD,
                                               "next": "//evil.example/x",
                                               "csrf_token": csrf_of(page.get_data(as_text=True))})
    assert sent.status_code == 303 and sent.headers["Location"].endswith("/console/requests")


def test_cli_staff_add_reads_the_password_from_stdin(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CDP_KEYRING")}
    env["CDP_INSTANCE_PATH"] = str(tmp_path / "instance")

    def cdp(*args, stdin=""):
        return subprocess.run([sys.executable, "-m", "cdp.cli", *args], input=stdin, capture_output=True, text=True,
                              env=env, timeout=300)

    assert cdp("init").returncode == 0
    made = cdp("staff", "add", "dpo@empresa.com.br", "--role", "dpo", "--password-stdin", stdin=PASSWORD + "\n")
    assert made.returncode == 0 and "(dpo)" in made.stdout, made.stderr
    short = cdp("staff", "add", "dpo@empresa.com.br", "--password-stdin", stdin="curta\n")
    assert short.returncode == 2 and "password" in short.stderr and "curta" not in short.stderr
    bad_role = cdp("staff", "add", "x@empresa.com.br", "--role", "chefe", "--password-stdin", stdin=PASSWORD)
    assert bad_role.returncode == 2

    from cdp.config import Settings
    from cdp.console.staff import authenticate
    from cdp.crypto import Keyring
    from cdp.store import Runtime

    settings = Settings.from_env({"CDP_INSTANCE_PATH": env["CDP_INSTANCE_PATH"]})
    runtime = Runtime(settings, Keyring.load(settings))
    assert authenticate(runtime, "DPO@empresa.com.br", PASSWORD)["role"] == "dpo"
    assert authenticate(runtime, "dpo@empresa.com.br", "curta") is None


def test_demo_creates_a_dpo_who_can_sign_in(tmp_path):
    from cdp import create_app
    from cdp.demo.run import run_demo
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "instance")
    summary = run_demo(settings, people=20, quiet=True)
    email, password = summary.console_login
    assert len(password) >= 12
    client = create_app(settings).test_client()
    assert login(client, email, password).status_code == 303
    assert "Fila de pedidos" in client.get("/console/requests").get_data(as_text=True)


def test_staff_accounts_on_both_databases(any_runtime):
    from cdp.console.staff import StaffError, add_staff, authenticate, get_staff

    staff_id = add_staff(any_runtime, "Encarregada@Empresa.com.br", "admin", PASSWORD)
    assert authenticate(any_runtime, "encarregada@empresa.com.br", PASSWORD) == {"id": staff_id, "role": "admin"}
    # Adding the same e-mail again resets role and password, never duplicates.
    assert add_staff(any_runtime, "encarregada@empresa.com.br", "analyst", PASSWORD + "-nova") == staff_id
    assert authenticate(any_runtime, "encarregada@empresa.com.br", PASSWORD) is None
    assert get_staff(any_runtime, staff_id)["role"] == "analyst"
    for email, role, password, field in (("sem-arroba", "dpo", PASSWORD, "email"), ("a@b.c", "chefe", PASSWORD, "role"),
                                         ("a@b.c", "dpo", "curta", "password")):
        with pytest.raises(StaffError) as err:
            add_staff(any_runtime, email, role, password)
        assert err.value.field == field
