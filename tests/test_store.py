from sqlalchemy import select

from cdp.ingest import ensure_source
from cdp.models import Source
from cdp.store import among


def test_among_selects_like_in_on_both_backends(any_runtime):
    with any_runtime.session() as session:
        for name in ("loja", "erp", "forms"):
            ensure_source(session, name)
    with any_runtime.session() as session:
        found = set(session.scalars(select(Source.name).where(among(session, Source.name, ["erp", "forms", "x"]))))
        none = list(session.scalars(select(Source.name).where(among(session, Source.name, []))))
    assert found == {"erp", "forms"}
    assert none == []
