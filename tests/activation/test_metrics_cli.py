"""`cdp metrics` as a user runs it (a real subprocess)."""
import json

from tests.factories import record
from tests.test_cli import instance, run_cdp, write_jsonl  # noqa: F401 - the instance fixture


def test_metrics_refresh_company_and_show(instance, tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", [
        record(external_id="a", source="loja", email="a@exemplo.com.br",
               events=[{"type": "purchase", "occurred_at": "2026-01-01T00:00:00Z", "amount": "10.00"},
                       {"type": "purchase", "occurred_at": "2026-01-11T00:00:00Z", "amount": "30.00"}]),
        record(external_id="b", source="loja", email="b@exemplo.com.br",
               events=[{"type": "survey_response", "occurred_at": "2026-01-01T00:00:00Z",
                        "attributes": {"nps": 4}}]),
    ])
    run_cdp(instance, "ingest", "jsonl", str(src))
    out = run_cdp(instance, "metrics", "refresh", "--batch-size", "1")
    assert json.loads(out.stdout) == {"profiles": 2}
    company = json.loads(run_cdp(instance, "metrics", "company", "--from", "2026-01-05", "--to", "2026-02-01",
                                 "--churn-days", "30").stdout)
    # one detractor of one respondent: NPS = 0 - 100 = -100
    assert company["nps"] == -100.0
    # active at 2026-01-05 (a purchase in the 30 days before): a; bought again on 01-11: retention 100 %
    assert company["period"]["retention_rate"] == 100.0
    links = run_cdp(instance, "links").stdout.splitlines()[1:]
    pid = next(line.split(",")[2] for line in links if ",a," in f",{line.split(',')[1]},")
    shown = json.loads(run_cdp(instance, "metrics", "show", pid).stdout)
    # 10 + 30 = 40 over 2 purchases: AOV 20; 10 days between them
    assert (shown["purchase_count"], shown["monetary_total"], shown["average_order_value"],
            shown["lifetime_days"]) == (2, "40.00", "20.00", 10)


def test_metrics_bad_input_exits_2(instance):
    bad = run_cdp(instance, "metrics", "company", "--from", "ontem", "--to", "2026-01-01", check=False)
    assert bad.returncode == 2 and "--from" in bad.stderr
    missing = run_cdp(instance, "metrics", "show", "nope", check=False)
    assert missing.returncode == 2 and "no metrics" in missing.stderr
    env = run_cdp(instance, "metrics", "refresh", env={"CDP_CHURN_DAYS": "x"}, check=False)
    assert env.returncode == 2 and "CDP_CHURN_DAYS" in env.stderr


def test_segments_cli(instance, tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", [
        record(external_id="a", source="loja", email="a@exemplo.com.br",
               events=[{"type": "complaint", "occurred_at": "2026-01-01T00:00:00Z",
                        "attributes": {"status": "nao_respondida"}}]),
        record(external_id="b", source="loja", email="b@exemplo.com.br"),
    ])
    run_cdp(instance, "ingest", "jsonl", str(src))
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"metric": "complaints_unresolved", "op": "gte", "value": 1}))
    made = json.loads(run_cdp(instance, "segments", "create", "abertas", "--rules-file", str(rules)).stdout)
    assert made["version"] == 1
    assert json.loads(run_cdp(instance, "segments", "preview", "--rules-file", str(rules)).stdout)["count"] == 1
    assert json.loads(run_cdp(instance, "segments", "refresh", str(made["id"])).stdout) == {"entered": 1, "exited": 0}
    assert json.loads(run_cdp(instance, "segments", "list").stdout)[0]["members"] == 1
    rules.write_text(json.dumps({"metric": "complaints", "op": "maior", "value": 1}))
    bad = run_cdp(instance, "segments", "create", "outro", "--rules-file", str(rules), check=False)
    assert bad.returncode == 2 and "rules.op" in bad.stderr
    assert run_cdp(instance, "segments", "refresh", "99", check=False).returncode == 2


def test_segments_access_cli(instance):
    run_cdp(instance, "purposes", "list")  # the registry exists after init
    made = run_cdp(instance, "apikey", "create", "--name", "crm", "--scopes", "segments:read").stdout
    prefix = next(part for part in made.split() if part.startswith("cdp_")).split("_")[1]
    ok = json.loads(run_cdp(instance, "segments", "access", prefix, "--purpose", "email_marketing",
                            "--fields", "email,ltv").stdout)
    assert ok == {"key": prefix, "purpose": "email_marketing", "fields": ["email", "ltv"]}
    bad = run_cdp(instance, "segments", "access", prefix, "--purpose", "email_marketing", "--fields", "senha",
                  check=False)
    assert bad.returncode == 2 and "fields" in bad.stderr


def test_segments_export_cli(instance, tmp_path):
    consent = {"purpose": "email_marketing", "status": "granted", "legal_basis": "consent",
               "evidence": {"channel": "web_form", "notice_version": "aviso-2026-01"}}
    src = write_jsonl(tmp_path / "r.jsonl", [
        record(external_id="a", source="loja", email="a@exemplo.com.br", consents=[consent]),
        record(external_id="b", source="loja", email="b@exemplo.com.br"),  # no consent: never exported
    ])
    run_cdp(instance, "ingest", "jsonl", str(src))
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"metric": "purchase_count", "op": "eq", "value": 0}))
    sid = json.loads(run_cdp(instance, "segments", "create", "todos", "--rules-file", str(rules)).stdout)["id"]
    run_cdp(instance, "segments", "refresh", str(sid))
    out = tmp_path / "saida.jsonl"
    done = json.loads(run_cdp(instance, "segments", "export", str(sid), "--out", str(out), "--format", "jsonl",
                              "--purpose", "email_marketing", "--fields", "email").stdout)
    assert done["exported"] == 1
    assert [json.loads(line)["email"] for line in out.read_text().splitlines()] == ["a@exemplo.com.br"]
    bad = run_cdp(instance, "segments", "export", str(sid), "--out", str(out), "--purpose", "email_marketing",
                  "--fields", "senha", check=False)
    assert bad.returncode == 2 and "fields" in bad.stderr
