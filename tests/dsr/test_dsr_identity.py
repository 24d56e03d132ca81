"""Identity verification: every attack on it tried, and shown to fail."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from consent.dsr import service
from consent.dsr.execute import run_request
from tests.dsr.conftest import ATTACKER, VICTIM, add_person, codes_for, open_and_dispatch, outbox_for


def _victim_values() -> list[str]:
    return ["helena.prado@example.com", "Helena Prado", "52998224725", "+5511988881234", "529.982.247-25"]


def _report_text(runtime, request_id: str) -> str:
    from consent.dsr.models import DsrRequest

    with runtime.session() as session:
        req = session.get(DsrRequest, request_id)
        result = service.decrypt_for(runtime.keys(session), req, "result", req.result_ct)
    return json.dumps(result, ensure_ascii=False) if result else ""


def test_code_for_a_document_goes_only_to_the_contact_on_file(any_runtime):
    victim = add_person(any_runtime, VICTIM)
    # The attacker knows the victim's CPF and gives their own e-mail.
    opened = open_and_dispatch(any_runtime, "access", {"cpf": VICTIM["cpf"], "email": ATTACKER["email"]})

    codes = codes_for(any_runtime, opened.request_id)
    assert set(codes) == {VICTIM["email"], ATTACKER["email"]}  # the victim's code went to the victim's own e-mail
    # The code the attacker can read proves only their own e-mail, which no profile holds.
    result = service.verify_code(any_runtime, opened.request_id, opened.token, codes[ATTACKER["email"]])
    assert result.verified
    view = service.get_request(any_runtime, opened.request_id)
    assert view["profile_ids"] == [] and victim not in view["profile_ids"]
    assert view["status"] == "completed" and view["outcome"] == "no_data_held"
    text = _report_text(any_runtime, opened.request_id)
    assert not any(v in text for v in _victim_values())
    status = service.subject_status(any_runtime, opened.request_id, opened.token)
    assert "downloads" not in status


def test_document_alone_sends_nothing_to_the_requester(any_runtime):
    add_person(any_runtime, VICTIM)
    opened = open_and_dispatch(any_runtime, "access", {"cpf": VICTIM["cpf"]})
    assert set(codes_for(any_runtime, opened.request_id)) == {VICTIM["email"]}


def test_attacker_email_plus_victim_phone_reaches_only_the_attacker(any_runtime):
    victim = add_person(any_runtime, VICTIM)
    attacker = add_person(any_runtime, ATTACKER, external_id="crm-att")
    opened = open_and_dispatch(any_runtime, "access", {"email": ATTACKER["email"], "phone": VICTIM["phone"]})
    codes = codes_for(any_runtime, opened.request_id)
    assert ATTACKER["email"] in codes and "+5511988881234" in codes  # the phone's code goes to the victim's phone

    assert service.verify_code(any_runtime, opened.request_id, opened.token, codes[ATTACKER["email"]]).verified
    view = service.get_request(any_runtime, opened.request_id)
    assert view["profile_ids"] == [attacker]
    assert victim not in json.dumps(view)
    text = _report_text(any_runtime, opened.request_id)
    assert "mallory.vaz@example.org" in text  # the attacker gets their own data...
    assert not any(v in text for v in _victim_values())  # ...and none of the victim's


def test_brute_force_is_capped(runtime):
    add_person(runtime, VICTIM)
    opened = open_and_dispatch(runtime, "access", {"email": VICTIM["email"]})
    right = codes_for(runtime, opened.request_id)[VICTIM["email"]]
    wrong = [f"{(int(right) + i) % 1_000_000:06d}" for i in range(1, 6)]
    lefts = [service.verify_code(runtime, opened.request_id, opened.token, code).attempts_left for code in wrong]
    assert lefts == [4, 3, 2, 1, 0]
    # The sixth try, even with the right code, is refused.
    result = service.verify_code(runtime, opened.request_id, opened.token, right)
    assert (result.verified, result.status, result.attempts_left) == (False, "received", 0)
    with pytest.raises(service.InvalidState):
        run_request(runtime, opened.request_id)


def test_replayed_code_is_refused(runtime):
    add_person(runtime, VICTIM)
    first = open_and_dispatch(runtime, "access", {"email": VICTIM["email"]})
    code = codes_for(runtime, first.request_id)[VICTIM["email"]]
    # A second, identical request (grouped with the first): the code already sent covers it.
    second = open_and_dispatch(runtime, "access", {"email": VICTIM["email"]})
    assert service.get_request(runtime, second.request_id)["duplicate_of"] == first.request_id
    assert codes_for(runtime, second.request_id) == {}

    assert service.verify_code(runtime, first.request_id, first.token, code).verified
    replay = service.verify_code(runtime, second.request_id, second.token, code)
    assert not replay.verified and replay.status == "received"


def test_code_from_an_earlier_round_is_refused(runtime):
    add_person(runtime, VICTIM)
    opened = open_and_dispatch(runtime, "access", {"email": VICTIM["email"]})
    old = codes_for(runtime, opened.request_id)[VICTIM["email"]]
    service.dispatch_codes(runtime, opened.request_id)  # "send me a new code"
    messages = [m for m in outbox_for(runtime, opened.request_id) if m["template"] == "code"]
    assert len(messages) == 2
    new = messages[-1]["body"].split("é ")[1][:6]
    if new == old:
        pytest.skip("the two random codes happened to be equal")
    assert not service.verify_code(runtime, opened.request_id, opened.token, old).verified
    assert service.verify_code(runtime, opened.request_id, opened.token, new).verified


def test_expired_code_is_refused(runtime, monkeypatch):
    add_person(runtime, VICTIM)
    opened = open_and_dispatch(runtime, "access", {"email": VICTIM["email"]})
    code = codes_for(runtime, opened.request_id)[VICTIM["email"]]
    real_now = service.utcnow
    monkeypatch.setattr(service, "utcnow", lambda: real_now() + service.CODE_TTL + timedelta(seconds=1))
    result = service.verify_code(runtime, opened.request_id, opened.token, code)
    assert not result.verified and result.status == "received"


def test_wrong_tracking_token_is_not_found(runtime):
    add_person(runtime, VICTIM)
    opened = open_and_dispatch(runtime, "access", {"email": VICTIM["email"]})
    code = codes_for(runtime, opened.request_id)[VICTIM["email"]]
    with pytest.raises(service.RequestNotFound):
        service.verify_code(runtime, opened.request_id, "not-the-token", code)
    with pytest.raises(service.RequestNotFound):
        service.subject_status(runtime, opened.request_id, "not-the-token")


def test_unverified_request_releases_nothing(any_runtime):
    add_person(any_runtime, VICTIM)
    opened = open_and_dispatch(any_runtime, "access", {"email": VICTIM["email"]})
    with pytest.raises(service.InvalidState):
        service.execute(any_runtime, opened.request_id, actor="staff:test")
    with pytest.raises(service.InvalidState):
        run_request(any_runtime, opened.request_id)
    with pytest.raises(service.InvalidState):
        service.respond(any_runtime, opened.request_id, actor="staff:test", message="aqui estão seus dados")
    view = service.get_request(any_runtime, opened.request_id)
    assert view["status"] == "received" and view["steps"] == [] and view["profile_ids"] == []
    status = service.subject_status(any_runtime, opened.request_id, opened.token)
    assert status["status"] == "received" and "downloads" not in status
    from consent.dsr.report import LinkInvalid, download, make_download_token

    token = make_download_token(any_runtime.keyring, opened.request_id, "json")  # even a validly signed link
    with pytest.raises(LinkInvalid):
        download(any_runtime, opened.request_id, token, "json")
    # Only the code message was sent, and it holds nothing but the code.
    messages = outbox_for(any_runtime, opened.request_id)
    assert [m["template"] for m in messages] == ["code"]
    # (the CPF as written or as digits: a bare "529" can occur in the random protocol id)
    assert "Helena" not in messages[0]["body"]
    assert "529.982" not in messages[0]["body"] and "52998224725" not in messages[0]["body"]


def test_identifiers_matching_nobody_complete_with_no_data_held(any_runtime):
    add_person(any_runtime, VICTIM)
    opened = open_and_dispatch(any_runtime, "access", {"email": "ninguem@example.net"})
    code = codes_for(any_runtime, opened.request_id)["ninguem@example.net"]
    assert service.verify_code(any_runtime, opened.request_id, opened.token, code).verified
    view = service.get_request(any_runtime, opened.request_id)
    assert (view["status"], view["outcome"], view["profile_ids"]) == ("completed", "no_data_held", [])
    assert {s["status"] for s in view["steps"]} == {"done"}
    answer = [m for m in outbox_for(any_runtime, opened.request_id) if m["template"] == "completed"]
    assert len(answer) == 1 and "Não mantemos dados pessoais" in answer[0]["body"]
    assert not any(v in answer[0]["body"] for v in _victim_values())
    assert _report_text(any_runtime, opened.request_id) == ""


def test_shared_family_email_is_narrowed_by_cpf_or_sent_to_staff(runtime):
    from cdp.ingest import ingest_batch

    # Mother and son share an e-mail but hold different CPFs: two people, two profiles.
    ingest_batch(runtime, "crm", [
        {"external_id": "m", "identifiers": {"email": "familia@example.com", "cpf": VICTIM["cpf"]},
         "traits": {"full_name": "Helena Prado"}},
        {"external_id": "s", "identifiers": {"email": "familia@example.com", "cpf": ATTACKER["cpf"]},
         "traits": {"full_name": "Pedro Prado"}},
    ])
    ambiguous = open_and_dispatch(runtime, "access", {"email": "familia@example.com"})
    code = codes_for(runtime, ambiguous.request_id)["familia@example.com"]
    assert service.verify_code(runtime, ambiguous.request_id, ambiguous.token, code).verified
    view = service.get_request(runtime, ambiguous.request_id)
    assert view["scope"] == "ambiguous" and view["profile_ids"] == [] and view["status"] == "identity_verified"
    with pytest.raises(service.InvalidState):
        service.execute(runtime, ambiguous.request_id, actor="staff:test")

    narrowed = open_and_dispatch(runtime, "access", {"email": "familia@example.com", "cpf": VICTIM["cpf"]})
    code = codes_for(runtime, narrowed.request_id)["familia@example.com"]
    assert service.verify_code(runtime, narrowed.request_id, narrowed.token, code).verified
    view = service.get_request(runtime, narrowed.request_id)
    assert view["scope"] == "contact_and_cpf" and len(view["profile_ids"]) == 1
    text = _report_text(runtime, narrowed.request_id)
    assert "Helena Prado" in text and "Pedro Prado" not in text
