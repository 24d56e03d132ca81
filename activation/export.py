"""Activation of a segment to a destination through the consent gate:
pages from activation.access.deliver_page (gate, holdout, allowed fields,
disclosure log) handed to a DestinationConnector. The file destination
(CSV or JSONL, mode 0600, written to a temporary file and renamed when
complete) ships here; the webhook destination is plugins/webhook_destination.py."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from marshmallow import Schema, fields, validate

from activation.access import AccessError, FIELDS, deliver_page
from activation.models import Segment
from cdp.connectors import DeliveryResult, DestinationConnector
from cdp.disclosures import Recipient
from cdp.store import Runtime


class FileDestinationConfig(Schema):
    path = fields.String(required=True, validate=validate.Length(1, 4096))
    format = fields.String(load_default="csv", validate=validate.OneOf(["csv", "jsonl"]))
    fields = fields.List(fields.String(validate=validate.OneOf(FIELDS)), required=True,
                         validate=validate.Length(min=1))


class FileDestination(DestinationConnector):
    """Rows to a local CSV or JSONL file (one export per run)."""

    name = "file"
    title = "File (CSV / JSONL)"
    config_schema = FileDestinationConfig

    def open(self) -> None:
        self.final = Path(self.config["path"])
        self.tmp = self.final.with_name(f".{self.final.name}.partial")
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # personal data: owner only
        self.fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self.writer = None
        if self.config["format"] == "csv":
            self.writer = csv.DictWriter(self.fh, fieldnames=["profile_id", *self.config["fields"]],
                                         lineterminator="\n", extrasaction="ignore")
            self.writer.writeheader()

    def deliver(self, rows: list[dict], idempotency_key: str) -> DeliveryResult:
        for row in rows:
            if self.writer:
                self.writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
                                      for k, v in row.items()})
            else:
                self.fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        return DeliveryResult(delivered=len(rows))

    def close(self, complete: bool) -> None:
        self.fh.close()
        if complete:
            os.replace(self.tmp, self.final)
        else:
            self.tmp.unlink(missing_ok=True)

    def remove(self, subject_refs: list[str], idempotency_key: str | None = None) -> DeliveryResult:
        return DeliveryResult()  # a file already handed over cannot be recalled by the platform


def export_segment(runtime: Runtime, segment_id: int, purpose: str, destination: FileDestination,
                   batch_size: int = 1000, progress=None) -> int:
    """Every deliverable member (gate, holdout, fields) to the destination; one
    transaction per page, so the disclosure log matches what was written."""
    from consent.models import Purpose
    from sqlalchemy import select

    recipient = Recipient("destination", f"{destination.name}:{destination.destination}", destination.destination)
    after, total, complete = None, 0, False
    destination.open()
    try:
        while True:
            with runtime.session() as session:
                segment = session.get(Segment, segment_id)
                if segment is None:
                    raise AccessError("segment", "not found")
                if session.scalar(select(Purpose.name).where(Purpose.name == purpose)) is None:
                    raise AccessError("purpose", "not a purpose of the registry")
                items, cursor = deliver_page(session, runtime.keys(session), segment, recipient, purpose,
                                             destination.config["fields"], after, batch_size)
                destination.deliver(items, idempotency_key=f"segment:{segment_id}:{after or ''}")
            total += len(items)
            if progress:
                progress(len(items))
            if cursor is None:
                complete = True
                return total
            after = items[-1]["profile_id"]
    finally:
        destination.close(complete)


# -- the file destination of activations (registered as a plugin type: `file_drop`) ----------------


class FileDropConfig(Schema):
    class Meta:
        unknown = "raise"

    directory = fields.String(required=True, validate=validate.Length(1, 4096))
    format = fields.String(load_default="jsonl", validate=validate.OneOf(["csv", "jsonl"]))


class FileDropDestination(DestinationConnector):
    """Each delivery of an activation as its own file in a directory the
    recipient collects from: ``<idempotency key>.add.<csv|jsonl>`` (the rows)
    and ``<key>.remove.<fmt>`` (the references to take out). Written to a
    temporary file (mode 0600) and renamed, so a consumer never sees half a
    file; a re-driven delivery rewrites the same name, so it never sees a
    duplicate either."""

    name = "file_drop"
    title = "Files in a directory (CSV / JSONL), one per delivery"
    config_schema = FileDropConfig

    def check(self) -> None:
        from cdp.connectors import ConnectorError

        directory = Path(self.config["directory"])
        if not directory.is_dir() or not os.access(directory, os.W_OK):
            raise ConnectorError(f"{self.name}: directory is missing or not writable")

    def _write(self, stem: str, rows: list[dict]) -> None:
        self.check()
        fmt = self.config["format"]
        final = Path(self.config["directory"]) / f"{stem}.{fmt}"
        tmp = final.with_name(f".{final.name}.partial")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # personal data: owner only
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            if fmt == "csv":
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["profile_id"], lineterminator="\n")
                writer.writeheader()
                for row in rows:
                    writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
                                     for k, v in row.items()})
            else:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)

    def deliver(self, rows: list[dict], idempotency_key: str) -> DeliveryResult:
        self._write(f"{_safe_stem(idempotency_key)}.add", rows)
        return DeliveryResult(delivered=len(rows))

    def remove(self, subject_refs: list[str], idempotency_key: str | None = None) -> DeliveryResult:
        key = idempotency_key or self.removal_key(subject_refs)
        self._write(f"{_safe_stem(key)}.remove", [{"profile_id": ref} for ref in subject_refs])
        return DeliveryResult(delivered=len(subject_refs))


def _safe_stem(key: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:120]


from cdp.hookspecs import hookimpl  # noqa: E402 - this module is also a plugin (entry point file_drop)


@hookimpl
def cdp_destination_types():
    return [FileDropDestination]
