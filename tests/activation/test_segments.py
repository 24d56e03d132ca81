"""Segment rules compiled to SQL, checked against the hand-computed base
(tests/activation/fixtures.py, NOW = 2026-07-01), and membership history."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from activation.metrics import refresh_all
from activation.models import SegmentMember
from activation.segments import SegmentError, create_segment, preview, refresh_members, update_segment
from tests.activation.fixtures import NOW, load_people


@pytest.fixture
def seg_base(any_runtime):
    people = load_people(any_runtime)
    refresh_all(any_runtime, churn_days=180, now=NOW)
    return any_runtime, people


def _names(rt, people, rules) -> set[str]:
    by_id = {v: k for k, v in people.items()}
    with rt.session() as s:
        out = preview(s, rules, sample=100, now=NOW)
    assert out["count"] == len(out["sample"])
    return {by_id[i] for i in out["sample"]}


@pytest.mark.parametrize("rules,expected", [
    # at least 2 purchases in the last 365 days (since 2025-07-01): p1 3, p4 5, p5 4; p2 and p3 have 1
    ({"event": "purchase", "within_days": 365, "count": {"op": "gte", "value": 2}}, {"p1", "p4", "p5"}),
    # a complaint not resolved: p3 (1 of 2 resolved), p5 (answered, not resolved); p6's was resolved
    ({"metric": "complaints_unresolved", "op": "gt", "value": 0}, {"p3", "p5"}),
    # not churned (p1, p2, p4) and not detractor/neutral (drops p2)
    ({"all": [{"metric": "churned", "op": "eq", "value": False},
              {"not": {"metric": "nps_class", "op": "in", "value": ["detractor", "neutral"]}}]}, {"p1", "p4"}),
    # LTV between 20 and 300: p1 231.12, p3 77.04 (p2 19.26, p5 15.41, p4 385.21 out)
    ({"metric": "ltv", "op": "between", "value": [20, 300]}, {"p1", "p3"}),
    # no NPS answer: p5 only
    ({"metric": "nps_score", "op": "exists", "value": False}, {"p5"}),
    # ≠ promoter includes profiles without a score: p2 neutral, p3 detractor, p5 none
    ({"metric": "nps_class", "op": "ne", "value": "promoter"}, {"p2", "p3", "p5"}),
    # M = 5 (p4) or bought in the last 10 days (p2)
    ({"any": [{"metric": "m_score", "op": "gte", "value": 5}, {"metric": "recency_days", "op": "lte", "value": 10}]},
     {"p4", "p2"}),
    # a purchase above R$ 250: p1 (300)
    ({"event": "purchase", "amount": {"op": "gt", "value": 250}}, {"p1"}),
    # never complained: NOT (at least one complaint event)
    ({"not": {"event": "complaint"}}, {"p1", "p2", "p4"}),
])
def test_rules_select_the_hand_computed_profiles(seg_base, rules, expected):
    rt, people = seg_base
    assert _names(rt, people, rules) == expected


@pytest.mark.parametrize("rules,field", [
    ({"metric": "cpf", "op": "eq", "value": "1"}, "rules.metric"),
    ({"all": [{"metric": "churned", "op": "lt", "value": 1}]}, "rules.all.0.op"),
    ({"all": [{"metric": "ltv", "op": "between", "value": [300, 20]}]}, "rules.all.0.value"),
    ({"any": []}, "rules.any"),
    ({"event": "Compra!"}, "rules.event"),
    ({"event": "purchase", "where": {"status": "x"}}, "rules.where"),
    ([], "rules"),
])
def test_bad_rules_name_the_field(runtime, rules, field):
    with runtime.session() as s, pytest.raises(SegmentError) as err:
        create_segment(s, "x", rules)
    assert err.value.field == field


def test_membership_history_and_versions(seg_base):
    rt, people = seg_base
    by_id = {v: k for k, v in people.items()}
    with rt.session() as s:
        seg = create_segment(s, "reclamacoes-abertas", {"metric": "complaints_unresolved", "op": "gt", "value": 0})
        assert refresh_members(s, seg, now=NOW) == {"entered": 2, "exited": 0}
        assert refresh_members(s, seg, now=NOW) == {"entered": 0, "exited": 0}  # idempotent
        # New rules (R score 4-5: p1, p2) = version 2; p3 and p5 exit, p1 and p2 enter
        update_segment(s, seg, rules={"metric": "r_score", "op": "gte", "value": 4})
        assert seg.version == 2
        update_segment(s, seg, rules={"metric": "r_score", "op": "gte", "value": 4})
        assert seg.version == 2  # the same rules are not a new version
        assert refresh_members(s, seg, now=NOW) == {"entered": 2, "exited": 2}
        rows = s.scalars(select(SegmentMember).where(SegmentMember.segment_id == seg.id)).all()
        current = {by_id[r.profile_id] for r in rows if r.exited_at is None}
        gone = {by_id[r.profile_id] for r in rows if r.exited_at is not None}
        assert (current, gone) == ({"p1", "p2"}, {"p3", "p5"})
        assert {r.version for r in rows if r.exited_at is None} == {2}
        with pytest.raises(SegmentError, match="name"):
            create_segment(s, "reclamacoes-abertas", {"metric": "complaints", "op": "gt", "value": 0})
