"""Tests for the synthetic demo data set (cdp.demo.dataset)."""
from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from stdnum.br import cpf as stdnum_cpf

from cdp.demo.dataset import REFERENCE, cpf_is_valid, generate

PEOPLE = 400
FORMATTED_CPF = re.compile(r"^\d{3}\.\d{3}\.\d{3}-\d{2}$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("demo"), people=PEOPLE, seed=7)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _by_name(dataset, name: str) -> Path:
    return dataset.directory / name


def _truth(dataset) -> dict[tuple[str, str], str]:
    return {(r["source"], r["external_id"]): r["entity_id"] for r in _csv(dataset.truth_path)}


def _all_records(dataset) -> list[tuple[str, str]]:
    """(source, external_id) of every record in every data file, read the way ingestion would."""
    keys = []
    for data, mapping in dataset.files:
        if mapping is None:
            keys += [(r["source"], r["external_id"]) for r in _jsonl(data)]
        else:
            spec = yaml.safe_load(mapping.read_text(encoding="utf-8"))
            keys += [(spec["source"], row[spec["external_id"]]) for row in _csv(data)]
    return keys


def _mapping_columns(value) -> list[str]:
    """Columns a mapping value refers to: "col", {column: c}, {columns: [...]}."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict) and "column" in value:
        return [value["column"]]
    if isinstance(value, dict) and "columns" in value:
        return list(value["columns"])
    if isinstance(value, dict):
        return [c for v in value.values() for c in _mapping_columns(v)]
    return []


# ---------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path):
    a = generate(tmp_path / "a", people=150, seed=3)
    b = generate(tmp_path / "b", people=150, seed=3)
    names_a = sorted(p.name for p in a.directory.iterdir())
    assert names_a == sorted(p.name for p in b.directory.iterdir())
    for name in names_a:
        assert (a.directory / name).read_bytes() == (b.directory / name).read_bytes(), name
    assert a.known_pii == b.known_pii


def test_different_seed_gives_different_data(tmp_path):
    a = generate(tmp_path / "a", people=150, seed=3)
    b = generate(tmp_path / "b", people=150, seed=4)
    assert (a.directory / "loja_pedidos.jsonl").read_bytes() != (b.directory / "loja_pedidos.jsonl").read_bytes()


def test_files_in_ingestion_order_and_existing(dataset):
    names = [(d.name, m.name if m else None) for d, m in dataset.files]
    assert names == [("erp_clientes.csv", "erp_clientes.yml"), ("loja_pedidos.jsonl", None),
                     ("reclame_aqui.jsonl", None), ("formularios.jsonl", None),
                     ("pesquisa_nps.csv", "pesquisa_nps.yml")]
    for data, mapping in dataset.files:
        assert data.stat().st_size > 0
        assert mapping is None or mapping.stat().st_size > 0


def test_jsonl_lines_follow_record_model(dataset):
    earliest = REFERENCE - timedelta(days=731)
    for data, mapping in dataset.files:
        if mapping is not None:
            continue
        records = _jsonl(data)
        assert records, data.name
        for rec in records:
            assert rec["source"] and rec["external_id"]
            observed = datetime.fromisoformat(rec["observed_at"])
            assert earliest <= observed <= REFERENCE
            for section in ("identifiers", "traits"):
                assert None not in rec.get(section, {}).values(), rec
            assert rec["identifiers"], rec
            for event in rec["events"]:
                assert earliest <= datetime.fromisoformat(event["occurred_at"]) <= REFERENCE


def test_sources_use_expected_names(dataset):
    assert set(Counter(src for src, _ in _all_records(dataset))) == {
        "erp_clientes", "loja_virtual", "reclame_aqui", "formularios", "pesquisa_nps"}


def test_mappings_refer_to_existing_columns(dataset):
    for data, mapping in dataset.files:
        if mapping is None:
            continue
        spec = yaml.safe_load(mapping.read_text(encoding="utf-8"))
        header = set(_csv(data)[0])
        referenced = [spec["external_id"], *_mapping_columns(spec.get("observed_at")),
                      *_mapping_columns(spec["identifiers"]), *_mapping_columns(spec.get("traits", {}))]
        for event in spec.get("events", []):
            referenced += [event["id"], *_mapping_columns(event["occurred_at"]),
                           *_mapping_columns(event["attributes"])]
        missing = [c for c in referenced if c not in header]
        assert not missing, (mapping.name, missing)


def test_external_ids_unique_per_source(dataset):
    counts = Counter(_all_records(dataset))
    assert [k for k, n in counts.items() if n > 1] == []


def test_truth_covers_every_record(dataset):
    truth = _truth(dataset)
    records = _all_records(dataset)
    assert set(records) == set(truth)
    assert dataset.records == len(records) == len(truth)
    assert dataset.people == len(set(truth.values())) == PEOPLE


def test_people_appear_in_several_sources(dataset):
    sources = defaultdict(set)
    for (source, _), entity in _truth(dataset).items():
        sources[entity].add(source)
    multi = sum(len(s) >= 2 for s in sources.values())
    assert multi / len(sources) > 0.5
    form_only = [e for e, s in sources.items() if s == {"formularios"}]
    assert len(form_only) >= PEOPLE // 15  # leads who never bought


def test_source_shares_roughly_as_specified(dataset):
    per_source = defaultdict(set)
    for (source, _), entity in _truth(dataset).items():
        per_source[source].add(entity)
    share = {s: len(e) / PEOPLE for s, e in per_source.items()}
    assert 0.55 < share["erp_clientes"] < 0.8
    assert 0.45 < share["loja_virtual"] < 0.7
    assert 0.03 < share["reclame_aqui"] < 0.14
    assert len(_jsonl(_by_name(dataset, "loja_pedidos.jsonl"))) > len(per_source["loja_virtual"])


def test_erp_cpf_formats_vary_and_some_are_invalid(dataset):
    cpfs = [r["A1_CGC"] for r in _csv(_by_name(dataset, "erp_clientes.csv"))]
    formatted = [c for c in cpfs if FORMATTED_CPF.match(c)]
    plain = [c for c in cpfs if c.isdigit() and len(c) == 11]
    assert formatted and plain
    assert "" in cpfs  # missing
    invalid = [c for c in cpfs if c and not stdnum_cpf.is_valid(c.replace(".", "").replace("-", "").zfill(11))]
    assert 0 < len(invalid) < 0.08 * len(cpfs)


def test_own_cpf_check_agrees_with_stdnum(dataset):
    for rec in _jsonl(_by_name(dataset, "loja_pedidos.jsonl"))[:200]:
        digits = re.sub(r"\D", "", rec["identifiers"]["cpf"])
        assert cpf_is_valid(digits) and stdnum_cpf.is_valid(digits)
    assert not cpf_is_valid("12345678900") and not stdnum_cpf.is_valid("12345678900")


def test_erp_phone_and_cep_variants(dataset):
    rows = _csv(_by_name(dataset, "erp_clientes.csv"))
    tel_digits = [re.sub(r"\D", "", r["A1_TEL"]) for r in rows if r["A1_TEL"]]
    assert any(len(t) == 9 for t in tel_digits)
    assert any(len(t) == 8 and t[0] in "6789" for t in tel_digits)  # mobile without the ninth digit
    assert any("-" in r["A1_TEL"] for r in rows) and any(r["A1_TEL"].isdigit() for r in rows)
    assert any(r["A1_DDD"].startswith("0") for r in rows)
    ceps = [r["A1_CEP"] for r in rows]
    assert any(re.fullmatch(r"\d{5}-\d{3}", c) for c in ceps)
    assert any(re.fullmatch(r"\d{7}", c) for c in ceps)  # leading zero lost
    assert all(re.fullmatch(r"\d{8}", r["A1_DTNASC"]) for r in rows if r["A1_DTNASC"])


def test_names_are_brazilian_and_vary_by_source(dataset):
    erp_names = [r["A1_NOME"] for r in _csv(_by_name(dataset, "erp_clientes.csv"))]
    assert any(n.isupper() and n.isascii() for n in erp_names)  # legacy rows
    assert any(not n.isupper() for n in erp_names)
    loja = _jsonl(_by_name(dataset, "loja_pedidos.jsonl"))
    firsts = [r["traits"]["first_name"] for r in loja]
    lasts = [r["traits"]["last_name"] for r in loja]
    assert any(" " in f for f in firsts)  # compound given names
    assert any(re.search(r"\b(da|de|do|das|dos) ", last) for last in lasts)
    assert any(re.search(r"[áéíóúâêôãõç]", f.lower()) for f in firsts)


def _one_typo_apart(a: str, b: str) -> bool:
    """b is a with one letter dropped or two adjacent letters swapped (or vice versa)."""
    if len(a) < len(b):
        a, b = b, a
    if len(a) == len(b) + 1:
        return any(a[:i] + a[i + 1:] == b for i in range(len(a)))
    if len(a) == len(b) and a != b:
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    return False


def test_some_names_have_typos_across_sources(dataset):
    truth = _truth(dataset)
    tokens = defaultdict(lambda: defaultdict(set))  # entity -> source -> name words
    for r in _csv(_by_name(dataset, "erp_clientes.csv")):
        tokens[truth[("erp_clientes", r["A1_COD"])]]["erp"].update(r["A1_NOME"].split())
    for r in _jsonl(_by_name(dataset, "loja_pedidos.jsonl")):
        words = f"{r['traits']['first_name']} {r['traits']['last_name']}".split()
        tokens[truth[("loja_virtual", r["external_id"])]]["loja"].update(words)

    def norm(word):
        return unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode().upper()

    with_typo = [
        entity for entity, by_source in tokens.items() if len(by_source) == 2
        if any(_one_typo_apart(norm(a), norm(b)) for a in by_source["erp"] for b in by_source["loja"])
    ]
    both = sum(len(s) == 2 for s in tokens.values())
    assert 0 < len(with_typo) < 0.2 * both


def test_emails_differ_across_sources_for_some_people(dataset):
    truth = _truth(dataset)
    erp_email, loja_email = {}, {}
    for r in _csv(_by_name(dataset, "erp_clientes.csv")):
        if r["A1_EMAIL"]:
            erp_email[truth[("erp_clientes", r["A1_COD"])]] = r["A1_EMAIL"].lower()
    for r in _jsonl(_by_name(dataset, "loja_pedidos.jsonl")):
        email = r["identifiers"]["email"]
        loja_email[truth[("loja_virtual", r["external_id"])]] = email if isinstance(email, str) else email[0]
    both = [e for e in erp_email if e in loja_email]
    differing = [e for e in both if erp_email[e] != loja_email[e]]
    assert 0.1 < len(differing) / len(both) < 0.45


def test_form_emails_have_caps_and_spaces(dataset):
    emails = [r["identifiers"]["email"] for r in _jsonl(_by_name(dataset, "formularios.jsonl"))]
    messy = [e for e in emails if e != e.strip() and e.strip().isupper()]
    assert messy and len(messy) < len(emails) / 4


def test_reclame_aqui_has_partial_identifiers_only(dataset):
    for rec in _jsonl(_by_name(dataset, "reclame_aqui.jsonl")):
        assert set(rec["identifiers"]) in ({"email"}, {"phone"})
        assert rec["traits"]["full_name"]
        attrs = rec["events"][0]["attributes"]
        assert attrs["status"] in {"nao_respondida", "respondida", "resolvida"}
        assert attrs["rating"] is None or 0 <= attrs["rating"] <= 10


def test_consents_carry_evidence(dataset):
    loja = _jsonl(_by_name(dataset, "loja_pedidos.jsonl"))
    with_consent = [r for r in loja if r.get("consents")]
    assert 0.45 < len(with_consent) / len(loja) < 0.75
    for rec in _jsonl(_by_name(dataset, "formularios.jsonl")):
        for consent in rec.get("consents", []):
            assert consent["legal_basis"] == "consent" and consent["status"] == "granted"
            assert consent["evidence"]["channel"] == "web_form"
            assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", consent["evidence"]["ip"])


def test_nps_csv_values(dataset):
    rows = _csv(_by_name(dataset, "pesquisa_nps.csv"))
    assert rows
    for r in rows:
        assert 0 <= int(r["nps"]) <= 10
        assert r["csat"] == "" or 1 <= int(r["csat"]) <= 5
        datetime.strptime(r["data"], "%d/%m/%Y")
    assert any(r["csat"] == "" for r in rows) and any(r["ces"] == "" for r in rows)


def test_relatives_share_contact_but_not_cpf(dataset):
    """The trap: two people with the same e-mail or phone, the same surname
    and two different valid CPFs."""
    truth = _truth(dataset)
    contacts = defaultdict(set)  # normalised contact -> entities
    cpfs = defaultdict(set)  # entity -> valid CPFs seen
    surnames = {}
    for r in _jsonl(_by_name(dataset, "loja_pedidos.jsonl")):
        entity = truth[("loja_virtual", r["external_id"])]
        ids = r["identifiers"]
        emails = [ids["email"]] if isinstance(ids["email"], str) else ids["email"]
        for email in emails:
            contacts["email:" + email.strip().lower()].add(entity)
        contacts["phone:" + re.sub(r"\D", "", ids["phone"])[-11:]].add(entity)
        digits = re.sub(r"\D", "", ids["cpf"])
        if stdnum_cpf.is_valid(digits):
            cpfs[entity].add(digits)
        surnames[entity] = r["traits"]["last_name"].split()[-1].lower()
    pairs = [sorted(entities) for entities in contacts.values() if len(entities) == 2]
    trap_pairs = [(a, b) for a, b in pairs if cpfs[a] and cpfs[b] and cpfs[a].isdisjoint(cpfs[b])]
    assert len(trap_pairs) >= 2
    assert any(surnames[a] == surnames[b] for a, b in trap_pairs)
    assert len(trap_pairs) < 0.05 * PEOPLE  # a trap, not the norm


def test_known_pii_lists_what_was_written(dataset):
    pii = dataset.known_pii
    assert set(pii) == {"names", "emails", "phones", "cpfs"}
    assert all(pii.values())
    corpus = "\n".join(d.read_text(encoding="utf-8") for d, _ in dataset.files).lower()
    missing = [e for e in pii["emails"] if e.lower() not in corpus]
    assert missing == []
    # canonical forms are there too
    loja = _jsonl(_by_name(dataset, "loja_pedidos.jsonl"))
    for rec in loja[:100]:
        cpf = rec["identifiers"]["cpf"]
        assert cpf in pii["cpfs"] and re.sub(r"\D", "", cpf) in pii["cpfs"]
        assert rec["identifiers"]["phone"] in pii["phones"]
        e164 = "+55" + re.sub(r"\D", "", rec["identifiers"]["phone"])[-11:]
        assert e164 in pii["phones"]
    erp = _csv(_by_name(dataset, "erp_clientes.csv"))
    assert all(r["A1_NOME"] in pii["names"] for r in erp)
    assert all(r["A1_CGC"] in pii["cpfs"] for r in erp if r["A1_CGC"])
    assert any(e.startswith(" ") for e in pii["emails"])  # raw form of messy input kept


def test_rejects_too_few_people(tmp_path):
    with pytest.raises(ValueError):
        generate(tmp_path, people=2)
