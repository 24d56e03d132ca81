import csv

import pytest

from cdp.cli import ingest_connector
from cdp.connectors import ConnectorError
from plugins.file_source import FileSource, apply_mapping, load_mapping

ERP_MAPPING = """
source: erp_customers
external_id: customer_code
identifiers:
  cpf: documento
  email: email
  phone: celular
  custom:
    national_id: {column: soc_sec_id, match: fuzzy}
traits:
  first_name: nome
  last_name: sobrenome
  birth_date: {column: nascimento, format: "%Y%m%d"}
  street: endereco
  street_number: numero
  postal_code: cep
  city: cidade
  state: uf
"""

HEADER = ["customer_code", "documento", "email", "celular", "soc_sec_id", "nome", "sobrenome", "nascimento",
          "endereco", "numero", "cep", "cidade", "uf"]


def write(tmp_path, rows, mapping=ERP_MAPPING, delimiter=","):
    data = tmp_path / "clientes.csv"
    with open(data, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(HEADER)
        writer.writerows(rows)
    mp = tmp_path / "map.yml"
    mp.write_text(mapping, encoding="utf-8")
    return data, mp


ROW = ["C001", "529.982.247-25", "ANA@EXAMPLE.COM", "(11) 98765-4321", "123-45-6789", "Ana", "da Silva",
       "19900517", "Rua Augusta", "100", "01310-100", "São Paulo", "sp"]


def test_issue_mapping_shape_maps_every_field(tmp_path):
    data, mp = write(tmp_path, [ROW])
    rec = next(FileSource({"path": str(data), "mapping": str(mp)}).read()).records[0]
    assert rec["source"] == "erp_customers" and rec["external_id"] == "C001"
    assert rec["identifiers"]["cpf"] == "529.982.247-25"
    assert rec["identifiers"]["email"] == ["ANA@EXAMPLE.COM"]
    assert rec["identifiers"]["custom"] == {"national_id": {"value": "123-45-6789", "match": "fuzzy"}}
    assert rec["traits"]["birth_date"] == "1990-05-17"
    assert rec["traits"]["city"] == "São Paulo"


def test_semicolon_csv_is_sniffed(tmp_path):
    data, mp = write(tmp_path, [ROW], delimiter=";")
    rec = next(FileSource({"path": str(data), "mapping": str(mp)}).read()).records[0]
    assert rec["traits"]["first_name"] == "Ana"


def test_trait_date_in_another_format_is_passed_on_for_ingestion_to_judge(tmp_path):
    bad = list(ROW)
    bad[7] = "17/05/1990"
    data, mp = write(tmp_path, [ROW, bad])
    batch = next(FileSource({"path": str(data), "mapping": str(mp)}).read())
    assert [r["traits"]["birth_date"] for r in batch.records] == ["1990-05-17", "17/05/1990"]


def test_event_date_in_wrong_format_is_reported_by_row_and_field():
    mapping = load_mapping_text("""
source: pesquisa
external_id: id
identifiers: {email: email}
events:
  - type: nps_response
    occurred_at: {column: data, format: "%d/%m/%Y"}
""")
    from plugins.file_source import RowError

    with pytest.raises(RowError) as err:
        apply_mapping(mapping, {"id": "1", "email": "a@b.com", "data": "2026-03-05"})
    assert err.value.field == "events.nps_response.occurred_at"


def test_empty_cells_are_missing_values(tmp_path):
    row = list(ROW)
    row[1] = ""
    row[7] = ""
    data, mp = write(tmp_path, [row])
    rec = next(FileSource({"path": str(data), "mapping": str(mp)}).read()).records[0]
    assert "cpf" not in rec["identifiers"] and "birth_date" not in rec["traits"]


def test_mapped_column_missing_from_header_is_named(tmp_path):
    data, mp = write(tmp_path, [ROW], mapping=ERP_MAPPING.replace("cidade", "municipio"))
    with pytest.raises(ConnectorError, match="municipio"):
        FileSource({"path": str(data), "mapping": str(mp)}).check()


@pytest.mark.parametrize("bad,needle", [
    ("source: erp\nidentifiers: {email: e}\n", "external_id"),
    ("source: ERP Clientes\nexternal_id: id\nidentifiers: {email: e}\n", "source"),
    ("source: erp\nexternal_id: id\nidentifiers: {fax: f}\n", "identifiers.fax"),
    ("source: erp\nexternal_id: id\ntraits: {birth_date: {column: d, colour: x}}\n", "traits"),
    ("source: erp\nexternal_id: id\nidentifiers:\n  custom:\n    ssn: {column: s, match: maybe}\n", "identifiers.custom"),
    ("source: [unclosed\n", "not valid YAML"),
    ("- a\n- b\n", "must be a YAML mapping"),
])
def test_bad_mapping_error_names_the_key(tmp_path, bad, needle):
    mp = tmp_path / "m.yml"
    mp.write_text(bad)
    with pytest.raises(ConnectorError, match=needle.replace(".", r"\.").replace("[", r"\[")):
        load_mapping(mp)


def test_events_and_consents_from_columns():
    mapping = load_mapping_text("""
source: pesquisa
external_id: resposta_id
identifiers: {email: email}
events:
  - type: nps_response
    id: resposta_id
    occurred_at: {column: data, format: "%d/%m/%Y"}
    attributes: {nps: nps}
consents:
  - purpose: email_marketing
    status: {column: aceita, granted: [S], revoked: [N]}
""")
    rec = apply_mapping(mapping, {"resposta_id": "R1", "email": "a@b.com", "data": "05/03/2026", "nps": "9", "aceita": "S"})
    assert rec["events"] == [{"type": "nps_response", "occurred_at": "2026-03-05T00:00:00+00:00", "id": "R1",
                              "attributes": {"nps": "9"}}]
    assert rec["consents"][0]["status"] == "granted"
    rec = apply_mapping(mapping, {"resposta_id": "R2", "email": "a@b.com", "data": "", "nps": "", "aceita": "N"})
    assert "events" not in rec and rec["consents"][0]["status"] == "revoked"


def load_mapping_text(text, tmp=None):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.yml"
        p.write_text(text)
        return load_mapping(p)


def test_cursor_resumes_after_last_batch(tmp_path):
    rows = [[f"C{i:03d}"] + ROW[1:] for i in range(7)]
    data, mp = write(tmp_path, rows)
    source = FileSource({"path": str(data), "mapping": str(mp)})
    batches = list(source.read(batch_size=3))
    assert [b.cursor for b in batches] == [3, 6, 7]
    rest = list(source.read(cursor=6, batch_size=3))
    assert [r["external_id"] for b in rest for r in b.records] == ["C006"]


def test_csv_without_mapping_is_refused(tmp_path):
    data, _ = write(tmp_path, [ROW])
    with pytest.raises(ConnectorError, match="mapping"):
        FileSource({"path": str(data)})


def test_ingest_through_platform_resolves_same_person(runtime, tmp_path):
    other = ["C002", "52998224725", "ana.souza@example.com", "11987654321", "", "ANA", "DA SILVA", "", "", "", "",
             "", ""]
    data, mp = write(tmp_path, [ROW, other])
    totals = ingest_connector(runtime, FileSource({"path": str(data), "mapping": str(mp)}), quiet=True)
    assert totals["accepted"] == 2
    from cdp.links import iter_links

    assert len({p for _, _, p in iter_links(runtime)}) == 1
