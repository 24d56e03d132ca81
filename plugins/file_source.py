"""Files exported by ERPs and spreadsheets: CSV or JSON lines, mapped to the
common record model by a YAML mapping file (see docs/mapping.md).

JSON-lines files already in the common record model need no mapping.
"""
from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from cdp.connectors import Batch, ConnectorError, SourceConnector
from cdp.hookspecs import hookimpl

NAME_RE = r"^[a-z][a-z0-9_]{0,63}$"


# -- mapping file schema --------------------------------------------------------

class ColumnSpec(fields.Field):
    """"col" | {column: c, format: f} | {columns: [a, b], join: s} | {value: constant}."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and value:
            return {"column": value}
        if isinstance(value, dict):
            allowed = {"column", "columns", "join", "format", "value", "match", "granted", "revoked"}
            unknown = set(value) - allowed
            if unknown:
                raise ValidationError(f"Unknown key(s) {sorted(unknown)}; use column, columns, join, format or value.")
            if sum(k in value for k in ("column", "columns", "value")) != 1:
                raise ValidationError("Give exactly one of column, columns or value.")
            if "columns" in value and not (isinstance(value["columns"], list) and value["columns"]):
                raise ValidationError("columns must be a non-empty list.")
            return dict(value)
        raise ValidationError("Must be a column name or a mapping with column/columns/value.")


class CustomIdSpec(ColumnSpec):
    def _deserialize(self, value, attr, data, **kwargs):
        spec = super()._deserialize(value, attr, data, **kwargs)
        spec.setdefault("match", "exact")
        if spec["match"] not in ("exact", "fuzzy"):
            raise ValidationError("match must be exact or fuzzy.")
        return spec


class IdentifierMapping(Schema):
    class Meta:
        unknown = RAISE

    cpf = ColumnSpec()
    cnpj = ColumnSpec()
    email = fields.List(ColumnSpec())
    phone = fields.List(ColumnSpec())
    custom = fields.Dict(keys=fields.String(validate=validate.Regexp(NAME_RE)), values=CustomIdSpec())

    def load(self, data, **kwargs):
        # email/phone may be one spec or a list of specs.
        if isinstance(data, dict):
            data = {k: ([v] if k in ("email", "phone") and not isinstance(v, list) else v) for k, v in data.items()}
        return super().load(data, **kwargs)


class EventMapping(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.Regexp(NAME_RE))
    id = ColumnSpec()
    occurred_at = ColumnSpec(required=True)
    amount = ColumnSpec()
    currency = fields.String()
    attributes = fields.Dict(keys=fields.String(), values=ColumnSpec())


class ConsentMapping(Schema):
    class Meta:
        unknown = RAISE

    purpose = fields.String(required=True, validate=validate.Regexp(NAME_RE))
    legal_basis = fields.String(load_default="consent")
    status = ColumnSpec(required=True)
    occurred_at = ColumnSpec()
    evidence = fields.Dict(keys=fields.String(), values=ColumnSpec())


class MappingSchema(Schema):
    class Meta:
        unknown = RAISE

    source = fields.String(required=True, validate=validate.Regexp(NAME_RE, error="source must be snake_case"))
    format = fields.String(validate=validate.OneOf(["csv", "jsonl"]))
    delimiter = fields.String(validate=validate.Length(equal=1))
    encoding = fields.String(load_default="utf-8-sig")
    trust = fields.Integer(validate=validate.Range(0, 100))
    external_id = ColumnSpec(required=True)
    observed_at = ColumnSpec()
    identifiers = fields.Nested(IdentifierMapping, load_default=dict)
    traits = fields.Dict(keys=fields.String(), values=ColumnSpec(), load_default=dict)
    events = fields.List(fields.Nested(EventMapping), load_default=list)
    consents = fields.List(fields.Nested(ConsentMapping), load_default=list)

    @validates_schema
    def _something_mapped(self, data, **kwargs):
        if not (data.get("identifiers") or data.get("traits") or data.get("events")):
            raise ValidationError("map at least one identifier, trait or event", "identifiers")


def load_mapping(path: Path) -> dict:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConnectorError(f"cannot read mapping file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConnectorError(f"mapping file {path} is not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConnectorError(f"mapping file {path} must be a YAML mapping (source:, external_id:, ...)")
    try:
        return MappingSchema().load(raw)
    except ValidationError as exc:
        field, messages = _first_error(exc.messages)
        raise ConnectorError(f"mapping file {path}: {field}: {messages}") from None


def _first_error(messages, prefix="") -> tuple[str, str]:
    if isinstance(messages, dict):
        key, value = next(iter(messages.items()))
        return _first_error(value, f"{prefix}.{key}" if prefix else str(key))
    if isinstance(messages, list) and messages and not isinstance(messages[0], str):
        return _first_error(messages[0], prefix)
    return prefix, " ".join(messages) if isinstance(messages, list) else str(messages)


# -- applying a mapping to one row ---------------------------------------------------

class RowError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def _value(row: dict, spec: dict | None, field: str) -> Any:
    if spec is None:
        return None
    if "value" in spec:
        return spec["value"]
    if "columns" in spec:
        parts = [_cell(row, c, field) for c in spec["columns"]]
        joined = spec.get("join", "").join(p for p in parts if p not in (None, ""))
        return joined or None
    value = _cell(row, spec["column"], field)
    fmt = spec.get("format")
    if fmt and value not in (None, ""):
        try:
            parsed = datetime.strptime(str(value).strip(), fmt)
        except ValueError:
            if field.startswith("traits."):
                return value  # a mistyped date is still evidence; ingestion keeps it as unverified
            raise RowError(field, f"does not match format {fmt!r}") from None
        return parsed.date().isoformat() if not any(t in fmt for t in ("%H", "%M", "%S")) else parsed.isoformat()
    return value


def _cell(row: dict, column: str, field: str):
    # A dotted path reads nested JSON ("clientProfileData.email").
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    if isinstance(value, str):
        value = value.strip()
    return None if value == "" else value


def _as_datetime(value: Any, field: str) -> str:
    text = str(value)
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise RowError(field, "is not an ISO date/time (set a format: in the mapping)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.isoformat()


def apply_mapping(mapping: dict, row: dict) -> dict:
    """One row → one record in the common model. RowError names the field."""
    external_id = _value(row, mapping["external_id"], "external_id")
    if external_id in (None, ""):
        raise RowError("external_id", f"column {mapping['external_id'].get('column')!r} is empty")
    record: dict = {"source": mapping["source"], "external_id": str(external_id)}
    if mapping.get("observed_at"):
        observed = _value(row, mapping["observed_at"], "observed_at")
        if observed:
            record["observed_at"] = _as_datetime(observed, "observed_at")
    ids: dict = {}
    for kind in ("cpf", "cnpj"):
        if kind in mapping["identifiers"]:
            value = _value(row, mapping["identifiers"][kind], f"identifiers.{kind}")
            if value not in (None, ""):
                ids[kind] = str(value)
    for kind in ("email", "phone"):
        values = [_value(row, spec, f"identifiers.{kind}") for spec in mapping["identifiers"].get(kind, [])]
        values = [str(v) for v in values if v not in (None, "")]
        if values:
            ids[kind] = values
    custom = {}
    for kind, spec in (mapping["identifiers"].get("custom") or {}).items():
        value = _value(row, spec, f"identifiers.custom.{kind}")
        if value not in (None, ""):
            custom[kind] = {"value": str(value), "match": spec["match"]}
    if custom:
        ids["custom"] = custom
    if ids:
        record["identifiers"] = ids
    traits = {}
    for name, spec in mapping["traits"].items():
        value = _value(row, spec, f"traits.{name}")
        if value not in (None, ""):
            traits[name] = str(value)
    if traits:
        record["traits"] = traits
    events = []
    for ev in mapping["events"]:
        occurred = _value(row, ev["occurred_at"], f"events.{ev['type']}.occurred_at")
        if occurred in (None, ""):
            continue  # no date: this row has no such event
        event = {"type": ev["type"], "occurred_at": _as_datetime(occurred, f"events.{ev['type']}.occurred_at")}
        if ev.get("id"):
            event_id = _value(row, ev["id"], f"events.{ev['type']}.id")
            if event_id not in (None, ""):
                event["id"] = str(event_id)
        if ev.get("amount"):
            amount = _value(row, ev["amount"], f"events.{ev['type']}.amount")
            if amount not in (None, ""):
                event["amount"] = str(amount).replace(",", ".") if isinstance(amount, str) and amount.count(",") == 1 and "." not in amount else str(amount)
                event["currency"] = ev.get("currency", "BRL")
        attrs = {}
        for key, spec in (ev.get("attributes") or {}).items():
            value = _value(row, spec, f"events.{ev['type']}.attributes.{key}")
            if value not in (None, ""):
                attrs[key] = value
        if attrs:
            event["attributes"] = attrs
        events.append(event)
    if events:
        record["events"] = events
    consents = []
    for c in mapping["consents"]:
        raw_status = _value(row, c["status"], f"consents.{c['purpose']}.status")
        status = _consent_status(c["status"], raw_status)
        if status is None:
            continue
        consent = {"purpose": c["purpose"], "status": status, "legal_basis": c["legal_basis"]}
        if c.get("occurred_at"):
            occurred = _value(row, c["occurred_at"], f"consents.{c['purpose']}.occurred_at")
            if occurred:
                consent["occurred_at"] = _as_datetime(occurred, f"consents.{c['purpose']}.occurred_at")
        evidence = {k: _value(row, s, f"consents.{c['purpose']}.evidence.{k}") for k, s in (c.get("evidence") or {}).items()}
        evidence = {k: v for k, v in evidence.items() if v not in (None, "")}
        if evidence:
            consent["evidence"] = evidence
        consents.append(consent)
    if consents:
        record["consents"] = consents
    return record


TRUTHY = {"1", "true", "sim", "s", "yes", "y", "x", "granted", "aceito", "opt-in", "optin"}
FALSY = {"0", "false", "nao", "não", "n", "no", "revoked", "recusado", "opt-out", "optout"}


def _consent_status(spec: dict, raw: Any) -> str | None:
    if raw in (None, ""):
        return None
    text = str(raw).strip().lower()
    granted = {str(v).lower() for v in spec.get("granted", [])} or TRUTHY
    revoked = {str(v).lower() for v in spec.get("revoked", [])} or FALSY
    if text in ("granted", "revoked", "opted_out"):
        return text
    if text in granted:
        return "granted"
    if text in revoked:
        return "revoked"
    return None


# -- the connector ------------------------------------------------------------------

class FileSourceConfig(Schema):
    class Meta:
        unknown = RAISE

    path = fields.String(required=True)
    mapping = fields.String()  # path of a YAML mapping file; none for JSON lines in the common model
    source = fields.String(validate=validate.Regexp(NAME_RE))  # for mapping-less JSON lines


class FileSource(SourceConnector):
    """CSV or JSON-lines file; the cursor is the number of rows already read."""

    name = "file"
    title = "CSV / JSON-lines file"
    config_schema = FileSourceConfig

    def __init__(self, config: dict, *, source: str | None = None):
        super().__init__(config, source=source)  # `source`: a configured source's name (sources.build_connector)
        self.path = Path(self.config["path"])
        self.mapping = load_mapping(Path(self.config["mapping"])) if self.config.get("mapping") else None
        fmt = (self.mapping or {}).get("format") or ("jsonl" if self.path.suffix in (".jsonl", ".ndjson", ".json") else "csv")
        if fmt == "csv" and self.mapping is None:
            raise ConnectorError("a CSV file needs a mapping file (--mapping MAP.yml)")
        self.format = fmt

    @property
    def source_name(self) -> str | None:
        return (self.mapping or {}).get("source") or self.config.get("source")

    @property
    def custom_kinds(self) -> dict[str, str]:
        custom = ((self.mapping or {}).get("identifiers") or {}).get("custom") or {}
        return {kind: spec["match"] for kind, spec in custom.items()}

    @property
    def trust(self) -> int | None:
        return (self.mapping or {}).get("trust")

    def check(self) -> None:
        if not self.path.is_file():
            raise ConnectorError(f"file not found: {self.path}")
        if self.format == "csv":
            header = next(self._csv_rows(), None)
            if header is None:
                raise ConnectorError(f"{self.path} has no header row")
            missing = sorted(c for c in _mapped_columns(self.mapping) if c.split(".")[0] not in header)
            if missing:
                raise ConnectorError(f"{self.path}: mapped column(s) not in the header: {', '.join(missing)}")

    def count(self) -> int | None:
        with open(self.path, "rb") as fh:
            lines = sum(1 for _ in fh)
        return max(0, lines - 1) if self.format == "csv" else lines

    def _csv_rows(self) -> Iterator[dict]:
        encoding = self.mapping.get("encoding", "utf-8-sig")
        with open(self.path, newline="", encoding=encoding) as fh:
            delimiter = self.mapping.get("delimiter")
            if not delimiter:
                sample = fh.read(8192)
                fh.seek(0)
                try:
                    delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
                except csv.Error:
                    delimiter = ","
            reader = csv.DictReader(fh, delimiter=delimiter)
            yield reader.fieldnames or []
            yield from reader

    def _rows(self) -> Iterator[tuple[int, dict | None, str | None]]:
        if self.format == "csv":
            rows = self._csv_rows()
            next(rows, None)
            for n, row in enumerate(rows, start=1):
                yield n, row, None
        else:
            with open(self.path, encoding="utf-8-sig") as fh:
                for n, line in enumerate(fh, start=1):
                    if not line.strip():
                        yield n, None, "blank"
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield n, None, f"invalid JSON at column {exc.colno}"
                        continue
                    yield n, obj, None if isinstance(obj, dict) else "line is not a JSON object"

    def read(self, stream: str = "default", cursor: Any = None, batch_size: int = 500) -> Iterator[Batch]:
        self.check()
        start = int(cursor or 0)
        batch = Batch(records=[])
        position = start
        for n, row, problem in self._rows():
            if n <= start:
                continue
            position = n
            if problem == "blank":
                pass
            elif problem:
                batch.errors.append((f"line {n}", {"_line": [problem]}))
            elif self.mapping is None:
                batch.records.append(row)
            else:
                try:
                    batch.records.append(apply_mapping(self.mapping, row))
                except RowError as exc:
                    batch.errors.append((f"row {n}", {exc.field: [exc.message]}))
            if len(batch.records) + len(batch.errors) >= batch_size:
                batch.cursor = position
                yield batch
                batch = Batch(records=[])
        if batch.records or batch.errors or position > start:
            batch.cursor = position
            yield batch


def _mapped_columns(mapping: dict) -> set[str]:
    cols: set[str] = set()

    def add(spec):
        if isinstance(spec, dict):
            if "column" in spec:
                cols.add(spec["column"])
            cols.update(spec.get("columns", []))

    add(mapping["external_id"])
    add(mapping.get("observed_at"))
    ids = mapping["identifiers"]
    for kind in ("cpf", "cnpj"):
        add(ids.get(kind))
    for kind in ("email", "phone"):
        for spec in ids.get(kind, []):
            add(spec)
    for spec in (ids.get("custom") or {}).values():
        add(spec)
    for spec in mapping["traits"].values():
        add(spec)
    for ev in mapping["events"]:
        for key in ("id", "occurred_at", "amount"):
            add(ev.get(key))
        for spec in (ev.get("attributes") or {}).values():
            add(spec)
    for c in mapping["consents"]:
        add(c["status"])
        add(c.get("occurred_at"))
        for spec in (c.get("evidence") or {}).values():
            add(spec)
    return cols


@hookimpl
def cdp_source_types():
    return [FileSource]
