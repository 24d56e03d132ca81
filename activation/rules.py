"""The segment rule language (docs/segments.md): JSON validated by
marshmallow, compiled to one SQLAlchemy Core query over profile_metrics and
events. Nothing is evaluated row by row in Python.

    {"all": [...]} | {"any": [...]} | {"not": RULE}
    {"metric": NAME, "op": OP, "value": V}
    {"event": TYPE, "within_days": N, "count": {"op": OP, "value": N}, "amount": {"op": OP, "value": X}}
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import Boolean, DateTime, String, and_, func, not_, or_, select, true
from sqlalchemy.sql import ColumnElement, Select

from activation.models import ProfileMetrics
from cdp.models import Event, Profile, utcnow

OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "between", "exists")
COUNT_OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "between")
MAX_DEPTH = 8
MAX_NODES = 100
_pm = ProfileMetrics.__table__
_SKIP = ("profile_id", "computed_at", "holdout_bucket")


def _metric_columns() -> dict:
    cols = {c.name: c for c in _pm.columns if c.name not in _SKIP}
    # "a complaint not resolved": derived in SQL, attributes being ciphertext.
    cols["complaints_unresolved"] = (_pm.c.complaints - _pm.c.complaints_resolved).label("complaints_unresolved")
    return cols


METRICS = _metric_columns()


def _kind(name: str) -> str:
    t = METRICS[name].type
    if isinstance(t, Boolean):
        return "bool"
    if isinstance(t, String):
        return "str"
    if isinstance(t, DateTime) or getattr(t, "impl", None) is not None and isinstance(t.impl, DateTime):
        return "datetime"
    return "number"


def _scalar(kind: str, value, where: str):
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValidationError("must be true or false", where)
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ValidationError("must be a string", where)
        return value
    if kind == "datetime":
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise ValidationError("must be an ISO date or date-time", where)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError("must be a number", where)
    return value


def _operand(op: str, kind: str, value, where: str = "value"):
    if op == "exists":
        if not isinstance(value, bool):
            raise ValidationError("exists takes true or false", where)
        return value
    if op == "in":
        if not isinstance(value, list) or not value or len(value) > 1000:
            raise ValidationError("in takes a list of 1 to 1000 values", where)
        return [_scalar(kind, v, where) for v in value]
    if op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise ValidationError("between takes [low, high]", where)
        low, high = (_scalar(kind, v, where) for v in value)
        if low > high:
            raise ValidationError("between: low is greater than high", where)
        return [low, high]
    if kind in ("bool", "str") and op in ("lt", "lte", "gt", "gte"):
        raise ValidationError(f"{op} does not apply to a {kind} metric", "op")
    return _scalar(kind, value, where)


class MetricCondition(Schema):
    class Meta:
        unknown = RAISE

    metric = fields.String(required=True, validate=validate.OneOf(sorted(METRICS)))
    op = fields.String(required=True, validate=validate.OneOf(OPS))
    value = fields.Raw(required=True, allow_none=False)

    @validates_schema
    def _check(self, data, **kwargs):
        _operand(data["op"], _kind(data["metric"]), data["value"])


class Comparison(Schema):
    class Meta:
        unknown = RAISE

    op = fields.String(required=True, validate=validate.OneOf(COUNT_OPS))
    value = fields.Raw(required=True)

    @validates_schema
    def _check(self, data, **kwargs):
        _operand(data["op"], "number", data["value"])


class EventCondition(Schema):
    class Meta:
        unknown = RAISE

    event = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_]{0,63}$",
                                                                 error="must be a snake_case event type"))
    within_days = fields.Integer(validate=validate.Range(1, 36500))
    count = fields.Nested(Comparison, load_default=None)
    amount = fields.Nested(Comparison, load_default=None)


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def validate_rules(rules, where: str = "", depth: int = 0, budget: list | None = None) -> dict:
    """Check a rule tree; raises ValidationError whose keys name the path
    inside the tree (all.1.value; "_schema" for the root)."""
    budget = budget if budget is not None else [0]
    budget[0] += 1
    if budget[0] > MAX_NODES:
        raise ValidationError({where or "_schema": [f"at most {MAX_NODES} conditions"]})
    if depth > MAX_DEPTH:
        raise ValidationError({where or "_schema": [f"nested deeper than {MAX_DEPTH} levels"]})
    if not isinstance(rules, dict) or len(rules) == 0:
        raise ValidationError({where or "_schema": ["must be an object: all, any, not, metric or event"]})
    for group in ("all", "any"):
        if group in rules:
            if len(rules) != 1 or not isinstance(rules[group], list) or not rules[group]:
                raise ValidationError({_at(where, group): ["must be the only key, with a non-empty list"]})
            return {group: [validate_rules(r, _at(where, f"{group}.{i}"), depth + 1, budget)
                            for i, r in enumerate(rules[group])]}
    if "not" in rules:
        if len(rules) != 1:
            raise ValidationError({_at(where, "not"): ["must be the only key"]})
        return {"not": validate_rules(rules["not"], _at(where, "not"), depth + 1, budget)}
    schema = MetricCondition() if "metric" in rules else EventCondition() if "event" in rules else None
    if schema is None:
        raise ValidationError({where or "_schema": ["must be an object: all, any, not, metric or event"]})
    try:
        schema.load(rules)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise ValidationError({_at(where, k): v for k, v in _flat(messages).items()}) from None
    return rules


def _flat(messages: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in messages.items():
        name = f"{prefix}{key}" if key != "_schema" else prefix.rstrip(".") or "value"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, list) else [value]
    return out


class RulesField(fields.Field):
    """A marshmallow field holding a rule tree (recursive, so checked by validate_rules)."""

    def _deserialize(self, value, attr, data, **kwargs):
        return validate_rules(value)


# -- compilation ---------------------------------------------------------------------------------

def _compare(column, op: str, value) -> ColumnElement[bool]:
    if op == "exists":
        return column.is_not(None) if value else column.is_(None)
    if op == "in":
        return column.in_(value)
    if op == "between":
        return column.between(value[0], value[1])
    if op == "eq":
        return column.is_(value) if isinstance(value, bool) else column == value
    if op == "ne":
        return column.is_not(value) if isinstance(value, bool) else column != value
    return {"lt": column.__lt__, "lte": column.__le__, "gt": column.__gt__, "gte": column.__ge__}[op](value)


def compile_condition(rules: dict, now: datetime) -> ColumnElement[bool]:
    if "all" in rules:
        return and_(*(compile_condition(r, now) for r in rules["all"]))
    if "any" in rules:
        return or_(*(compile_condition(r, now) for r in rules["any"]))
    if "not" in rules:
        # NULL-safe negation: a missing metric makes its condition false, so NOT makes it true.
        return not_(func.coalesce(compile_condition(rules["not"], now), False))
    if "metric" in rules:
        kind = _kind(rules["metric"])
        value = _operand(rules["op"], kind, rules["value"])
        column = METRICS[rules["metric"]]
        if rules["op"] == "ne":  # "≠" includes profiles without the metric
            return or_(column != value, column.is_(None))
        return _compare(column, rules["op"], value)
    count = select(func.count(Event.id)).where(Event.profile_id == _pm.c.profile_id, Event.type == rules["event"])
    if rules.get("within_days"):
        count = count.where(Event.occurred_at >= now - timedelta(days=rules["within_days"]))
    if rules.get("amount"):
        count = count.where(_compare(Event.amount, rules["amount"]["op"], rules["amount"]["value"]))
    wanted = rules.get("count") or {"op": "gte", "value": 1}
    return _compare(count.scalar_subquery(), wanted["op"], wanted["value"])


def members_query(rules: dict, now: datetime | None = None) -> Select:
    """SELECT profile_id of the active profiles matching the rules."""
    now = now or utcnow()
    return (select(_pm.c.profile_id).join(Profile.__table__, Profile.__table__.c.id == _pm.c.profile_id)
            .where(Profile.__table__.c.status == "active", compile_condition(rules, now) if rules else true()))
