"""`cdp demo` loads its data through the first-party connectors: each
source's API served on 127.0.0.1 (pulled with the normal sync: pages,
cursors, Bling's OAuth refresh) and the webhook sources posted to the app's
own endpoints; identity resolution is still scored against the truth."""
from __future__ import annotations

import json
from collections import Counter
from urllib.parse import parse_qs

import pytest
from sqlalchemy import func, select

from cdp.demo.connectors import render
from cdp.demo.dataset import generate
from cdp.models import Event, Source, SourceRecord
from cdp.sync_models import SyncRun

PULLED = {"erp_clientes": "file", "loja_vtex": "vtex", "loja_nuvemshop": "nuvemshop", "erp_bling": "bling",
          "reclame_aqui": "reclame_aqui"}
POSTED = {"rd_station": "rd_station", "newsletter_site": "html_form", "pesquisa_nps": "typeform"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    dataset = generate(tmp_path_factory.mktemp("demo"), people=150, seed=5)
    return dataset, render(dataset, seed=5)


def test_every_generated_record_is_rendered_into_some_source(rendered):
    dataset, sources = rendered
    # Pulled records are in the truth already; webhooks join it as they are delivered.
    rendered_for = Counter(sources.truth.values()) + Counter(d.entity for d in sources.deliveries)
    generated = Counter()
    with dataset.truth_path.open(encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            generated[line.strip().split(",")[2]] += 1
    assert set(rendered_for) == set(generated)  # nobody dropped, nobody invented
    assert {p.name for p in sources.pulled} == set(PULLED)
    assert {d.source for d in sources.deliveries} == set(POSTED)
    assert all(p.records > 0 for p in sources.pulled)


def test_webhook_payloads_are_what_the_senders_post(rendered):
    _, sources = rendered
    by_source = {}
    for d in sources.deliveries:
        by_source.setdefault(d.source, d)
    lead = json.loads(by_source["rd_station"].body)["leads"][0]
    assert lead["uuid"] and lead["last_conversion"]["content"]["identificador"]
    assert {b["type"] for d in sources.deliveries if d.source == "rd_station"
            for b in json.loads(d.body)["leads"][0]["legal_bases"]} == {"consent"}
    survey = json.loads(by_source["pesquisa_nps"].body)
    assert survey["event_type"] == "form_response"
    assert by_source["pesquisa_nps"].headers["Typeform-Signature"].startswith("sha256=")
    assert any(a["field"]["type"] == "nps" for a in survey["form_response"]["answers"])
    form = parse_qs(by_source["newsletter_site"].body.decode())
    assert "email" in form and by_source["newsletter_site"].headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_demo_syncs_every_connector_and_scores_against_the_truth(tmp_path, backend):
    from activation.metrics import refresh_all
    from activation.models import ProfileMetrics
    from cdp.crypto import Keyring
    from cdp.demo.run import run_demo
    from cdp.store import Runtime
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "instance", backend)
    summary = run_demo(settings, people=150, seed=5, quiet=True)

    assert set(summary.per_source) == set(PULLED) | set(POSTED)
    assert all(n > 0 for n in summary.per_source.values()), summary.per_source
    assert summary.counts["rejected"] == 0
    assert summary.score["f1"] > 0.95, summary.score
    assert any(line.startswith("sources:") for line in summary.lines())

    runtime = Runtime(settings, Keyring.load(settings))
    with runtime.session() as session:
        sources = {s.name: s for s in session.scalars(select(Source))}
        for name, type_name in {**PULLED, **POSTED}.items():
            assert sources[name].plugin == type_name and sources[name].config is not None
        for name in PULLED:  # the normal sync path: a run on record, and a cursor per stream
            runs = session.scalars(select(SyncRun).where(SyncRun.source == name)).all()
            assert [r.status for r in runs] == ["ok"], name
            assert sources[name].cursor, name
        # Bling's access token had expired: the connector renewed it and stored the rotated pair.
        assert sources["erp_bling"].config.get("expires_at")
        stored = dict(session.execute(select(SourceRecord.source, func.count()).group_by(SourceRecord.source)).all())
        events = dict(session.execute(select(Event.type, func.count()).group_by(Event.type)).all())
    for name in PULLED.keys() | POSTED.keys():
        assert stored.get(name, 0) > 0, name
    assert sum(stored.values()) == summary.counts["accepted"]
    assert events.get("purchase", 0) > 0 and events.get("complaint", 0) > 0
    assert events.get("survey_response", 0) > 0 and events.get("form_submission", 0) > 0

    refresh_all(runtime)  # NPS and CSAT have data to work on
    with runtime.session() as session:
        assert session.scalar(select(func.count()).where(ProfileMetrics.nps_score.is_not(None))) > 0
        assert session.scalar(select(func.count()).where(ProfileMetrics.csat_score.is_not(None))) > 0
