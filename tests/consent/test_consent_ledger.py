"""The hash chain: appends link up, and every kind of tampering done directly
in the database is caught, naming the first bad sequence number."""
from __future__ import annotations

import types

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import DBAPIError

from cdp.crypto import Keyring
from consent import ledger, signing
from consent.models import ConsentState, LedgerEntry
from tests.consent.helpers import allowed, drop_guard, grant, raw, verify


@pytest.fixture
def chain(crt, make_profiles):
    """Six entries over three subjects and two purposes."""
    a, b, c = make_profiles(crt, 3)
    for pid, purpose, action in [(a, "email_marketing", "granted"), (b, "email_marketing", "granted"),
                                 (a, "analytics", "opted_out"), (c, "personalization", "granted"),
                                 (b, "email_marketing", "revoked"), (c, "email_marketing", "granted")]:
        grant(crt, pid, purpose, action)
    return crt


def rows(rt) -> list[dict]:
    with rt.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(LedgerEntry.__table__).order_by(text("seq")))]


def test_entries_link_into_a_chain_that_verifies(chain):
    entries = rows(chain)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0]["prev_hash"] == ledger.GENESIS
    for before, after in zip(entries, entries[1:]):
        assert after["prev_hash"] == before["hash"]
    result = verify(chain)
    assert result["ok"] and result["entries"] == 6 and result["head_seq"] == 6
    assert result["head_hash"] == entries[-1]["hash"] and result["first_bad_seq"] is None


def test_the_database_refuses_updates_and_deletes(chain):
    for sql in ("UPDATE consent_ledger SET action = 'revoked' WHERE seq = 1", "DELETE FROM consent_ledger WHERE seq = 6"):
        with pytest.raises(DBAPIError):
            raw(chain, sql)
    assert verify(chain)["ok"]


@pytest.mark.parametrize("sql", [
    "UPDATE consent_ledger SET action = 'granted' WHERE seq = 3",
    "UPDATE consent_ledger SET occurred_at = occurred_at + INTERVAL '1 day' WHERE seq = 3",
    "UPDATE consent_ledger SET subject_id = (SELECT subject_id FROM consent_ledger WHERE seq = 2) WHERE seq = 3",
    "UPDATE consent_ledger SET notice_version = 'aviso-forjado' WHERE seq = 3",
], ids=["action", "time", "subject", "notice"])
def test_an_edited_entry_is_named(chain, sql):
    drop_guard(chain)
    if chain.engine.dialect.name == "sqlite":
        sql = sql.replace("occurred_at + INTERVAL '1 day'", "datetime(occurred_at, '+1 day')")
    raw(chain, sql)
    result = verify(chain)
    assert not result["ok"]
    assert result["first_bad_seq"] == 3 and result["reason"] == "hash_mismatch"
    # The same is found with no keyring at all (anyone can check hashes).
    assert verify(chain, use_keyring=False)["first_bad_seq"] == 3


def test_an_edited_entry_with_a_recomputed_hash_is_named(chain):
    drop_guard(chain)
    target = rows(chain)[2]
    target["action"] = "granted"
    forged = ledger.entry_hash(types.SimpleNamespace(**target))
    raw(chain, "UPDATE consent_ledger SET action = 'granted', hash = :h WHERE seq = 3", h=forged)
    result = verify(chain)
    assert (result["first_bad_seq"], result["reason"]) == (3, "mac_invalid")
    # Without the keyring the broken link to entry 4 still shows.
    assert verify(chain, use_keyring=False)["first_bad_seq"] == 4


def test_a_deleted_entry_is_named(chain):
    drop_guard(chain)
    raw(chain, "DELETE FROM consent_ledger WHERE seq = 4")
    result = verify(chain)
    assert (result["first_bad_seq"], result["reason"]) == (4, "missing")


def test_a_deleted_tail_is_caught_by_the_head_row(chain):
    drop_guard(chain)
    raw(chain, "DELETE FROM consent_ledger WHERE seq = 6")
    result = verify(chain)
    assert (result["first_bad_seq"], result["reason"]) == (6, "head_mismatch")


def _insert(rt, row: dict) -> None:
    with rt.engine.begin() as conn:
        conn.execute(insert(LedgerEntry.__table__).values(**row))


def test_an_inserted_forged_entry_is_named(chain):
    """A forged grant slipped in as entry 3, later entries renumbered, with a
    correct link and hash: only the MAC (keyed) can tell, and it does."""
    drop_guard(chain)
    original = rows(chain)
    for seq in range(6, 2, -1):  # make room for a new entry 3
        raw(chain, "UPDATE consent_ledger SET seq = :n WHERE seq = :o", n=seq + 1, o=seq)
    forged = dict(original[2], seq=3, id="99999999-9999-9999-9999-999999999999", action="granted",
                  prev_hash=original[1]["hash"], origin_key=None)
    forged["hash"] = ledger.entry_hash(types.SimpleNamespace(**forged))
    forged["mac"] = "0" * 64
    _insert(chain, forged)
    result = verify(chain)
    assert (result["first_bad_seq"], result["reason"]) == (3, "mac_invalid")
    assert verify(chain, use_keyring=False)["first_bad_seq"] == 4  # renumbered entry: link and hash break


def test_a_forged_entry_appended_at_the_tail_is_named(chain):
    drop_guard(chain)
    last = rows(chain)[-1]
    forged = dict(last, seq=7, id="99999999-9999-9999-9999-999999999999", action="revoked",
                  prev_hash=last["hash"], origin_key=None)
    forged["hash"] = ledger.entry_hash(types.SimpleNamespace(**forged))
    forged["mac"] = last["mac"]
    _insert(chain, forged)
    raw(chain, "UPDATE consent_ledger_head SET seq = 7, hash = :h", h=forged["hash"])
    result = verify(chain)
    assert (result["first_bad_seq"], result["reason"]) == (7, "mac_invalid")


def test_two_reordered_entries_are_named(chain):
    drop_guard(chain)
    raw(chain, "UPDATE consent_ledger SET seq = -1 WHERE seq = 2")
    raw(chain, "UPDATE consent_ledger SET seq = 2 WHERE seq = 5")
    raw(chain, "UPDATE consent_ledger SET seq = 5 WHERE seq = -1")
    result = verify(chain)
    assert result["first_bad_seq"] == 2 and not result["ok"]
    assert verify(chain, use_keyring=False)["first_bad_seq"] == 2


def _rewrite_whole_chain(rt) -> None:
    """A DBA turns entry 5's revocation into a grant and recomputes every hash
    after it, and the head row: the chain is internally consistent again."""
    entries = rows(rt)
    prev = ledger.GENESIS
    for e in entries:
        if e["seq"] == 5:
            e["action"] = "granted"
        e["prev_hash"] = prev
        e["hash"] = ledger.entry_hash(types.SimpleNamespace(**e))
        prev = e["hash"]
    drop_guard(rt)
    for e in entries:
        raw(rt, "UPDATE consent_ledger SET action = :a, prev_hash = :p, hash = :h WHERE seq = :s",
            a=e["action"], p=e["prev_hash"], h=e["hash"], s=e["seq"])
    raw(rt, "UPDATE consent_ledger_head SET hash = :h", h=prev)


def test_a_rewritten_chain_is_caught_by_a_signed_checkpoint(chain):
    with chain.session() as session:
        cp = ledger.checkpoint(session, chain.keyring)
    assert cp["seq"] == 6 and verify(chain, checkpoint=cp)["checkpoint"]["matched"]
    _rewrite_whole_chain(chain)
    # Hashes alone no longer show anything: the rewrite is self-consistent...
    assert verify(chain, use_keyring=False)["ok"]
    # ...but the checkpoint, signed outside the database, does not match.
    result = verify(chain, use_keyring=False, checkpoint=cp)
    assert not result["ok"] and result["reason"] == "checkpoint_mismatch" and result["first_bad_seq"] == 6
    # With the keyring, the MACs catch the first rewritten entry too.
    assert (verify(chain)["first_bad_seq"], verify(chain)["reason"]) == (5, "mac_invalid")


def test_a_chain_shortened_below_a_checkpoint_is_caught(chain):
    with chain.session() as session:
        cp = ledger.checkpoint(session, chain.keyring)
    drop_guard(chain)
    raw(chain, "DELETE FROM consent_ledger WHERE seq >= 5")
    entries = rows(chain)
    raw(chain, "UPDATE consent_ledger_head SET seq = 4, hash = :h", h=entries[-1]["hash"])
    result = verify(chain, use_keyring=False, checkpoint=cp)
    assert (result["first_bad_seq"], result["reason"]) == (5, "checkpoint_beyond_head")


def test_checkpoints_are_signed_jws_and_forgeries_are_refused(chain):
    with chain.session() as session:
        cp = ledger.checkpoint(session, chain.keyring)
    payload = signing.verify_jws(cp["jws"], cp["public_key"])
    assert payload == {k: cp[k] for k in ("format", "seq", "head_hash", "timestamp")}
    # Changing the clear copy changes nothing: verify reads the signed payload.
    assert verify(chain, checkpoint=dict(cp, seq=2))["checkpoint"]["seq"] == 6
    header, body, sig = cp["jws"].split(".")
    forged_body = signing.b64url(signing.canonical(dict(payload, seq=2)))
    with pytest.raises(signing.SignatureError):
        verify(chain, checkpoint=dict(cp, jws=f"{header}.{forged_body}.{sig}"))
    other = Keyring.generate()
    foreign = {**cp, "public_key": signing.public_key_b64(other),
               "jws": signing.sign_jws(other, payload, "cdp-ledger-checkpoint")}
    with pytest.raises(signing.SignatureError, match="not signed by this ledger"):
        verify(chain, checkpoint=foreign)
    assert verify(chain, use_keyring=False, checkpoint=foreign)["ok"]  # a valid signature, just not ours


def test_no_checkpoint_is_signed_over_a_broken_chain(chain):
    drop_guard(chain)
    raw(chain, "UPDATE consent_ledger SET action = 'granted' WHERE seq = 5")
    with chain.session() as session, pytest.raises(ledger.LedgerError, match="entry 5"):
        ledger.checkpoint(session, chain.keyring)


def test_personal_evidence_is_ciphertext_and_shredding_keeps_the_chain(crt, make_profiles):
    (pid,) = make_profiles(crt)
    grant(crt, pid, evidence={"ip": "198.51.100.77", "user_agent": "AgenteSecreto/1.0", "text": "Quero receber"})
    blob = b"".join(repr(r).encode() for r in rows(crt))
    for needle in (b"198.51.100.77", b"AgenteSecreto", b"Quero receber"):
        assert needle not in blob
    with crt.session() as session:
        (event,) = ledger.history(session, crt.keys(session), pid)
    assert event["evidence"]["ip"] == "198.51.100.77" and event["evidence_status"] == "available"
    assert event["channel"] == "web_form" and event["notice_version"] == "aviso-2026-01"

    with crt.session() as session:
        assert ledger.shred_subject(session, crt.keys(session), pid) == 1
    with crt.session() as session:
        (event,) = ledger.history(session, crt.keys(session), pid)
    assert event["evidence"] is None and event["evidence_status"] == "shredded"
    assert event["action"] == "granted"  # the fact of consent stays provable
    assert verify(crt)["ok"]
    # New evidence after shredding gets a new key and reads again.
    grant(crt, pid, action="revoked", evidence={"ip": "203.0.113.9"})
    with crt.session() as session:
        events = ledger.history(session, crt.keys(session), pid)
    assert [e["evidence_status"] for e in events] == ["shredded", "available"]
    assert verify(crt)["ok"]


def test_rebuild_recomputes_the_same_states(chain):
    def snapshot():
        with chain.session() as session:
            return sorted((s.subject_id, s.purpose, s.action, s.seq) for s in session.scalars(select(ConsentState)))

    before = snapshot()
    assert len(before) == 5
    raw(chain, "DELETE FROM consent_states")
    assert snapshot() == []
    with chain.session() as session:
        assert ledger.rebuild_states(session) == 5
    assert snapshot() == before


def test_concurrent_appends_are_serialized_and_never_fork(crt, make_profiles):
    """Appends from several threads at once: the head-row lock gives them
    consecutive numbers and one unbroken chain."""
    from concurrent.futures import ThreadPoolExecutor

    pids = make_profiles(crt, 12)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda pid: grant(crt, pid), pids))
    entries = rows(crt)
    assert [e["seq"] for e in entries] == list(range(1, 13))
    assert {e["subject_id"] for e in entries} == set(pids)
    assert verify(crt)["ok"]
    assert allowed(crt, pids) == set(pids)
