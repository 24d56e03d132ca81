"""The record → profile map (`cdp links`), decrypted for authorized operators."""
from __future__ import annotations

from typing import Iterator

from sqlalchemy import select

from cdp import crypto
from cdp.models import SourceRecord
from cdp.store import Runtime


def iter_links(runtime: Runtime) -> Iterator[tuple[str, str, str | None]]:
    with runtime.session() as session:
        keys = runtime.keys(session)
        rows = session.execute(
            select(SourceRecord.id, SourceRecord.source, SourceRecord.key_id, SourceRecord.external_id_ct,
                   SourceRecord.profile_id)
            .order_by(SourceRecord.source, SourceRecord.id).execution_options(yield_per=1000)
        )
        for part in rows.partitions():
            keys.preload([r.key_id for r in part])
            for r in part:
                external_id = crypto.decrypt_json(keys.get(r.key_id), r.external_id_ct, "source_records", r.id,
                                                  "external_id")
                yield r.source, external_id, r.profile_id
            keys.forget()
